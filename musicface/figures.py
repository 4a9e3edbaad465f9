"""Evaluation figures (PNG), after the paper's Figures 5b, 6 and 9, plus training curves.

    pose_curves(path, pose_gen, pose_gt)  Fig. 5b: pitch (red), yaw (blue), roll (green), degrees
    attention_maps(path, att)             Fig. 6: the exp / pose / eye attention maps over time
    eye_durations(path, gen_s, real_s)    Fig. 9: distribution of eye-closure durations
    training_curves(path, "runs/x/metrics.csv")
                                          every numeric column of the training log vs its step
    note_figure(path, text)               a figure that only says why a plot is absent

All writes are atomic (temp file + rename). Matplotlib runs headless (Agg).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from preprocessing.common import atomic_path
from preprocessing.timebase import FPS

ANGLE_COLOURS = {"pitch": "tab:red", "yaw": "tab:blue", "roll": "tab:green"}  # the paper's colours


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _plt()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def note_figure(path, text: str, title: str = "") -> Path:
    """A small figure holding only ``text`` (why the plot it stands for cannot be drawn)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def pose_curves(path, pose_gen, pose_gt, *, fps: float = FPS, title: str = "", valid=None) -> Path:
    """Fig. 5b: head rotation of ground truth (top) and generation (bottom), degrees vs seconds.

    ``pose_* (T, >=3)`` with pitch, yaw, roll in radians; ground-truth frames where ``valid`` is 0
    (face not tracked) are left out of the curve.
    """
    plt = _plt()
    gt = np.degrees(np.asarray(pose_gt, dtype=np.float64)[:, :3])
    gen = np.degrees(np.asarray(pose_gen, dtype=np.float64)[:, :3])
    if valid is not None:
        gt = gt.copy()
        gt[~np.asarray(valid, dtype=bool)] = np.nan
    t = np.arange(len(gt)) / fps
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True, sharey=True)
    for ax, data, name in ((axes[0], gt, "ground truth"), (axes[1], gen, "generated")):
        for k, (angle, colour) in enumerate(ANGLE_COLOURS.items()):
            ax.plot(t[: len(data)], data[:, k], color=colour, lw=1.0, label=angle)
        ax.set_ylabel(f"{name}\n(degrees)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", ncol=3, fontsize=8)
    axes[1].set_xlabel("time (s)")
    fig.suptitle(title or "Head rotation: ground truth vs generated")
    fig.tight_layout()
    return _save(fig, path)


def attention_maps(path, att: dict | None, *, fps: float = FPS, title: str = "",
                   note: str = "") -> Path:
    """Fig. 6: attention weights ``att[task] (T, C)`` for task in exp, pose, eye (time horizontal,
    feature channel vertical, brighter = higher). Channels ``0..C/2`` are the vocal stream (f_v),
    the rest the music stream (f_b), separated by a line. Without maps (a variant without ATM) the
    figure is a note saying so.
    """
    if not att:
        return note_figure(path, note or "no attention maps: this variant has no ATM", title)
    plt = _plt()
    tasks = [k for k in ("exp", "pose", "eye") if k in att and att[k] is not None]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 2.2 * len(tasks) + 0.6), sharex=True,
                             squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        a = np.asarray(att[task], dtype=np.float64)
        t_end = len(a) / fps
        im = ax.imshow(a.T, aspect="auto", cmap="gray", vmin=0.0, vmax=1.0, origin="lower",
                       extent=(0, t_end, 0, a.shape[1]), interpolation="nearest")
        ax.axhline(a.shape[1] / 2, color="tab:orange", lw=0.8)
        ax.set_ylabel(f"{task}\nchannel")
        ax.text(1.01, 0.25, "vocals", transform=ax.transAxes, fontsize=7, rotation=90, va="center")
        ax.text(1.01, 0.75, "music", transform=ax.transAxes, fontsize=7, rotation=90, va="center")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(title or "ATM attention weights")
    return _save(fig, path)


def eye_durations(path, gen_durations, real_durations, *, tau: float = 0.5,
                  title: str = "") -> Path:
    """Fig. 9: histograms (density) of closed-eye run durations, generated vs real, with tau
    marked."""
    plt = _plt()
    gen = np.asarray(gen_durations, dtype=np.float64)
    real = np.asarray(real_durations, dtype=np.float64)
    top = max([1.0, *(gen.tolist()), *(real.tolist())])
    step = 0.1 if top <= 3 else 0.25
    bins = np.arange(0.0, top + 1.5 * step, step)  # the last edge is past the longest closure
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for data, label, colour, style in ((real, "real", "tab:gray", dict(alpha=0.6)),
                                       (gen, "generated", "tab:blue", dict(histtype="step", lw=2))):
        if len(data):
            ax.hist(data, bins=bins, color=colour, density=True, **style,
                    label=f"{label} (n={len(data)}, mean {data.mean():.2f} s)")
        else:
            ax.plot([], [], color=colour, label=f"{label} (no closures)")
    ax.axvline(tau, color="k", ls="--", lw=1, label=f"tau = {tau:g} s")
    ax.set_xlabel("eye-closure duration (s)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or "Distribution of eye-closure durations")
    fig.tight_layout()
    return _save(fig, path)


def training_curves(path, csv_path, title: str = "") -> Path:
    """Every numeric column of a training log (``runs/<name>/metrics.csv``: losses, lr, validation
    losses) against its epoch (or step), one panel per column (at most 12), log scale where all
    values are positive."""
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.exists():
        return note_figure(path, f"no training log at {csv_path}", title or "Training curves")
    df = pd.read_csv(csv_path)
    num = df.select_dtypes("number")
    if num.shape[1] < 2 or len(num) == 0:
        return note_figure(path, f"training log {csv_path.name} has no numeric rows",
                           title or "Training curves")
    x_name = "epoch" if "epoch" in num else "step" if "step" in num else num.columns[0]
    # bookkeeping, not curves
    skip = {x_name, "epoch", "step", "samples", "time", "time_s", "wall_s"}
    cols = [c for c in num.columns if c not in skip and num[c].notna().any()]
    cols = cols[:12]
    plt = _plt()
    ncol = 3 if len(cols) > 4 else max(1, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.4 * nrow + 0.5), squeeze=False)
    for ax, c in zip(axes.ravel(), cols):
        y = num[c]
        ok = y.notna()
        ax.plot(num[x_name][ok], y[ok], marker="." if ok.sum() < 60 else None, lw=1)
        if (y[ok] > 0).all():
            ax.set_yscale("log")
        ax.set_title(c, fontsize=9)
        ax.set_xlabel(x_name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(cols):]:
        ax.axis("off")
    fig.suptitle(title or f"Training curves ({csv_path.parent.name})")
    fig.tight_layout()
    return _save(fig, path)
