"""Correctness of the GPU-only code paths, on a CUDA device; prints JSON (bench/gpu.sh runs it).

    PYTHONPATH=. python bench/gpu_checks.py [--out DIR]

The CPU test suite cannot run these; each check says what it compares and how far apart:

* ``pose_recurrence``: PGN.forward (PoseRecurrence, hand-written backward) against
  PGN.forward_autograd on CUDA, float32 at the default sizes and batch 256: max relative difference
  of poses and of every gradient; float64 gradcheck of PoseRecurrence on CUDA.
* ``graph_vs_eager``: 8 training steps from the same initial weights on the same batches, eager
  vs ``GraphedStep`` (3 eager warm-up steps, capture, 5 replays): max |weight difference| and the
  losses of the last step.
* ``bf16``: the first step's losses under ``train.bf16`` relative to float32 on the same weights.
* ``train_loop``: ``musicface.train.train`` for 2 short epochs with ``train.cuda_graph`` on and
  off (checkpoint, metrics, LR schedule with a device LR tensor, validation): seconds per epoch
  and the last epoch's loss of each.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicface.config import from_dict
from musicface.data import open_shards
from musicface.model.generators import PGN, PoseRecurrence, PoseState
from musicface.train import GraphedStep, batch_to, compute_normalisation, train
from train import Setup, _raw, random_shards


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def pose_recurrence(dev) -> dict:
    torch.manual_seed(0)
    b, t, d_in, n = 256, 127, 130, 128
    pgn = PGN(d_in, 128, n).to(dev)
    h = torch.randn(b, t, d_in, device=dev, requires_grad=True)
    state = [torch.randn(b, k, device=dev, requires_grad=True) for k in (n, n, 6, 6)]
    w = torch.randn(b, t, 6, device=dev)
    out = []
    for fn in (PGN.forward_autograd, PGN.forward):
        pgn.zero_grad()
        for x in (h, *state):
            x.grad = None
        poses, _, last = fn(pgn, h, PoseState(*state))
        ((poses * w).sum() + last.h.sum() + last.c.sum()).backward()
        out.append([poses.detach(), h.grad.clone(), *(x.grad.clone() for x in state),
                    *(p.grad.clone() for p in pgn.parameters())])
    diffs = [rel(x, y) for x, y in zip(out[1], out[0])]
    g = torch.Generator(device=dev).manual_seed(2)
    shapes = [(2, 4, 12), (2, 4, 6), (12, 15), (6, 3), (6,), (2, 3), (2, 3), (2, 6), (2, 6)]
    args = [torch.randn(*s, dtype=torch.float64, device=dev, generator=g).requires_grad_()
            for s in shapes]
    return {"batch": b, "poses_rel_diff": diffs[0], "max_grad_rel_diff": max(diffs[1:]),
            "gradcheck_float64": bool(torch.autograd.gradcheck(PoseRecurrence.apply, args))}


def graph_vs_eager(shards, stats, cfg, dev, batch: int = 64) -> dict:
    eager = Setup(shards, stats, cfg, dev, batch, 8)
    graph = Setup(shards, stats, cfg, dev, batch, 8, graph=True)
    graph.model.load_state_dict(eager.model.state_dict())
    graph.disc.load_state_dict(eager.disc.state_dict())
    run = GraphedStep(graph.step)
    for b in eager.loader:
        b = batch_to(b, dev)
        pe, pg = eager.step(b), run(b)
    torch.cuda.synchronize(dev)
    pairs = zip(eager.model.parameters(), graph.model.parameters())
    wd = max(float((x - y).abs().max()) for x, y in pairs)
    return {"batch": batch, "steps": 8, "replays": run.replays, "max_weight_diff": wd,
            "loss_eager": float(pe["loss"]), "loss_graph": float(pg["loss"])}


def bf16(shards, stats, cfg, dev, batch: int = 64) -> dict:
    parts = {}
    for on in (False, True):
        s = Setup(shards, stats, cfg, dev, batch, 1)
        s.cfg = from_dict({**_raw(cfg), "train": {**_raw(cfg)["train"], "bf16": on}})
        parts[on] = {k: float(v) for k, v in s.step(batch_to(next(iter(s.loader)), dev)).items()}
    return {k: abs(parts[True][k] - parts[False][k]) / max(abs(parts[False][k]), 1e-12)
            for k in ("reg", "exp_mse", "pose_mmd", "pose_vel", "eye_l1", "disc")}


def train_loop(shards_path: Path, out: Path) -> dict:
    res = {}
    for graph in (False, True):
        cfg = {"train": {"epochs": 2, "samples_per_epoch": 1024, "batch_size": 64, "lr": 5e-4,
                         "device": "cuda", "cuda_graph": graph, "val_samples": 64}}
        t = time.perf_counter()
        train(shards_path, cfg, out / f"graph{int(graph)}", progress=False)
        rows = (out / f"graph{int(graph)}" / "metrics.csv").read_text().splitlines()
        res[f"cuda_graph_{graph}"] = {"seconds": round(time.perf_counter() - t, 2),
                                      "last_row": rows[-1]}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_checks.py: no CUDA device", file=sys.stderr)
        return 1
    import yaml

    dev = torch.device("cuda")
    raw = yaml.safe_load(open(a.config))
    raw["train"]["device"] = "cuda"
    cfg = from_dict(raw)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    result = {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shards"
        random_shards(path)
        shards = open_shards(path)
        stats = compute_normalisation(shards)
        for name, fn in (("pose_recurrence", lambda: pose_recurrence(dev)),
                         ("graph_vs_eager", lambda: graph_vs_eager(shards, stats, cfg, dev)),
                         ("bf16_rel_loss_diff", lambda: bf16(shards, stats, cfg, dev)),
                         ("train_loop", lambda: train_loop(path, Path(tmp)))):
            t = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as e:  # noqa: BLE001 - report every check, even after one fails
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            result[name + "_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
