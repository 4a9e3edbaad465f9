"""`musicface render-data`: one take -> the renderer's training data (work/takes/<take>/render.h5).

    python -m musicface.cli render-data --take T --video V --ingest ingest.json --track track.npz \
        --coeffs coeffs.npz --qc qc.json --shards dataset/shards --basis dataset/exp_basis.npz \
        --size 128 --out work/takes/T/render.h5

* **Crop**: one square per take (a static camera, as the paper's recordings), from the tracked face
  boxes (``track.npz`` ``bbox``): the box spanning the 2nd .. 98th percentile of the boxes' edges
  over the valid frames, made square, ``PAD`` times its longer side, moved inside the frame when it
  fits (black beyond the frame otherwise), area-averaged to ``size`` px (:func:`take_box`).
* **Conditions**: from the *dataset's own* parameters, the shards' ``exp`` and eye state
  (``au45``, normalised closure) and the per-frame pose fit (``coeffs.npz`` ``pose_raw``: the
  shards' pose is smoothed for the motion model, ``coeffs.pose_sigma``), not from the raw tracker,
  so what the renderer sees in training is what generation gives it
  (:func:`musicface.raster.conditions`, with the take's identity shape from ``coeffs.npz`` and the
  expression basis). Frames without a tracked face are left out of training.
* **Frames**: JPEG (quality ``JPEG_QUALITY``, OpenCV) in an HDF5 variable-length dataset, one per
  frame.
  Chosen by measurement (``bench/render.py`` ``storage``; demo-singer frames, 30 fps, one core on a
  loaded machine): at 128 / 256 px JPEG q95 takes 14 / 38 MB per video minute, reads back in random
  order at ~2,300 / ~960 frames/s, 40 / 42 dB PSNR; raw uint8 (HDF5 gzip 1) 76 / 284 MB/min; PNG
  57 / 197 MB/min and slower to decode; H.264 (CRF 18) only 0.7 / 1.1 MB/min but without random
  access (every sampled training frame would decode its GOP). Conditions: uint8 ``(N, 4, S, S)``,
  one gzip chunk per frame, ~15 MB/min at 128 px (the PNCC gradient compresses poorly; drawing them
  again at each training step would cost ~13 ms of a ~60 ms sample instead).

render.h5: ``frames`` (N,) vlen uint8 (JPEG), ``cond`` u1 (N, 4, S, S), ``valid`` u1 (N,), ``eye``,
``exp``, ``pose`` (the per-frame fit), group ``geometry`` (``identity``, ``frame_size``, ``box``),
group ``basis`` (the expression basis' ``mean`` and ``components``, or deep3d's ``identity`` flag);
attributes ``take, subject, split, size, n_frames, version, backend``.
A take that failed QC gets a failure record (``skipped, upstream step 'qc' failed: ...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from preprocessing.common import (
    StepError,
    UpstreamFailed,
    atomic_path,
    load_json,
    load_npz,
    run_step,
)
from preprocessing.timebase import FPS

VERSION = 1
PAD = 1.3  # crop side / longer side of the take's face-box extent (landmark boxes are tight)
JPEG_QUALITY = 95


# ------------------------------------------------------------------------------------ crop
def take_box(
    bbox: np.ndarray, valid: np.ndarray, frame_size, pad: float = PAD
) -> tuple[int, int, int]:
    """(x0, y0, side) in frame pixels of the take's square crop (module docstring).

    ``bbox (N, 4)`` normalised x0, y0, x1, y1 (NaN where untracked), ``frame_size`` (W, H).
    """
    w, h = (float(v) for v in frame_size)
    b = np.asarray(bbox, np.float64)[np.asarray(valid).astype(bool)]
    b = b[np.isfinite(b).all(axis=1)]
    if not len(b):
        raise StepError("no tracked face box in any frame")
    x0, y0 = np.percentile(b[:, 0], 2) * w, np.percentile(b[:, 1], 2) * h
    x1, y1 = np.percentile(b[:, 2], 98) * w, np.percentile(b[:, 3], 98) * h
    side = int(round(pad * max(x1 - x0, y1 - y0)))
    side += side % 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx, by = cx - side / 2, cy - side / 2
    if side <= w:
        bx = min(max(bx, 0.0), w - side)
    if side <= h:
        by = min(max(by, 0.0), h - side)
    return int(round(bx)), int(round(by)), side


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.reshape(-1)


def decode_jpeg(buf: np.ndarray) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.asarray(buf, np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


# ------------------------------------------------------------------------------------ geometry
def take_geometry(coeffs: dict, frame_size, box):
    """The take's fixed geometry: identity shape (builtin) or median identity coefficients
    (deep3d)."""
    from musicface.raster import Geometry

    backend = str(np.asarray(coeffs["backend"]).item())
    ok = np.asarray(coeffs["valid"]).astype(bool)
    if backend == "deep3d":
        return Geometry(
            identity=np.median(coeffs["id"][ok], axis=0),
            frame_size=tuple(frame_size),
            box=box,
        )
    return Geometry(
        identity=np.asarray(coeffs["identity"], np.float64), frame_size=tuple(frame_size), box=box
    )


def load_bfm_for(basis: dict, bfm_dir) -> dict | None:
    """The BFM shape model + triangles when the coefficients are Deep3DFaceRecon's, else None."""
    from preprocessing.coeffs import _is_identity_basis

    if not _is_identity_basis(basis):
        return None
    from musicface.raster import bfm_triangles
    from preprocessing import deep3d

    try:
        bfm = deep3d.load_bfm(bfm_dir)
    except deep3d.MissingModelFiles as e:
        raise StepError(
            f"deep3d coefficients need the Basel Face Model for the renderer's mesh: {e}"
        ) from e
    bfm["tri"] = bfm_triangles()
    return bfm


# ------------------------------------------------------------------------------------ the step
def build(
    take: str,
    video,
    ingest_path,
    track_path,
    coeffs_path,
    qc_path,
    shards,
    basis_path,
    size: int,
    out,
    bfm_dir=None,
    progress: bool = True,
) -> dict:
    from tqdm import tqdm

    from musicface.data import open_shards, take_arrays
    from musicface.raster import conditions
    from preprocessing.media import crop_square, iter_frames

    qc = load_json(qc_path)
    if qc.get("status") != "pass":
        raise UpstreamFailed("qc", "; ".join(qc.get("reasons", [])) or "failed QC")
    ingest = load_json(ingest_path)
    track = load_npz(track_path)
    coeffs = load_npz(coeffs_path)
    basis = load_npz(basis_path)
    shardset = open_shards(shards)
    info = shardset.take(take)
    arr = {
        k: np.asarray(v)
        for k, v in take_arrays(shardset, take, landmarks=False).items()
        if k in ("exp", "pose", "au45", "valid")
    }
    n = int(ingest["n_frames"])
    if len(arr["valid"]) != n:
        raise StepError(
            f"the shards hold {len(arr['valid'])} frames of this take, ingest.json says {n}"
        )
    frame_size = (int(ingest["width"]), int(ingest["height"]))
    valid = arr["valid"].astype(bool)
    if "pose_raw" in coeffs:
        # the per-frame fit, not the pose smoothed for the motion model (coeffs.pose_sigma): the
        # conditions must sit where the face is in each frame (smoothed, the re-tracked mouth of a
        # rendered reconstruction followed the driving one with r 0.775 instead of 0.809)
        raw = np.asarray(coeffs["pose_raw"], np.float32)
        if raw.shape != arr["pose"].shape:
            raise StepError(f"coeffs.npz pose_raw has shape {raw.shape}, the shards' pose "
                            f"{arr['pose'].shape}")
        arr["pose"] = np.where(valid[:, None], raw, arr["pose"])
    box = take_box(track["bbox"], valid, frame_size)
    geo = take_geometry(coeffs, frame_size, box)
    bfm = load_bfm_for(basis, bfm_dir)
    cond = conditions(
        arr["exp"],
        arr["pose"],
        arr["au45"],
        geo,
        basis,
        size,
        valid=valid,
        bfm=bfm,
        progress=progress,
    )

    x0, y0, side = box
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            frames = f.create_dataset("frames", (n,), dtype=h5py.vlen_dtype(np.uint8))
            for i, rgb in tqdm(
                iter_frames(video, fps=FPS, n_frames=n),
                total=n,
                desc=f"render-data {take}",
                unit="frame",
                disable=not progress,
                mininterval=5,
            ):
                frames[i] = encode_jpeg(crop_square(rgb, x0, y0, side, size))
            f.create_dataset(
                "cond",
                data=cond,
                chunks=(1, *cond.shape[1:]),
                compression="gzip",
                compression_opts=1,
            )
            f.create_dataset("valid", data=valid.astype(np.uint8))
            f.create_dataset("eye", data=arr["au45"].astype(np.float32))
            f.create_dataset("exp", data=arr["exp"].astype(np.float32))
            f.create_dataset("pose", data=arr["pose"].astype(np.float32))
            g = f.create_group("geometry")
            for k, v in geo.to_dict().items():
                g.create_dataset(k, data=v)
            g = f.create_group(
                "basis"
            )  # what the conditions were built with (the renderer keeps it)
            for k in ("mean", "components", "identity"):
                if k in basis:
                    g.create_dataset(k, data=basis[k])
            f.attrs.update(
                take=take,
                subject=info.subject,
                split=info.split,
                size=size,
                n_frames=n,
                version=VERSION,
                backend=str(np.asarray(coeffs["backend"]).item()),
            )
    return {"take": take, "n_frames": n, "box": box, "valid": int(valid.sum())}


# ------------------------------------------------------------------------------------ reading
class RenderTake:
    """Reader of one render.h5: ``cond`` (an HDF5 dataset, read lazily), ``valid``, ``eye``,
    ``exp``, ``pose`` (arrays), ``frame(i)`` decodes one frame (uint8 RGB), ``geometry`` a dict,
    ``attrs``."""

    def __init__(self, path):
        from preprocessing.common import check_upstream

        self.path = Path(path)
        check_upstream(self.path)
        self._f = h5py.File(self.path, "r")
        f = self._f
        if int(f.attrs.get("version", -1)) != VERSION:
            raise StepError(
                f"{self.path}: render data version {f.attrs.get('version')}, expected {VERSION}"
            )
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        self.take, self.subject, self.split = (
            str(self.attrs[k]) for k in ("take", "subject", "split")
        )
        self.size, self.n = int(self.attrs["size"]), int(self.attrs["n_frames"])
        self.cond = f["cond"]
        self.valid = f["valid"][()].astype(bool)
        self.eye, self.exp, self.pose = f["eye"][()], f["exp"][()], f["pose"][()]
        self.geometry = {k: f["geometry"][k][()] for k in f["geometry"]}

    def frame(self, i: int) -> np.ndarray:
        return decode_jpeg(self._f["frames"][int(i)])

    def frames(self, idx) -> np.ndarray:
        return np.stack([self.frame(i) for i in idx])

    def close(self):
        self._f.close()


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface render-data", description=__doc__.split("\n")[0])
    ap.add_argument("--take", required=True)
    ap.add_argument("--video", required=True)
    for k in ("ingest", "track", "coeffs", "qc", "shards", "basis"):
        ap.add_argument(f"--{k}", required=True)
    ap.add_argument("--size", type=int, default=256, help="frame side in pixels")
    ap.add_argument("--bfm-dir", default=None, help="Basel Face Model folder (deep3d coefficients)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    return run_step(
        "render_data",
        a.take,
        [a.out],
        lambda: build(
            a.take,
            a.video,
            a.ingest,
            a.track,
            a.coeffs,
            a.qc,
            a.shards,
            a.basis,
            a.size,
            a.out,
            bfm_dir=a.bfm_dir,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
