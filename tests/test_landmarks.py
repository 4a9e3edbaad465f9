"""FaceMesh index sets (checked against MediaPipe's own edge sets and a real face) and geometry
helpers."""
from __future__ import annotations

import numpy as np
import pytest

from preprocessing import landmarks as L
from preprocessing.geometry import interocular


def _vertices(edges) -> set[int]:
    return {i for e in edges for i in e}


def test_index_sets_match_mediapipe_connections():
    from mediapipe.python.solutions import face_mesh_connections as c

    assert set(L.RIGHT_EYE) == _vertices(c.FACEMESH_RIGHT_EYE)
    assert set(L.LEFT_EYE) == _vertices(c.FACEMESH_LEFT_EYE)
    assert set(L.LIPS) == _vertices(c.FACEMESH_LIPS)
    assert set(L.FACE_OVAL) == _vertices(c.FACEMESH_FACE_OVAL)
    assert set(L.RIGHT_IRIS[1:]) == _vertices(c.FACEMESH_RIGHT_IRIS)
    assert set(L.LEFT_IRIS[1:]) == _vertices(c.FACEMESH_LEFT_IRIS)
    # ordered lists follow MediaPipe's edges: consecutive lid points are connected
    edges = {frozenset(e) for e in c.FACEMESH_RIGHT_EYE | c.FACEMESH_LEFT_EYE}
    for lid, c0, c1 in ((L.RIGHT_UPPER_LID, L.RIGHT_EYE_OUTER, L.RIGHT_EYE_INNER),
                        (L.RIGHT_LOWER_LID, L.RIGHT_EYE_OUTER, L.RIGHT_EYE_INNER),
                        (L.LEFT_UPPER_LID, L.LEFT_EYE_INNER, L.LEFT_EYE_OUTER),
                        (L.LEFT_LOWER_LID, L.LEFT_EYE_INNER, L.LEFT_EYE_OUTER)):
        chain = [c0, *lid, c1]
        assert all(frozenset(p) in edges for p in zip(chain[:-1], chain[1:])), lid
    oval = {frozenset(e) for e in c.FACEMESH_FACE_OVAL}
    loop = L.FACE_OVAL + L.FACE_OVAL[:1]
    assert all(frozenset(p) in oval for p in zip(loop[:-1], loop[1:]))
    assert len(L.FACE68) == 68 and len(set(L.FACE68)) == 68
    assert max(L.FACE68) < 468 and max(L.LEFT_IRIS) == L.N_LANDMARKS - 1


@pytest.fixture(scope="module")
def astronaut_px():
    """FaceMesh on skimage's astronaut photo (a real face, eyes open): (478, 3) pixel landmarks."""
    import mediapipe as mp
    from skimage import data

    img = data.astronaut()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        res = fm.process(img)
    lm = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark])
    assert lm.shape == (478, 3)
    return L.to_pixels(lm, (img.shape[1], img.shape[0]))


def test_face68_layout_on_a_real_face(astronaut_px):
    p = astronaut_px[L.FACE68]
    x, y = p[:, 0], p[:, 1]
    jaw = slice(0, 17)
    # chin lowest, in the middle of the jaw
    assert np.argmax(y[jaw]) in (7, 8, 9)
    assert x[0] < x[4] < x[8] < x[12] < x[16]                  # jaw runs image-left -> right
    assert x[36] < x[39] < x[42] < x[45]                       # eye corners left -> right
    assert y[37] < y[41] and y[43] < y[47]                     # upper lids above lower lids
    assert y[27] < y[28] < y[29] < y[30]                       # nose bridge top -> tip
    # mouth corners, upper above lower lip
    assert x[48] < x[51] < x[54] and y[51] < y[57]
    assert y[19] < y[37] and y[24] < y[44]                     # brows above the eyes
    # right/left naming: subject's right eye is on the image's left
    assert astronaut_px[L.RIGHT_EYE_OUTER, 0] < astronaut_px[L.LEFT_EYE_OUTER, 0]
    # lid pairs are vertically aligned (upper above lower, small x offset relative to eye width)
    for pairs in (L.RIGHT_LID_PAIRS, L.LEFT_LID_PAIRS):
        for u, d in pairs:
            assert astronaut_px[u, 1] < astronaut_px[d, 1]
            assert abs(astronaut_px[u, 0] - astronaut_px[d, 0]) < 0.15 * interocular(astronaut_px)


def test_eye_aspect_ratio_open_eyes_on_real_face(astronaut_px):
    ear = L.eye_aspect_ratio(astronaut_px)
    assert ear.shape == (2,)
    assert np.all((ear > 0.15) & (ear < 0.5)), ear
    assert abs(ear[0] - ear[1]) < 0.1


def _synthetic_eye(height: float) -> np.ndarray:
    """478 points, all 0, except both eyes: corners 20 px apart, every lid pair ``2*height``
    apart."""
    px = np.zeros((478, 3))
    for (pairs, c0, c1, x0) in ((L.RIGHT_LID_PAIRS, L.RIGHT_EYE_OUTER, L.RIGHT_EYE_INNER, 0.0),
                                (L.LEFT_LID_PAIRS, L.LEFT_EYE_INNER, L.LEFT_EYE_OUTER, 50.0)):
        px[c0, :2] = (x0, 0)
        px[c1, :2] = (x0 + 20, 0)
        for k, (u, d) in enumerate(pairs):
            px[u, :2] = (x0 + 4 + 3 * k, -height)
            px[d, :2] = (x0 + 4 + 3 * k, height)
    return px


def test_eye_aspect_ratio_exact_values():
    for h in (0.0, 1.0, 3.0):
        np.testing.assert_allclose(L.eye_aspect_ratio(_synthetic_eye(h)),
                                   [2 * h / 20] * 2, atol=1e-12)
    # batched: leading axes are kept
    batch = np.stack([_synthetic_eye(1.0), _synthetic_eye(2.0)])
    np.testing.assert_allclose(L.eye_aspect_ratio(batch), [[0.1, 0.1], [0.2, 0.2]])
    # yaw foreshortening: shrinking x of the eye shrinks the width; z restores it in 3-D
    px = _synthetic_eye(2.0)
    yawed = px.copy()
    yawed[:, 0] *= np.cos(0.5)
    yawed[:, 2] = px[:, 0] * np.sin(0.5)
    np.testing.assert_allclose(L.eye_aspect_ratio(yawed), [0.2, 0.2], atol=1e-12)
    np.testing.assert_allclose(L.eye_aspect_ratio(yawed[:, :2]),
                               [0.2 / np.cos(0.5)] * 2, atol=1e-12)


def test_to_pixels_and_bbox():
    lm = np.zeros((2, 478, 3))
    lm[:, :, 0], lm[:, :, 1], lm[:, :, 2] = 0.5, 0.25, 0.1
    lm[1, 0] = (0.1, 0.9, 0.0)
    px = L.to_pixels(lm, np.array([[640, 480], [1280, 720]]))
    np.testing.assert_allclose(px[0, 5], [320, 120, 64])
    np.testing.assert_allclose(px[1, 5], [640, 180, 128])
    np.testing.assert_allclose(px[1, 0], [128, 648, 0])
    np.testing.assert_allclose(L.bbox(px[1]), [128, 180, 640, 648])
    np.testing.assert_allclose(L.to_pixels(lm[0, :, :2], (100, 10))[7], [50, 2.5])
