"""Training: HDF5 shards -> runs/<name>/ (paper 4.1).

    musicface train --shards dataset/shards --basis dataset/exp_basis.npz \\
        --config-json '{"model": {...}, "train": {...}, "loss": {...}}' --out runs/demo [--resume]
    torchrun --standalone --nproc_per_node 4 -m musicface.cli train ...   # DDP, one process per GPU

What one epoch is: ``train.samples_per_epoch`` random ``train.window``-frame windows of the train
split (default: the number of eligible window starts // window, i.e. about one pass over the
training frames), drawn by
:class:`musicface.data.WindowDataset` as a pure function of (seed, epoch, index); batches of
``train.batch_size`` windows (the global batch; each of P DDP processes takes batch_size / P).

Per step: generator forward on the batch (the PGN rolls out its own poses), generator loss
``lambda1 L_reg + lambda2 L_adv`` (musicface.losses) -> Adam step (grad norm clipped at
``train.grad_clip``); then one discriminator step on (real, generated) sequences. Both optimisers
are Adam with ``train.lr`` (paper and schema default 1e-4; config.yaml's short demo schedule 5e-4);
the LR stays constant, then decays linearly to 0 over the last ``decay_fraction`` (paper: 60%) of
the steps.

Outputs in ``--out``:
  config.json     snapshot of the whole config this run was started with
  checkpoint.pt   after every epoch: generator (model.pt payload), discriminator, both optimisers
                  and schedulers, RNG states, epoch, metrics rows (atomic write; ``--resume``
                  continues from it)
  metrics.csv     one row per epoch: losses (means over the epoch's steps on process 0), lr (of the
                  epoch's last step), time, validation losses on fixed test-split windows
  model.pt        at the end: weights + model config + subjects + normalisation (buffers) + the
                  expression basis of ``--basis`` with its sha256 (generate and evaluate need
                  no other file), loadable with torch.load(weights_only=True);
                  :func:`load_checkpoint` rebuilds the model.

Reproducibility: same config + same shards -> the same weights on CPU (deterministic algorithms,
data a pure function of seed/epoch/index); a run killed and resumed gives exactly the weights of the
uninterrupted run (tests/test_train.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning when idle: on a shared or oversubscribed CPU a
# spinning pool made a training step 8x slower (bench/train.py); set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from musicface import losses
from musicface.config import Config, from_dict, to_dict
from musicface.data import MFCC_KEYS, ShardError, WindowDataset, collate, open_shards, take_arrays
from musicface.model import Discriminator, MusicFace, export, load_checkpoint
from preprocessing.common import StepError, atomic_path, config_sha, load_npz, sha256_file
from preprocessing.timebase import CENTRE_ROW, MFCC_DIM

__all__ = ["train", "main", "load_checkpoint", "compute_normalisation"]

LOG_EVERY = 10  # steps between progress-bar updates (each reads the losses: a host synchronisation)
METRIC_KEYS = ("loss", "reg", "adv", "disc", "exp_mse", "exp_vel", "pose_mmd", "pose_vel", "eye_l1",
               "eye_mmd", "att", "grad_norm")
VAL_KEYS = ("val_reg", "val_exp_mse", "val_pose_vel", "val_eye_l1")


# ---------------------------------------------------------------------------------- normalisation
def compute_normalisation(shards, split: str = "train") -> dict[str, np.ndarray]:
    """Per-dimension statistics of one split (valid frames only), in data units.

    mfcc_mean/std (3, 26) for vocals, music, mix (all frames, at each frame's centre MFCC row);
    exp_mean/std (E,), pose_mean/std (6,); vel_std (6,) std of pose_vel over frames where it is
    defined (t and t-1 valid); subject_pose (S, 6) each subject's mean pose (the global mean for a
    subject without training frames). A std below 1e-6 (a constant dimension) becomes 1.
    """
    s1 = {}

    def acc(key, x):
        x = np.asarray(x, np.float64)
        n, a, b = s1.get(key, (0, 0.0, 0.0))
        s1[key] = (n + len(x), a + x.sum(0), b + (x * x).sum(0))

    n_subj = len(shards.subjects)
    subj_sum, subj_n = np.zeros((n_subj, 6)), np.zeros(n_subj)
    takes = shards.takes(split)
    if not takes:
        raise ShardError(f"{shards.root}: no '{split}' takes to compute the normalisation from")
    for info in takes:
        a = take_arrays(shards, info.take, landmarks=False)
        valid = a["valid"].numpy() > 0
        pair = valid.copy()
        pair[1:] &= valid[:-1]
        pair[0] = False
        centre = (a["mfcc_index"] + CENTRE_ROW).numpy()  # each frame's own MFCC row
        for i, k in enumerate(MFCC_KEYS):
            acc(f"mfcc{i}", a[k].numpy()[centre])
        acc("exp", a["exp"].numpy()[valid])
        acc("pose", a["pose"].numpy()[valid])
        acc("vel", a["pose_vel"].numpy()[pair])
        subj_sum[info.subject_index] += a["pose"].numpy()[valid].astype(np.float64).sum(0)
        subj_n[info.subject_index] += valid.sum()

    def mean_std(key):
        n, a, b = s1[key]
        if n == 0:
            raise ShardError(f"{shards.root}: the '{split}' split has no valid frames")
        m = a / n
        sd = np.sqrt(np.maximum(b / n - m * m, 0.0))
        return m, np.where(sd < 1e-6, 1.0, sd)

    out = {}
    mf = [mean_std(f"mfcc{i}") for i in range(3)]
    out["mfcc_mean"], out["mfcc_std"] = np.stack([m for m, _ in mf]), np.stack([s for _, s in mf])
    out["exp_mean"], out["exp_std"] = mean_std("exp")
    out["pose_mean"], out["pose_std"] = mean_std("pose")
    n, _, b = s1["vel"]
    out["vel_std"] = np.sqrt(b / n) if n else np.ones(6)  # velocities have mean ~0: RMS
    out["vel_std"] = np.where(out["vel_std"] < 1e-6, 1e-3, out["vel_std"])
    out["subject_pose"] = np.where(subj_n[:, None] > 0, subj_sum / np.maximum(subj_n, 1)[:, None],
                                   out["pose_mean"][None])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# -------------------------------------------------------------------------------------- the loop
def lr_factor(step: int, total: int, decay_fraction: float) -> float:
    """1 for the first (1 - decay_fraction) of the steps, then linear down to 1/decay_steps at the
    end."""
    decay = max(1, int(round(total * decay_fraction)))
    return min(1.0, (total - step) / decay) if decay_fraction > 0 else 1.0


def batch_to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def prepare(raw: MusicFace, b: dict,
            cfg: Config) -> tuple[dict, dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reader batch -> (mfcc, normalised targets, mask, p0, v0)."""
    mask = b["valid"]
    mfcc = {k: b[k] for k in (*MFCC_KEYS, "mfcc_index") if k in b}
    exp_n, pose_n = raw.normalise_targets(b["exp"], b["pose"])
    target = {"exp": exp_n, "pose": pose_n, "e_long": b["eye_long"]}
    if cfg.loss.exp_weighting == "variance":
        target["exp_weight"] = raw.exp_variance_weight
    ok0 = mask[:, :1] > 0
    p0 = torch.where(ok0, pose_n[:, 0], raw.subject_pose[b["subject"]])
    v0 = b["pose_vel"][:, 0] / raw.pose_std  # 0 when frame 0 or the frame before it is invalid
    return mfcc, target, mask, p0, v0


def global_counts(mask: torch.Tensor) -> dict | None:
    """DDP: the loss denominators of the global batch / P (one all_reduce), so that DDP's mean of
    the P gradients is the global batch's gradient (musicface.losses); None in one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    counts = losses.batch_counts(mask)
    total = torch.stack(list(counts.values()))
    dist.all_reduce(total)
    return dict(zip(counts, total / dist.get_world_size()))


def train_step(gen, disc, raw: MusicFace, b: dict, cfg: Config, opt_g, opt_d) -> dict:
    """One generator step and one discriminator step on batch ``b`` (on the device).

    Returns the logged numbers (:data:`METRIC_KEYS`) as 0-dim tensors on the device: reading one is
    a host synchronisation, which the loop does every :data:`LOG_EVERY` steps, not every step. No
    other synchronisation and only static shapes, so that the whole step can be captured in a CUDA
    graph (:class:`GraphedStep`). ``train.bf16``: the forward passes under bfloat16 autocast, the
    losses in float32."""
    # (a captured graph must not keep autocast's cache of cast weights: PyTorch's CUDA-graph notes)
    amp = torch.autocast(b["valid"].device.type, torch.bfloat16, enabled=cfg.train.bf16,
                         cache_enabled=not cfg.train.cuda_graph)
    mfcc, target, mask, p0, v0 = prepare(raw, b, cfg)
    counts = global_counts(mask)
    with amp:
        audio = raw.disc_audio(mfcc)
        pred = gen(mfcc, b["subject"], p0, v0)
        fake_logits = disc(pred["pose"], pred["e_long"], audio, mask)
    if cfg.train.bf16:
        pred = _float32(pred)
    loss_g, parts = losses.generator_loss(pred, target, mask, cfg.loss, fake_logits.float(),
                                          counts, floats=False)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
    gnorm = torch.nn.utils.clip_grad_norm_(raw.parameters(), clip, foreach=True)
    opt_g.step()

    # discriminator: real and generated sequences in one batch (one forward/backward per DDP step)
    opt_d.zero_grad(set_to_none=True)
    with amp:
        logits = disc(torch.cat([target["pose"], pred["pose"].detach()]),
                      torch.cat([target["e_long"], pred["e_long"].detach()]),
                      torch.cat([audio, audio]), torch.cat([mask, mask]))
    n = mask.shape[0]
    loss_d = losses.discriminator_loss(logits[:n].float(), logits[n:].float(), mask, counts)
    loss_d.backward()
    opt_d.step()
    parts.update(loss=loss_g.detach(), disc=loss_d.detach(), grad_norm=gnorm.detach())
    return parts


def _float32(x):
    """Tensors of a (nested) dict in float32 (autocast outputs -> the losses)."""
    if isinstance(x, dict):
        return {k: _float32(v) for k, v in x.items()}
    return x.float() if isinstance(x, torch.Tensor) else x


def make_optimizer(params, lr: float, device: torch.device, graph: bool = False):
    """Adam with the fused implementation (one kernel / one loop over all parameters instead of
    ~15 small ops per parameter tensor; on CPU it rounds differently from the per-tensor loop by
    ~1 ulp per step). ``graph``: capturable, with the LR as a device tensor that the scheduler
    updates in place, so a CUDA graph replays the current LR."""
    if graph:
        lr_t = torch.tensor(lr, device=device)
        return torch.optim.Adam(params, lr=lr_t, fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, fused=True)


class GraphedStep:
    """``step(batch)`` run as one captured CUDA graph (``train.cuda_graph``; CUDA, one process).

    The first ``warmup`` calls run eagerly on a side stream (they are ordinary training steps; CUDA
    graphs need the optimiser state and the allocator warmed up). The next call copies its batch
    into static input tensors and captures ``step`` on them (capture records kernels, runs none);
    every call from then on copies the batch into the static inputs and replays the graph: one
    launch for the whole step. The returned tensors are the graph's static outputs, overwritten by
    the next replay.
    A batch of another shape (a ragged last batch) runs eagerly.
    """

    def __init__(self, step, warmup: int = 3):
        self.step, self.warmup, self.calls = step, warmup, 0
        self.graph, self.static_in, self.static_out = None, None, None
        self.replays = 0

    def __call__(self, b: dict) -> dict:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(b)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.static_in = {k: v.clone() for k, v in b.items()}
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.step(self.static_in)
        elif any(v.shape != self.static_in[k].shape for k, v in b.items()):
            return self.step(b)
        else:
            for k, v in b.items():
                self.static_in[k].copy_(v, non_blocking=True)
        self.graph.replay()
        self.replays += 1
        return self.static_out


@torch.no_grad()
def validate(raw: MusicFace, ds: WindowDataset | None, cfg: Config, device,
             batch_size: int) -> dict:
    """Regression losses on fixed test-split windows (no adversarial term)."""
    if ds is None:
        return {}
    raw.eval()
    sums, n = {}, 0
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         collate_fn=collate)
    for b in loader:
        b = batch_to(b, device)
        mfcc, target, mask, p0, v0 = prepare(raw, b, cfg)
        _, parts = losses.generator_loss(raw(mfcc, b["subject"], p0, v0), target, mask, cfg.loss)
        k = mask.shape[0]
        for key in ("reg", "exp_mse", "pose_vel", "eye_l1"):
            sums[key] = sums.get(key, 0.0) + parts[key] * k
        n += k
    raw.train()
    return {f"val_{k}": v / n for k, v in sums.items()}


# ------------------------------------------------------------------------------------ checkpoints
def _rng_state() -> dict:
    np_state = np.random.get_state()
    out = {"torch": torch.get_rng_state(),
           "python": [list(random.getstate()[1]), random.getstate()[0]],
           "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
           "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python"][1], tuple(s["python"][0]), None))
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32),
                         s["numpy_pos"], 0, 0.0))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    cols = ["epoch", "step", "samples", "lr", "time_s", *METRIC_KEYS, *VAL_KEYS]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# --------------------------------------------------------------------------------------- training
def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    return torch.device(spec)


def train(shards_path: str | os.PathLike, config: dict, out: str | os.PathLike,
          resume: bool = False, progress: bool = True,
          basis: str | os.PathLike | None = None) -> Path:
    """Train on a shard set; returns the path of model.pt. Runs as one of P DDP processes when
    launched by torchrun (env WORLD_SIZE > 1); process 0 writes the outputs. ``basis``: the
    ``exp_basis.npz`` the shards' exp was projected on, embedded in model.pt (None: a model
    without one, which generates parameters but no preview and scores no LMD)."""
    cfg = from_dict(config)
    tc = cfg.train
    out = Path(out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(tc.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if tc.batch_size % world:
        raise ValueError(f"config key train.batch_size: {tc.batch_size} is not divisible by the "
                         f"{world} training processes")
    main_proc = rank == 0
    if world > 1 and main_proc:
        print(f"musicface train: DDP: {world} processes, backend {dist.get_backend()}",
              file=sys.stderr)
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        # no result here reads memory before writing it, so the NaN fill of every new tensor that
        # deterministic mode adds by default only costs time (~900 fill ops per step, one kernel
        # each on a GPU)
        torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)

    shards = open_shards(shards_path)
    model = MusicFace(cfg.model, shards.subjects, shards.exp_dim, shards.fps)
    model.set_normalisation(compute_normalisation(shards))
    if basis is not None:
        model.set_exp_basis(load_npz(basis), sha256_file(basis))
    elif main_proc:
        print("musicface train: no --basis: model.pt will carry no expression basis",
              file=sys.stderr)
    model.to(device).train()
    disc = Discriminator(MFCC_DIM * len(model.streams), cfg.model.disc_channels).to(device).train()
    graph = tc.cuda_graph
    if graph and (device.type != "cuda" or world > 1):
        raise ValueError(f"config key train.cuda_graph: needs one CUDA process (device {device}, "
                         f"{world} processes)")
    opt_g = make_optimizer(model.parameters(), tc.lr, device, graph)
    opt_d = make_optimizer(disc.parameters(), tc.lr, device, graph)

    # items carry the MFCC streams this variant reads, in page-locked memory when training on CUDA
    reader = dict(mfcc_keys=tuple(sorted(model.inputs)),
                  pin_memory=device.type == "cuda")
    ds = WindowDataset(shards, "train", tc.window, tc.samples_per_epoch, tc.seed, **reader)
    try:
        val_ds = (WindowDataset(shards, "test", tc.window, tc.val_samples, tc.seed + 1, **reader)
                  if tc.val_samples else None)
    except ShardError:
        val_ds = None  # no test take long enough: no validation column
    per_rank = tc.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(len(ds) / world) / per_rank)
    total = tc.epochs * steps_per_epoch
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g,
                                                lambda s: lr_factor(s, total, tc.decay_fraction))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d,
                                                lambda s: lr_factor(s, total, tc.decay_fraction))

    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.csv"
    start_epoch, step, rows = 0, 0, []
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["generator"]["model_config"] != to_dict(cfg.model):
            raise ValueError(f"{ckpt_path} was trained with another model config; use another "
                             f"train.name or delete {out} to start over")
        model.load_state_dict(ck["generator"]["state_dict"])
        disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        sched_g.load_state_dict(ck["sched_g"])
        sched_d.load_state_dict(ck["sched_d"])
        _set_rng_state(ck["rng"])
        if graph:  # the loaded LR is a number again: back to the device tensor the graph reads
            for opt in (opt_g, opt_d):
                for g in opt.param_groups:
                    g["lr"] = torch.as_tensor(g["lr"], device=device).clone()
        start_epoch, step = int(ck["epoch"]), int(ck["step"])
        # the rows up to the checkpoint's epoch (metrics.csv may be ahead)
        rows = list(ck["metrics"])
        if main_proc:
            print(f"musicface train: resuming {out} after epoch {start_epoch}/{tc.epochs}",
                  file=sys.stderr)
    elif resume and main_proc:
        print(f"musicface train: no checkpoint in {out}, starting a new run", file=sys.stderr)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    raw = model
    gen = (DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1
           else model)
    dsc = (DDP(disc, device_ids=[device.index] if device.type == "cuda" else None) if world > 1
           else disc)
    meta = dict(train_config=to_dict(tc), loss_config=to_dict(cfg.loss), shards=str(shards_path),
                world_size=world, shards_config_sha=shards.config_sha,
                n_train_takes=len(shards.takes("train")),
                config_sha=config_sha({k: config.get(k) for k in ("model", "train", "loss")}))

    def one_step(b):
        return train_step(gen, dsc, raw, b, cfg, opt_g, opt_d)

    run_step = GraphedStep(one_step) if graph else one_step
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        ds.set_epoch(epoch)
        sampler = (torch.utils.data.distributed.DistributedSampler(ds, world, rank, shuffle=False)
                   if world > 1 else None)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=per_rank, sampler=sampler, shuffle=False, num_workers=tc.num_workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(tc.seed * 100003 + epoch),
            pin_memory=device.type == "cuda")
        # per-epoch sums of the logged numbers, on the device, in float64 (the same additions as
        # summing Python floats): read once per epoch, not once per step
        sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=device)
        n_steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}",
                   disable=not (progress and main_proc), file=sys.stderr, dynamic_ncols=True,
                   mininterval=2.0)
        lr = tc.lr * lr_factor(step, total, tc.decay_fraction)
        for b in bar:
            lr = tc.lr * lr_factor(step, total, tc.decay_fraction)  # as LambdaLR sets it
            parts = run_step(batch_to(b, device))
            sums += torch.stack([parts[k] for k in METRIC_KEYS]).double()
            sched_g.step()
            sched_d.step()
            step += 1
            n_steps += 1
            if n_steps % LOG_EVERY == 0:
                bar.set_postfix(loss=f"{float(parts['loss']):.3f}", d=f"{float(parts['disc']):.3f}")
        row = {"epoch": epoch + 1, "step": step, "samples": len(ds), "lr": lr,
               **dict(zip(METRIC_KEYS, (sums / max(n_steps, 1)).tolist()))}
        if main_proc:
            row.update(validate(raw, val_ds, cfg, device, per_rank))
            row["time_s"] = time.perf_counter() - t0
            rows.append(row)
            ck = {"generator": export(raw, epoch=epoch + 1, **meta), "disc": disc.state_dict(),
                  "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                  "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                  "rng": _rng_state(), "epoch": epoch + 1, "step": step, "metrics": rows}
            _write_metrics(metrics_path, rows)
            # last: a kill between the two writes resumes from the previous epoch
            _save(ck, ckpt_path)
            print(f"epoch {epoch + 1}/{tc.epochs}: loss {row['loss']:.4f} reg {row['reg']:.4f} "
                  f"disc {row['disc']:.4f} lr {row['lr']:.2e} {row['time_s']:.1f}s",
                  file=sys.stderr)
        if world > 1:
            dist.barrier()

    model_path = out / "model.pt"
    if main_proc:
        _save(export(raw, epoch=tc.epochs, **meta), model_path)
        if not metrics_path.exists():
            _write_metrics(metrics_path, rows)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return model_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface train",
                                 description="Train MusicFace on HDF5 shards.")
    ap.add_argument("--shards", required=True, help="shard folder (dataset/shards) or one .h5 file")
    ap.add_argument("--basis", default=None, help="dataset/exp_basis.npz: embedded in model.pt "
                    "(the landmark model of generate's preview and of evaluate's LMD)")
    ap.add_argument("--config-json", default="{}",
                    help="the whole config as a JSON string (sections model, train, loss are used)")
    ap.add_argument("--out", required=True, help="run folder, e.g. runs/demo")
    ap.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint.pt if it exists")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op CPU threads per process (default: torch's choice, all cores)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        config = json.loads(a.config_json)
        path = train(a.shards, config, a.out, resume=a.resume, progress=not a.no_progress,
                     basis=a.basis)
    except (ShardError, StepError, OSError, ValueError, json.JSONDecodeError) as e:
        print(f"musicface train: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
