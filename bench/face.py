"""Benchmark of the face branch (track + AU45 [+ coeffs when present]): speed per core, peak memory.

    python bench/face.py                   # speed at 480p/720p/1080p, memory of a 10-min 1080p take
    python bench/face.py --long-minutes 0  # speed only

Inputs are made from a demo take (``preprocessing.demo``, generated into a temp folder): each demo
frame (640x480) is scaled by ``height / 480`` and centred in a 16:9 canvas of 854x480, 1280x720 or
1920x1080, so the face covers the same share of the frame at every resolution.

Speed: ``fps_per_core`` = video frames / CPU seconds (user + system, all threads of this process),
i.e. what one core sustains; ``realtime_per_core`` = that / 30 (the bar for the whole
preprocessing is >= 2x real time per core, docs/testing.md). ``wall_fps`` is shown too.

Memory: the ``track`` and ``au45`` CLIs run as child processes on a short (30 s) and a long
(``--long-minutes``, default 10) take at ``--memory-size`` (default 1080p; the bar, docs/testing.md:
a 10-minute 1080p take stays under 1.5 GB); their peak RSS is the kernel's high-water mark
(VmHWM), read every 0.1 s: peak memory must not grow with take length (beyond the output arrays,
5.7 kB per frame for track.npz).

Prints one JSON object on stdout (progress goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocessing.common import save_json
from preprocessing.media import iter_frames, write_video

REPO = Path(__file__).resolve().parents[1]

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


def log(msg: str) -> None:
    print(f"[bench/face] {msg}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def placed(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Demo frame scaled by height/480 and centred in a (width, height) canvas."""
    from PIL import Image

    w, h = size
    s = h / frame.shape[0]
    img = Image.fromarray(frame)
    if s != 1:
        img = img.resize((int(round(frame.shape[1] * s)), h), Image.BILINEAR)
    a = np.asarray(img)
    out = np.zeros((h, w, 3), np.uint8)
    x0 = (w - a.shape[1]) // 2
    out[:, x0:x0 + a.shape[1]] = a
    return out


def make_video(take: Path, out: Path, size, n_frames: int, preset: str = "veryfast") -> None:
    """``n_frames`` of the demo take (looped, streamed) placed in a canvas of ``size``."""
    def frames():
        i = 0
        while True:
            for _, f in iter_frames(take):
                if i == n_frames:
                    return
                yield placed(f, size)
                i += 1

    write_video(out, frames(), crf=23, preset=preset)


def speed(video: Path, n: int) -> dict:
    from preprocessing.au45 import compute_au45
    from preprocessing.track import track_video

    res = {}
    c0, t0 = cpu_seconds(), time.perf_counter()
    track = track_video(str(video), n, progress=False)
    c1, t1 = cpu_seconds(), time.perf_counter()
    compute_au45("builtin", n_frames=n, track=track)
    c2, t2 = cpu_seconds(), time.perf_counter()
    res["track"] = {"fps_per_core": n / (c1 - c0), "wall_fps": n / (t1 - t0),
                    "valid_fraction": float(track["valid"].mean())}
    res["au45"] = {"fps_per_core": n / max(c2 - c1, 1e-9), "wall_fps": n / max(t2 - t1, 1e-9)}
    try:
        from preprocessing.coeffs import builtin_coeffs
    except ImportError:
        builtin_coeffs = None
    cpu_total = c2 - c0
    if builtin_coeffs is not None:
        c3, t3 = cpu_seconds(), time.perf_counter()
        builtin_coeffs(track["landmarks"], track["valid"], track["frame_size"],
                       track["interpolated"])
        c4, t4 = cpu_seconds(), time.perf_counter()
        res["coeffs"] = {"fps_per_core": n / max(c4 - c3, 1e-9), "wall_fps": n / max(t4 - t3, 1e-9)}
        cpu_total += c4 - c3
    res["branch_fps_per_core"] = n / cpu_total
    res["branch_realtime_per_core"] = n / cpu_total / 30
    res["steps"] = [k for k in ("track", "au45", "coeffs") if k in res]
    return res


def _hwm_bytes(pid: int) -> int:
    """VmHWM (peak resident set of the process's own address space) from /proc, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_memory(cmd: list[str]) -> dict:
    """Run ``cmd``; its peak RSS in MB: the kernel's high-water mark VmHWM read every 0.1 s (only
    the last 0.1 s before exit can escape it). ``ru_maxrss`` is not used: Linux carries the parent's
    (this benchmark's) peak over into a child's."""
    t0 = time.perf_counter()
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _hwm_bytes(proc.pid))
        time.sleep(0.1)
    err.seek(0)
    text = err.read()
    if proc.returncode != 0 or "musicface: take" in text:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-2000:]}")
    return {"peak_rss_mb": peak / 2**20, "wall_s": time.perf_counter() - t0}


def memory(tmp: Path, take: Path, minutes: float, size: str = "1080p") -> dict:
    out = {}
    for label, seconds in (("30s", 30), (f"{minutes:g}min", minutes * 60)):
        n = int(round(seconds * 30))
        video = tmp / f"take_{label}.mp4"
        log(f"writing {label} {size} take ({n} frames)")
        t0 = time.perf_counter()
        make_video(take, video, SIZES[size], n, preset="ultrafast")
        log(f"  written in {time.perf_counter() - t0:.0f} s")
        save_json(tmp / f"ingest_{label}.json", {"n_frames": n})
        track_out, au_out = tmp / f"track_{label}.npz", tmp / f"au45_{label}.npz"
        py = sys.executable
        log(f"track on {label}")
        tr = peak_memory([py, "-m", "preprocessing.track", "--take", label, "--video", str(video),
                          "--ingest", str(tmp / f"ingest_{label}.json"), "--out", str(track_out)])
        log(f"au45 on {label}")
        au = peak_memory([py, "-m", "preprocessing.au45", "--take", label, "--video", str(video),
                          "--ingest", str(tmp / f"ingest_{label}.json"), "--track", str(track_out),
                          "--backend", "builtin", "--out", str(au_out)])
        with np.load(track_out) as z:
            valid = float(z["valid"].mean())
        out[label] = {"n_frames": n, "track": tr, "au45": au, "valid_fraction": valid,
                      "track_realtime_wall": n / 30 / tr["wall_s"]}
        video.unlink()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=12, help="length of the speed inputs (s)")
    p.add_argument("--long-minutes", type=float, default=10, help="long take for memory; 0 = skip")
    p.add_argument("--memory-size", choices=list(SIZES), default="1080p",
                   help="frame size of the memory takes")
    p.add_argument("--demo", type=Path, default=None,
                   help="an existing demo folder (else generated)")
    a = p.parse_args(argv)
    os.chdir(REPO)  # children run `python -m preprocessing.*`

    with tempfile.TemporaryDirectory(prefix="bench-face-") as tmp:
        tmp = Path(tmp)
        demo = a.demo
        if demo is None:
            from preprocessing.demo import generate

            log("generating a demo take")
            demo = tmp / "demo"
            generate(demo, subjects=1, songs=1, seconds=max(a.seconds, 8), seed=0)
        take = sorted(Path(demo).glob("singer*/*.mp4"))[0]
        result = {"cpu": os.cpu_count(), "demo_take": take.name, "speed": {}}
        n = int(round(a.seconds * 30))
        for name, size in SIZES.items():
            video = tmp / f"speed_{name}.mp4"
            make_video(take, video, size, n)
            log(f"speed at {name}")
            result["speed"][name] = {"size": list(size), "n_frames": n, **speed(video, n)}
            video.unlink()
        if a.long_minutes > 0:
            result[f"memory_{a.memory_size}"] = memory(tmp, take, a.long_minutes, a.memory_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
