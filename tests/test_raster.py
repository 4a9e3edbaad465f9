"""Condition images: FaceMesh tesselation from mediapipe's source, the z-buffer, PNCC + eyes."""

from __future__ import annotations

import numpy as np
import pytest

from musicface import raster as R


def test_tesselation_is_852_triangles_of_the_edge_set():
    from mediapipe.python.solutions import face_mesh_connections as fc

    tri = R.facemesh_triangles()
    assert tri.shape == (852, 3) and tri.dtype == np.int32
    assert len(np.unique(tri)) == 468 and tri.max() == 467
    # the triangles' edges are exactly mediapipe's edge set, each directed edge once (one winding)
    edges = {(int(t[i]), int(t[(i + 1) % 3])) for t in tri for i in range(3)}
    assert edges == set(fc.FACEMESH_TESSELATION)
    assert len(edges) == 3 * 852
    # seen from the front (reference face, y up) nearly all triangles wind counter-clockwise
    from preprocessing.landmarks import load_reference

    p = load_reference()["shape"][tri]
    area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (
        p[:, 2, 0] - p[:, 0, 0]
    )
    assert (area > 0).sum() == 844


def test_rasterize_area_interpolation_and_depth():
    # a right triangle with legs of 40 px covers 800 px^2: pixel centres inside it
    xy = np.array([[10.0, 10.0], [50.0, 10.0], [10.0, 50.0]])
    out = R.rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), np.array([[1.0], [1.0], [1.0]]), 64)
    assert out.shape == (1, 64, 64)
    assert abs(int((out[0] > 0).sum()) - 800) <= 40 + 1  # the diagonal's half pixels
    # barycentric interpolation: attribute = x coordinate is reproduced at pixel centres
    out = R.rasterize(xy, np.zeros(3), np.array([[0, 2, 1]]), xy[:, :1], 64)  # other winding too
    j, i = 20, 15
    assert out[0, j, i] == pytest.approx(i + 0.5, abs=1e-4)
    # z-buffer: of two overlapping squares the nearer (larger z) wins whatever the drawing order
    sq = np.array([[0, 0], [32, 0], [32, 32], [0, 32]], float)
    xy2 = np.concatenate([sq, sq + 16])
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    attrs = np.array([[1.0]] * 4 + [[2.0]] * 4)
    for z in (np.array([0.0] * 4 + [1.0] * 4), np.array([1.0] * 4 + [0.0] * 4)):
        out = R.rasterize(xy2, z, tris, attrs, 64)
        front = 2.0 if z[4] > z[0] else 1.0
        assert out[0, 24, 24] == front
    assert out[0, 8, 8] == 1.0 and out[0, 40, 40] == 2.0 and out[0, 60, 2] == 0.0


@pytest.fixture(scope="module")
def scene():
    from preprocessing.landmarks import load_reference

    ref = load_reference()["shape"]
    # a one-component "expression" that opens the jaw: lower-lip / chin points move down
    comp = np.zeros((1, 478, 3))
    lower = ref[:, 1] < ref[13, 1] - 0.02  # below the upper inner lip
    comp[0, lower, 1] = -0.3
    basis = {
        "mean": np.zeros(478 * 3, np.float32),
        "components": comp.reshape(1, -1).astype(np.float32),
    }
    geo = R.Geometry(
        identity=ref, frame_size=(640, 480), box=(160.0, 100.0, 320.0)
    )  # centre 140 px down
    return ref, basis, geo


def test_conditions_mesh_mouth_and_eye_channel(scene):
    ref, basis, geo = scene
    pose = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, np.log(0.15)]] * 3)
    exp = np.array([[0.0], [0.5], [0.5]])
    eye = np.array([0.0, 0.0, 1.0])
    c = R.conditions(exp, pose, eye, geo, basis, 128)
    assert c.shape == (3, 4, 128, 128) and c.dtype == np.uint8
    face = (c[:, :3] > 0).any(axis=1)
    # the face fits in the crop, centred across (pose t = 0: the face origin, the nose bridge, at
    # the frame centre = 56 px down the crop); the chin reaches further below it than the forehead
    ys, xs = np.nonzero(face[0])
    assert not face[0][[0, -1]].any() and not face[0][:, [0, -1]].any()
    assert abs(xs.mean() - 63.5) < 3 and 56 < ys.mean() < 80 and ys.min() < 56
    # PNCC: x colour grows from the image left to the right on a frontal face
    row = c[0, 0, int(ys.mean())]
    cols = np.flatnonzero(row)
    assert row[cols[-1]] > row[cols[0]] + 150
    # the mouth hole grows when the expression opens the jaw (more enclosed background pixels)
    from scipy.ndimage import binary_fill_holes

    holes = [int((binary_fill_holes(f) & ~f).sum()) for f in face]
    assert holes[1] > holes[0] + 40
    # eye channel: EYE_OPEN (x 255) over the openings while open, 255 (= eye state 1) when closed
    closed = c[2, 3] > 0
    assert closed.sum() > 40 and (c[2, 3][closed] == 255).all()
    assert np.array_equal(c[0, 3] > 0, closed)
    assert set(np.unique(c[0, 3])) == {0, round(255 * R.EYE_OPEN)}
    xs = np.nonzero(closed)[1]
    assert xs.min() < 64 < xs.max()  # one eye on each side
    # the eye opening is a hole of the mesh: the eye channel never covers face pixels
    assert not (closed & face[2]).any()


def test_blinks_come_from_the_eye_channel_only(scene):
    ref, _, geo = scene
    # an expression component that closes the lids moves nothing in the mesh (eye region zeroed)
    comp = np.zeros((1, 478, 3))
    upper_lids = [159, 158, 160, 386, 385, 387]
    comp[0, upper_lids, 1] = -0.5
    basis = {
        "mean": np.zeros(478 * 3, np.float32),
        "components": comp.reshape(1, -1).astype(np.float32),
    }
    pose = np.array([[0.1, -0.1, 0.05, 0.01, 0.0, np.log(0.15)]] * 2)
    c = R.conditions(np.array([[0.0], [1.0]]), pose, np.zeros(2), geo, basis, 128)
    assert np.array_equal(c[0], c[1])
    assert set(upper_lids) <= set(R.eye_region().tolist())


def test_temporal_stack_clamps_at_the_edges():
    cond = np.arange(5)[:, None, None, None] * np.ones((5, 4, 2, 2), np.uint8)
    s = R.temporal_stack(cond, 0, 2)
    assert s.shape == (20, 2, 2)
    assert s[::4, 0, 0].tolist() == [0, 0, 0, 1, 2]
    s = R.temporal_stack(cond, np.array([3, 4]), 1)
    assert s.shape == (2, 12, 2, 2) and s[1, ::4, 0, 0].tolist() == [3, 4, 4]


def test_bfm_mesh_topology_and_projection():
    """Deep3DFaceRecon's mesh path on a random BFM in the tool's layout (the real one needs a
    registration)."""
    tri = R.bfm_triangles()
    assert tri.shape == (70789, 3) and tri.min() == 0 and tri.max() == 35708
    rng = np.random.default_rng(0)
    # a small stand-in shape model: a flat grid of vertices facing the camera, ids/exps random
    v = 35709
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 189), np.linspace(-1, 1, 189)), -1).reshape(
        -1, 2
    )[:v]
    bfm = {
        "mean_shape": np.concatenate([grid * 0.8, np.zeros((v, 1))], 1),
        "id_base": rng.normal(0, 1e-3, (3 * v, 80)),
        "exp_base": rng.normal(0, 1e-3, (3 * v, 64)),
        "keypoints": np.arange(0, 68 * 500, 500),
        "tri": tri,
    }
    from preprocessing.deep3d import face_unit

    geo = R.Geometry(identity=np.zeros(80), frame_size=(640, 480), box=(160.0, 80.0, 320.0))
    basis = {"identity": np.array(True)}
    # placed as the deep3d landmark model: exp(tz) / face_unit BFM units per image height, centred
    s = 0.5 * face_unit() / 1.6  # the 1.6-unit square is half an image height (240 px) wide
    pose = np.array([[0, 0, 0, 0, 0, np.log(s)]])
    c = R.conditions(np.zeros((1, 64)), pose, np.array([1.0]), geo, basis, 64, bfm=bfm)
    face = (c[0, :3] > 0).any(axis=0)
    # 240 frame px = 48 of the crop's 64 px, centred on the frame centre = the crop centre
    ys, xs = np.nonzero(face)
    assert 46 <= xs.max() - xs.min() + 1 <= 50 and 46 <= ys.max() - ys.min() + 1 <= 50
    assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1
