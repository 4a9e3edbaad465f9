"""Sync under camera clock drift: confidence and offset error vs drift x take length; JSON lines.

    .venv/bin/python bench/sync_drift.py [--takes 30,120,300] [--ppm 0,20,50,100,200,500]
                                         [--offset 12.3456] [--cache /tmp/sync_drift]

Material: two synthetic demo songs (``preprocessing.demo.render_song``, seeds 3 and 4, 330 s,
44.1 kHz -> 16 kHz; cached as .npy under ``--cache``: rendering takes ~12 s CPU each). Their
accompaniment is a strict 4-bar loop, so any take also fits one loop away except for the vocals:
a hard case for an ambiguity-aware confidence. The camera (16 kHz, what ``camera_audio``
decodes to): camera sample ``n`` holds song time ``offset + n / sr x (1 + ppm 1e-6)`` (the song
4x polyphase-upsampled, then linearly interpolated: independent of the production resampler),
room reverb (RT60 0.3 s), brown room noise at 20 dB SNR, 0.5 peak gain.

Per (take length, drift) one JSON line: ``confidence`` and the plain pass's ``confidence_plain``,
``pass`` used, ``err_ms`` = offset_s - true song time of video frame 0 (``err_plain_ms``: the
plain pass's), ``drift_ppm`` measured,
``cpu_s`` of :func:`preprocessing.sync.gcc_phat_offset` on one core, and the confidence of the
same camera against the other song (``wrong``) and reversed (``reversed``).
"""
from __future__ import annotations

import os

os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                 "NUMBA_NUM_THREADS"), "1"))

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocessing.sync import SR, gcc_phat_offset


def demo_song(seed: int, seconds: float, cache: Path) -> np.ndarray:
    """Mix of demo song (seed, 1) at 16 kHz, cached."""
    path = cache / f"song_{seed}_{seconds:g}.npy"
    if not path.exists():
        from preprocessing.demo import render_song

        mix = render_song(seed, 1, seconds).mix.astype(np.float64)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, signal.resample_poly(mix, 160, 441).astype(np.float32))
    return np.load(path)


def drifted_camera(song: np.ndarray, offset_s: float, seconds: float, ppm: float, rng,
                   rt60: float = 0.3, snr_db: float = 20.0) -> np.ndarray:
    """``seconds`` of camera audio at SR whose sample n holds song time offset_s + n/SR (1 + ppm
    1e-6)."""
    n = int(seconds * SR)
    pos = (offset_s + np.arange(n) / SR * (1 + ppm * 1e-6)) * SR
    a, b = max(0, int(np.floor(pos[0])) - 64), min(len(song), int(np.ceil(pos[-1])) + 64)
    up = signal.resample_poly(song[a:b].astype(np.float64), 4, 1)
    x = np.interp((pos - a) * 4, np.arange(len(up)), up, left=0.0, right=0.0)
    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.04
    ir[:int(0.004 * SR)] = 0
    ir[0] = 1.0
    y = signal.fftconvolve(x, ir)[:n]
    y = 0.5 * y / np.abs(y).max()
    noise = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    y += noise / np.std(noise) * np.std(y) * 10 ** (-snr_db / 20)
    return y.astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--takes", default="30,120,300", help="take lengths, s")
    ap.add_argument("--ppm", default="0,20,50,100,200,500", help="camera clock drifts, ppm")
    ap.add_argument("--offset", type=float, default=12.3456, help="song time of video frame 0, s")
    ap.add_argument("--no-wrong", action="store_true", help="skip the wrong-song and reversed runs")
    ap.add_argument("--cache", default="/tmp/sync_drift")
    a = ap.parse_args(argv)
    takes = [float(v) for v in a.takes.split(",")]
    song_s = max(takes) + max(a.offset, 0) + 20
    right, wrong = demo_song(3, song_s, Path(a.cache)), demo_song(4, song_s, Path(a.cache))
    for take_s in takes:
        for ppm in (float(v) for v in a.ppm.split(",")):
            cam = drifted_camera(right, a.offset, take_s, ppm,
                                 np.random.default_rng(int(take_s * 1000 + ppm)))
            t0 = time.process_time()
            res = gcc_phat_offset(cam, right)
            cpu = time.process_time() - t0
            d = res["details"]
            row = {"take_s": take_s, "ppm": ppm, "confidence": round(res["confidence"], 1),
                   "confidence_plain": round(d["confidence_plain"], 1), "pass": d["pass"],
                   "err_ms": round(1000 * (res["offset_s"] - a.offset), 3),
                   "err_plain_ms": round(
                       1000 * (d.get("offset_plain_s", res["offset_s"]) - a.offset), 3),
                   "drift_ppm": None if "drift_ppm" not in d else round(d["drift_ppm"], 2),
                   "cpu_s": round(cpu, 2)}
            if not a.no_wrong:
                row["wrong"] = round(gcc_phat_offset(cam, wrong)["confidence"], 1)
                row["reversed"] = round(gcc_phat_offset(cam[::-1].copy(), right)["confidence"], 1)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
