"""Benchmark `musicface generate` on one CPU core for a 4-minute song; prints JSON.

    .venv/bin/python bench/generate_cli.py [--seconds 240] [--variant full] [--preview]

The song is the real 6 s MUSDB18 clip shipped with stempeg, tiled to ``--seconds`` and written as a
44.1 kHz stereo WAV. The model has the default architecture (musicface.config.ModelConfig) with
random weights (speed does not depend on the weights). One core: OMP/MKL/OpenBLAS/numba threads = 1
and ``torch.set_num_threads(1)``. Each stage is the function ``musicface generate`` calls:

* ``load``: decode + resample to 16 kHz mono (``generate.load_song``)
* ``separate``: built-in REPET-SIM separation (``generate.separate``)
* ``features``: MFCC rows of the streams the model reads (``generate.song_features``)
* ``generate``: ``model.generate`` (encoder, ATM, heads, PGN roll-out, blink sampler)
* ``preview`` (with ``--preview``): landmarks + drawing + H.264/AAC encoding of preview.mp4

Reported: wall and CPU seconds per stage, ``params_s`` = load + features + generate (separation
excluded: the design bar is < 2 s for a 4-minute song), ``params_with_separation_s``, and real-time
factors (song seconds per second of compute). CPU time (process_time) is given next to wall time
because the machine may be shared.
"""
from __future__ import annotations

import os

os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                 "NUMBA_NUM_THREADS"), "1"))

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicface import generate as G
from musicface.config import VARIANTS

CLIP = (Path(importlib.util.find_spec("stempeg").origin).parent / "data"
        / "The Easton Ellises - Falcon 69.stem.mp4")
BAR_S = 2.0  # s for the parameters of a 4-minute song on one core, no separation (docs/testing.md)


def make_song(path: Path, seconds: float) -> None:
    """The clip's mixture tiled to ``seconds``, 44.1 kHz stereo float WAV."""
    import soundfile as sf

    from preprocessing.media import decode_audio

    clip, _ = decode_audio(CLIP, 44100, mono=False, stream=0)
    reps = math.ceil(seconds * 44100 / len(clip))
    sf.write(str(path), np.tile(clip, (reps, 1))[: int(seconds * 44100)], 44100, subtype="FLOAT")


def make_model(variant: str, path: Path):
    from musicface.config import ModelConfig
    from musicface.model import MusicFace, export

    torch.manual_seed(0)
    model = MusicFace(ModelConfig(variant=variant), ["singer1", "singer2"], 64)
    torch.save(export(model), path)
    return path


class Clock:
    def __init__(self):
        self.t = {}

    def run(self, name, fn, *a, **k):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*a, **k)
        self.t[name] = {"wall_s": round(time.perf_counter() - w, 3),
                        "cpu_s": round(time.process_time() - c, 3)}
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--variant", default="full", choices=VARIANTS)
    ap.add_argument("--preview", action="store_true", help="also time the preview video")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        song = tmp / "song.wav"
        make_song(song, a.seconds)
        ckpt = make_model(a.variant, tmp / "model.pt")
        model, _ = G.check_inputs(ckpt, "singer1")
        clock = Clock()
        mix = clock.run("load", G.load_song, song)
        vocals = music = None
        if model.cfg.two_streams:
            vocals, music = clock.run("separate", G.separate, mix, song, "builtin", progress=False)
        feats = clock.run("features", G.song_features, mix, vocals, music,
                          keys=G.model_streams(model))
        gen = clock.run("generate", model.generate, feats.get("mfcc_vocals"),
                        feats.get("mfcc_music"), feats.get("mfcc_mix"), "singer1", seed=0,
                        mfcc_index=feats["mfcc_index"])
        if a.preview:
            from musicface.preview import write_preview
            from preprocessing.coeffs import fit_pca, landmarks_from_coeffs

            rng = np.random.default_rng(0)
            basis = fit_pca([rng.normal(0, 0.01, (200, 478 * 3))], 64)
            lm = landmarks_from_coeffs(gen["exp"] * 0.0, gen["pose"], basis, frame_size=(1, 1))
            clock.run("preview", write_preview, tmp / "preview.mp4", lm, gen["eye"], mix, 16000,
                      progress=False)

    t = clock.t

    def stage(k, kind):
        return t.get(k, {}).get(kind, 0.0)

    params = {kind: round(stage("load", kind) + stage("features", kind)
                          + stage("generate", kind), 3)
              for kind in ("wall_s", "cpu_s")}
    with_sep = {kind: round(params[kind] + stage("separate", kind), 3)
                for kind in ("wall_s", "cpu_s")}
    out = {
        "song_s": a.seconds, "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2), "n_frames": int(feats["n_frames"]),
        "variant": a.variant, "threads": 1, "n_params": sum(p.numel() for p in model.parameters()),
        "stages": t, "params_s": params, "params_with_separation_s": with_sep,
        "rtf_params": round(a.seconds / max(params["cpu_s"], 1e-9), 1),
        "rtf_with_separation": round(a.seconds / max(with_sep["cpu_s"], 1e-9), 1),
        "bar_s": BAR_S, "meets_bar": params["cpu_s"] < BAR_S,
        "model_generate_meets_bar": stage("generate", "cpu_s") < BAR_S,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
