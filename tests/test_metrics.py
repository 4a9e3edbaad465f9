"""musicface.metrics against independent computations (sklearn, hand-computed values, SyncNet's own
code)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from musicface import metrics as M


# ------------------------------------------------------------------------------------------ CCA
def _correlated(rng, t=600, p=5, q=4, strength=0.7):
    z = rng.standard_normal((t, 2))
    x = rng.standard_normal((t, p)) + strength * z[:, [0]] @ rng.standard_normal((1, p))
    y = rng.standard_normal((t, q)) + strength * z[:, [0]] @ rng.standard_normal((1, q))
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cca_agrees_with_sklearn(seed):
    from sklearn.cross_decomposition import CCA

    x, y = _correlated(np.random.default_rng(seed))
    model = CCA(n_components=1, max_iter=20000, tol=1e-12).fit(x, y)
    xs, ys = model.transform(x, y)
    ref = abs(np.corrcoef(xs[:, 0], ys[:, 0])[0, 1])
    ours = M.cca(x, y)
    assert 0.2 < ours < 1.0
    assert ours == pytest.approx(ref, abs=1e-6)


def test_cca_one_dimensional_is_abs_pearson_and_affine_invariant():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(300)
    b = -0.5 * a + rng.standard_normal(300)
    assert M.cca(a, b) == pytest.approx(abs(np.corrcoef(a, b)[0, 1]), abs=1e-12)
    x, y = _correlated(rng)
    scaled = x * np.array([1e-3, 2.0, 5.0, 1e3, 7.0]) + 11.0
    assert M.cca(scaled, y) == pytest.approx(M.cca(x, y), abs=1e-9)


def test_cca_constant_and_collinear_columns():
    rng = np.random.default_rng(4)
    x, y = _correlated(rng)
    x_extra = np.column_stack([x, np.zeros(len(x)), x[:, 0] * 2.0])  # constant + collinear column
    assert M.cca(x_extra, y) == pytest.approx(M.cca(x, y), abs=1e-9)
    assert math.isnan(M.cca(np.ones(50), rng.standard_normal(50)))
    with pytest.raises(ValueError, match="differ in length"):
        M.cca(np.zeros((10, 2)), np.zeros((9, 2)))


def test_cca_pose_speed_sees_rhythm_not_direction():
    """Same speeds, random directions: the poses disagree but their speeds correlate perfectly."""
    rng = np.random.default_rng(5)
    gt = np.cumsum(rng.standard_normal((400, 6)) * 0.01, axis=0)
    speed = np.abs(np.diff(gt, axis=0))
    sign = rng.choice([-1.0, 1.0], size=speed.shape)
    gen = np.vstack([gt[:1], gt[:1] + np.cumsum(sign * speed, axis=0)])
    np.testing.assert_allclose(M.pose_speed(gen), speed, atol=1e-12)
    assert M.cca_pose_speed(gen, gt) == pytest.approx(1.0, abs=1e-9)
    valid = np.ones(400, bool)
    valid[100] = False
    # an untracked ground-truth frame (zeros in the shards) is masked out
    assert M.cca_pose_speed(gen, np.where(valid[:, None], gt, 0.0),
                            valid=valid) == pytest.approx(1.0, abs=1e-9)
    unrelated = np.cumsum(rng.standard_normal((400, 6)) * 0.01, axis=0)
    assert M.cca_pose_speed(unrelated, gt) < 0.4


# ------------------------------------------------------------------------------------ roughness
def test_roughness_hand_computed():
    t = np.arange(90, dtype=np.float64)
    c = np.radians(0.05)  # pitch = c t^2 rad: second difference 2c rad = 0.1 deg per frame^2
    pose = np.zeros((90, 6))
    pose[:, 0] = c * t ** 2
    pose[:, 1] = 0.3 * t  # constant velocity: no roughness
    pose[:, 2] = -c * t ** 2
    assert M.roughness(pose) == pytest.approx(2 * 0.1 ** 2, rel=1e-9)  # 0.01 + 0.01 (deg/frame^2)^2
    assert M.roughness(pose, degrees=False) == pytest.approx(2 * (2 * c) ** 2, rel=1e-9)
    # invalid frames (zeros in the shards) are left out: only fully valid triples count
    broken = pose.copy()
    broken[40] = 0.0
    valid = np.ones(90, bool)
    valid[40] = False
    assert M.roughness(broken, valid=valid) == pytest.approx(0.02, rel=1e-9)
    assert M.roughness(broken) > 1.0
    # a sinusoid: x'' = -4 sin^2(w/2) x exactly for the central difference
    w, amp = 0.2, 5.0
    ang = np.radians(amp * np.sin(w * t))
    expected = np.mean((4 * np.sin(w / 2) ** 2 * amp * np.sin(w * t[1:-1])) ** 2)
    assert M.roughness(np.column_stack([ang, 0 * t, 0 * t])) == pytest.approx(expected, rel=1e-9)


# -------------------------------------------------------------------------------------- blinks
def _eye_sequence(fps=30, seconds=60):
    """Open eyes with blinks of 4, 6, 8 frames every 2 s and one long closure of 30 frames."""
    eye = np.zeros(fps * seconds, dtype=np.float32)
    blinks = []
    for k, start in enumerate(range(30, fps * 50, 60)):
        n = (4, 6, 8)[k % 3]
        eye[start:start + n] = 0.9
        blinks.append(n)
    eye[fps * 52:fps * 52 + 30] = 0.7
    eye[fps * 55:fps * 55 + 3] = 0.4  # half-closed: below the 0.5 threshold, not a blink
    return eye, blinks


def test_blink_stats_hand_computed():
    eye, blinks = _eye_sequence()
    ev = M.closure_events(eye, fps=30, tau=0.5, closed_threshold=0.5)
    s = M.blink_stats(ev, len(eye), fps=30)
    assert s["n_blinks"] == len(blinks) == 25
    assert s["blinks_per_s"] == pytest.approx(25 / 60)
    assert s["blink_duration_s"] == pytest.approx(np.mean(blinks) / 30)
    assert s["n_long"] == 1 and s["long_duration_s"] == pytest.approx(1.0)
    assert sorted(s["durations_s"]) == pytest.approx(sorted([b / 30 for b in blinks] + [1.0]))
    assert ev.shape == (26, 4)
    assert ev[-1].tolist() == pytest.approx([52 * 30, 52 * 30 + 30, 1.0, 1.0])
    # pooled over two takes (the second without any closure): the events over the total time
    pooled = M.blink_stats(np.concatenate([ev, M.closure_events(np.zeros(1800))]), len(eye) + 1800)
    assert pooled["blinks_per_s"] == pytest.approx(25 / 120)
    assert pooled["blink_duration_s"] == pytest.approx(np.mean(blinks) / 30)


def test_blink_tau_boundary_and_edges():
    eye = np.zeros(100)
    eye[0:14] = 1.0   # 14 frames = 0.467 s < tau: blink (touches the start)
    eye[40:55] = 1.0  # 15 frames = 0.5 s = tau: long closure
    eye[90:] = 1.0    # 10 frames at the end: blink
    ev = M.closure_events(eye, fps=30, tau=0.5)
    assert ev[:, 3].tolist() == [0.0, 1.0, 0.0]
    assert ev[:, :2].tolist() == [[0, 14], [40, 55], [90, 100]]
    s = M.blink_stats(M.closure_events(np.zeros(300)), 300)
    assert s["n_blinks"] == 0 and math.isnan(s["blink_duration_s"]) and s["blinks_per_s"] == 0
    # untracked frames never count as closed, and rates are per valid second
    valid = np.ones(100, bool)
    valid[45:50] = False  # splits the long closure into 5 + 5 frames: two blinks
    s = M.blink_stats(M.closure_events(eye, fps=30, valid=valid), int(valid.sum()), fps=30)
    assert s["n_blinks"] == 4 and s["n_long"] == 0 and s["seconds"] == pytest.approx(95 / 30)


# ----------------------------------------------------------------------------------- landmarks
def _face(rng, t=20):
    """FaceMesh-sized landmarks with eye centres 0.2 apart and the three middle inner-lip pairs
    0.04, 0.05, 0.06 apart (mean 0.05)."""
    lm = rng.uniform(0.3, 0.7, size=(t, 478, 2))
    lm[:, 33], lm[:, 133] = [0.37, 0.41], [0.43, 0.39]    # right eye: centre (0.4, 0.4)
    lm[:, 362], lm[:, 263] = [0.57, 0.38], [0.63, 0.42]   # left eye: centre (0.6, 0.4)
    pairs = ((82, 87), (13, 14), (312, 317))
    for (u, d), x, gap in zip(pairs, (0.48, 0.5, 0.52), (0.04, 0.05, 0.06)):
        lm[:, u], lm[:, d] = [x, 0.6], [x, 0.6 + gap]
    return lm


def test_lmd_hand_computed():
    rng = np.random.default_rng(6)
    gt = _face(rng)
    np.testing.assert_allclose(M.interocular(gt), 0.2, atol=1e-12)
    mouth = M.landmark_sets(478)["mouth"]
    assert len(mouth) == 40 and {13, 14, 61, 291, 0, 17} <= set(mouth.tolist()) and 33 not in mouth
    gen = gt.copy()
    gen[:, mouth] += [0.006, 0.008]  # 0.01 away = 5 % of the inter-ocular distance 0.2
    assert M.lmd(gen, gt, region="mouth") == pytest.approx(5.0)
    assert M.lmd(gen, gt, region="face") == pytest.approx(5.0 * 40 / 478)
    assert M.lmd(gt, gt) == 0.0
    with pytest.raises(ValueError, match="unknown landmark layout with 10 points"):
        M.lmd(gt[:, :10], gt[:, :10])


def test_mouth_opening():
    lm = _face(np.random.default_rng(7), t=4)
    lm[1, [87, 14, 317]] = lm[1, [82, 13, 312]]  # closed
    lm[2] *= 2.0            # same face twice as large: same opening
    lm[3, [362, 263]] = lm[3, [33, 133]]  # no eye distance (a degenerate face): undefined
    np.testing.assert_allclose(M.mouth_opening(lm), [0.25, 0.0, 0.25, np.nan], atol=1e-12)
    # iBUG 68 (deep3d's landmarks): the same definition on that layout's points
    ib = np.zeros((1, 68, 2))
    ib[0, [36, 39, 42, 45]] = [[0.3, 0.4], [0.4, 0.4], [0.6, 0.4], [0.7, 0.4]]  # centres 0.3 apart
    ib[0, [61, 62, 63]] = [[0.45, 0.6], [0.5, 0.6], [0.55, 0.6]]     # upper inner lip
    ib[0, [67, 66, 65]] = [[0.45, 0.63], [0.5, 0.63], [0.55, 0.63]]  # lower, 0.03 below
    np.testing.assert_allclose(M.mouth_opening(ib), [0.1], atol=1e-12)


def test_lipsync_proxy_constructed():
    fps = 30
    t = np.arange(20 * fps) / fps
    singing = (np.floor(t / 2.5) % 2 == 0)  # 2.5 s phrases, 2.5 s pauses
    rng = np.random.default_rng(8)
    energy = np.where(singing, -20 + 3 * np.sin(7 * t), -55) + rng.normal(0, 1, t.size)
    np.testing.assert_array_equal(M.silence_mask(energy), ~singing)
    follows = np.where(singing, 0.3 + 0.02 * np.sin(7 * t), 0.01)  # opens while singing
    good = M.lipsync_proxy(follows, energy, opening_gt=follows)
    assert good["energy_corr"] > 0.95
    assert good["silent_open_ratio"] == 0.0 and good["silent_frames"] == (~singing).sum()
    always_open = 0.3 + 0.02 * np.sin(7 * t)  # the single-stream failure: open through pauses
    bad = M.lipsync_proxy(always_open, energy, opening_gt=follows)
    assert bad["silent_open_ratio"] == 1.0
    assert bad["energy_corr"] < good["energy_corr"]
    # sung all through (unimodal energy): no silent frame, ratio undefined
    flat = M.lipsync_proxy(follows, -20 + rng.normal(0, 1, t.size))
    assert flat["silent_frames"] == 0 and math.isnan(flat["silent_open_ratio"])


# ------------------------------------------------------------------------ against known truth
def test_pearson_and_angular_speed_hand_computed():
    assert M.pearson([1, 2, 3, 4], [2, 4, 6, 8.5]) == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [2, 4, 6, 8.5])[0, 1])
    assert math.isnan(M.pearson([1, 1, 1], [1, 2, 3]))
    # non-finite frames left out
    assert M.pearson([1, 2, np.nan, 4], [1, 2, 0, 4]) == pytest.approx(1.0)
    pose = np.zeros((4, 6))
    pose[:, 0] = [0.0, 0.03, 0.03, 0.03]   # pitch moves 0.03 rad between frames 0 and 1
    pose[:, 1] = [0.0, 0.04, 0.04, 0.0]    # yaw: 0.04 rad, then back
    pose[:, 3] = [0.0, 9.0, 0.0, 9.0]      # translation is not an angle: ignored
    # frame t holds the step ending at t (frame 0 repeats frame 1): |(0.03, 0.04)| = 0.05 rad x 30
    np.testing.assert_allclose(M.angular_speed(pose, fps=30), [1.5, 1.5, 0.0, 1.2], atol=1e-12)


def test_overlapping_silent_frames_and_attention_stats():
    a = np.array([[0, 10, 0.3, 1], [20, 30, 0.3, 1], [50, 60, 0.3, 1]], float)
    # touches [0, 10); [30, 40) only abuts [20, 30)
    b = np.array([[9, 12, 0.1, 1], [30, 40, 0.3, 1]], float)
    assert M.overlapping(a, b) == 1 and M.overlapping(b, a) == 1
    assert M.overlapping(a, np.zeros((0, 4))) == 0 and M.overlapping(np.zeros((0, 4)), a) == 0
    active = np.zeros(20, np.uint8)
    active[8:10] = 1
    silent = M.silent_frames(active, margin=3)
    np.testing.assert_array_equal(np.flatnonzero(~silent), np.arange(5, 13))
    assert M.silent_frames(np.zeros(5), margin=3).all()
    t = 100
    sung = np.arange(t) >= 50
    att = np.full((t, 4), 0.5)
    att[sung, 0] = 0.9             # vocal channel 0 opens while singing
    att[:, 3] = 0.02               # a music channel shut off for the whole take
    st = M.attention_stats(att, sung, ~sung, n_vocal=2)
    assert st["vocal_diff"] == pytest.approx((0.9 + 0.5) / 2 - 0.5)
    assert st["off_fraction"] == pytest.approx(0.25)
    assert st["temporal_std"] == pytest.approx(0.2 / 4)   # channel 0: std 0.2, the others constant
    assert math.isnan(M.attention_stats(att, sung, np.zeros(t, bool), n_vocal=2)["vocal_diff"])


# ------------------------------------------------------------------------------------------- AVC
def test_unavailable_and_finite_or_none():
    assert M.unavailable("no renderer") == {"value": None, "reason": "no renderer"}
    assert M.finite_or_none(float("nan")) is None and M.finite_or_none(np.float32(0.5)) == 0.5


def test_syncnet_confidence_matches_syncnet_own_pipeline(tmp_path):
    """Random weights in SyncNet's own format; our driver vs syncnet_python's evaluate() on the same
    frames."""
    import types

    import cv2
    import torch
    from scipy.io import wavfile
    from syncnet_python.SyncNetInstance import SyncNetInstance
    from syncnet_python.SyncNetModel import S

    torch.manual_seed(0)
    weights = tmp_path / "syncnet_v2.model"
    torch.save(S(num_layers_in_fc_layers=1024).state_dict(), weights)
    rng = np.random.default_rng(9)
    t = 40
    frames = (rng.uniform(0, 255, (t, 224, 224, 3))).astype(np.uint8)
    audio = (rng.standard_normal(t * 640) * 3000).astype(np.int16)
    work = tmp_path / "crops"
    work.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(work / f"{i:06d}.jpg"), f[..., ::-1])  # OpenCV writes BGR
    wavfile.write(work / "audio.wav", 16000, audio)
    decoded = np.stack([cv2.imread(str(work / f"{i:06d}.jpg"))[..., ::-1] for i in range(t)])

    ours = M.syncnet_confidence(decoded, audio.astype(np.float64), weights=weights, vshift=15)
    inst = SyncNetInstance(S(num_layers_in_fc_layers=1024), device="cpu")
    inst.loadParameters(str(weights))
    offset, conf, min_dist = inst.evaluate(types.SimpleNamespace(tmp_dir=str(work), batch_size=20,
                                                                 vshift=15))
    assert ours["offset"] == offset
    assert ours["confidence"] == pytest.approx(conf, abs=1e-3)
    assert ours["min_dist"] == pytest.approx(min_dist, rel=1e-4)
    with pytest.raises(FileNotFoundError, match="SyncNet weights not found"):
        M.syncnet_confidence(decoded, audio, weights=tmp_path / "missing.model")
