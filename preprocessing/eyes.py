"""Eye-state split (paper 4.2): AU45 -> per-video min-max -> closed runs -> blinks vs long closures.

Definitions (docs/data.md, "Eye states"):

* ``au45_norm = (au45 - min) / (max - min)`` with min and max over the *valid* frames of the take
  (invalid frames get 0, i.e. open; a take whose AU45 never varies is all 0);
* a frame is *closed* when it is valid and ``au45_norm >= closed_threshold``;
* a *closed run* is a maximal run of consecutive closed frames, ``[start, end)``; its duration is
  ``(end - start) / fps`` seconds;
* a run lasting at least ``tau`` s is a *long closure*: ``eye_long`` keeps ``au45_norm`` on its
  frames (0 elsewhere); a shorter run is a *blink*: ``eye_blink`` is 1 on its frames (0 elsewhere).

``eyes.npz``: ``au45`` float32 (N,) in [0, 1], ``eye_long`` float32, ``eye_blink`` uint8, ``valid``
uint8, ``events`` float32 (K, 4) = start frame, end frame (exclusive), duration s, kind (0 blink,
1 long), ``stats_json`` (str): :func:`blink_stats` of the take (rates per *valid* second).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from preprocessing.common import StepError, load_npz, run_step, save_npz
from preprocessing.geometry import runs
from preprocessing.timebase import FPS


def normalise_au45(au45: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-video min-max of ``au45`` over valid frames -> float32 in [0, 1], 0 on invalid frames."""
    au45 = np.asarray(au45, np.float64)
    valid = np.asarray(valid).astype(bool) & np.isfinite(au45)
    if not valid.any():
        raise StepError("no valid AU45 frame")
    lo, hi = au45[valid].min(), au45[valid].max()
    out = np.zeros(len(au45), np.float32)
    if hi > lo:
        out[valid] = ((au45[valid] - lo) / (hi - lo)).astype(np.float32)
    return out


def split_eye_states(au45_norm: np.ndarray, fps: float = FPS, tau: float = 0.5,
                     closed_threshold: float = 0.5, valid: np.ndarray | None = None):
    """Split normalised AU45 into long closures and blinks (module docstring).

    Returns ``eye_long`` float32 (N,), ``eye_blink`` uint8 (N,), ``events`` float32 (K, 4) = start,
    end (exclusive), duration s, kind (0 blink, 1 long), in time order. ``valid`` (optional): frames
    where it is 0 never count as closed.
    """
    a = np.asarray(au45_norm, np.float64)
    closed = np.isfinite(a) & (a >= closed_threshold)
    if valid is not None:
        closed &= np.asarray(valid).astype(bool)
    eye_long = np.zeros(len(a), np.float32)
    eye_blink = np.zeros(len(a), np.uint8)
    events = []
    # frames; the tolerance keeps exactly-tau runs long despite float error
    min_long = tau * fps - 1e-9
    for start, end in runs(closed):
        n = end - start
        kind = 1 if n >= min_long else 0
        if kind:
            eye_long[start:end] = a[start:end]
        else:
            eye_blink[start:end] = 1
        events.append((start, end, n / fps, kind))
    return eye_long, eye_blink, np.array(events, np.float32).reshape(-1, 4)


def blink_stats(events: np.ndarray, n_frames: int, fps: float = FPS) -> dict:
    """Statistics of closure ``events`` (as :func:`split_eye_states` returns) over ``n_frames``
    frames (a take's valid frames): the one definition used by the dataset and the evaluation.

    ``seconds``; ``n_blinks``, ``n_long``; ``blinks_per_s``, ``long_per_s`` (counts / seconds);
    ``blink_duration_s``, ``long_duration_s`` (mean durations); ``closed_fraction`` (closed time /
    seconds); ``durations_s`` (every closure, in order). Undefined values are NaN, never 0: a mean
    duration without any such closure (a take without blinks has no blink duration; 0 s would be
    a blink that never happened and would drag pooled means and tables down), and every rate over
    0 seconds. Zero blinks in a positive time is a rate of 0.
    """
    ev = np.asarray(events, np.float64).reshape(-1, 4)
    seconds = n_frames / fps
    blinks, longs = ev[ev[:, 3] == 0, 2], ev[ev[:, 3] == 1, 2]

    def per_s(x):
        return x / seconds if seconds > 0 else float("nan")

    return {
        "seconds": seconds,
        "n_blinks": int(len(blinks)),
        "n_long": int(len(longs)),
        "blinks_per_s": per_s(len(blinks)),
        "blink_duration_s": float(blinks.mean()) if len(blinks) else float("nan"),
        "long_per_s": per_s(len(longs)),
        "long_duration_s": float(longs.mean()) if len(longs) else float("nan"),
        "closed_fraction": per_s(float(ev[:, 2].sum())),
        "durations_s": ev[:, 2].tolist(),
    }


def eye_states(au45: np.ndarray, valid: np.ndarray, fps: float = FPS, tau: float = 0.5,
               closed_threshold: float = 0.5) -> dict:
    """``eyes.npz`` arrays from raw AU45 and its valid mask."""
    valid = (np.asarray(valid).astype(bool)
             & np.isfinite(np.asarray(au45, np.float64))).astype(np.uint8)
    norm = normalise_au45(au45, valid)
    eye_long, eye_blink, events = split_eye_states(norm, fps, tau, closed_threshold, valid=valid)
    stats = blink_stats(events, int(valid.sum()), fps)
    del stats["durations_s"]  # the events hold them
    stats = {k: None if v != v else v for k, v in stats.items()}  # NaN -> JSON null
    stats.update(tau=tau, closed_threshold=closed_threshold, fps=fps,
                 constant_au45=bool(norm.max() == 0))
    return {"au45": norm, "eye_long": eye_long, "eye_blink": eye_blink, "valid": valid,
            "events": events, "stats_json": np.str_(json.dumps(stats, sort_keys=True))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--take", required=True)
    p.add_argument("--au45", required=True)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--closed-threshold", type=float, default=0.5)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    def work():
        z = load_npz(a.au45)
        arrays = eye_states(z["au45"], z["valid"], FPS, a.tau, a.closed_threshold)
        save_npz(a.out, **arrays)
        print(f"eyes: {arrays['stats_json']}", file=sys.stderr)

    return run_step("eyes", a.take, [a.out], work)


if __name__ == "__main__":
    sys.exit(main())
