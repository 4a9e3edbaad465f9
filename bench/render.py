"""Renderer speed and memory (JSON on stdout): condition rasterisation, frame storage, training
step, rendering, peak memory against song length.

    .venv/bin/python bench/render.py [--sizes 128 256] [--quick]

* ``raster``: condition frames/s (:func:`musicface.raster.conditions`: mesh from (exp, pose) with a
  64-component basis + z-buffer + eye fans), one core, and the bare z-buffer (852 triangles) in ms;
* ``storage``: 10 s of demo-singer frames (``preprocessing.demo``'s renderer, 30 fps) cut to the
  face and stored four ways: MB per video minute, frames/s read back in random order (HDF5) or in
  order (H.264, which has no random access), PSNR of what comes back;
* ``train_step_s``: one renderer training step (G + D, batch 4) at each size, demo widths
  (channels 16, disc 16) and default widths (32, 32), torch threads = ``--threads``; ``_cpu_s``: the
  process's CPU seconds for it (steadier than wall time on a shared machine);
* ``render_fps``: generator frames/s (batch 16) at each size, both widths (and per CPU second);
* ``memory``: peak RSS of rendering a 30 s and a 5 min parameter sequence (tiny network, streamed).
``load`` holds /proc/loadavg before and after: numbers are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def bench_raster(sizes) -> dict:
    from musicface import raster as R
    from preprocessing.landmarks import load_reference

    ref = load_reference()["shape"]
    rng = np.random.default_rng(0)
    basis = {
        "mean": np.zeros(1434, np.float32),
        "components": rng.normal(0, 0.01, (64, 1434)).astype(np.float32),
    }
    out = {}
    for size in sizes:
        geo = R.Geometry(identity=ref, frame_size=(640, 480), box=(130.0, 50.0, 380.0))
        n = 300
        pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, math.log(0.2)], (n, 1)) + rng.normal(
            0, 0.03, (n, 6)
        )
        exp, eye = rng.normal(0, 1, (n, 64)), rng.uniform(0, 1, n)
        R.conditions(exp[:2], pose[:2], eye[:2], geo, basis, size)  # compile
        t = time.perf_counter()
        R.conditions(exp, pose, eye, geo, basis, size)
        fps = n / (time.perf_counter() - t)
        xy = np.stack([ref[:468, 0], -ref[:468, 1]], 1) * size / 4 + size / 2
        tri = R.facemesh_triangles()
        attrs = np.ones((468, 4), np.float32)
        t = time.perf_counter()
        for _ in range(100):
            R.rasterize(xy, ref[:468, 2], tri, attrs, size)
        out[str(size)] = {
            "conditions_fps": round(fps, 1),
            "zbuffer_ms": round((time.perf_counter() - t) * 10, 3),
        }
    return out


def demo_frames(n: int, size: int) -> np.ndarray:
    from preprocessing.demo import FaceRenderer, subject_style
    from preprocessing.media import crop_square

    r = FaceRenderer(subject_style(0, 1))
    t = np.arange(n) / 30
    frames = []
    for i in range(n):
        pose = np.array(
            [0.05 * np.sin(t[i]), 0.1 * np.sin(0.7 * t[i]), 0.1 * np.sin(0.5 * t[i]), 0, 0, 0]
        )
        rgb = r.render(pose, 0.5 + 0.5 * np.sin(6 * t[i]), float(i % 45 < 5))
        frames.append(crop_square(rgb, 130, 40, 380, size))
    return np.stack(frames)


def bench_storage(size: int, n: int) -> dict:
    import av
    import h5py

    from musicface.render_data import decode_jpeg, encode_jpeg
    from preprocessing.media import iter_frames, write_video

    frames = demo_frames(n, size)
    minutes = n / 30 / 60
    order = np.random.default_rng(0).permutation(n)
    out = {}

    def psnr(a, b):
        return float(10 * np.log10(255**2 / max(np.mean((a.astype(float) - b) ** 2), 1e-12)))

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, enc, dec in (
            ("jpeg_q95_hdf5", lambda x: encode_jpeg(x, 95), decode_jpeg),
            ("jpeg_q90_hdf5", lambda x: encode_jpeg(x, 90), decode_jpeg),
            ("png_hdf5", None, None),
        ):
            import cv2

            if name == "png_hdf5":

                def enc(x):
                    return cv2.imencode(".png", x[..., ::-1])[1].reshape(-1)

                def dec(b):
                    return cv2.imdecode(b, cv2.IMREAD_COLOR)[..., ::-1]

            p = d / f"{name}.h5"
            with h5py.File(p, "w") as f:
                ds = f.create_dataset("frames", (n,), dtype=h5py.vlen_dtype(np.uint8))
                for i, x in enumerate(frames):
                    ds[i] = enc(x)
            with h5py.File(p, "r") as f:
                ds = f["frames"]
                t = time.perf_counter()
                back = {int(i): dec(ds[int(i)]) for i in order}
                fps = n / (time.perf_counter() - t)
            out[name] = {
                "mb_per_min": round(p.stat().st_size / 1e6 / minutes, 2),
                "read_fps": round(fps),
                "psnr_db": round(
                    float(np.mean([psnr(back[i], frames[i]) for i in range(0, n, 10)])), 1
                ),
                "random_access": True,
            }
        p = d / "raw.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset(
                "frames",
                data=frames,
                chunks=(1, size, size, 3),
                compression="gzip",
                compression_opts=1,
            )
        with h5py.File(p, "r") as f:
            ds = f["frames"]
            t = time.perf_counter()
            for i in order:
                ds[int(i)]
            fps = n / (time.perf_counter() - t)
        out["raw_gzip1_hdf5"] = {
            "mb_per_min": round(p.stat().st_size / 1e6 / minutes, 2),
            "read_fps": round(fps),
            "psnr_db": None,
            "random_access": True,
        }
        p = d / "h264.mp4"
        write_video(p, iter(frames), crf=18)
        t = time.perf_counter()
        back = [rgb for _, rgb in iter_frames(p, n_frames=n)]
        fps = n / (time.perf_counter() - t)
        out["h264_crf18_mp4"] = {
            "mb_per_min": round(p.stat().st_size / 1e6 / minutes, 2),
            "read_fps": round(fps),
            "psnr_db": round(
                float(np.mean([psnr(back[i], frames[i]) for i in range(0, n, 10)])), 1
            ),
            "random_access": False,
        }
        with av.open(str(p)):
            pass
    return out


def bench_network(sizes, threads: int, steps: int = 3) -> dict:
    import torch

    from musicface.renderer import (
        Generator,
        MultiScaleDiscriminator,
        RendererConfig,
        discriminator_loss,
        generator_losses,
    )

    torch.set_num_threads(threads)
    out = {}
    for size in sizes:
        for label, kw in (
            ("demo_widths", dict(channels=16, disc_channels=16)),
            ("default_widths", {}),
        ):
            cfg = RendererConfig(size=size, **kw)
            G, D = Generator(cfg), MultiScaleDiscriminator(cfg)
            og, od = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
            b = 4
            cond, ref = (
                torch.rand(b, cfg.cond_channels, size, size),
                torch.rand(b, 3, size, size) * 2 - 1,
            )
            real = torch.rand(b, 3, size, size) * 2 - 1
            times, cpu = [], []
            for _ in range(steps + 1):
                t, c = time.perf_counter(), time.process_time()
                fake = G(cond, ref)
                od.zero_grad()
                discriminator_loss(D, cond, fake, real, cfg).backward()
                od.step()
                og.zero_grad()
                generator_losses(D, cond, fake, real, cfg)["total"].backward()
                og.step()
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            G.eval()
            with torch.no_grad():
                x = torch.rand(16, cfg.cond_channels, size, size)
                r = torch.rand(16, 3, size, size)
                G(x, r)
                t, c = time.perf_counter(), time.process_time()
                G(x, r)
                fps, fps_cpu = 16 / (time.perf_counter() - t), 16 / (time.process_time() - c)
            out[f"{size}_{label}"] = {
                "train_step_s": round(float(np.median(times[1:])), 3),
                "train_step_cpu_s": round(float(np.median(cpu[1:])), 3),
                "batch": b,
                "render_fps": round(fps, 1),
                "render_fps_per_cpu_s": round(fps_cpu, 1),
                "g_params": sum(p.numel() for p in G.parameters()),
                "d_params": sum(p.numel() for p in D.parameters()),
            }
    return out


MEMORY_CHILD = r"""
import math, resource, sys, tempfile
import numpy as np
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[2] + "/tests")
from pathlib import Path
from test_render_train import _tiny_renderer
from musicface.renderer import load_renderer
from musicface.render import render_params
d = Path(tempfile.mkdtemp())
_tiny_renderer(d / "r.pt", size=64)
r = load_renderer(d / "r.pt")
n = int(sys.argv[1])
rng = np.random.default_rng(0)
exp = rng.normal(0, 1, (n, 4))
pose = np.tile([0, 0, 0, 0, 0, math.log(0.4)], (n, 1))
eye = np.zeros(n)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = sum(1 for _ in render_params(r, exp, pose, eye))
print(count, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory() -> dict:
    out = {}
    for seconds in (30, 300):
        n = seconds * 30
        p = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(n), str(REPO)],
            capture_output=True,
            text=True,
            check=True,
        )
        count, base, peak = (int(v) for v in p.stdout.split())
        out[f"{seconds}s"] = {
            "frames": count,
            "peak_rss_mb": round(peak / 1024, 1),
            "growth_during_render_mb": round((peak - base) / 1024, 1),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="fewer frames in the storage test")
    a = ap.parse_args()
    result = {"load_before": loadavg(), "threads": a.threads}
    result["raster"] = bench_raster(a.sizes)
    result["storage"] = {str(s): bench_storage(s, 150 if a.quick else 300) for s in a.sizes}
    result["network"] = bench_network(a.sizes, a.threads)
    result["memory"] = bench_memory()
    result["load_after"] = loadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
