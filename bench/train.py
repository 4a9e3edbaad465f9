"""Training speed on CPU (or the configured device): steps/s at the configured batch size.

    .venv/bin/python bench/train.py [--shards dataset/shards] [--config config.yaml] [--steps 10]
                                    [--threads N] [--variant full]

Without --shards a temporary shard set of random takes (2 subjects, 4 takes of 60 s, E = 64) is written
with the dataset's own writer: step time does not depend on the values. Prints JSON: seconds per
training step (generator + discriminator, min / median over --steps after one warm-up step),
steps/s, windows/s, the DataLoader's time per batch (measured alone, and as a fraction of a step:
"training never waits on data loading" holds when it is small), peak RSS, and the projected time of
the configured schedule (epochs x steps per epoch x step time).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as musicface.train does

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from musicface.config import from_dict  # noqa: E402
from musicface.data import WindowDataset, open_shards  # noqa: E402
from musicface.model import Discriminator, MusicFace, count_parameters  # noqa: E402
from musicface.train import _device, batch_to, compute_normalisation, train_step  # noqa: E402


def random_shards(out: Path, exp_dim: int = 64, seconds: int = 60) -> None:
    from preprocessing.shards import TakeData, write_shard_set

    rng = np.random.default_rng(0)
    takes = []
    for i, (subject, song) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
        n = seconds * 30
        m = -(-n * 100 // 30)
        arrays = {k: rng.normal(size=(m, 26)).astype(np.float32) for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
        arrays.update(exp=rng.normal(size=(n, exp_dim)).astype(np.float32),
                      pose=np.cumsum(0.01 * rng.normal(size=(n, 6)), 0).astype(np.float32),
                      au45=rng.uniform(size=n).astype(np.float32), eye_long=np.zeros(n, np.float32),
                      eye_blink=np.zeros(n, np.uint8), valid=np.ones(n, np.uint8),
                      landmarks=np.zeros((n, 4, 2), np.float32))
        takes.append(TakeData(take=f"singer{subject}_song{song}", subject=f"singer{subject}", song=f"song{song}",
                              split="test" if i == 3 else "train", offset_s=0.0, sync_method="bench",
                              sync_confidence=10.0, arrays=arrays))
    write_shard_set(out, takes, takes_per_shard=8, cfg_sha="bench", exp_dim=exp_dim)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", default=None)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variant", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    raw_cfg = yaml.safe_load(open(a.config))
    if a.variant:
        raw_cfg.setdefault("model", {})["variant"] = a.variant
    cfg = from_dict(raw_cfg)
    tc = cfg.train
    torch.manual_seed(0)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = _device(tc.device, 0)

    with tempfile.TemporaryDirectory() as tmp:
        path = a.shards
        if path is None:
            path = Path(tmp) / "shards"
            random_shards(path)
        shards = open_shards(path)
        model = MusicFace(cfg.model, shards.subjects, shards.exp_dim, shards.fps)
        model.set_normalisation(compute_normalisation(shards))
        model.to(device).train()
        disc = Discriminator(26 * len(model.streams), cfg.model.disc_channels).to(device)
        opt_g = torch.optim.Adam(model.parameters(), lr=tc.lr)
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr)
        ds = WindowDataset(shards, "train", tc.window, tc.batch_size * (a.steps + 1), tc.seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=tc.batch_size, num_workers=tc.num_workers)

        t = time.perf_counter()
        batches = list(loader)
        load_s = (time.perf_counter() - t) / len(batches)
        train_step(model, disc, model, batch_to(batches[0], device), cfg, opt_g, opt_d)  # warm-up
        times = []
        for b in batches[1:a.steps + 1]:
            t = time.perf_counter()
            train_step(model, disc, model, batch_to(b, device), cfg, opt_g, opt_d)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)

        step_s = statistics.median(times)
        samples = tc.samples_per_epoch or max(1, ds.n_windows // tc.window)
        steps_per_epoch = math.ceil(samples / tc.batch_size)
        result = {
            "device": str(device), "threads": torch.get_num_threads(), "variant": cfg.model.variant,
            "params_generator": count_parameters(model), "params_discriminator": count_parameters(disc),
            "batch_size": tc.batch_size, "window": tc.window,
            "step_s": {"min": round(min(times), 4), "median": round(step_s, 4)},
            "steps_per_s": round(1 / step_s, 3), "windows_per_s": round(tc.batch_size / step_s, 1),
            "data_s_per_batch": round(load_s, 5), "data_fraction_of_step": round(load_s / step_s, 4),
            "peak_rss_mb": round(psutil.Process().memory_info().rss / 2**20),
            "schedule": {"epochs": tc.epochs, "steps_per_epoch": steps_per_epoch,
                         "projected_minutes": round(tc.epochs * steps_per_epoch * step_s / 60, 1)},
            "shards": str(a.shards or "random (4 takes x 60 s)"),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
