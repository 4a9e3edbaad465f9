"""preprocessing.geometry: Euler angles (against scipy), runs and smoothing, inter-ocular distance
and mouth opening on both landmark layouts."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocessing import geometry as G
from preprocessing import landmarks as fm


def test_euler_convention_and_round_trip():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1.2, 1.2, (200, 3))  # pitch, yaw, roll; |yaw| < pi/2
    R = G.matrix_from_euler(a)
    # R = Rz(roll) Ry(yaw) Rx(pitch): scipy's intrinsic Z-Y-X rotation, computed independently
    np.testing.assert_allclose(R, Rotation.from_euler("ZYX", a[:, ::-1]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(G.euler_from_matrix(R), a, atol=1e-9)
    # signs: pitch > 0 turns the face's forward axis (+z) down (-y), yaw > 0 toward the image right
    fwd = np.array([0.0, 0.0, 1.0])
    assert (G.matrix_from_euler([0.3, 0, 0]) @ fwd)[1] < 0
    assert (G.matrix_from_euler([0, 0.3, 0]) @ fwd)[0] > 0
    gimbal = G.matrix_from_euler([0.3, np.pi / 2, 0.2])
    assert np.isfinite(G.euler_from_matrix(gimbal)).all()


def test_runs_and_smoothing_stay_inside_runs():
    np.testing.assert_array_equal(G.runs([0, 1, 1, 0, 1]), [[1, 3], [4, 5]])
    assert G.runs([]).shape == (0, 2)
    x = np.r_[np.zeros(10), np.full(10, 5.0), np.zeros(10)][:, None].astype(np.float64)
    mask = np.ones(30, bool)
    mask[10:20] = False
    out = G.smooth_runs(x.copy(), mask, 2.0)
    np.testing.assert_array_equal(out, x)  # two flat runs: the 5s between them never leak in
    y = np.arange(30, dtype=np.float64)[:, None] ** 2
    s = G.smooth_runs(y.copy(), np.ones(30, bool), 1.0)
    assert np.abs(s[10:20, 0] - (y[10:20, 0] + 1.0)).max() < 1e-4  # a parabola gains sigma^2


def test_smooth_pose_unwraps_angles():
    t = np.linspace(-0.2, 0.2, 41)
    pose = np.zeros((41, 6))
    pose[:, 2] = (np.pi + t + np.pi) % (2 * np.pi) - np.pi  # roll through +-pi: pi jumps to -pi
    ok = np.ones(41, bool)
    ok[-3:] = False
    out = G.smooth_pose(pose.copy(), ok, 1.0)
    assert np.abs(np.abs(out[:-3, 2]) - np.pi).max() < 0.25  # stays near +-pi, never pulled to 0
    assert not out[-3:].any()  # frames outside the mask are 0


def _facemesh(eye_dist=0.2, gap=0.05, n=1):
    p = np.zeros((n, 478, 2))
    p[:, [fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER]] = [[0.35, 0.4], [0.45, 0.4]]
    x = 0.4 + eye_dist
    p[:, [fm.LEFT_EYE_INNER, fm.LEFT_EYE_OUTER]] = [[x - 0.05, 0.4], [x + 0.05, 0.4]]
    for u, d in fm.INNER_LIP_MIDDLE:
        p[:, u], p[:, d] = [0.5, 0.6], [0.5, 0.6 + gap]
    return p


def test_interocular_and_mouth_opening():
    p = _facemesh()
    assert G.interocular(p) == pytest.approx([0.2]) and G.mouth_opening(p) == pytest.approx([0.25])
    assert G.mouth_opening(3.0 * p) == pytest.approx([0.25])  # scale-free
    assert G.mouth_opening(np.concatenate([p, p], 0)[None]).shape == (1, 2)  # any leading axes
    assert np.isnan(G.mouth_opening(_facemesh(eye_dist=0.0)))[0]  # no eye distance: undefined
    ib = np.zeros((1, 68, 3))
    ib[0, [36, 39, 42, 45], :2] = [[0.3, 0.4], [0.4, 0.4], [0.6, 0.4], [0.7, 0.4]]
    ib[0, [61, 62, 63], 1], ib[0, [67, 66, 65], 1] = 0.6, 0.66
    assert G.interocular(ib) == pytest.approx([0.3]) and G.mouth_opening(ib) == pytest.approx([0.2])
    with pytest.raises(ValueError, match="unknown landmark layout with 10 points"):
        G.interocular(np.zeros((1, 10, 2)))
