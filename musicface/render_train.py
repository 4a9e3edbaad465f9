"""`musicface render-train`: one subject's renderer from its training takes' render data.

    python -m musicface.cli render-train --subject singer1 --config-json '{"size": 128, ...}' \
        --out runs/demo/render/singer1.pt [--resume] work/takes/*/render.h5

Reads the ``render.h5`` files given (failure records and other subjects' takes are skipped; only
takes of the ``train`` split are used: the test takes are held out for ``musicface render``'s
reconstruction scores), samples random valid frames, and trains :mod:`musicface.renderer`'s
generator and multi-scale discriminator with Adam (``lr``, betas 0.5 / 0.999; the learning rate
decays linearly to 0 over the last ``decay_fraction`` of the steps).

* The subject's *canonical take* (the training take with the most valid frames) gives the geometry
  that generation renders with (crop, frame size, identity shape); the *reference frame* is the
  per-pixel median of up to 300 evenly spaced valid training frames.
* Resumable like ``musicface train``: ``<out>.state.pt`` (both networks, optimisers, step, RNG) is
  written every ``save_every`` steps and at the end; ``--resume`` continues from it (the batches are
  a pure function of (seed, step), so a resumed run draws the same batches). Losses go to
  ``<out minus .pt>.csv``.
* The output ``<subject>.pt`` is self-contained (:func:`musicface.renderer.save_renderer`): it names
  its subject and carries the generator, the reference frame, the geometry and the expression basis;
  it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from musicface.renderer import (
    Generator,
    MultiScaleDiscriminator,
    RendererConfig,
    VGGLoss,
    discriminator_loss,
    generator_losses,
    save_renderer,
)
from preprocessing.common import StepError, atomic_path, read_failure

TRAIN_DEFAULTS = {
    "steps": 1500,
    "batch_size": 4,
    "lr": 2.0e-4,
    "decay_fraction": 0.5,
    "seed": 0,
    "save_every": 250,
    "threads": 0,
    "device": "auto",
    "vgg_weights": None,
    "vgg_arch": "vgg19",
}
REFERENCE_FRAMES = 300


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------ data
class SubjectFrames:
    """The valid frames of a subject's training takes: ``batch(rng, k)`` -> (cond stack, real image)
    as float tensors (cond in [0, 1], images in [-1, 1])."""

    def __init__(self, takes, context: int):
        self.takes = takes
        self.context = context
        self.index = np.array(
            [(k, i) for k, t in enumerate(takes) for i in np.flatnonzero(t.valid)], np.int64
        ).reshape(-1, 2)
        if not len(self.index):
            raise StepError("the training takes have no valid frame")

    def item(self, k: int, i: int):
        t = self.takes[k]
        idx = np.clip(np.arange(i - self.context, i + self.context + 1), 0, t.n - 1)
        lo, hi = idx.min(), idx.max() + 1
        block = t.cond[lo:hi]  # one HDF5 read of the window
        cond = block[idx - lo].reshape(-1, t.size, t.size)
        return cond, t.frame(i)

    def batch(self, rng: np.random.Generator, k: int):
        rows = self.index[rng.integers(0, len(self.index), k)]
        conds, imgs = zip(*(self.item(int(a), int(b)) for a, b in rows), strict=True)
        cond = torch.from_numpy(np.stack(conds)).float().div_(255.0)
        img = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return cond, img

    def reference(self, count: int = REFERENCE_FRAMES) -> np.ndarray:
        """Per-pixel median of up to ``count`` evenly spaced valid frames: uint8 (3, S, S)."""
        pick = self.index[
            np.unique(np.linspace(0, len(self.index) - 1, min(count, len(self.index))).astype(int))
        ]
        frames = np.stack([self.takes[k].frame(i) for k, i in pick])
        return np.median(frames, axis=0).round().astype(np.uint8).transpose(2, 0, 1)


def open_subject_takes(paths, subject: str, split: str = "train", log=print):
    """The render data of ``subject``'s takes of ``split`` (failure records and others skipped)."""
    from musicface.render_data import RenderTake

    takes = []
    for p in paths:
        rec = read_failure(p)
        if rec is not None:
            log(f"render-train: skipping {p} ({rec['step']}: {rec['reason']})")
            continue
        t = RenderTake(p)
        if t.subject == subject and t.split == split:
            takes.append(t)
        else:
            t.close()
    return takes


# ------------------------------------------------------------------------------------ training
def _lr_at(step: int, steps: int, lr: float, decay_fraction: float) -> float:
    start = int(steps * (1 - decay_fraction))
    if step < start or steps <= start:
        return lr
    return lr * max(0.0, (steps - step) / (steps - start))


def train(
    subject: str,
    paths,
    out,
    cfg: RendererConfig,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    decay_fraction: float,
    seed: int,
    save_every: int,
    device: str = "auto",
    vgg_weights=None,
    vgg_arch: str = "vgg19",
    resume: bool = False,
    until: int | None = None,
    progress: bool = True,
) -> dict:
    """Train (module docstring). ``until``: stop after that step with the state saved and no
    renderer file written, as a killed run would (tests)."""
    from tqdm import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".state.pt")
    log_path = out.with_suffix(".csv")
    takes = open_subject_takes(paths, subject, log=lambda m: print(m, file=sys.stderr))
    if not takes:
        raise StepError(f"no training take of subject '{subject}' in the render data")
    sizes = {t.size for t in takes}
    if sizes != {cfg.size}:
        raise StepError(f"render data size {sorted(sizes)} differs from render.size {cfg.size}")
    data = SubjectFrames(takes, cfg.context)
    canon = max(takes, key=lambda t: int(t.valid.sum()))
    dev = resolve_device(device)
    torch.manual_seed(seed)
    G, D = Generator(cfg).to(dev), MultiScaleDiscriminator(cfg).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    vgg = VGGLoss(vgg_weights, vgg_arch).to(dev) if vgg_weights else None
    step = 0
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=dev, weights_only=True)
        if st["config"] != asdict(cfg) or st["subject"] != subject:
            raise StepError(
                f"{state_path} was written for another renderer configuration or subject: "
                "delete it to start over"
            )
        G.load_state_dict(st["G"])
        D.load_state_dict(st["D"])
        opt_g.load_state_dict(st["opt_g"])
        opt_d.load_state_dict(st["opt_d"])
        step = int(st["step"])
        reference = st["reference"].numpy()
        print(f"render-train: resumed {subject} at step {step}", file=sys.stderr)
    else:
        reference = data.reference()
        log_path.unlink(missing_ok=True)
    ref = torch.from_numpy(reference).float().div(127.5).sub(1.0).to(dev)[None]

    def save_state():
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "G": G.state_dict(),
                    "D": D.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "step": step,
                    "config": asdict(cfg),
                    "subject": subject,
                    "reference": torch.from_numpy(reference),
                },
                tmp,
            )

    new_log = not log_path.is_file()
    log_fh = open(log_path, "a", newline="")
    writer = csv.writer(log_fh)
    if new_log:
        writer.writerow(["step", "lr", "d", "gan", "fm", "l1", "vgg", "seconds"])
    G.train()
    D.train()
    t0 = time.perf_counter()
    bar = tqdm(
        total=steps,
        initial=step,
        desc=f"render-train {subject}",
        unit="step",
        disable=not progress,
        mininterval=5,
    )
    try:
        stop = steps if until is None else min(until, steps)
        while step < stop:
            rng = np.random.default_rng([seed, step])
            cond, real = data.batch(rng, batch_size)
            cond, real = cond.to(dev), real.to(dev)
            cur = _lr_at(step, steps, lr, decay_fraction)
            for o in (opt_g, opt_d):
                for gr in o.param_groups:
                    gr["lr"] = cur
            fake = G(cond, ref.expand(len(cond), -1, -1, -1))
            opt_d.zero_grad(set_to_none=True)
            d_loss = discriminator_loss(D, cond, fake, real, cfg)
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            terms = generator_losses(D, cond, fake, real, cfg, vgg)
            terms["total"].backward()
            opt_g.step()
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == steps:
                writer.writerow(
                    [step, f"{cur:.3g}", f"{d_loss.item():.5f}"]
                    + [
                        f"{terms[k].item():.5f}" if k in terms else ""
                        for k in ("gan", "fm", "l1", "vgg")
                    ]
                    + [f"{time.perf_counter() - t0:.1f}"]
                )
                log_fh.flush()
            if step % save_every == 0 or step == stop:
                save_state()
    finally:
        bar.close()
        log_fh.close()
    if step < steps:
        return {"steps_done": step}
    info = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "takes": [t.take for t in takes],
        "canonical_take": canon.take,
        "frames": int(len(data.index)),
        "vgg": bool(vgg),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    basis = _basis_of(canon)
    save_renderer(
        out,
        subject=subject,
        cfg=cfg,
        generator=G.cpu(),
        reference=torch.from_numpy(reference),
        geometry=canon.geometry,
        basis=basis,
        info=info,
    )
    for t in takes:
        t.close()
    return info


def _basis_of(take) -> dict:
    """The expression basis the take's conditions were built with (render-data stores it)."""
    import h5py

    with h5py.File(take.path, "r") as f:
        return {k: f["basis"][k][()] for k in f["basis"]}


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface render-train", description=__doc__.split("\n")[0])
    ap.add_argument("--subject", required=True)
    ap.add_argument("--config-json", default="{}", help="the render: section of the config (JSON)")
    ap.add_argument("--out", required=True, help="runs/<name>/render/<subject>.pt")
    ap.add_argument(
        "--resume", action="store_true", help="continue from <out>.state.pt when present"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "data", nargs="+", help="render.h5 files (any subject; failure records allowed)"
    )
    a = ap.parse_args(argv)
    conf = json.loads(a.config_json)
    opts = {**TRAIN_DEFAULTS, **{k: v for k, v in conf.items() if k in TRAIN_DEFAULTS}}
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        cfg = RendererConfig.from_dict(conf)
        info = train(
            a.subject,
            a.data,
            a.out,
            cfg,
            steps=int(opts["steps"]),
            batch_size=int(opts["batch_size"]),
            lr=float(opts["lr"]),
            decay_fraction=float(opts["decay_fraction"]),
            seed=int(opts["seed"]),
            save_every=int(opts["save_every"]),
            device=str(opts["device"]),
            vgg_weights=opts["vgg_weights"],
            vgg_arch=str(opts["vgg_arch"]),
            resume=a.resume,
        )
    except (StepError, ValueError, FileNotFoundError) as e:
        print(f"musicface render-train: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
