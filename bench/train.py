"""Training speed: windows/s per batch size, ops and kernels per step, data loading, projections.

    .venv/bin/python bench/train.py [--shards dataset/shards] [--config config.yaml] [--device cpu]
        [--batches 4,16,64] [--steps 5] [--threads N] [--variant full] [--graph] [--bf16]

Without --shards a temporary shard set of random takes (2 subjects, 4 takes of 60 s, E = 64) is
written with the dataset's own writer: step time does not depend on the values. Prints JSON:

* ``aten_ops_per_step``: aten operators of one training step (generator + discriminator, forward,
  backward, both Adam steps) at batch ``--ops-batch`` (4), counted by torch.profiler (nested calls
  included); ``aten_ops_per_step_non_view``: the same without view and metadata ops (as_strided,
  slice, select, view, transpose, ...: no kernel, no copy).
* ``batches``: per batch size, seconds per step (min / median over ``--steps`` after a warm-up
  step), ``windows_per_s``, the reader's seconds per batch measured alone in this process
  (``data_s_per_batch``) and as a fraction of a step (``data_fraction_of_step``: training waits on
  data unless it is small or the DataLoader has workers), with ``--bf16`` the same step under
  bfloat16 autocast, with ``--graph`` (CUDA) the step replayed as one CUDA graph
  (``graph_replay``: steps 1-3 eager, capture, then replays; its speed-up over eager).
* CUDA: ``cuda_kernels_per_step`` (kernels and memcpy/memset of one eager step at the largest
  batch, torch.profiler), ``gpu_busy_fraction`` (union of the kernels' time / the step's wall time).
* ``paper_projection``: the paper's schedule on 40 h of takes (50 epochs of one pass: 1,687,500
  windows of 128 frames) at each measured speed, in minutes; ``schedule``: the configured one.
* ``loadavg`` at start and end: on a shared CPU, timings are only comparable at similar load.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as musicface.train does

import argparse
import collections
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicface.config import from_dict
from musicface.data import WindowDataset, collate, open_shards
from musicface.model import Discriminator, MusicFace, count_parameters
from musicface.train import (
    GraphedStep,
    _device,
    batch_to,
    compute_normalisation,
    make_optimizer,
    train_step,
)

PAPER_HOURS, PAPER_EPOCHS = 40, 50
VIEW_OPS = {"as_strided", "slice", "select", "view", "t", "transpose", "permute", "expand",
            "unsqueeze", "squeeze", "narrow", "split", "split_with_sizes", "chunk", "unbind",
            "reshape", "_reshape_alias", "alias", "detach", "unfold", "view_as", "expand_as",
            "flatten", "unflatten", "diagonal", "_unsafe_view", "movedim", "lift_fresh",
            "resolve_conj", "resolve_neg"}


def random_shards(out: Path, exp_dim: int = 64, seconds: int = 60) -> None:
    from preprocessing.shards import TakeData, write_shard_set

    rng = np.random.default_rng(0)
    takes = []
    for i, (subject, song) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
        n = seconds * 30
        m = -(-n * 100 // 30)
        arrays = {k: rng.normal(size=(m, 26)).astype(np.float32)
                  for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
        arrays.update(exp=rng.normal(size=(n, exp_dim)).astype(np.float32),
                      pose=np.cumsum(0.01 * rng.normal(size=(n, 6)), 0).astype(np.float32),
                      au45=rng.uniform(size=n).astype(np.float32), eye_long=np.zeros(n, np.float32),
                      eye_blink=np.zeros(n, np.uint8), valid=np.ones(n, np.uint8),
                      landmarks=np.zeros((n, 4, 2), np.float32))
        takes.append(TakeData(take=f"singer{subject}_song{song}", subject=f"singer{subject}",
                              song=f"song{song}", split="test" if i == 3 else "train", offset_s=0.0,
                              sync_method="bench", sync_confidence=10.0, arrays=arrays))
    write_shard_set(out, takes, takes_per_shard=8, cfg_sha="bench", exp_dim=exp_dim)


class Setup:
    """Model, discriminator, optimisers and a reader for one batch size (fresh state)."""

    def __init__(self, shards, stats, cfg, device, batch: int, n_batches: int, graph: bool = False):
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.model = MusicFace(cfg.model, shards.subjects, shards.exp_dim, shards.fps)
        self.model.set_normalisation(stats)
        self.model.to(device).train()
        self.disc = Discriminator(26 * len(self.model.streams), cfg.model.disc_channels).to(device)
        self.opt_g = make_optimizer(self.model.parameters(), cfg.train.lr, device, graph)
        self.opt_d = make_optimizer(self.disc.parameters(), cfg.train.lr, device, graph)
        keys = tuple(sorted(self.model.inputs))
        self.ds = WindowDataset(shards, "train", cfg.train.window, batch * n_batches,
                                cfg.train.seed, mfcc_keys=keys, pin_memory=device.type == "cuda")
        self.loader = torch.utils.data.DataLoader(self.ds, batch_size=batch, collate_fn=collate,
                                                  num_workers=cfg.train.num_workers)

    def step(self, b):
        return train_step(self.model, self.disc, self.model, b, self.cfg, self.opt_g, self.opt_d)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(run, batches, device) -> list[float]:
    times = []
    for b in batches:
        b = batch_to(b, device)
        t = time.perf_counter()
        run(b)
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def count_ops(setup: Setup, b) -> dict:
    """aten ops (CPU side) and, on CUDA, kernels and GPU busy time of one eager step."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    b = batch_to(b, setup.device)
    setup.step(b)  # warm-up outside the profile
    sync(setup.device)
    with profile(activities=acts) as prof:
        setup.step(b)
        sync(setup.device)
    names = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    out = {"aten_ops_per_step": sum(names.values()),
           "aten_ops_per_step_non_view": sum(v for k, v in names.items() if k[6:] not in VIEW_OPS),
           "top_ops": dict(names.most_common(8))}
    if setup.device.type == "cuda":
        gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        spans = sorted((e.time_range.start, e.time_range.end) for e in gpu)
        busy, end = 0.0, -math.inf
        for a, z in spans:  # union of the kernels' intervals (us)
            if z > end:
                busy += z - max(a, end)
                end = z
        out.update(cuda_kernels_per_step=len(gpu), gpu_busy_ms_per_step=round(busy / 1000, 3))
    return out


def measure(shards, stats, cfg, device, batch: int, steps: int, graph: bool, bf16: bool) -> dict:
    s = Setup(shards, stats, cfg, device, batch, steps + 4)
    t = time.perf_counter()
    batches = list(s.loader)
    load_s = (time.perf_counter() - t) / len(batches)
    s.step(batch_to(batches[0], device))  # warm-up (allocator, cuDNN / oneDNN primitives)
    sync(device)
    times = timed_steps(s.step, batches[1:steps + 1], device)
    step_s = statistics.median(times)
    r = {"step_s": {"min": round(min(times), 4), "median": round(step_s, 4)},
         "windows_per_s": round(batch / step_s, 1), "data_s_per_batch": round(load_s, 5),
         "data_fraction_of_step": round(load_s / step_s, 4)}
    if bf16:
        s.cfg = from_dict({**_raw(cfg), "train": {**_raw(cfg)["train"], "bf16": True}})
        s.step(batch_to(batches[0], device))
        sync(device)
        tb = statistics.median(timed_steps(s.step, batches[1:steps + 1], device))
        r["bf16"] = {"step_s": round(tb, 4), "windows_per_s": round(batch / tb, 1),
                     "speedup": round(step_s / tb, 2)}
    if graph and device.type == "cuda":
        variants = [("graph_replay", False)] + ([("graph_replay_bf16", True)] if bf16 else [])
        for name, use_bf16 in variants:
            g = Setup(shards, stats, cfg, device, batch, steps + 4, graph=True)
            g.cfg = from_dict({**_raw(cfg), "train": {**_raw(cfg)["train"], "bf16": use_bf16}})
            run = GraphedStep(g.step)
            gb = list(g.loader)
            timed_steps(run, gb[:4], device)  # 3 eager warm-up steps, then the capture and a replay
            tg = statistics.median(timed_steps(run, gb[4:4 + steps], device))
            r[name] = {"step_s": round(tg, 4), "windows_per_s": round(batch / tg, 1),
                       "speedup_over_eager": round(step_s / tg, 2), "replays": run.replays,
                       "data_fraction_of_step": round(load_s / tg, 4)}
    return r


def _raw(cfg) -> dict:
    import dataclasses

    return {k: dataclasses.asdict(getattr(cfg, k)) for k in ("model", "train", "loss")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", default=None)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    ap.add_argument("--device", default=None, help="cpu / cuda (default: train.device)")
    ap.add_argument("--batches", default=None,
                    help="comma-separated batch sizes (default: 4,16,64 on CPU, 16,64,256 on CUDA)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--ops-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variant", default=None)
    ap.add_argument("--graph", action="store_true", help="also time the CUDA-graph step (CUDA)")
    ap.add_argument("--bf16", action="store_true", help="also time the step under bf16 autocast")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    raw_cfg = yaml.safe_load(open(a.config))
    if a.variant:
        raw_cfg.setdefault("model", {})["variant"] = a.variant
    if a.device:
        raw_cfg.setdefault("train", {})["device"] = a.device
    cfg = from_dict(raw_cfg)
    tc = cfg.train
    if tc.deterministic:  # as musicface.train sets it up
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    device = _device(tc.device, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    default = "16,64,256" if device.type == "cuda" else "4,16,64"
    batches = [int(x) for x in (a.batches or default).split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        path = a.shards
        if path is None:
            path = Path(tmp) / "shards"
            random_shards(path)
        shards = open_shards(path)
        stats = compute_normalisation(shards)
        ops = Setup(shards, stats, cfg, device, a.ops_batch, 2)
        result = {"device": str(device), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "variant": cfg.model.variant,
                  "params_generator": count_parameters(ops.model),
                  "params_discriminator": count_parameters(ops.disc), "window": tc.window,
                  "ops_batch": a.ops_batch}
        if device.type == "cuda":
            result["gpu"] = torch.cuda.get_device_name(device)
        result.update(count_ops(ops, next(iter(ops.loader))))
        del ops
        result["batches"] = {}
        for b in batches:
            result["batches"][b] = measure(shards, stats, cfg, device, b, a.steps, a.graph, a.bf16)
        if device.type == "cuda":
            big = Setup(shards, stats, cfg, device, max(batches), 2)
            k = count_ops(big, next(iter(big.loader)))
            eager = result["batches"][max(batches)]["step_s"]["median"]
            result.update(kernels_batch=max(batches),
                          cuda_kernels_per_step=k["cuda_kernels_per_step"],
                          gpu_busy_ms_per_step=k["gpu_busy_ms_per_step"],
                          gpu_busy_fraction=round(k["gpu_busy_ms_per_step"] / 1000 / eager, 4))
        samples = tc.samples_per_epoch or max(1, WindowDataset(shards, "train", tc.window).n_windows
                                              // tc.window)
        steps_per_epoch = math.ceil(samples / tc.batch_size)
        cfg_b = result["batches"].get(tc.batch_size)
        minutes = tc.epochs * steps_per_epoch * cfg_b["step_s"]["median"] / 60 if cfg_b else None
        result["schedule"] = {"epochs": tc.epochs, "batch_size": tc.batch_size,
                              "steps_per_epoch": steps_per_epoch,
                              "projected_minutes": None if minutes is None else round(minutes, 1)}
        windows = PAPER_EPOCHS * (PAPER_HOURS * 3600 * 30 // tc.window)
        speeds = {f"{b}": r["windows_per_s"] for b, r in result["batches"].items()}
        for b, r in result["batches"].items():
            for k in ("bf16", "graph_replay", "graph_replay_bf16"):
                if k in r:
                    speeds[f"{b}_{k}"] = r[k]["windows_per_s"]
        minutes = {k: round(windows / v / 60, 1) for k, v in speeds.items()}
        result["paper_projection"] = {"hours": PAPER_HOURS, "epochs": PAPER_EPOCHS,
                                      "windows": windows, "minutes": minutes}
        result["peak_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)
        if device.type == "cuda":
            result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        result["shards"] = str(a.shards or "random (4 takes x 60 s)")
        result["loadavg"] = [load0, os.getloadavg()[0]]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
