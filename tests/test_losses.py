"""Losses of paper 3.4: values against hand computations, masks, and the paper's default weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicface import losses
from musicface.config import LossConfig, from_dict


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_paper_default_weights():
    c = LossConfig()
    assert (c.w1, c.w2, c.w3, c.w4, c.w5, c.w6) == (5.0, 50.0, 1.0, 10.0, 5.0, 1.0)
    assert (c.lambda1, c.lambda2, c.w_att) == (1.0, 0.1, 1.0)
    assert from_dict({"loss": {"w2": 20}}).loss.w2 == 20
    with pytest.raises(ValueError, match=r"config section 'loss': unknown key\(s\) w7"):
        from_dict({"loss": {"w7": 1}})


def test_mse_and_l1_against_numpy_and_masks():
    x, y = _rand(2, 10, 3, seed=1), _rand(2, 10, 3, seed=2)
    mask = torch.ones(2, 10)
    mask[1, 4:] = 0
    xn, yn, keep = x.numpy(), y.numpy(), mask.numpy() > 0
    assert math.isclose(float(losses.mse(x, y, mask)), float(((xn - yn) ** 2)[keep].mean()),
                        rel_tol=1e-6)
    assert math.isclose(float(losses.l1(x, y, mask)), float(np.abs(xn - yn)[keep].mean()),
                        rel_tol=1e-6)
    # garbage in masked frames changes nothing
    x2 = x.clone()
    x2[1, 4:] = 1e6
    assert float(losses.mse(x2, y, mask)) == pytest.approx(float(losses.mse(x, y, mask)), rel=1e-6)
    assert float(losses.mse(x, x, mask)) == 0.0


def test_velocity_losses():
    x, y = _rand(1, 6, 2, seed=3), _rand(1, 6, 2, seed=4)
    mask = torch.ones(1, 6)
    mask[0, 3] = 0  # drops the velocities 2->3 and 3->4
    vx, vy = np.diff(x.numpy()[0], axis=0), np.diff(y.numpy()[0], axis=0)
    keep = np.array([True, True, False, False, True])
    assert float(losses.velocity_loss(x, y, mask)) == pytest.approx(
        float(((vx - vy) ** 2)[keep].mean()), rel=1e-6)
    assert float(losses.abs_velocity_l1(x, y, mask)) == pytest.approx(
        float(np.abs(np.abs(vx) - np.abs(vy))[keep].mean()), rel=1e-6)
    # |v| loss: moving the other way at the same speed costs nothing; the velocity loss does see it
    assert float(losses.abs_velocity_l1(-x, x, torch.ones(1, 6))) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.velocity_loss(-x, x, torch.ones(1, 6))) > 0.1
    # a constant offset has no velocity error
    assert float(losses.velocity_loss(x + 3.0, x, mask)) == pytest.approx(0.0, abs=1e-10)


def _mmd_numpy(x, y, bw):
    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return np.mean([np.exp(-d2 / (2 * s * s)) for s in bw], axis=0)

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_matches_definition_and_is_a_distribution_distance():
    bw = (0.5, 1.0, 2.0)
    x, y = _rand(2, 40, 3, seed=5), _rand(2, 40, 3, seed=6) + 0.5
    mask = torch.ones(2, 40)
    mask[1, 30:] = 0
    got = float(losses.mmd(x, y, mask, bw))
    want = np.mean([_mmd_numpy(x[0].numpy(), y[0].numpy(), bw),
                    _mmd_numpy(x[1, :30].numpy(), y[1, :30].numpy(), bw)])
    # float32 kernel means cancel: ~1e-5 relative error that depends on the reduction order
    # (threads)
    assert got == pytest.approx(want, rel=1e-3)
    # zero for the same samples in any order (a distribution loss, not a frame-by-frame one)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert float(losses.mmd(x, x[:, perm], torch.ones(2, 40), bw)) == pytest.approx(0.0, abs=1e-6)
    # grows with the distance between the distributions
    d = [float(losses.mmd(x, x + s, torch.ones(2, 40), bw)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(d, d[1:])) and d[0] > 0
    # 1-D inputs (e_long) work; windows with < 2 valid frames are skipped
    e1, e2 = torch.rand(3, 20), torch.rand(3, 20)
    m = torch.ones(3, 20)
    m[2] = 0
    m[2, 0] = 1
    one_d = float(losses.mmd(e1, e2, m, bw))
    want = np.mean([_mmd_numpy(e1[i, :, None].numpy(), e2[i, :, None].numpy(), bw)
                    for i in range(2)])
    assert one_d == pytest.approx(want, rel=1e-3)


def test_attention_and_adversarial_losses():
    mask = torch.ones(2, 8)
    mask[0, :4] = 0
    att = {"exp": torch.full((2, 8, 4), 0.25), "pose": torch.full((2, 8, 4), 0.5),
           "eye": torch.full((2, 8, 4), 1.0)}
    att["exp"][0, :4] = 99.0  # masked frames do not count
    assert float(losses.attention_l1(att, mask)) == pytest.approx(1.75)
    assert float(losses.attention_l1(None, mask)) == 0.0
    z = torch.zeros(2, 8)
    assert float(losses.discriminator_loss(z, z, mask)) == pytest.approx(2 * math.log(2), rel=1e-6)
    assert float(losses.generator_adversarial_loss(z, mask)) == pytest.approx(math.log(2), rel=1e-6)
    big = torch.full((2, 8), 12.0)
    assert float(losses.discriminator_loss(big, -big, mask)) < 1e-4  # D is right: no loss
    # non-saturating: G still learns
    assert float(losses.generator_adversarial_loss(-big, mask)) > 11.9


def _pred_target(seed=0, b=2, t=16, e=4):
    pred = {"exp": _rand(b, t, e, seed=seed), "pose": _rand(b, t, 6, seed=seed + 1),
            "e_long": torch.rand(b, t, generator=torch.Generator().manual_seed(seed + 2)),
            "att": {"exp": torch.full((b, t, 4), 0.5)}}
    target = {"exp": _rand(b, t, e, seed=seed + 3), "pose": _rand(b, t, 6, seed=seed + 4),
              "e_long": torch.zeros(b, t)}
    return pred, target


def test_generator_loss_is_the_weighted_sum():
    pred, target = _pred_target()
    mask = torch.ones(2, 16)
    fake = _rand(2, 16, seed=9)
    cfg = LossConfig()
    total, parts = losses.generator_loss(pred, target, mask, cfg, fake)
    reg = (5 * parts["exp_mse"] + 50 * parts["exp_vel"] + 1 * parts["pose_mmd"]
           + 10 * parts["pose_vel"] + 5 * parts["eye_l1"] + 1 * parts["eye_mmd"] + 1 * parts["att"])
    assert parts["reg"] == pytest.approx(reg, rel=1e-5)
    assert float(total) == pytest.approx(1.0 * reg + 0.1 * parts["adv"], rel=1e-5)
    assert parts["att"] == pytest.approx(0.5)
    # each weight selects its own term
    names = ["exp_mse", "exp_vel", "pose_mmd", "pose_vel", "eye_l1", "eye_mmd"]
    for i, name in enumerate(names):
        w = {f"w{j + 1}": 0.0 for j in range(6)}
        w[f"w{i + 1}"] = 2.0
        only = LossConfig(**w, w_att=0.0, lambda2=0.0)
        t, p = losses.generator_loss(pred, target, mask, only, fake)
        assert float(t) == pytest.approx(2.0 * p[name], rel=1e-6), name


def test_sum_reduction_is_eq_10_11_as_written():
    """loss.reduction: sum: the per-dimension means times the dimensions they average over
    (E for exp, 6 for the pose speed, the attention channels); MMD and e_long unchanged."""
    pred, target = _pred_target(e=5)
    pred["att"] = {"exp": torch.full((2, 16, 3), 0.5), "pose": torch.full((2, 16, 3), 0.25)}
    mask = torch.ones(2, 16)
    _, mean = losses.generator_loss(pred, target, mask, LossConfig())
    _, summed = losses.generator_loss(pred, target, mask, LossConfig(reduction="sum"))
    e, c = pred["exp"].shape[-1], next(iter(pred["att"].values())).shape[-1]
    for key, dims in (("exp_mse", e), ("exp_vel", e), ("pose_vel", 6), ("att", c), ("pose_mmd", 1),
                      ("eye_l1", 1), ("eye_mmd", 1)):
        assert summed[key] == pytest.approx(dims * mean[key], rel=1e-6), key
    # by hand: the exp MSE summed over dimensions, averaged over frames
    by_hand = ((pred["exp"] - target["exp"]) ** 2).sum(-1).mean()
    assert summed["exp_mse"] == pytest.approx(float(by_hand), rel=1e-5)
    with pytest.raises(ValueError, match="config key loss.reduction: 'total'"):
        from_dict({"loss": {"reduction": "total"}})


def test_invalid_frames_are_excluded_from_every_term():
    pred, target = _pred_target(seed=3)
    mask = torch.ones(2, 16)
    mask[0, 5:9] = 0
    fake = _rand(2, 16, seed=10)
    _, a = losses.generator_loss(pred, target, mask, LossConfig(), fake)
    pred2 = {k: (v.clone() if torch.is_tensor(v) else {kk: vv.clone() for kk, vv in v.items()})
             for k, v in pred.items()}
    for k in ("exp", "pose", "e_long"):
        pred2[k][0, 5:9] = 50.0
    pred2["att"]["exp"][0, 5:9] = 50.0
    fake2 = fake.clone()
    fake2[0, 5:9] = -40.0
    _, b = losses.generator_loss(pred2, target, mask, LossConfig(), fake2)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k


def test_variance_weighting_of_expression_dims():
    """exp_weighting 'variance': the z-scored MSE weighted by std^2 / mean(std^2) is the data-unit
    MSE over the mean variance, so a noise-level dim counts as little as its variance."""
    std = torch.tensor([1.0, 0.5, 0.01])
    w = std ** 2 / (std ** 2).mean()
    x, y = _rand(2, 12, 3, seed=7), _rand(2, 12, 3, seed=8)  # z-scored prediction and target
    mask = torch.ones(2, 12)
    got = float(losses.mse(x, y, mask, w))
    data_units = float((((x - y) * std) ** 2).mean() / (std ** 2).mean())
    assert got == pytest.approx(data_units, rel=1e-6)
    # an error in the noise dim alone costs ~1e-4 of the same error in the first dim
    e0, e2 = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    e0[..., 0], e2[..., 2] = 1.0, 1.0
    m = torch.ones(1, 4)
    assert (float(losses.mse(e2, 0 * e2, m, w)) / float(losses.mse(e0, 0 * e0, m, w))
            == pytest.approx(1e-4, rel=1e-3))
    pred, target = _pred_target(seed=11, e=3)
    target["exp_weight"] = w
    _, parts = losses.generator_loss(pred, target, torch.ones(2, 16), LossConfig())
    assert parts["exp_mse"] == pytest.approx(
        float(losses.mse(pred["exp"], target["exp"], torch.ones(2, 16), w)), rel=1e-6)
    assert parts["exp_vel"] == pytest.approx(
        float(losses.velocity_loss(pred["exp"], target["exp"], torch.ones(2, 16), w)), rel=1e-6)


def test_global_counts_make_the_processes_mean_the_global_batch_loss():
    """DDP averages the P processes' gradients; with ``counts`` = the global batch's counts / P, the
    mean of the processes' losses (and so of their gradients) is the global batch's loss, term by
    term, also when the processes hold different numbers of valid frames / pairs / MMD windows."""
    pred, target = _pred_target(seed=5, b=4)
    mask = torch.ones(4, 16)
    mask[0, 3:9] = 0
    mask[1, 10] = 0
    mask[3, 1:] = 0                                  # a window with one valid frame: no MMD
    fake, real = _rand(4, 16, seed=11), _rand(4, 16, seed=12)
    cfg = LossConfig()
    total, parts = losses.generator_loss(pred, target, mask, cfg, fake)
    disc = losses.discriminator_loss(real, fake, mask)
    counts = losses.batch_counts(mask)
    assert losses.generator_loss(pred, target, mask, cfg, fake, counts)[1] == parts
    assert {k: float(v) for k, v in counts.items()} == {"frames": 42, "pairs": 36, "windows": 3}
    shares = {k: v / 2 for k, v in counts.items()}
    halves = [slice(0, 2), slice(2, 4)]               # process 0: windows 0, 1; process 1: 2, 3

    def sub(d, h):
        return {k: (sub(v, h) if isinstance(v, dict) else v[h]) for k, v in d.items()}

    got = [losses.generator_loss(sub(pred, h), sub(target, h), mask[h], cfg, fake[h], shares)
           for h in halves]
    assert float(sum(t for t, _ in got) / 2) == pytest.approx(float(total), rel=1e-6)
    for k in parts:
        assert sum(p[k] for _, p in got) / 2 == pytest.approx(parts[k], rel=1e-6, abs=1e-9), k
    d = [losses.discriminator_loss(real[h], fake[h], mask[h], shares) for h in halves]
    assert float(sum(d) / 2) == pytest.approx(float(disc), rel=1e-6)
    # each process's own counts weight the processes' frames unequally: not the global loss
    own = [losses.generator_loss(sub(pred, h), sub(target, h), mask[h], cfg, fake[h])[0]
           for h in halves]
    assert abs(float(sum(own) / 2) - float(total)) > 1e-3 * abs(float(total))
