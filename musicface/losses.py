"""Training losses (paper 3.4, eq. 10-13).

    L_exp  = w1 MSE(f, f^) + w2 VEL(f, f^)
    L_pose = w3 MMD(p, p^) + w4 L1(|v|, |v^|)          v_t = p_t - p_{t-1}
    L_eye  = w5 L1(e_long, e_long^) + w6 MMD(e_long, e_long^)
    L_att  = ||att_exp||_1 + ||att_pose||_1 + ||att_eye||_1   (times w_att, default 1)
    L      = lambda1 (L_exp + L_pose + L_eye + L_att) + lambda2 L_adv

Conventions (ours, where the paper leaves them open):

* Everything is computed on the model's normalised targets (per-dim z-scores of exp and pose; e_long
  as stored, in [0, 1]), and every term is a *mean* over valid frames and over dimensions
  (``loss.reduction: mean``), so a term's size does not depend on E, the window length or the
  batch size. ``loss.reduction: sum`` is eq. 10-11 as the paper writes them: ||x - x^||^2 / T sums
  over the dimensions, so exp terms count E times, the pose speed term 6 times and L_att the 2F
  attention channels (still a mean over frames: the paper's 1/T; its ||att||_1 has none, which
  would multiply L_att by the window length too: that reading is ``w_att`` = window under
  ``sum``). MMD compares whole vectors either way. docs/fidelity.md measures both reductions.
* Expression dims share one unit (coefficients of one basis), so the exp terms weight dim d by its
  share of the training variance, w_d = std_d^2 / mean(std^2) (``loss.exp_weighting: variance``):
  the MSE is then the data-unit MSE over the mean variance, as the paper's loss on raw coefficients
  weights them. Plain z-scores (``uniform``) give a PCA basis' noise-level tail components (std 100x
  below the mouth's on the demo) as much weight as the mouth. Pose dims have different units
  (radians, translation) and stay z-scored with equal weights.
* Masks: a frame with valid = 0 is left out of every term; a velocity (and its pair of frames)
  counts only when both frames are valid. A window with fewer than two valid frames adds nothing to
  MMD.
* Denominators: each mean divides by its batch's count of valid frames, valid pairs or MMD windows
  (:func:`batch_counts`). Under DDP every process passes ``counts`` = the global batch's counts / P
  instead of its own, so that DDP's average of the P gradients is the gradient of the global batch's
  mean, as in one process (the processes' batches hold different numbers of valid frames).
* MMD (Li et al. 2015, the paper's [32]): the frames of one window are the samples; biased
  (V-statistic) squared MMD with a Gaussian kernel averaged over several bandwidths
  (``loss.mmd_bandwidths``, in normalised units), averaged over windows.
* L_att: the mean of att over valid frames and channels (att > 0, so this is the L1 norm / count).
* Adversarial: the non-saturating form of eq. 12 with BCE on per-frame logits. The discriminator
  minimises BCE(D(real), 1) + BCE(D(fake), 0); the generator minimises BCE(D(fake), 1) instead of
  -BCE(D(fake), 0): the same fixed point, but it does not saturate when D wins early (Goodfellow
  2014).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from musicface.config import LossConfig


def batch_counts(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The denominators of a batch's terms: valid ``frames``, valid velocity ``pairs``, and MMD
    ``windows`` (those with >= 2 valid frames), as float tensors."""
    return {"frames": mask.sum(), "pairs": pair_mask(mask).sum(),
            "windows": (mask.sum(1) >= 2).float().sum()}


def masked_mean(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None,
                count: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` (B, T, ...) over frames where ``mask`` (B, T) is 1 and over trailing dims,
    each element of the last dim times ``weight`` (D,) if given (weights with mean 1 keep the
    scale). ``count``: the number of frames to divide by (default ``mask.sum()``; DDP: module
    docstring)."""
    extra = x[0, 0].numel()
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))
    if weight is not None:
        x = x * weight
    return (x * m).sum() / ((mask.sum() if count is None else count) * extra).clamp_min(1.0)


def velocity(x: torch.Tensor) -> torch.Tensor:
    """x_t - x_{t-1} along time: (B, T, ...) -> (B, T-1, ...)."""
    return x[:, 1:] - x[:, :-1]


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """Valid velocities: both frames valid, (B, T) -> (B, T-1)."""
    return mask[:, 1:] * mask[:, :-1]


def mse(pred, target, mask, weight=None, count=None):
    return masked_mean((pred - target) ** 2, mask, weight, count)


def l1(pred, target, mask, count=None):
    return masked_mean((pred - target).abs(), mask, count=count)


def velocity_loss(pred, target, mask, weight=None, count=None):
    """L_VEL: squared error of frame-to-frame differences (``count``: of valid pairs)."""
    return mse(velocity(pred), velocity(target), pair_mask(mask), weight, count)


def abs_velocity_l1(pred, target, mask, count=None):
    """L1 between absolute velocities |v| and |v^| (the PGN learns speed, not direction, from
    data)."""
    return l1(velocity(pred).abs(), velocity(target).abs(), pair_mask(mask), count)


def mmd(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, bandwidths=(0.25, 0.5, 1.0, 2.0, 4.0),
        count: torch.Tensor | None = None):
    """Squared MMD between the valid frames of x and y, per window, averaged over windows.

    x, y: (B, T, D) or (B, T); mask (B, T). Kernel k(a, b) = mean_s exp(-|a - b|^2 / (2 s^2)).
    ``count``: the number of windows to divide by (default: this batch's windows with >= 2 frames).
    """
    if x.dim() == 2:
        x, y = x[..., None], y[..., None]
    w = mask / mask.sum(1, keepdim=True).clamp_min(1.0)  # per-window sample weights, sum to 1

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return torch.stack([torch.exp(-d2 / (2 * s * s)) for s in bandwidths]).mean(0)

    def wkw(a, b):
        return torch.einsum("bi,bij,bj->b", w, k(a, b), w)

    per_window = wkw(x, x) + wkw(y, y) - 2 * wkw(x, y)
    ok = (mask.sum(1) >= 2).float()
    return (per_window * ok).sum() / (ok.sum() if count is None else count).clamp_min(1.0)


def attention_l1(att: dict | None, mask: torch.Tensor, count=None) -> torch.Tensor:
    if not att:
        return mask.new_zeros(())
    return sum(masked_mean(a.abs(), mask, count=count) for a in att.values())


def _bce(logits, target: float, mask, count=None):
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target),
                                              reduction="none")
    return masked_mean(loss, mask, count=count)


def discriminator_loss(real_logits, fake_logits, mask, counts: dict | None = None):
    """D's side of eq. 12: BCE(D(real), 1) + BCE(D(fake), 0) over valid frames
    (``counts``: :func:`batch_counts` of the global batch / P under DDP)."""
    n = None if counts is None else counts["frames"]
    return _bce(real_logits, 1.0, mask, n) + _bce(fake_logits, 0.0, mask, n)


def generator_adversarial_loss(fake_logits, mask, count=None):
    """G's side of eq. 12, non-saturating: BCE(D(fake), 1)."""
    return _bce(fake_logits, 1.0, mask, count)


def generator_loss(pred: dict, target: dict, mask: torch.Tensor, cfg: LossConfig,
                   fake_logits: torch.Tensor | None = None,
                   counts: dict | None = None, floats: bool = True) -> tuple[torch.Tensor, dict]:
    """Total generator loss (eq. 13) and its parts (detached floats, for metrics.csv).

    ``pred``: the model's normalised outputs (exp, pose, e_long, att); ``target``: exp, pose
    (normalised), e_long, and optionally exp_weight (E,) (see the module docstring); ``mask``:
    valid (B, T) float; ``counts``: the denominators (:func:`batch_counts`; default this batch's).
    ``floats=False``: the parts as detached 0-dim tensors on the device instead (reading a float
    waits for the device: the training loop reads them every few steps).
    """
    bw = tuple(cfg.mmd_bandwidths)
    w_exp = target.get("exp_weight")
    c = counts or {}
    frames, pairs, windows = c.get("frames"), c.get("pairs"), c.get("windows")
    parts = {
        "exp_mse": mse(pred["exp"], target["exp"], mask, w_exp, frames),
        "exp_vel": velocity_loss(pred["exp"], target["exp"], mask, w_exp, pairs),
        "pose_mmd": mmd(pred["pose"], target["pose"], mask, bw, windows),
        "pose_vel": abs_velocity_l1(pred["pose"], target["pose"], mask, pairs),
        "eye_l1": l1(pred["e_long"], target["e_long"], mask, frames),
        "eye_mmd": mmd(pred["e_long"], target["e_long"], mask, bw, windows),
        "att": attention_l1(pred.get("att"), mask, frames),
    }
    if cfg.reduction == "sum":  # eq. 10-11 as written: sums over dimensions (module docstring)
        dims = {"exp_mse": pred["exp"].shape[-1], "exp_vel": pred["exp"].shape[-1],
                "pose_vel": pred["pose"].shape[-1],
                "att": next(iter(pred["att"].values())).shape[-1] if pred.get("att") else 1}
        parts.update({k: parts[k] * d for k, d in dims.items()})
    reg = (cfg.w1 * parts["exp_mse"] + cfg.w2 * parts["exp_vel"] + cfg.w3 * parts["pose_mmd"]
           + cfg.w4 * parts["pose_vel"] + cfg.w5 * parts["eye_l1"] + cfg.w6 * parts["eye_mmd"]
           + cfg.w_att * parts["att"])
    adv = (generator_adversarial_loss(fake_logits, mask, frames) if fake_logits is not None
           else reg.new_zeros(()))
    total = cfg.lambda1 * reg + cfg.lambda2 * adv
    parts.update(reg=reg, adv=adv)
    return total, {k: float(v.detach()) if floats else v.detach() for k, v in parts.items()}
