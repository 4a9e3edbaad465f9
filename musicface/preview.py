"""Preview drawing: generated face motion as an animated face mesh, so a user can watch a result
without a renderer (``musicface generate`` writes it as ``preview.mp4``).

    px = fit_to_canvas(landmarks, size=480)       # (T, K, 2) image-normalised -> canvas pixels
    px = close_eyes(px, eye)                      # eye state 1 = closed: upper lids onto lower lids
    for rgb in preview_frames(px, size=480): ...  # (size, size, 3) uint8 per frame
    write_preview("preview.mp4", landmarks, eye, audio, sr, fps=30)

Two landmark layouts are drawn: MediaPipe FaceMesh (478 points: mesh vertices as dots, the
FACEMESH_CONTOURS, nose and iris edges as lines) and the 68-point iBUG layout (Deep3DFaceRecon's).
Drawing uses Pillow's ImageDraw; frames are produced one at a time (a 4-minute song is 7200 frames)
and streamed into ``preprocessing.media.write_video`` (H.264 + AAC).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from preprocessing.timebase import FPS, SR

BACKGROUND = (18, 20, 28)
MESH = (120, 132, 160)
CONTOUR = (235, 235, 235)
LIPS = (240, 110, 110)
EYES = (120, 210, 240)


def _chain(idx, closed=False):
    idx = list(idx)
    pairs = list(zip(idx[:-1], idx[1:]))
    return pairs + [(idx[-1], idx[0])] if closed else pairs


@lru_cache(maxsize=None)
def layout(k: int) -> dict:
    """Edges and lid pairs of a landmark layout with ``k`` points.

    Returns ``contour``, ``lips``, ``eyes`` (edge arrays (E, 2)), ``lids`` (pairs (upper, lower):
    points that meet when the eye closes) and ``iris`` (point indices hidden when the eye is
    closed).
    """
    if k in (468, 478):
        from mediapipe.python.solutions import face_mesh_connections as fc

        from preprocessing import landmarks as L

        lids = list(zip(L.RIGHT_UPPER_LID, L.RIGHT_LOWER_LID)) + list(zip(L.LEFT_UPPER_LID,
                                                                          L.LEFT_LOWER_LID))
        eyes = fc.FACEMESH_LEFT_EYE | fc.FACEMESH_RIGHT_EYE
        irises = fc.FACEMESH_IRISES if k == 478 else frozenset()
        contour = (fc.FACEMESH_CONTOURS | fc.FACEMESH_NOSE) - eyes - fc.FACEMESH_LIPS
        return {"contour": np.array(sorted(contour)), "lips": np.array(sorted(fc.FACEMESH_LIPS)),
                "eyes": np.array(sorted(eyes | irises)), "lids": np.array(lids),
                "iris": np.array(sorted({i for e in irises for i in e}), dtype=int)}
    if k == 68:
        contour = (_chain(range(0, 17)) + _chain(range(17, 22)) + _chain(range(22, 27))
                   + _chain(range(27, 31)) + _chain(range(31, 36)))
        lips = _chain(range(48, 60), closed=True) + _chain(range(60, 68), closed=True)
        eyes = _chain(range(36, 42), closed=True) + _chain(range(42, 48), closed=True)
        lids = [(37, 41), (38, 40), (43, 47), (44, 46)]
        return {"contour": np.array(contour), "lips": np.array(lips), "eyes": np.array(eyes),
                "lids": np.array(lids), "iris": np.array([], dtype=int)}
    raise ValueError(f"cannot draw a landmark layout with {k} points (478 FaceMesh or 68 iBUG)")


def fit_to_canvas(landmarks, size: int = 480, margin: float = 0.08) -> np.ndarray:
    """Map landmarks ``(T, K, 2)`` to canvas pixels with ONE similarity transform for the whole
    clip.

    The box from the 2nd percentile (over frames) of each frame's smallest coordinate to the 98th
    percentile of each frame's largest is scaled isotropically (keeping the coordinates' own x:y
    ratio) to fill the canvas minus ``margin``: the whole face fits, head motion stays visible as
    motion, and a few wild frames do not shrink the face.
    """
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    lo = np.nanpercentile(np.nanmin(lm, axis=1), 2, axis=0)
    hi = np.nanpercentile(np.nanmax(lm, axis=1), 98, axis=0)
    span = max(float(np.max(hi - lo)), 1e-9)
    scale = size * (1 - 2 * margin) / span
    centre = (lo + hi) / 2
    return (lm - centre) * scale + size / 2


def close_eyes(px, eye) -> np.ndarray:
    """Apply the eye state: each upper-lid point moves ``eye`` of the way onto its lower-lid point.

    ``px (T, K, 2)``, ``eye (T,)`` in [0, 1] (0 open, 1 closed; values outside are clipped).
    """
    px = np.array(px, dtype=np.float64, copy=True)
    e = np.clip(np.asarray(eye, dtype=np.float64).reshape(-1), 0.0, 1.0)[:, None, None]
    lids = layout(px.shape[1])["lids"]
    up, lo = lids[:, 0], lids[:, 1]
    px[:, up] = px[:, up] + e * (px[:, lo] - px[:, up])
    return px


def draw_frame(px, size: int = 480, eye: float = 0.0):
    """One frame: landmarks ``(K, 2)`` in canvas pixels -> RGB uint8 ``(size, size, 3)``."""
    from PIL import Image, ImageDraw

    lay = layout(len(px))
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    ok = np.isfinite(px).all(axis=1)
    for x, y in px[ok]:
        draw.point((float(x), float(y)), fill=MESH)
    hidden = set(lay["iris"].tolist()) if eye >= 0.5 else set()
    # lips and eyes 3 px wide: thinner coloured lines lose their colour to H.264's 4:2:0 chroma
    # subsampling
    for key, colour, width in (("contour", CONTOUR, 2), ("lips", LIPS, 3), ("eyes", EYES, 3)):
        for a, b in lay[key]:
            if ok[a] and ok[b] and a not in hidden and b not in hidden:
                draw.line((float(px[a, 0]), float(px[a, 1]), float(px[b, 0]), float(px[b, 1])),
                          fill=colour, width=width)
    return np.asarray(img)


def preview_frames(px, eye=None, size: int = 480):
    """Yield one RGB frame per row of ``px (T, K, 2)`` (canvas pixels, eyes already applied)."""
    eye = np.zeros(len(px)) if eye is None else np.asarray(eye).reshape(-1)
    for t in range(len(px)):
        yield draw_frame(px[t], size, float(eye[t]))


def write_preview(path: str | Path, landmarks, eye, audio=None, sr: int = SR, fps: int = FPS,
                  size: int = 480, progress: bool = True) -> int:
    """Draw landmarks ``(T, K, 2)`` with eye state ``(T,)`` and write an H.264 (+ AAC) mp4,
    atomically.

    ``audio`` (mono float at ``sr``, sample 0 at frame 0) is muxed as AAC. Returns the frame count.
    """
    from tqdm import tqdm

    from preprocessing.media import write_video

    px = close_eyes(fit_to_canvas(landmarks, size), eye)
    frames = preview_frames(px, eye, size)
    if progress:
        frames = tqdm(frames, total=len(px), desc="preview", unit="frame", leave=False)
    return write_video(path, frames, fps=fps, audio=audio, sr=sr)
