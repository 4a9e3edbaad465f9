"""Generation speed: parameters for a 4-minute song (T = 7,200 frames) on one CPU core.

    .venv/bin/python bench/generate.py [--checkpoint runs/demo/model.pt] [--frames 7200]
                                       [--repeats 3]

Separation and MFCC extraction are excluded (inputs are MFCC rows and each frame's window index).
Without --checkpoint the
default architecture (config.yaml sizes, 2 subjects, E = 64) with random weights is timed: the cost
does not depend on the weight values. Prints JSON: seconds per song (min / median of the repeats)
for one pass and for 1,000-frame chunks, the parts as ``generate`` runs them (MFCC normalisation,
TSAE, ATMs, heads + PGN roll-out; the PGN's numpy roll-out next to its training forward), the
real-time factor, and the same for the ablation variants. Target (docs/testing.md): < 2 s per song,
MFCC extraction included (bench/generate_cli.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from musicface.config import VARIANTS, ModelConfig
from musicface.data import mfcc_centres, padded_rows
from musicface.model import MusicFace, count_parameters, load_checkpoint


def timed(fn, repeats):
    fn()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"min_s": round(min(times), 4), "median_s": round(statistics.median(times), 4)}


def parts(model: MusicFace, song: dict, repeats: int) -> dict:
    """Seconds of the stages of one pass, as ``generate`` runs them (inference mode and paths)."""
    dev = model.pose_mean.device
    mf = {k: torch.as_tensor(v)[None].to(dev) for k, v in song.items()}
    oh = model.onehot(torch.tensor([0], device=dev))
    out = {}
    with torch.inference_mode():
        out["normalise"] = timed(lambda: model._mfcc(mf), repeats)
        rows = model._mfcc(mf)
        idx = mf["mfcc_index"]

        def cut():
            return {s: model.windows(rows[s], idx) for s in model.streams}

        out["windows"] = timed(cut, repeats)
        norm = cut()
        oh_t = oh[:, None].expand(1, song["mfcc_index"].shape[0], -1)
        out["tsae"] = timed(lambda: model.tsae(norm, oh_t, inference=True), repeats)
        f = model.tsae(norm, oh_t, inference=True)
        if model.atm is not None:
            out["atm_x3"] = timed(lambda: [model.atm[k](f, inference=True)
                                           for k in ("exp", "pose", "eye")], repeats)
        h, _ = model.encode_windows(norm, oh, inference=True)
        p0 = model.subject_pose[:1]
        out["heads_and_pose"] = timed(lambda: model.decode(h, p0=p0, inference=True), repeats)
        if model.pgn is not None:
            hp, state = h["pose"][:, 1:], model.pgn.init_state(p0)
            out["pgn_rollout"] = timed(lambda: model.pgn.rollout(hp, state), repeats)
            out["pgn_training_forward"] = timed(lambda: model.pgn(hp, state), repeats)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--frames", type=int, default=7200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-variants", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    m = -(-a.frames * 100 // 30)  # MFCC rows of the song at 100 Hz
    song = {k: padded_rows(rng.normal(size=(m, 26)).astype(np.float32))
            for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
    song["mfcc_index"] = mfcc_centres(0, a.frames, m)

    if a.checkpoint:
        model, _ = load_checkpoint(a.checkpoint)
        models = {model.cfg.variant: model}
    else:
        torch.manual_seed(0)
        names = [ModelConfig().variant] if a.no_variants else list(VARIANTS)
        models = {v: MusicFace(ModelConfig(variant=v), ["singer1", "singer2"], 64).eval()
                  for v in names}

    result = {"frames": a.frames, "song_s": a.frames / 30, "threads": a.threads,
              "torch": torch.__version__, "variants": {}}
    for name, model in models.items():
        r = {"params": count_parameters(model),
             "one_pass": timed(lambda m=model: m.generate(**song, subject=0), a.repeats),
             "chunks_1000": timed(lambda m=model: m.generate(**song, subject=0, chunk=1000),
                                  a.repeats),
             "parts": parts(model, song, a.repeats)}
        r["realtime_factor"] = round(a.frames / 30 / r["one_pass"]["min_s"], 1)
        r["under_2s"] = r["one_pass"]["min_s"] < 2.0
        result["variants"][name] = r
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
