"""Shard reader: HDF5 shards (preprocessing.shard_schema, docs/data.md) -> takes, training windows.

    shards = open_shards("dataset/shards")       # ShardSet: .subjects, .exp_dim, .fps, .takes()
    ds = WindowDataset(shards, split="train", window=128, samples_per_epoch=10_000, seed=0)
    ds.set_epoch(epoch)                           # items: a pure function of (seed, epoch, index)
    item = ds[i]                                  # dict of torch tensors, see WindowDataset
    whole = take_arrays(shards, "singer1_song1")  # the same keys for a whole take (+ landmarks)
    musicface inspect dataset/shards              # summary (calls main() below)

Definitions (units):

* frame ``t`` of a take is at video time ``t / fps`` s (fps = 30); ``N`` frames per take.
* MFCC (changed in this version, CHANGELOG.md; items held every frame's window before):
  ``mfcc_vocals`` / ``mfcc_music`` / ``mfcc_mix`` are the 100 Hz MFCC+delta *rows* a window covers,
  ``(R, 26)``, and ``mfcc_index`` ``(W,)`` says where each frame's window starts in them: the MFCC
  window of frame ``t`` is ``rows[mfcc_index[t] : mfcc_index[t] + 39]``, the 39 rows centred on the
  take's row ``round(t * mfcc_rate / fps)``; rows outside the take replicate its edge rows. These
  are exactly the windows of ``preprocessing.mfcc.mfcc_windows`` (tests/test_data.py), cut by the
  model on its device (``MusicFace.windows``): a 128-frame item ships R = 463 rows instead of 128
  windows of 39 rows, 8x fewer bytes. R is the same for every window of a dataset
  (:func:`mfcc_span`), so items stack into batches; :func:`take_arrays` gives a whole take in the
  same form (R = M + 38 rows, the take's rows padded by 19 on each side).
* ``pose_vel[t] = pose[t] - pose[t-1]`` (per frame); at a window's first frame ``pose[t-1]`` is the
  frame before the window, at the take's first frame the velocity is 0; it is 0 wherever frame ``t``
  or ``t-1`` is invalid.
* ``valid`` is 1 where the face was tracked, every coefficient is trustworthy and the song audio
  decoded (docs/data.md); invalid frames hold 0 in every per-frame array. Training windows are
  drawn among those whose valid fraction is at least ``min_valid_fraction`` (default 0.9): losses
  should still be masked with ``valid``.
* ``subject`` is the index into ``ShardSet.subjects`` (sorted subject names of the passing takes):
  the model's one-hot order.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from preprocessing.eyes import blink_stats
from preprocessing.geometry import runs
from preprocessing.shard_schema import (
    FRAME_KEYS,
    TAKE_ATTRS,
    ShardError,
    check_version,
    from_attrs,
    root_meta,
)
from preprocessing.timebase import FPS, MFCC_DIM, MFCC_KEYS, MFCC_RATE, MFCC_WIDTH, centre_rows

ITEM_KEYS = MFCC_KEYS + ("mfcc_index", "exp", "pose", "pose_vel", "au45", "eye_long", "eye_blink",
                         "valid", "subject", "start")


# ------------------------------------------------------------------------------------ shard set
@dataclass(frozen=True)
class TakeInfo:
    """One take of a shard set (the attributes of ``/takes/<take>/``)."""

    take: str
    subject: str
    subject_index: int
    song: str
    split: str
    n_frames: int
    shard: str  # path of the HDF5 file holding the take
    offset_s: float = 0.0
    sync_method: str = ""
    sync_confidence: float = float("nan")
    backends: dict = field(default_factory=dict, compare=False)
    tool_versions: dict = field(default_factory=dict, compare=False)

    def duration_s(self, fps: int = FPS) -> float:
        return self.n_frames / fps


class ShardSet:
    """The metadata of a set of shard files (no open handles: safe to pickle into workers)."""

    def __init__(self, root: Path, files: list[str], subjects: list[str], exp_dim: int, fps: int,
                 mfcc_rate: int, config_sha: str, takes: list[TakeInfo]):
        self.root, self.files, self.subjects = root, files, subjects
        self.exp_dim, self.fps, self.mfcc_rate, self.config_sha = (exp_dim, fps, mfcc_rate,
                                                                   config_sha)
        self._takes = sorted(takes, key=lambda t: t.take)
        self._by_name = {t.take: t for t in self._takes}

    def takes(self, split: str | None = None) -> list[TakeInfo]:
        """Takes sorted by name, all or those of one split ("train" / "test")."""
        return [t for t in self._takes if split is None or t.split == split]

    def take(self, name: str) -> TakeInfo:
        if name not in self._by_name:
            raise KeyError(f"take '{name}' is not in the shard set {self.root}")
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self._takes)

    def __repr__(self) -> str:
        return (f"ShardSet({str(self.root)!r}, takes={len(self)}, subjects={len(self.subjects)}, "
                f"exp_dim={self.exp_dim}, files={len(self.files)})")


def open_shards(path: str | os.PathLike) -> ShardSet:
    """Open a shard set: a folder (``manifest.json`` + ``*.h5``) or one ``.h5`` file.

    A folder's metadata comes from its ``manifest.json`` alone (no HDF5 file is opened; they must
    exist); a folder without a manifest, a manifest written before it carried the takes' attributes,
    or a single file: from the HDF5 attributes. Raises :class:`ShardError` for an unknown schema
    version (naming the file and both versions), a missing file, or files that disagree on subjects
    / exp_dim / fps.
    """
    root = Path(path)
    if root.is_dir():
        manifest = root / "manifest.json"
        if manifest.exists():
            man = json.loads(manifest.read_text())
            check_version(manifest, man)
            names = [f["name"] for f in man["files"]]
            missing = [n for n in names if not (root / n).exists()]
            if missing:
                raise ShardError(f"{root}: files listed in manifest.json are missing: "
                                 f"{', '.join(missing)}")
            files = [root / n for n in names]
            if all(set(TAKE_ATTRS) <= set(t) for t in man["takes"].values()):
                takes = [TakeInfo(take=name, shard=str(root / t["file"]), **from_attrs(t))
                         for name, t in man["takes"].items()]
                return ShardSet(root, [str(p) for p in files], takes=takes, **root_meta(man))
        else:
            files = sorted(root.glob("*.h5"))
        if not files:
            raise ShardError(f"{root}: no shard files (*.h5) found")
    elif root.is_file():
        files = [root]
    else:
        raise ShardError(f"{root}: no such shard folder or file")

    meta, takes = None, []
    for p in files:
        with h5py.File(p, "r") as f:
            check_version(p, f.attrs)
            m = root_meta(f.attrs)
            if meta is None:
                meta = m
            elif m != meta:
                diff = [k for k in m if m[k] != meta[k]]
                raise ShardError(f"{p}: disagrees with {files[0]} on {', '.join(diff)}")
            takes += [TakeInfo(take=name, shard=str(p), **from_attrs(g.attrs))
                      for name, g in f.get("takes", {}).items()]
    names = [t.take for t in takes]
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise ShardError(f"{root}: takes stored twice: {', '.join(dups)}")
    return ShardSet(root, [str(p) for p in files], takes=takes, **meta)


def _as_shardset(shards) -> ShardSet:
    return shards if isinstance(shards, ShardSet) else open_shards(shards)


# ----------------------------------------------------------------------------------- MFCC windows
def mfcc_centres(first_frame, n_frames: int, n_rows, fps: int = FPS,
                 rate: int = MFCC_RATE) -> np.ndarray:
    """Centre row ``round(t * rate / fps)`` (``timebase.centre_rows``) of each frame's MFCC window,
    clipped to the rows, for frames ``first_frame ..``: ``(n_frames,)``, or ``(K, n_frames)`` for
    K first frames (and a scalar or K row counts)."""
    first, rows = np.asarray(first_frame, np.int64), np.asarray(n_rows, np.int64)
    t = first[..., None] + np.arange(n_frames, dtype=np.int64)
    return np.clip(centre_rows(t, fps, rate), 0, rows[..., None] - 1)


def mfcc_span(window: int, fps: int = FPS, rate: int = MFCC_RATE, width: int = MFCC_WIDTH) -> int:
    """Rows R that the MFCC windows of ``window`` consecutive frames cover, for any first frame:
    ``max_s (centre(s + window - 1) - centre(s)) + width`` (the centres repeat with period fps)."""
    first = np.arange(fps, dtype=np.int64)
    c = mfcc_centres(0, fps + window, 1 << 62, fps, rate)
    return int((c[first + window - 1] - c[first]).max()) + width


def padded_rows(features: np.ndarray, after: int = MFCC_WIDTH // 2,
                width: int = MFCC_WIDTH) -> np.ndarray:
    """``features`` (M, D) with ``width // 2`` copies of the first row before and ``after`` copies
    of the last row after: row ``c`` of the take is row ``c + width // 2`` here, so the window
    centred on row ``c`` starts at row ``c``."""
    return np.pad(features, ((width // 2, after), (0, 0)), mode="edge")


# ---------------------------------------------------------------------------------- take arrays
def _read_take(path: str, take: str, keys,
               handle: h5py.File | None = None) -> dict[str, np.ndarray]:
    f = handle if handle is not None else h5py.File(path, "r")
    try:
        g = f["takes"][take]
        return {k: g[k][()] for k in keys}
    finally:
        if handle is None:
            f.close()


def _pose_velocity(pose: np.ndarray, valid: np.ndarray, prev_pose=None, prev_valid=0) -> np.ndarray:
    """``pose[t] - pose[t-1]``, 0 at the take start and wherever t or t-1 is invalid."""
    prev = np.empty_like(pose)
    prev[1:] = pose[:-1]
    prev[0] = pose[0] if prev_pose is None else prev_pose
    ok = valid.astype(bool).copy()
    ok[1:] &= valid[:-1].astype(bool)
    ok[0] &= bool(prev_valid) if prev_pose is not None else False
    vel = pose - prev
    vel[~ok] = 0
    return vel


def take_arrays(shards, take: str, landmarks: bool = True) -> dict[str, torch.Tensor]:
    """A whole take with the keys of a :class:`WindowDataset` item (window = the take, start = 0).

    ``mfcc_*`` are the take's ``M`` rows padded to ``(M + 38, 26)`` (:func:`padded_rows`) and
    ``mfcc_index`` ``(N,)`` is each frame's centre row (the window of frame t is
    ``mfcc_*[mfcc_index[t] : mfcc_index[t] + 39]``); with ``landmarks=True`` also ``landmarks``
    float32 ``(N, K, 2)`` (image-normalised, for LMD).
    """
    shards = _as_shardset(shards)
    info = shards.take(take)
    keys = MFCC_KEYS + FRAME_KEYS + (("landmarks",) if landmarks else ())
    a = _read_take(info.shard, take, keys)
    n, m = info.n_frames, len(a[MFCC_KEYS[0]])
    out = {k: torch.from_numpy(padded_rows(a[k])) for k in MFCC_KEYS}
    out["mfcc_index"] = torch.from_numpy(mfcc_centres(0, n, m, shards.fps, shards.mfcc_rate))
    out["exp"] = torch.from_numpy(a["exp"])
    out["pose"] = torch.from_numpy(a["pose"])
    out["pose_vel"] = torch.from_numpy(_pose_velocity(a["pose"], a["valid"]))
    for k in ("au45", "eye_long", "eye_blink", "valid"):
        out[k] = torch.from_numpy(a[k].astype(np.float32))
    out["subject"] = torch.tensor(info.subject_index, dtype=torch.int64)
    out["start"] = torch.tensor(0, dtype=torch.int64)
    if landmarks:
        out["landmarks"] = torch.from_numpy(a["landmarks"].astype(np.float32))
    return out


# ------------------------------------------------------------------------------ training windows
_MASK64 = (1 << 64) - 1


def _mix64(*words: int) -> int:
    """SplitMix64 over a few integers: a cheap, well-mixed 64-bit hash of (seed, epoch, index).

    Written out because a numpy Generator per item costs ~30 us; :func:`_mix64_array` is the same
    hash for many indices at once (tests/test_data.py checks they agree).
    """
    z = 0x9E3779B97F4A7C15
    for w in words:
        z = (z ^ (w & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        z ^= z >> 31
    return z


def _mix64_array(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """:func:`_mix64` ``(seed, epoch, i)`` for every ``i`` of ``index`` (uint64 arithmetic wraps
    modulo 2^64, as the masks of the scalar version do)."""
    z = np.full(index.shape, 0x9E3779B97F4A7C15, np.uint64)
    c1, c2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    for w in (np.uint64(seed & _MASK64), np.uint64(epoch & _MASK64), index.astype(np.uint64)):
        z ^= w
        z *= c1
        z ^= z >> np.uint64(30)
        z *= c1
        z ^= z >> np.uint64(27)
        z *= c2
        z ^= z >> np.uint64(31)
    return z


class WindowDataset(torch.utils.data.Dataset):
    """Random ``window``-frame training windows of one split, drawn uniformly among eligible
    windows.

    A window start ``s`` of a take is eligible when ``s + window <= N`` and at least
    ``min_valid_fraction`` of its frames are valid. Item ``i`` of epoch ``e`` is a pure function of
    ``(seed, e, i)`` (with replacement across items), so any worker order gives the same data.

    Item (all torch tensors; W = window, E = exp_dim, R = :attr:`mfcc_rows`, 463 for W = 128):
      mfcc_vocals, mfcc_music, mfcc_mix  float32 (R, 26)  the 100 Hz rows the window covers
      mfcc_index                         int64 (W,)      frame t's MFCC window: rows [i_t, i_t + 39)
      exp (W, E), pose (W, 6), pose_vel (W, 6)           float32
      au45, eye_long, eye_blink, valid (W,)              float32
      subject, start                                     int64 ()

    The model cuts the (W, 39, 26) windows on its device (module docstring, ``MusicFace.windows``).
    Multi-worker DataLoaders: files are opened lazily per process (never shared across fork) and
    each process keeps an LRU cache of whole takes (``cache_mb``, without landmarks) so a window is
    a few block copies from memory, not an HDF5 read. Batches: ``DataLoader(ds, batch_size=B,
    collate_fn=musicface.data.collate)`` fills each batch in place (``__getitems__``: the hash,
    the MFCC index and the pose velocity for the whole batch at once, then one block copy per
    array and window); the default collate_fn works too. ``pin_memory``: batches filled in the main
    process are allocated in page-locked memory (CUDA only) so that ``.to(device,
    non_blocking=True)`` copies them asynchronously without another copy (bench/reader.py
    measures the reader).
    ``mfcc_keys``: the MFCC streams items carry (default all three; a model reads two, or only the
    mix: ``musicface.train`` asks for those).
    """

    def __init__(self, shards, split: str = "train", window: int = 128,
                 samples_per_epoch: int | None = None, seed: int = 0,
                 min_valid_fraction: float = 0.9, cache_mb: float = 2048, pin_memory: bool = False,
                 mfcc_keys: tuple[str, ...] = MFCC_KEYS):
        self.shards = _as_shardset(shards)
        self.split, self.window, self.seed = split, int(window), int(seed)
        self.min_valid_fraction, self.cache_bytes = float(min_valid_fraction), int(cache_mb * 2**20)
        self.pin_memory = bool(pin_memory)
        unknown = sorted(set(mfcc_keys) - set(MFCC_KEYS))
        if unknown or not mfcc_keys:
            raise ValueError(f"mfcc_keys must be a non-empty subset of {MFCC_KEYS}, "
                             f"got {mfcc_keys}")
        self.mfcc_keys = tuple(k for k in MFCC_KEYS if k in mfcc_keys)
        self.mfcc_rows = mfcc_span(self.window, self.shards.fps, self.shards.mfcc_rate)
        self.epoch = 0
        infos = self.shards.takes(split)
        if not infos:
            raise ShardError(f"{self.shards.root}: no '{split}' takes in the shard set")
        need = math.ceil(self.min_valid_fraction * self.window - 1e-9)
        self.infos, starts, n_rows = [], [], []
        for info in infos:  # eligible starts from the valid masks (N bytes per take)
            with h5py.File(info.shard, "r") as f:
                g = f["takes"][info.take]
                valid, m = g["valid"][()], g["mfcc_mix"].shape[0]
            if len(valid) < self.window:
                continue
            c = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
            counts = c[self.window:] - c[:-self.window]
            eligible = np.flatnonzero(counts >= need).astype(np.int64)
            if len(eligible):
                self.infos.append(info)
                starts.append(eligible)
                n_rows.append(m)
        if not self.infos:
            raise ShardError(f"{self.shards.root}: no '{split}' take has a {self.window}-frame "
                             f"window with >= {self.min_valid_fraction:.0%} valid frames")
        self.cum = np.concatenate([[0], np.cumsum([len(s) for s in starts])])
        self.n_windows = int(self.cum[-1])
        self._flat_starts = np.concatenate(starts)  # window g of the epoch's draw starts here
        self.starts = np.split(self._flat_starts, self.cum[1:-1])  # per take (views)
        self._subject_index = np.array([info.subject_index for info in self.infos], np.int64)
        self._n_rows = np.array(n_rows, np.int64)  # MFCC rows M of each take
        self.samples_per_epoch = int(samples_per_epoch or max(1, self.n_windows // self.window))
        self._pid, self._files, self._cache, self._cached = None, {}, collections.OrderedDict(), 0

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self):  # workers get metadata only, never open handles or the cache
        state = self.__dict__.copy()
        state.update(_pid=None, _files={}, _cache=collections.OrderedDict(), _cached=0)
        return state

    def _locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Item indices -> (positions in ``self.infos``, start frames) for the current epoch."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.samples_per_epoch)]
        if len(bad):
            raise IndexError(f"index {bad[0]} out of range for {self.samples_per_epoch} samples")
        g = (_mix64_array(self.seed, self.epoch, idx) % np.uint64(self.n_windows)).astype(np.int64)
        return np.searchsorted(self.cum, g, side="right") - 1, self._flat_starts[g]

    def locate(self, index: int) -> tuple[int, int]:
        """``index`` -> (position in ``self.infos``, start frame) for the current epoch."""
        k, s = self._locate([index])
        return int(k[0]), int(s[0])

    def _take(self, k: int) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():  # first use in this process (or after a fork): start fresh
            self._pid, self._files, self._cache, self._cached = (os.getpid(), {},
                                                                 collections.OrderedDict(), 0)
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        info = self.infos[k]
        if info.shard not in self._files:
            self._files[info.shard] = h5py.File(info.shard, "r")
        a = _read_take(info.shard, info.take, self.mfcc_keys + FRAME_KEYS, self._files[info.shard])
        for key in self.mfcc_keys:  # padded so that rows [c, c + R) exist for every centre row c
            a[key] = padded_rows(a[key], after=self.mfcc_rows - MFCC_WIDTH // 2 - 1)
        a["au45"], a["eye_long"] = a["au45"].astype(np.float32), a["eye_long"].astype(np.float32)
        a["eye_blink"], a["valid_f"] = (a["eye_blink"].astype(np.float32),
                                        a["valid"].astype(np.float32))
        size = sum(v.nbytes for v in a.values() if isinstance(v, np.ndarray))
        a["size"] = size
        while self._cache and self._cached + size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached -= old["size"]
        self._cache[k] = a
        self._cached += size
        return a

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        """Output arrays for ``n`` windows. Inside a DataLoader worker a batch lives in shared
        memory (as default_collate's does), so it reaches the main process without another copy; in
        the main process with ``pin_memory`` (and CUDA) in page-locked memory."""
        w, e, f32 = self.window, self.shards.exp_dim, np.float32
        shapes = {**{k: ((n, self.mfcc_rows, MFCC_DIM), f32) for k in self.mfcc_keys},
                  "mfcc_index": ((n, w), np.int64),
                  "exp": ((n, w, e), f32), "pose": ((n, w, 6), f32), "pose_vel": ((n, w, 6), f32),
                  **{k: ((n, w), f32) for k in ("au45", "eye_long", "eye_blink", "valid")},
                  "subject": ((n,), np.int64), "start": ((n,), np.int64)}
        if n > 1 and torch.utils.data.get_worker_info() is not None:
            return {k: _shared_tensor(shape, dtype).numpy() for k, (shape, dtype) in shapes.items()}
        if self.pin_memory and torch.cuda.is_available():
            return {k: torch.empty(shape, dtype=_TORCH_DTYPE[dtype], pin_memory=True).numpy()
                    for k, (shape, dtype) in shapes.items()}
        return {k: np.empty(shape, dtype) for k, (shape, dtype) in shapes.items()}

    def _fill(self, indices, out: dict[str, np.ndarray]) -> None:
        """Write items ``indices`` into the output arrays (numpy views of :meth:`_empty`)."""
        ks, starts = self._locate(indices)
        w, r = self.window, self.mfcc_rows
        centres = mfcc_centres(starts, w, self._n_rows[ks], self.shards.fps, self.shards.mfcc_rate)
        np.subtract(centres, centres[:, :1], out=out["mfcc_index"])
        prev_pose, prev_valid = np.zeros((len(ks), 6), np.float32), np.zeros(len(ks), bool)
        for j, (k, s, c) in enumerate(zip(ks.tolist(), starts.tolist(), centres[:, 0].tolist())):
            a, e = self._take(k), s + w
            for key in self.mfcc_keys:  # padded rows: [c, c + R) are the take's rows c - 19 ..
                out[key][j] = a[key][c:c + r]
            out["exp"][j] = a["exp"][s:e]
            out["pose"][j] = a["pose"][s:e]
            for key in ("au45", "eye_long", "eye_blink"):
                out[key][j] = a[key][s:e]
            out["valid"][j] = a["valid_f"][s:e]
            if s > 0:
                prev_pose[j], prev_valid[j] = a["pose"][s - 1], a["valid"][s - 1]
        # pose velocity as _pose_velocity computes it, for the whole batch
        pose, vel, valid = out["pose"], out["pose_vel"], out["valid"] > 0
        np.subtract(pose[:, 1:], pose[:, :-1], out=vel[:, 1:])
        np.subtract(pose[:, 0], prev_pose, out=vel[:, 0])
        ok = valid.copy()
        ok[:, 1:] &= valid[:, :-1]
        ok[:, 0] &= prev_valid
        vel[~ok] = 0
        out["subject"][...] = self._subject_index[ks]
        out["start"][...] = starts

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out = self._empty(1)
        self._fill([index], out)
        return {k: torch.from_numpy(v[0, ...]) for k, v in out.items()}

    def __getitems__(self, indices) -> "_Batch":
        """DataLoader's batched fetch: fills one stacked batch. With
        ``collate_fn=musicface.data.collate`` that batch is used as is; the default collate_fn
        stacks the per-item views again (same numbers, one more copy)."""
        out = self._empty(len(indices))
        self._fill(indices, out)
        return _Batch({k: torch.from_numpy(v) for k, v in out.items()}, len(indices))

    def take_of(self, index: int) -> TakeInfo:
        """The take that item ``index`` of the current epoch comes from."""
        return self.infos[self.locate(index)[0]]


_TORCH_DTYPE = {np.float32: torch.float32, np.int64: torch.int64}


def _shared_tensor(shape, dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory, allocated as torch.utils.data.default_collate
    does."""
    proto = torch.from_numpy(np.empty(0, dtype))
    storage = proto._typed_storage()._new_shared(math.prod(shape))
    return proto.new(storage).resize_(*shape)


class _Batch(collections.abc.Sequence):
    """What :meth:`WindowDataset.__getitems__` returns: a sequence of items (views into the batch,
    made when asked for) that any collate_fn understands, plus ``stacked``, the batch itself, for
    :func:`collate` (making the 13 views of 256 items up front took a third of the reader's
    time)."""

    def __init__(self, stacked: dict[str, torch.Tensor], n: int):
        self.stacked, self.n = stacked, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(self.n))]
        if not -self.n <= j < self.n:
            raise IndexError(f"item {j} of a batch of {self.n}")
        return {k: v[j] for k, v in self.stacked.items()}


def collate(batch):
    """``collate_fn`` for DataLoaders over a :class:`WindowDataset`: the batch already stacked by
    ``__getitems__`` (saves one copy of ~1.5 MB per window); anything else -> default_collate."""
    if isinstance(batch, _Batch):
        return batch.stacked
    return torch.utils.data.default_collate(batch)


# --------------------------------------------------------------------------------- inspect (CLI)
def summarize(shards) -> dict:
    """Numbers of a shard set: takes, hours, subjects, valid frames, and the blink statistics
    (``preprocessing.eyes.blink_stats`` keys: rates per valid second, NaN where undefined)."""
    shards = _as_shardset(shards)
    fps = shards.fps
    per_subject = collections.defaultdict(lambda: {"takes": 0, "hours": 0.0})
    frames = valid_frames = 0
    events = [np.zeros((0, 4))]
    for info in shards.takes():
        a = _read_take(info.shard, info.take, ("valid", "eye_blink", "eye_long"))
        frames += info.n_frames
        valid_frames += int(a["valid"].sum())
        for kind, key in ((0, "eye_blink"), (1, "eye_long")):  # the closure events of the take
            r = runs(a[key] > 0)
            events.append(np.c_[r, (r[:, 1] - r[:, 0]) / fps, np.full(len(r), kind)])
        per_subject[info.subject]["takes"] += 1
        per_subject[info.subject]["hours"] += info.n_frames / fps / 3600
    eyes = blink_stats(np.concatenate(events), valid_frames, fps)
    del eyes["durations_s"], eyes["seconds"]
    return {
        "path": str(shards.root), "files": len(shards.files), "takes": len(shards),
        "train_takes": len(shards.takes("train")), "test_takes": len(shards.takes("test")),
        "hours": frames / fps / 3600, "subjects": shards.subjects, "exp_dim": shards.exp_dim,
        "per_subject": {s: {"takes": v["takes"], "hours": v["hours"]}
                        for s, v in sorted(per_subject.items())},
        "frames": frames, "valid_fraction": valid_frames / frames if frames else 0.0, **eyes,
        "config_sha": shards.config_sha,
    }


def _qc_failures(root: Path) -> list[dict] | None:
    """Failed takes from ``qc.tsv`` beside the shard folder (``dataset/qc.tsv``), if present."""
    qc = (root.parent if root.is_dir() else root.parent.parent) / "qc.tsv"
    if not qc.exists():
        return None
    import pandas as pd

    df = pd.read_csv(qc, sep="\t", dtype=str, keep_default_na=False)
    return df[df["status"] != "pass"].to_dict("records")


def main(argv: list[str] | None = None) -> int:
    """``musicface inspect PATH [--json]``."""
    ap = argparse.ArgumentParser(prog="musicface inspect", description="Summarise a shard set.")
    ap.add_argument("path", help="shard folder (dataset/shards) or one .h5 file")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args(argv)
    try:
        s = summarize(a.path)
    except (ShardError, OSError) as e:
        print(f"musicface inspect: {e}", file=sys.stderr)
        return 1
    fails = _qc_failures(Path(a.path))
    s["qc_failures"] = fails
    if a.json:
        null = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in s.items()}
        print(json.dumps(null, indent=2))
        return 0
    print(f"shard set   {s['path']} ({s['files']} files, config {s['config_sha']})")
    print(f"takes       {s['takes']} ({s['train_takes']} train, {s['test_takes']} test), "
          f"{s['hours']:.3f} h = {s['hours'] * 60:.1f} min")
    print(f"subjects    {len(s['subjects'])}, exp_dim {s['exp_dim']}")
    for i, name in enumerate(s["subjects"]):
        p = s["per_subject"].get(name, {"takes": 0, "hours": 0.0})
        print(f"  [{i}] {name}: {p['takes']} takes, {p['hours'] * 60:.1f} min")
    print(f"valid       {s['valid_fraction']:.1%} of {s['frames']} frames")
    print(f"blinks      {s['n_blinks']} ({s['blinks_per_s']:.2f}/s, "
          f"mean {s['blink_duration_s']:.2f} s)")
    print(f"long closes {s['n_long']} (mean {s['long_duration_s']:.2f} s)")
    if fails is None:
        print("qc          (no qc.tsv beside the shards)")
    else:
        print(f"qc failures {len(fails)}")
        for r in fails:
            print(f"  {r['take']} ({r['subject']}, {r['song']}): {r['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
