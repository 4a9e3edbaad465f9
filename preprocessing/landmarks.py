"""MediaPipe FaceMesh landmark index sets and pixel helpers (shared by track, coeffs, au45).

FaceMesh (mediapipe 0.10.14, ``refine_landmarks=True``) gives 478 points per face: 468 mesh points
plus 10 iris points (468-472 the iris of the subject's right eye, 473-477 the left one).

Sides follow MediaPipe's naming: *right* is the subject's right, i.e. the eye on the image's LEFT
for a face looking at the camera (corner 33 is at smaller x than corner 263). Every ordered list
below runs from the image's left to its right (outer corner -> inner corner for the right eye, inner
-> outer for the left eye), so index ``k`` of an upper-lid list sits above index ``k`` of the
matching lower-lid list.

The index lists are written out by hand because MediaPipe only ships them as unordered edge sets
(``face_mesh_connections``); ``tests/test_landmarks.py`` checks them against those sets.

Coordinates in ``track.npz`` are normalised: x / frame width, y / frame height, z in MediaPipe's
depth unit (about the scale of x). :func:`to_pixels` turns them into an isotropic pixel frame
(x*W, y*H, z*W) where distances and ratios mean something. Face measures used by several modules
(inter-ocular distance, mouth opening, Euler angles) live in :mod:`preprocessing.geometry`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

N_LANDMARKS = 478
# the shipped reference face (FaceMesh on skimage's astronaut, made symmetric): the builtin
# coefficients' rigid model and the renderer's mesh; rebuilt by `python -m preprocessing.coeffs
# make-reference`
REFERENCE_PATH = Path(__file__).parent / "data" / "reference_face.npz"

# --------------------------------------------------------------------------------------- eyes
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_INNER, LEFT_EYE_OUTER = 362, 263
# lids, image-left -> image-right; RIGHT_*[k] above/below each other, same for LEFT_*[k]
RIGHT_UPPER_LID = [246, 161, 160, 159, 158, 157, 173]
RIGHT_LOWER_LID = [7, 163, 144, 145, 153, 154, 155]
LEFT_UPPER_LID = [398, 384, 385, 386, 387, 388, 466]
LEFT_LOWER_LID = [382, 381, 380, 374, 373, 390, 249]
RIGHT_EYE = [RIGHT_EYE_OUTER, *RIGHT_UPPER_LID, RIGHT_EYE_INNER, *RIGHT_LOWER_LID]
LEFT_EYE = [LEFT_EYE_INNER, *LEFT_UPPER_LID, LEFT_EYE_OUTER, *LEFT_LOWER_LID]
RIGHT_IRIS = [468, 469, 470, 471, 472]  # centre first
LEFT_IRIS = [473, 474, 475, 476, 477]
# the five inner lid pairs used for the eye aspect ratio (the corner-most pairs are left out: near
# the corners the lids meet whatever the eye does, so they only add noise)
RIGHT_LID_PAIRS = list(zip(RIGHT_UPPER_LID[1:-1], RIGHT_LOWER_LID[1:-1]))
LEFT_LID_PAIRS = list(zip(LEFT_UPPER_LID[1:-1], LEFT_LOWER_LID[1:-1]))

# --------------------------------------------------------------------------------------- lips
MOUTH_LEFT, MOUTH_RIGHT = 61, 291  # corners (image left, image right)
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
LIPS = sorted(set(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + LIPS_INNER_UPPER + LIPS_INNER_LOWER))
# 81/178, 82/87, 13/14, ...
INNER_LIP_PAIRS = list(zip(LIPS_INNER_UPPER[2:-2], LIPS_INNER_LOWER[2:-2]))
INNER_LIP_MIDDLE = INNER_LIP_PAIRS[2:5]  # 82/87, 13/14 (midline), 312/317: iBUG 61/67, 62/66, 63/65

# ------------------------------------------------------------------------------------- face outline
# closed loop, clockwise in the image starting at the forehead top (10), chin is 152
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109]
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10

# ------------------------------------------------------------------------------------ 68-point-like
# FaceMesh points nearest to the classic iBUG/dlib 68-point layout, in that layout's order:
# jaw 0-16 (image left -> right), brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47
# (each clockwise from its image-left corner), outer lips 48-59, inner lips 60-67.
FACE68 = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    71, 63, 105, 66, 107,  # brow (image left)
    336, 296, 334, 293, 301,  # brow (image right)
    168, 197, 5, 4,  # nose bridge, top -> tip
    75, 97, 2, 326, 305,  # nostrils
    33, 160, 158, 133, 153, 144,  # eye (image left)
    362, 385, 387, 263, 373, 380,  # eye (image right)
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
]


# --------------------------------------------------------------------------------------- geometry
def to_pixels(landmarks: np.ndarray, frame_size) -> np.ndarray:
    """Normalised landmarks ``(..., K, 2|3)`` -> pixels: x*W, y*H (and z*W: MediaPipe's z uses x's
    scale).

    ``frame_size`` is (width, height), either one pair or one per frame ``(..., 2)`` matching the
    leading axes of ``landmarks``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    fs = np.asarray(frame_size, dtype=np.float64)
    w, h = fs[..., 0], fs[..., 1]
    scale = [w, h, w][: lm.shape[-1]]
    scale = np.stack(np.broadcast_arrays(*scale), axis=-1)[..., None, :]  # (..., 1, D)
    return lm * scale


def bbox(points: np.ndarray) -> np.ndarray:
    """Axis-aligned box ``(..., 4)`` = x0, y0, x1, y1 of points ``(..., K, >=2)`` (NaN stays
    NaN)."""
    p = np.asarray(points)
    return np.concatenate([p[..., :2].min(axis=-2), p[..., :2].max(axis=-2)], axis=-1)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def eye_aspect_ratio(px: np.ndarray) -> np.ndarray:
    """Eye aspect ratio of each eye, ``(..., 2)`` = (right, left), from pixel landmarks
    ``(..., 478, D)``.

    EAR = mean distance between the five inner upper/lower lid pairs / distance between the eye
    corners. About 0.25-0.35 for an open eye, near 0 for a closed one; dimensionless. Use 3-D pixel
    landmarks (:func:`to_pixels` of all three coordinates) so that the eye width shrinks less with
    head yaw.
    """
    out = []
    for pairs, c0, c1 in ((RIGHT_LID_PAIRS, RIGHT_EYE_OUTER, RIGHT_EYE_INNER),
                          (LEFT_LID_PAIRS, LEFT_EYE_INNER, LEFT_EYE_OUTER)):
        up = px[..., [u for u, _ in pairs], :]
        lo = px[..., [d for _, d in pairs], :]
        height = _dist(up, lo).mean(axis=-1)
        width = _dist(px[..., c0, :], px[..., c1, :])
        out.append(height / np.maximum(width, 1e-9))
    return np.stack(out, axis=-1)


_REFERENCE: dict | None = None


def load_reference() -> dict:
    """The shipped reference face: ``shape`` (478, 3) float64, ``mirror`` (478,), ``version``
    str."""
    global _REFERENCE
    if _REFERENCE is None:
        with np.load(REFERENCE_PATH, allow_pickle=False) as z:
            _REFERENCE = {"shape": z["shape"].astype(np.float64),
                          "mirror": z["mirror"].astype(np.int64), "version": str(z["version"])}
    return _REFERENCE
