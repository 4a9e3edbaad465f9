"""Benchmark of the audio branch: built-in separation and MFCC speed on one core, separation SDRs.

    .venv/bin/python bench/separate.py [--seconds 240] [--spleeter-model MODEL_PATH]

Prints one JSON object:

* ``speed``: for a ``--seconds`` demo song (the demo's synthetic singer, 16 kHz), CPU seconds and
  the real-time factor (song seconds / CPU seconds; BLAS/OpenMP pinned to 1 thread, so CPU time is
  one-core time even on a shared machine) of ``separate_builtin``, of ``mfcc`` on one stem, and of
  ``take_features`` (the three stems of a take as long as the song); wall seconds too, and the peak
  Python-heap memory of the separation (tracemalloc: numpy arrays included).
* ``sdr_stempeg_clip``: plain SDR and SI-SDR (dB) on the 6 s MUSDB18 clip shipped in stempeg
  (stream 0 = mixture, 4 = vocals, accompaniment = mixture - vocals), with two baselines: the
  mixture as the estimate, and the fixed 300-3400 Hz vocal band-pass of the mix (``vocal_band``:
  0.5 x and its best fixed gain g for SDR, any gain for SI-SDR); ``*_gain_db`` = over the mixture,
  ``*_over_band*`` = over the band-pass.
* ``sdr_demo``: the same on the long demo song's true stems.
* ``spleeter`` (only with ``--spleeter-model``, e.g. a random-weight model built by
  ``tests/spleeter_model.py``): wall seconds and real-time factor of the Spleeter backend on the
  song.
"""
import os

os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                 "NUMEXPR_NUM_THREADS"), "1"))

import argparse
import glob
import importlib.util
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.common import save_wav
from preprocessing.media import decode_audio
from preprocessing.mfcc import mfcc, take_features
from preprocessing.separate import SR, sdr, separate_builtin, si_sdr, vocal_band


def timed(fn, *args, **kw):
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args, **kw)
    return out, time.process_time() - c, time.perf_counter() - w


def best_gain(reference, estimate, base=None):
    """The gain g minimising |reference - (base + g estimate)|^2 (base: 0 or the mix)."""
    e = np.asarray(estimate, np.float64)
    target = np.asarray(reference, np.float64) - (0.0 if base is None else base)
    return float(np.dot(target, e) / max(np.dot(e, e), 1e-30))


def scores(mix, vocals, music, est_v, est_m) -> dict:
    """SDR and SI-SDR (dB) of the separation, of the mixture as the estimate, and of the fixed
    vocal band-pass baseline (``vocal_band``): at 0.5 x and at its best fixed gain g (plain SDR;
    accompaniment = mix + g x band, g < 0), and at any gain (SI-SDR)."""
    band = vocal_band(mix)
    g_v, g_m = best_gain(vocals, band), best_gain(music, band, mix)
    r = {}
    stems = [("vocals", vocals, est_v, 0.5 * band, g_v * band),
             ("accompaniment", music, est_m, mix - 0.5 * band, mix + g_m * band)]
    for stem, ref, est, b05, bg in stems:
        r.update({f"{stem}_db": sdr(ref, est), f"{stem}_mixture_baseline_db": sdr(ref, mix),
                  f"{stem}_band_half_baseline_db": sdr(ref, b05),
                  f"{stem}_band_best_gain_baseline_db": sdr(ref, bg),
                  f"{stem}_si_db": si_sdr(ref, est),
                  f"{stem}_mixture_baseline_si_db": si_sdr(ref, mix),
                  f"{stem}_band_baseline_si_db": si_sdr(ref, b05)})
        r[f"{stem}_gain_db"] = r[f"{stem}_db"] - r[f"{stem}_mixture_baseline_db"]
        r[f"{stem}_si_gain_db"] = r[f"{stem}_si_db"] - r[f"{stem}_mixture_baseline_si_db"]
        r[f"{stem}_si_over_band_db"] = r[f"{stem}_si_db"] - r[f"{stem}_band_baseline_si_db"]
        r[f"{stem}_over_band_best_gain_db"] = (r[f"{stem}_db"]
                                               - r[f"{stem}_band_best_gain_baseline_db"])
    return {k: round(v, 2) for k, v in r.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--spleeter-model", default=None, help="MODEL_PATH with 2stems/ (optional)")
    ap.add_argument("--spleeter-python", default=".venv-spleeter/bin/python")
    args = ap.parse_args()
    from scipy.signal import resample_poly

    from preprocessing.demo import render_song

    result = {"threads": 1, "song_seconds": args.seconds}

    # the MUSDB18 clip: real music, real vocal stem
    spec = importlib.util.find_spec("stempeg")
    clip = glob.glob(os.path.join(os.path.dirname(spec.origin), "data", "*.stem.mp4"))[0]
    mix, _ = decode_audio(clip, SR, mono=True, stream=0)
    voc, _ = decode_audio(clip, SR, mono=True, stream=4)
    n = min(len(mix), len(voc))
    mix, voc = mix[:n], voc[:n]
    separate_builtin(mix)                                   # warm-up: imports, FFT plans
    (ev, em), _, _ = timed(separate_builtin, mix)
    result["sdr_stempeg_clip"] = {"seconds": round(n / SR, 2),
                                  **scores(mix, voc, mix - voc, ev, em)}

    # a long demo song with true stems
    song = render_song(0, 1, args.seconds)

    def to16k(x):
        return resample_poly(np.asarray(x, np.float64), 160, 441).astype(np.float32)

    vocals, music = to16k(song.vocals), to16k(song.music)
    mix = vocals + music
    tracemalloc.start()
    (ev, em), cpu, wall = timed(separate_builtin, mix)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result["sdr_demo"] = {"song": "demo seed 0 song 1", **scores(mix, vocals, music, ev, em)}
    speed = {"separate_builtin": {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                                  "rtf_one_core": round(args.seconds / cpu, 1),
                                  "peak_heap_mb": round(peak / 2**20, 1)}}
    _, cpu, wall = timed(mfcc, mix)
    speed["mfcc_one_stem"] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                              "rtf_one_core": round(args.seconds / cpu, 1)}
    n_frames = int(args.seconds * 30) - 30                 # a take covering the song (offset 0.5 s)
    _, cpu, wall = timed(take_features, {"vocals": ev, "music": em, "mix": mix}, 0.5, n_frames)
    speed["mfcc_take_three_stems"] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                                      "rtf_one_core": round(n_frames / 30 / cpu, 1)}
    result["speed"] = speed

    if args.spleeter_model:
        from preprocessing.separate import separate_spleeter

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "song.wav"
            save_wav(path, song.vocals + song.music, song.sr)
            (sv, sm), _, wall = timed(separate_spleeter, path, len(mix), args.spleeter_python,
                                      args.spleeter_model)
        result["spleeter"] = {"wall_s": round(wall, 1), "rtf_wall": round(args.seconds / wall, 2),
                              "note": "all cores TensorFlow uses; weights as given (random ones "
                                      "give no SDR)"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
