"""Face tracking: MediaPipe FaceMesh (478 landmarks) on a detector-first crop, one face followed.

Definitions (docs/data.md, ``track.npz``):

* frame ``i`` of the take is the video at ``t = i / 30`` s; ``N`` = ``n_frames`` of ``ingest.json``;
* ``landmarks`` float32 ``(N, 478, 3)``: x / frame width, y / frame height (full frame, not the
  crop), z is MediaPipe's relative depth rescaled to the full frame's width unit; NaN where
  ``valid == 0``;
* ``valid`` uint8 ``(N,)``: 1 where a face was tracked, or where a gap of at most ``max_gap`` frames
  between two tracked frames was filled by linear interpolation (those frames also have
  ``interpolated == 1``);
* ``frame_size`` int32 ``(N, 2)``: width, height of the decoded frame (0, 0 where nothing decoded);
* ``bbox`` float32 ``(N, 4)``: normalised x0, y0, x1, y1 of the 478 landmarks; NaN where invalid.

How a frame is tracked (FaceMesh's own detector is a short-range model: it misses faces smaller than
~100 px in a 720p frame, so it is never given the whole frame):

1. if the previous frame was tracked, crop a square around its landmark box (``MESH_SCALE`` times
   the box's longer side), resize it to ``CROP_PX`` and run FaceMesh on it;
2. otherwise, or if that result is implausible (no face, face off-centre, size jump = drift), run
   MediaPipe's full-range face detector (``model_selection=1``) on the whole frame and, when it
   finds nothing, on overlapping tiles at finer scales (small faces in large frames); pick the
   detection most consistent with the last tracked box (IoU) or else the largest, crop around it and
   run FaceMesh;
3. landmarks are mapped from the crop back to full-frame normalised coordinates.

The take is streamed frame by frame: memory holds one frame plus the output arrays.

Speed (1080p, one core): frames stay in the decoder's YUV; only the FaceMesh crop is cut and
converted to RGB (``media.Frame.crop``, ~1.3 ms), the whole frame only when the detector runs. A
followed frame costs H.264 decoding ~3 ms + crop ~1.3 ms + FaceMesh ~5.5 ms (its own short-range
detector + the attention mesh; FaceMesh's video mode, which skips the detector, was 1.9 ms faster
but its landmark-based region of interest doubled the landmark jitter and lowered the eye-closure
and pose correlations with the demo truth, so it is not used). ``bench/face.py`` measures it.
"""
from __future__ import annotations

import argparse
import sys
from collections import deque

import numpy as np
from tqdm import tqdm

from preprocessing.common import StepError, load_json, run_step, save_npz
from preprocessing.landmarks import N_LANDMARKS
from preprocessing.media import Frame, iter_frames
from preprocessing.timebase import FPS

CROP_PX = 256          # side of the square crop handed to FaceMesh (px)
MESH_SCALE = 1.7       # crop side / longer side of the previous frame's landmark box
DET_SCALE = 2.2        # crop side / longer side of a face-detector box (tighter than the landmark
                       # box)
MIN_FACE_PX = 24       # landmark boxes smaller than this (longer side, px) are not trusted
TILE_LEVELS = 2        # tile sides of the small-face search: min(w, h), min(w, h) / 2
TILE_EVERY = 5         # while no face is tracked, the (costly) tiled search runs every this many
                       # frames


# ---------------------------------------------------------------------------------------- geometry
def _square(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    """Integer square (x0, y0, side) centred on (cx, cy)."""
    s = max(int(round(side)), 8)
    return int(round(cx - s / 2)), int(round(cy - s / 2)), s


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _tiles(w: int, h: int, levels: int = TILE_LEVELS):
    """Overlapping square tiles (x0, y0, side), coarse to fine: side = min(w, h) / 2**k, 25%
    overlap.

    720p: 3 tiles of 720 px, then 15 of 360 px (a 45 px face becomes ~24 px of the detector's 192).
    """
    side = min(w, h)
    for _ in range(levels):
        step = max(int(side * 0.75), 1)
        xs = list(range(0, max(w - side, 0) + 1, step))
        ys = list(range(0, max(h - side, 0) + 1, step))
        if xs[-1] != max(w - side, 0):
            xs.append(max(w - side, 0))
        if ys[-1] != max(h - side, 0):
            ys.append(max(h - side, 0))
        if len(xs) * len(ys) > 1:
            for y in ys:
                for x in xs:
                    yield x, y, side
        side //= 2


# ---------------------------------------------------------------------------------------- tracker
class FaceTracker:
    """Follows one face through a stream of video frames (:class:`preprocessing.media.Frame`, as
    ``iter_frames(..., lazy=True)`` yields them); ``track(frame)`` -> (landmarks px, box px) or
    None.

    ``landmarks`` are ``(478, 3)`` full-frame pixels (x, y, z*width-unit); the box is the landmark
    box x0, y0, x1, y1 in pixels. State: the previous frame's box and the last box ever tracked.
    """

    def __init__(self, min_face_px: int = MIN_FACE_PX):
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5)
        self.detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.5)
        self.min_face_px = min_face_px
        self.prev_box = None      # landmark box of the previous frame if it was tracked
        self.last_box = None      # last landmark box tracked, however long ago
        self.frame_shape = None
        self.lost_for = 0         # frames since the last tracked frame
        self.stats = {"mesh_from_previous": 0, "detections": 0, "tiled_searches": 0,
                      "recovered_backwards": 0}

    def close(self):
        self.mesh.close()
        self.detector.close()

    # -- FaceMesh on a crop, mapped back to full-frame pixels
    def _mesh(self, frame: Frame, cx, cy, side, expect_side):
        h, w = frame.shape[:2]
        # Frame.crop cuts the square from the decoded YUV planes and converts only the crop to RGB
        # (area-averaged: MediaPipe's own warp does not antialias when shrinking); the square it
        # cut may be a few pixels larger than asked, the landmarks are mapped back through it
        crop, (x0, y0, s) = frame.crop(*_square(cx, cy, side), CROP_PX)
        res = self.mesh.process(crop)
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        uvz = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)
        if uvz.shape[0] != N_LANDMARKS:
            return None
        px = np.empty_like(uvz)
        px[:, 0] = x0 + uvz[:, 0] * s
        px[:, 1] = y0 + uvz[:, 1] * s
        px[:, 2] = uvz[:, 2] * s
        box = np.array([px[:, 0].min(), px[:, 1].min(), px[:, 0].max(), px[:, 1].max()])
        bw, bh = box[2] - box[0], box[3] - box[1]
        longer = max(bw, bh)
        # plausibility: a real face of the expected size, roughly where we looked
        if longer < self.min_face_px or not (0.4 * expect_side <= longer <= 2.5 * expect_side):
            return None
        bcx, bcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if abs(bcx - cx) > 0.3 * side or abs(bcy - cy) > 0.3 * side:
            return None
        if bcx < 0 or bcy < 0 or bcx > w or bcy > h:
            return None
        return px, box

    # -- face detector: whole frame, then tiles
    def _detect(self, frame: Frame, tiled: bool):
        h, w = frame.shape[:2]
        frame = frame.rgb()
        boxes = self._detect_in(frame, 0, 0, w, h)
        if not boxes and tiled:
            self.stats["tiled_searches"] += 1
            for x0, y0, side in _tiles(w, h):
                tile = np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side])
                boxes = self._detect_in(tile, x0, y0, side, side)
                if boxes:
                    break
        self.stats["detections"] += 1
        return boxes

    def _detect_in(self, img, ox, oy, w, h):
        res = self.detector.process(img)
        out = []
        for d in res.detections or []:
            r = d.location_data.relative_bounding_box
            out.append((ox + r.xmin * w, oy + r.ymin * h, ox + (r.xmin + r.width) * w,
                        oy + (r.ymin + r.height) * h, float(d.score[0])))
        return out

    def _pick(self, boxes):
        """The detection most consistent with the last tracked face, else the largest."""
        if self.last_box is not None:
            ious = [_iou(b, self.last_box) for b in boxes]
            if max(ious) > 0.1:
                return boxes[int(np.argmax(ious))]
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    def follow(self, frame: Frame, box) -> tuple[np.ndarray, np.ndarray] | None:
        """FaceMesh on a crop around ``box`` (a landmark box of a neighbouring frame), or None."""
        longer = max(box[2] - box[0], box[3] - box[1])
        return self._mesh(frame, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                          MESH_SCALE * longer, longer)

    def track(self, frame: Frame):
        """Landmarks of the followed face in ``frame`` (the next frame of the stream), or None.

        ``self.found`` tells afterwards whether the face was (re)found by the detector rather than
        followed from the previous frame.
        """
        h, w = frame.shape[:2]
        if self.frame_shape is not None and self.frame_shape != (h, w):
            # frame size changed mid-video: rescale the remembered boxes
            sx, sy = w / self.frame_shape[1], h / self.frame_shape[0]
            scale = np.array([sx, sy, sx, sy])
            self.prev_box = None if self.prev_box is None else self.prev_box * scale
            self.last_box = None if self.last_box is None else self.last_box * scale
        self.frame_shape = (h, w)

        out = None
        self.found = False
        if self.prev_box is not None:
            out = self.follow(frame, self.prev_box)
            if out is not None:
                self.stats["mesh_from_previous"] += 1
        if out is None:
            tiled = self.lost_for % TILE_EVERY == 0
            boxes = self._detect(frame, tiled)
            if boxes:
                d = self._pick(boxes)
                longer = max(d[2] - d[0], d[3] - d[1])
                # the landmark box is about 1.3x the detector box
                out = self._mesh(frame, (d[0] + d[2]) / 2, (d[1] + d[3]) / 2, DET_SCALE * longer,
                                 1.3 * longer)
                self.found = out is not None
        if out is None:
            self.prev_box = None
            self.lost_for += 1
            return None
        self.prev_box = self.last_box = out[1]
        self.lost_for = 0
        return out


# ---------------------------------------------------------------------------------------- gaps
def fill_gaps(landmarks: np.ndarray, bbox: np.ndarray, valid: np.ndarray, max_gap: int):
    """Linearly interpolate runs of at most ``max_gap`` invalid frames lying between two tracked
    frames.

    Works in place on ``landmarks`` ``(N, K, 3)`` and ``bbox`` ``(N, 4)``; returns (valid,
    interpolated) as new uint8 arrays. Gaps at the start or end of the take are never filled.
    """
    valid = valid.astype(np.uint8).copy()
    interp = np.zeros_like(valid)
    idx = np.flatnonzero(valid)
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            wgt = (np.arange(1, gap + 1) / (gap + 1)).astype(np.float32)
            landmarks[a + 1:b] = ((1 - wgt)[:, None, None] * landmarks[a]
                                  + wgt[:, None, None] * landmarks[b])
            bbox[a + 1:b] = (1 - wgt)[:, None] * bbox[a] + wgt[:, None] * bbox[b]
            valid[a + 1:b] = 1
            interp[a + 1:b] = 1
    return valid, interp


# ---------------------------------------------------------------------------------------- step
def track_video(video: str, n_frames: int, max_gap: int = 5, min_face_px: int = MIN_FACE_PX,
                progress: bool = True, stats: dict | None = None) -> dict[str, np.ndarray]:
    """Track one face through ``video`` on the 30 fps timeline; returns the ``track.npz`` arrays.

    ``stats`` (optional dict) receives the tracker's counters (frames followed from the previous
    frame, detector runs, tiled searches, frames recovered backwards) and the decoder's.
    """
    n = int(n_frames)
    if n <= 0:
        raise StepError(f"take has no frames (n_frames = {n})")
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, np.float32)
    bbox = np.full((n, 4), np.nan, np.float32)
    valid = np.zeros(n, np.uint8)
    frame_size = np.zeros((n, 2), np.int32)
    tracker = FaceTracker(min_face_px=min_face_px)

    def store(i, out):
        px, box = out
        w, h = frame_size[i]
        landmarks[i, :, 0] = px[:, 0] / w
        landmarks[i, :, 1] = px[:, 1] / h
        landmarks[i, :, 2] = px[:, 2] / w
        bbox[i] = (box[0] / w, box[1] / h, box[2] / w, box[3] / h)
        valid[i] = 1

    # frames missed since the last tiled search (at most TILE_EVERY - 1, so memory stays bounded):
    # when the detector finds the face again they are tracked backwards from it
    missed: deque[tuple[int, Frame]] = deque(maxlen=max(TILE_EVERY - 1, 0))
    frames = None
    try:
        # media.iter_frames: (i, Frame) on the 30 fps timeline, converted to RGB only where the
        # detector needs the whole frame; corrupt packets repeat the previous frame, a mid-video
        # size change is rescaled to the first frame's size
        frames = iter_frames(video, fps=FPS, n_frames=n, lazy=True)
        for i, frame in tqdm(frames, total=n, desc="track", unit="frame", disable=not progress,
                             mininterval=5):
            h, w = frame.shape[:2]
            frame_size[i] = (w, h)
            out = tracker.track(frame)
            if out is None:
                missed.append((i, frame))
                continue
            store(i, out)
            if tracker.found:
                box = out[1]
                for j, old in reversed(missed):
                    back = tracker.follow(old, box)
                    if back is None:
                        break
                    store(j, back)
                    box = back[1]
                    tracker.stats["recovered_backwards"] += 1
            missed.clear()
    finally:
        tracker.close()
        if stats is not None:
            stats.update(tracker.stats, decoder=getattr(frames, "stats", None))
    if not valid.any():
        raise StepError("no face found in any frame")
    valid, interpolated = fill_gaps(landmarks, bbox, valid, max_gap)
    return {"landmarks": landmarks, "valid": valid, "interpolated": interpolated,
            "frame_size": frame_size, "bbox": bbox}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--take", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--ingest", required=True, help="ingest.json (gives n_frames)")
    p.add_argument("--max-gap", type=int, default=5)
    p.add_argument("--min-face-px", type=int, default=MIN_FACE_PX)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    def work():
        n = load_json(a.ingest)["n_frames"]
        stats: dict = {}
        arrays = track_video(a.video, n, max_gap=a.max_gap, min_face_px=a.min_face_px, stats=stats)
        save_npz(a.out, **arrays)
        v = arrays["valid"]
        print(f"track: {int(v.sum())}/{len(v)} frames valid "
              f"({int(arrays['interpolated'].sum())} interpolated); {stats}", file=sys.stderr)

    return run_step("track", a.take, [a.out], work)


if __name__ == "__main__":
    sys.exit(main())
