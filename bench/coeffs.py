"""Benchmark of the coeffs step: speed per core, peak memory (builtin), fit-basis, deep3d inference.

    python bench/coeffs.py                        # all parts (a few minutes on 2 cores)
    python bench/coeffs.py --skip-deep3d --long-minutes 0

Inputs are synthetic track.npz files (the reference face under random poses and a jaw opening,
projected into a 1280 x 720 frame with 0.3 px noise): the builtin backend's cost depends only on the
number of frames, not on the video.

* ``builtin.fps_per_core`` = frames / CPU seconds (user + system) of ``builtin_coeffs`` on a
  ``--minutes`` take; ``realtime_per_core`` = that / 30 (the bar for all preprocessing: >= 2,
  docs/testing.md).
* ``memory``: the ``extract`` CLI in a child process on a 1-minute and a ``--long-minutes`` take;
  ``peak_rss_mb`` = the child's ru_maxrss (must not grow much with take length: inputs/outputs
  themselves are ~12 MB per minute of track.npz + ~20 MB per minute of coeffs.npz).
* ``fit_basis.s_per_1000_frames``: streaming covariance + top-E eigenvectors over ``--basis-takes``.
* ``deep3d.fps_per_core``: align + crop + ResNet-50 forward of 720p frames, batch 25, random weights
  in the real checkpoint format (speed does not depend on the weights).

Prints one JSON object on stdout (progress goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocessing import coeffs as C
from preprocessing.common import save_json, save_npz

REPO = Path(__file__).resolve().parents[1]

SIZE = (1280, 720)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def synthetic_track(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ref = C.load_reference()["shape"]
    out = np.empty((n, C.N_POINTS, 3), np.float32)
    lip_y = 0.5 * (ref[13, 1] + ref[14, 1])
    below = np.clip((lip_y - ref[:, 1]) / 0.3, 0, 1)
    for a in range(0, n, 4096):  # in blocks: the generator itself must not dominate memory
        m = min(4096, n - a)
        ang = rng.uniform(-0.4, 0.4, (m, 3))
        shape = np.repeat(ref[None], m, 0)
        shape[:, :, 1] -= rng.uniform(0, 0.3, m)[:, None] * below
        P = 0.15 * np.einsum("nij,nkj->nki", C.matrix_from_euler(ang), shape)
        P[:, :, :2] += rng.uniform(-0.2, 0.2, (m, 1, 2))
        out[a:a + m] = C.from_camera(P, SIZE) + rng.normal(0, 3e-4, (m, C.N_POINTS, 3))
    valid = np.ones(n, np.uint8)
    valid[rng.random(n) < 0.03] = 0
    out[~valid.astype(bool)] = np.nan
    return {"landmarks": out, "valid": valid, "interpolated": np.zeros(n, np.uint8),
            "frame_size": np.tile(np.array(SIZE, np.int32), (n, 1)),
            "bbox": np.zeros((n, 4), np.float32)}


def bench_builtin(minutes: float) -> dict:
    n = int(minutes * 60 * 30)
    tr = synthetic_track(n)
    c0, t0 = cpu(), time.perf_counter()
    C.builtin_coeffs(tr["landmarks"], tr["valid"], tr["frame_size"], tr["interpolated"])
    c1, t1 = cpu(), time.perf_counter()
    fps = n / max(c1 - c0, 1e-9)
    return {"frames": n, "fps_per_core": round(fps, 1), "realtime_per_core": round(fps / 30, 1),
            "wall_fps": round(n / (t1 - t0), 1)}


def bench_memory(minutes: float, tmp: Path) -> dict:
    n = int(minutes * 60 * 30)
    d = tmp / f"mem{minutes}"
    d.mkdir()
    save_npz(d / "track.npz", **synthetic_track(n, seed=1))
    save_json(d / "ingest.json",
              {"take": "bench", "n_frames": n, "width": SIZE[0], "height": SIZE[1], "fps": 30})
    code = ("import resource, sys; from preprocessing.coeffs import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    args = [sys.executable, "-c", code, "extract", "--take", "bench", "--track",
            str(d / "track.npz"), "--ingest", str(d / "ingest.json"), "--out",
            str(d / "coeffs.npz")]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return {"minutes": minutes, "frames": n,
            "peak_rss_mb": round(int(proc.stderr.split()[-1]) / 1024, 1), "wall_s": round(wall, 2),
            "track_npz_mb": round((d / "track.npz").stat().st_size / 2**20, 1),
            "coeffs_npz_mb": round((d / "coeffs.npz").stat().st_size / 2**20, 1)}


def bench_fit_basis(takes: int, frames: int, dim: int) -> dict:
    rows = []
    for k in range(takes):
        tr = synthetic_track(frames, seed=10 + k)
        rows.append(C.builtin_coeffs(tr["landmarks"], tr["valid"], tr["frame_size"])["residual"])
    c0 = cpu()
    basis = C.fit_pca(iter(rows), dim)
    c1 = cpu()
    total = int(basis["n_frames"])
    return {"takes": takes, "frames": total, "dim": dim, "cpu_s": round(c1 - c0, 2),
            "s_per_1000_frames": round(1000 * (c1 - c0) / total, 3)}


def bench_deep3d(frames: int, batch: int, tmp: Path) -> dict:
    import torch
    import torchvision

    from preprocessing import deep3d as D

    torch.manual_seed(0)
    sd = {f"backbone.{k}": v
          for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
          if not k.startswith("fc.")}
    for i, m in enumerate([80, 64, 80, 3, 27, 2, 1]):
        sd[f"final_layers.{i}.weight"] = torch.randn(m, 2048, 1, 1) * 0.02
        sd[f"final_layers.{i}.bias"] = torch.zeros(m)
    torch.save({"net_recon": sd}, tmp / "epoch_20.pth")
    net = D.load_net(tmp / "epoch_20.pth")
    tr = synthetic_track(frames, seed=3)
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)
    c0, t0 = cpu(), time.perf_counter()
    res = D.deep3d_coeffs(((i, rgb) for i in range(frames)), tr["landmarks"], tr["valid"], net,
                          batch_size=batch, progress=False)
    c1, t1 = cpu(), time.perf_counter()
    done = int(res["valid"].sum())
    return {"frames": done, "batch": batch, "torch_threads": torch.get_num_threads(),
            "fps_per_core": round(done / max(c1 - c0, 1e-9), 2),
            "wall_fps": round(done / (t1 - t0), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="take length for the speed run")
    ap.add_argument("--long-minutes", type=float, default=10.0,
                    help="long take for the memory run (0: skip)")
    ap.add_argument("--basis-takes", type=int, default=8)
    ap.add_argument("--basis-frames", type=int, default=1800)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--deep3d-frames", type=int, default=50)
    ap.add_argument("--skip-deep3d", action="store_true")
    a = ap.parse_args()
    out = {"builtin": bench_builtin(a.minutes)}
    print("builtin done", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.long_minutes > 0:
            out["memory"] = [bench_memory(1.0, tmp), bench_memory(a.long_minutes, tmp)]
            print("memory done", file=sys.stderr)
        out["fit_basis"] = bench_fit_basis(a.basis_takes, a.basis_frames, a.dim)
        print("fit_basis done", file=sys.stderr)
        if not a.skip_deep3d:
            out["deep3d"] = bench_deep3d(a.deep3d_frames, 25, tmp)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
