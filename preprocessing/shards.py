"""Shards: the passing takes' per-take files -> ``dataset/shards/`` (HDF5, schema version 1).

    python -m preprocessing.shards --split dataset/split.tsv --basis dataset/exp_basis.npz \
        --work work/takes --takes-per-shard 32 --config-json '{...}' --out dataset/shards

Output (the schema: :mod:`preprocessing.shard_schema`, docs/data.md): ``{train,test}-NNNNN.h5``
(``takes_per_shard`` takes each, takes sorted by name within a split) and ``manifest.json`` (files,
their takes and sha256, subjects, exp_dim, every take's attributes).

Contracts fixed here (the reader, ``musicface.data``, relies on them):

* ``subjects`` (root attribute) = the sorted subject names of the passing takes (train and test);
  a take's ``subject_index`` is its subject's position in that list: the model's one-hot order.
* ``valid`` = tracked AND coefficients valid AND eye state valid AND audio valid (mfcc.npz
  ``valid``: the frame's MFCC window reads no stretch of the song that failed to decode). In frames
  with ``valid == 0`` every per-frame array (exp, pose, au45, eye_long, eye_blink, landmarks) holds
  0, never NaN.
* MFCC arrays have ``M = ceil(N * mfcc_rate / fps)`` rows; row 0 is the time of video frame 0.
* Deterministic: the same inputs give the same arrays and the same file bytes (fixed order, no HDF5
  timestamps, no wall-clock attribute), so ``manifest.json`` sha256 values are reproducible.
* Atomic: the set is built in a hidden temp folder beside ``--out`` and renamed into place at the
  end; a killed job leaves only ``.<name>.tmp-*`` (removed by the next run), never a set that looks
  done.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from preprocessing.coeffs import expression_from_coeffs
from preprocessing.common import StepError, config_sha, load_json, load_npz, sha256_file
from preprocessing.shard_schema import (
    ARRAYS,
    DATASET_CONFIG_KEYS,
    SCHEMA_VERSION,
    from_attrs,
    root_attrs,
    root_meta,
    to_attrs,
)
from preprocessing.timebase import FPS, MFCC_DIM, MFCC_KEYS, n_mfcc_rows

# Chunk lengths along time (bench/reader.py measured the choices): ~17 s of video per frame-array
# chunk, ~20 s per MFCC chunk. Readers load a whole take (a few contiguous chunks) or a window
# (1-2 chunks); gzip level 4 + byte shuffle is in every HDF5 build (no plugin needed to read).
CHUNK_FRAMES = 512
CHUNK_MFCC = 2048
COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)

# libraries whose versions go into each take's tool_versions attribute
TOOL_PACKAGES = ("musicface", "numpy", "scipy", "librosa", "python_speech_features", "mediapipe",
                 "av", "h5py", "syncnet-python")


@dataclass
class TakeData:
    """One take's arrays and attributes, exactly as stored under ``/takes/<take>/``."""

    take: str
    subject: str
    song: str
    split: str
    offset_s: float
    sync_method: str
    sync_confidence: float
    arrays: dict[str, np.ndarray]
    backends: dict = field(default_factory=dict)
    tool_versions: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.arrays["valid"].shape[0])

    def attrs(self, subject_index: int) -> dict:
        """The take's attributes (``shard_schema.TAKE_ATTRS``) as Python values."""
        return {"subject": self.subject, "subject_index": subject_index, "song": self.song,
                "split": self.split, "offset_s": self.offset_s, "sync_method": self.sync_method,
                "sync_confidence": self.sync_confidence, "n_frames": self.n_frames,
                "backends": self.backends, "tool_versions": self.tool_versions}


# ------------------------------------------------------------------------------------ assembling
def tool_versions(*extra: dict) -> dict:
    """Installed versions of the libraries that produce the data (plus any a step recorded)."""
    out = {}
    for pkg in TOOL_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    for d in extra:
        out.update(d)
    return dict(sorted(out.items()))


def _str(x) -> str:
    return str(np.asarray(x).item()) if isinstance(x, np.ndarray) else str(x)


def assemble_take(take_dir: str | os.PathLike, basis: dict, take: str, subject: str, song: str,
                  split: str, separate_backend: str = "builtin") -> TakeData:
    """Read one passing take's intermediate files (docs/data.md formats) -> :class:`TakeData`.

    Raises :class:`StepError` (naming the file) when a file is a failure record or has the wrong
    shape: split.tsv only lists takes that passed QC, so this means the inputs changed under us.
    """
    d = Path(take_dir)
    try:
        ingest = load_json(d / "ingest.json")
        sync = load_json(d / "sync.json")
        mfcc = load_npz(d / "mfcc.npz")
        track = load_npz(d / "track.npz")
        coeffs = load_npz(d / "coeffs.npz")
        eyes = load_npz(d / "eyes.npz")
        au45_backend = _str(load_npz(d / "au45.npz").get("backend", "builtin")) \
            if (d / "au45.npz").exists() else None
    except StepError as e:
        raise StepError(f"take '{take}' passed QC but {e}") from e
    n = int(ingest["n_frames"])
    m = n_mfcc_rows(n)

    backend = _str(coeffs["backend"])
    # builtin: residual on the PCA basis; deep3d: exp as is
    exp = expression_from_coeffs(coeffs, basis)
    if "valid" not in mfcc:
        raise StepError(f"take '{take}' passed QC but its mfcc.npz has no 'valid' array (written "
                        f"by an older MusicFace: rerun the mfcc step)")
    valid = (np.asarray(track["valid"]).astype(bool) & np.asarray(coeffs["valid"]).astype(bool)
             & np.asarray(eyes["valid"]).astype(bool))
    audio_valid = np.asarray(mfcc["valid"]).astype(bool)
    if audio_valid.shape != (n,):
        raise StepError(f"take '{take}': mfcc valid has shape {audio_valid.shape}, expected ({n},)")
    valid &= audio_valid

    arrays = {k: np.asarray(mfcc[k], np.float32) for k in MFCC_KEYS}
    arrays.update(
        exp=exp,
        pose=np.asarray(coeffs["pose"], np.float32),
        au45=np.asarray(eyes["au45"], np.float32),
        eye_long=np.asarray(eyes["eye_long"], np.float32),
        eye_blink=np.asarray(eyes["eye_blink"]).astype(np.uint8),
        valid=valid.astype(np.uint8),
        landmarks=np.asarray(coeffs["landmarks2d"], np.float32)[..., :2],
    )
    for k in MFCC_KEYS:
        if arrays[k].shape != (m, MFCC_DIM):
            raise StepError(f"take '{take}': {k} has shape {arrays[k].shape}, expected ({m}, "
                            f"{MFCC_DIM})")
    for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "valid", "landmarks"):
        if arrays[k].shape[0] != n:
            raise StepError(f"take '{take}': {k} has {arrays[k].shape[0]} frames, expected {n}")
    # the contract: invalid frames hold zeros (the tools may leave NaN or stale values there)
    for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "landmarks"):
        a = arrays[k]
        a[~valid] = 0
        if not np.isfinite(a).all():
            raise StepError(f"take '{take}': {k} has non-finite values in tracked frames")
    arrays["landmarks"] = arrays["landmarks"].astype(np.float16)

    backends = {"sync": _str(sync["method"]), "separate": separate_backend, "coeffs": backend,
                "au45": au45_backend or "unknown", "track": "mediapipe-facemesh"}
    return TakeData(take=take, subject=subject, song=song, split=split,
                    offset_s=float(sync["offset_s"]), sync_method=_str(sync["method"]),
                    sync_confidence=float(sync["confidence"]), arrays=arrays, backends=backends,
                    tool_versions=tool_versions())


# -------------------------------------------------------------------------------------- writing
def _dataset(group: h5py.Group, name: str, data: np.ndarray, dtype: str) -> None:
    data = np.ascontiguousarray(data, dtype=dtype)
    chunk_len = CHUNK_MFCC if name.startswith("mfcc") else CHUNK_FRAMES
    chunks = (max(1, min(chunk_len, data.shape[0])),) + data.shape[1:]
    group.create_dataset(name, data=data, chunks=chunks, track_times=False, **COMPRESSION)


def write_shard(path: str | os.PathLike, takes: list[TakeData], subjects: list[str], exp_dim: int,
                cfg_sha: str) -> None:
    """Write one shard file (schema version 1) holding ``takes`` in the given order."""
    index = {s: i for i, s in enumerate(subjects)}
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        for k, v in root_attrs(exp_dim, subjects, cfg_sha).items():
            f.attrs[k] = v
        root = f.create_group("takes")
        for t in takes:
            if t.arrays["exp"].shape[1] != exp_dim:
                raise StepError(f"take '{t.take}': exp has {t.arrays['exp'].shape[1]} dims, "
                                f"expected {exp_dim}")
            g = root.create_group(t.take)
            for k, v in to_attrs(t.attrs(index[t.subject])).items():
                g.attrs[k] = v
            for name, (dtype, _shape) in ARRAYS.items():
                _dataset(g, name, t.arrays[name], dtype)


def _clean_stale(out: Path) -> None:
    """Remove temp folders left beside ``out`` by killed runs."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def write_shard_set(out: str | os.PathLike, takes: list[TakeData], takes_per_shard: int,
                    cfg_sha: str, exp_dim: int | None = None, progress: bool = False) -> dict:
    """Write ``takes`` as a shard set at ``out`` atomically; return the manifest.

    Takes are grouped by split (train, then test), sorted by name, ``takes_per_shard`` per file.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    if not takes:
        raise StepError("no take to write (none passed QC)")
    subjects = sorted({t.subject for t in takes})
    index = {s: i for i, s in enumerate(subjects)}
    if exp_dim is None:
        exp_dim = int(takes[0].arrays["exp"].shape[1])
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files = []
        for split in ("train", "test"):
            group = sorted((t for t in takes if t.split == split), key=lambda t: t.take)
            chunks = [group[i:i + takes_per_shard] for i in range(0, len(group), takes_per_shard)]
            for k, chunk in enumerate(tqdm(chunks, desc=f"shards {split}", disable=not progress)):
                name = f"{split}-{k:05d}.h5"
                write_shard(tmp / name, chunk, subjects, exp_dim, cfg_sha)
                files.append({"name": name, "split": split, "takes": [t.take for t in chunk],
                              "sha256": sha256_file(tmp / name)})
        manifest = {
            "schema_version": SCHEMA_VERSION, **root_meta(root_attrs(exp_dim, subjects, cfg_sha)),
            "files": files,
            "takes": {t.take: {"file": f["name"], **from_attrs(to_attrs(t.attrs(index[t.subject])))}
                      for f in files for t in takes if t.take in f["takes"]},
            "n_takes": len(takes),
            "hours": round(sum(t.n_frames for t in takes) / FPS / 3600, 6),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # swap into place: the old set (if any) is moved aside first, so `out` is never half-written
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-old-", dir=out.parent))
            os.replace(out, old / "set")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------ CLI
def build(split_tsv, basis_path, work_dir, out, takes_per_shard: int, config: dict) -> dict:
    """The rule's job: every take of split.tsv -> the shard set at ``out``."""
    import pandas as pd  # not at the top: the writer alone (bench/train.py) needs no pandas

    rows = pd.read_csv(split_tsv, sep="\t", dtype=str, keep_default_na=False)
    if rows.empty:
        raise StepError(f"no take passed QC ({split_tsv} is empty): see qc.tsv beside it")
    basis = load_npz(basis_path)
    dataset_cfg = {k: config[k] for k in DATASET_CONFIG_KEYS if k in config}
    sep_backend = config.get("separate", {}).get("backend", "builtin")
    takes = []
    for r in tqdm(rows.itertuples(index=False), total=len(rows), desc="assemble takes"):
        takes.append(assemble_take(Path(work_dir) / r.take, basis, r.take, r.subject, r.song,
                                   r.split, sep_backend))
    exp_dim = config.get("coeffs", {}).get("exp_dim")
    if takes[0].backends["coeffs"] == "deep3d":
        exp_dim = takes[0].arrays["exp"].shape[1]
    return write_shard_set(out, takes, takes_per_shard, config_sha(dataset_cfg), exp_dim,
                           progress=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.shards",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--split", required=True, help="dataset/split.tsv (take, subject, song, split)")
    ap.add_argument("--basis", required=True, help="dataset/exp_basis.npz")
    ap.add_argument("--work", required=True, help="folder holding work/takes/<take>/")
    ap.add_argument("--takes-per-shard", type=int, default=32)
    ap.add_argument("--config-json", default="{}",
                    help="the dataset part of the config (for config_sha)")
    ap.add_argument("--out", required=True, help="output folder (dataset/shards)")
    a = ap.parse_args(argv)
    try:
        man = build(a.split, a.basis, a.work, a.out, a.takes_per_shard, json.loads(a.config_json))
    except StepError as e:
        # a gathering step: no single take to blame, so no failure record; the run stops here
        print(f"musicface: step 'shards': {e}", file=sys.stderr, flush=True)
        return 1
    print(f"shards: {man['n_takes']} takes, {len(man['files'])} files, {man['hours'] * 60:.1f} min "
          f"-> {a.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
