"""Benchmark of the demo generator (preprocessing.demo): prints one JSON object.

    python bench/demo.py                 # time 2 singers x 2 songs x 12 s (seed 0) on this machine
    python bench/demo.py --facemesh      # + how well MediaPipe FaceMesh reads the truth back
    python bench/demo.py --docs          # + write docs/demo_open_mouth.png, demo_eyes_closed.png,
                                         #   demo_head_turned.png (frames decoded from the mp4s)

FaceMesh agreement (per take, FaceMesh in tracking mode with refined landmarks): Pearson correlation
of the eye-line angle (eye-corner midpoints; also the iris-to-iris line; counter-clockwise, y up)
with the truth roll, of the inner-lip gap (13-14 / eye width) with mouth_open, of the eyelid
aperture ((|159-145| + |386-374|) / eye width) with -eye_closure; closures found by min-max
normalising the aperture and thresholding at 0.5 (as the eyes step does) against the truth (F1 over
closure events; for long closures the largest start/end error in frames).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocessing.demo import FPS, demo_rows, generate

REPO = Path(__file__).resolve().parents[1]


def frames(path):
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def runs(mask):
    e = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, int), 0]))
    return list(zip(e[::2], e[1::2]))


def facemesh_agreement(video: Path, truth: dict) -> dict:
    import mediapipe as mp

    pts = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                         max_num_faces=1) as fm:
        for img in frames(video):
            r = fm.process(img)
            h, w = img.shape[:2]
            pts.append([[p.x * w, p.y * h] for p in r.multi_face_landmarks[0].landmark]
                       if r.multi_face_landmarks else np.full((478, 2), np.nan))
    L = np.array(pts)
    ok = ~np.isnan(L[:, 0, 0])
    L, t = L[ok], {k: v[ok] for k, v in truth.items() if np.ndim(v) and len(v) == len(ok)}
    eye_w = np.linalg.norm(L[:, 33] - L[:, 263], axis=1)
    line = L[:, [362, 263]].mean(1) - L[:, [33, 133]].mean(1)
    # image y is down; the truth's roll is CCW
    roll = np.arctan2(-line[:, 1], line[:, 0])
    iris = L[:, 473] - L[:, 468]
    roll_iris = np.arctan2(-iris[:, 1], iris[:, 0])
    mouth = np.linalg.norm(L[:, 13] - L[:, 14], axis=1) / eye_w
    lids = (np.linalg.norm(L[:, 159] - L[:, 145], axis=1)
            + np.linalg.norm(L[:, 386] - L[:, 374], axis=1)) / eye_w
    au = (lids.max() - lids) / (lids.max() - lids.min())
    found, true = runs(au >= 0.5), runs(t["blink_mask"] | t["long_mask"])
    tp = sum(any(a < d and c < b for c, d in found) for a, b in true)
    p, r = tp / max(len(found), 1), tp / max(len(true), 1)
    long_err = []
    for a, b in runs(t["long_mask"]):
        m = [(c, d) for c, d in found if c < b and a < d]
        long_err.append(int(max(abs(m[0][0] - a), abs(m[0][1] - b))) if len(m) == 1 else 99)

    def cc(x, y):
        return float(np.corrcoef(x, y)[0, 1])

    return {"tracked_fraction": float(ok.mean()), "roll_corr": cc(roll, t["pose"][:, 2]),
            "roll_corr_iris_line": cc(roll_iris, t["pose"][:, 2]),
            "roll_rmse_rad": float(np.sqrt(np.mean(
                (roll - roll.mean() - t["pose"][:, 2] + t["pose"][:, 2].mean()) ** 2))),
            "mouth_corr": cc(mouth, t["mouth_open"]), "eyelid_corr": cc(lids, -t["eye_closure"]),
            "closures_true": len(true), "closures_found": len(found),
            "closure_f1": 2 * p * r / (p + r) if p + r else 0.0,
            "long_max_frame_error": max(long_err, default=0)}


def write_docs(out: Path, docs: Path) -> dict:
    """Three frames decoded from the demo's mp4s: widest mouth, a long closure, the most turned
    head."""
    import cv2

    picks = {}
    for row in demo_rows(2, 2):
        with np.load(out / Path(row["video"]).with_suffix(".truth.npz")) as z:
            t = {k: z[k] for k in z.files}
        turn = np.abs(t["pose"][:, 1]) + np.abs(t["pose"][:, 2]) + np.abs(t["pose"][:, 0])
        long_mid = [(a + b) // 2 for a, b in runs(t["long_mask"])]
        cands = {"open_mouth": (float(t["mouth_open"].max()
                                      - t["eye_closure"][int(t["mouth_open"].argmax())]),
                                int(t["mouth_open"].argmax())),
                 "eyes_closed": (float(len(long_mid) > 0), long_mid[0] if long_mid else 0),
                 "head_turned": (float(turn.max()), int(turn.argmax()))}
        for name, (score, i) in cands.items():
            if name not in picks or score > picks[name][0]:
                picks[name] = (score, i, row["video"])
    written = {}
    for name, (_, i, video) in picks.items():
        img = next(f for k, f in enumerate(frames(out / video)) if k == i)
        path = docs / f"demo_{name}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])
        written[name] = f"{video} frame {i}"
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facemesh", action="store_true")
    ap.add_argument("--docs", action="store_true")
    ap.add_argument("--seconds", type=float, default=12)
    a = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)                                    # "one core": the CPU-bound parts
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t0, c0 = time.perf_counter(), time.process_time()
        generate(out, subjects=2, songs=2, seconds=a.seconds, seed=0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = 0
        truths = {}
        for row in demo_rows(2, 2):
            with np.load(out / Path(row["video"]).with_suffix(".truth.npz")) as z:
                truths[row["take"]] = {k: z[k] for k in z.files}
            n += int(truths[row["take"]]["n_frames"])
        res = {"bench": "demo", "subjects": 2, "songs": 2, "seconds": a.seconds, "frames": n,
               "video_seconds": n / FPS, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
               "frames_per_s": round(n / wall, 1), "realtime_factor": round(n / FPS / wall, 2),
               "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}
        if a.facemesh:
            res["facemesh"] = {take: facemesh_agreement(out / row["video"], truths[take])
                               for take, row in ((r["take"], r) for r in demo_rows(2, 2))}
        if a.docs:
            res["docs"] = write_docs(out, REPO / "docs")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
