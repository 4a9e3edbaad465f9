"""The project's time base: frame rate, sample rate, MFCC rate and the row counts that follow.

Every module imports these; none restates them (docs/data.md, "Time and units").

* Video: frame ``i`` of a take is at video time ``i / FPS`` s; ``N`` frames per take.
* Audio: every wav the steps exchange (mix, vocals, music) is mono at ``SR`` Hz.
* Features: MFCC + deltas, ``MFCC_DIM`` columns at ``MFCC_RATE`` rows per second; row ``r`` is at
  video time ``r / MFCC_RATE`` s, so a take of ``N`` frames has ``M = ceil(N * MFCC_RATE / FPS)``
  rows (:func:`n_mfcc_rows`). Frame ``t`` sees the ``MFCC_WIDTH`` rows centred on row
  ``round(t * MFCC_RATE / FPS)`` (:func:`centre_rows`); ``CENTRE_ROW`` is that row's index inside
  the window.
"""
from __future__ import annotations

import math

import numpy as np

FPS = 30                        # video frames per second (the constant-frame-rate timeline)
SR = 16000                      # Hz, sample rate of every wav exchanged between steps
MFCC_RATE = 100                 # MFCC rows per second
MFCC_HOP = SR // MFCC_RATE      # 160 samples between rows
MFCC_DIM = 26                   # columns: 13 MFCC + their 13 deltas
MFCC_WIDTH = 39                 # rows of a frame's MFCC window (390 ms, paper 3.2.1)
CENTRE_ROW = MFCC_WIDTH // 2    # 19: the window row at the frame's own time
MFCC_KEYS = ("mfcc_vocals", "mfcc_music", "mfcc_mix")  # one feature stream per stem


def n_mfcc_rows(n_frames: int, fps: float = FPS) -> int:
    """``M = ceil(n_frames * MFCC_RATE / fps)``, in exact integer arithmetic for integer ``fps``."""
    if isinstance(fps, (int, np.integer)):
        return -(-int(n_frames) * MFCC_RATE // int(fps))
    return int(math.ceil(n_frames * MFCC_RATE / fps - 1e-9))


def centre_rows(frames, fps: float = FPS, rate: int = MFCC_RATE) -> np.ndarray:
    """MFCC row at the time of each video frame: ``round(t * rate / fps)``, halves rounded up.

    Exact in integers for integer ``fps`` (``floor((2 t rate + fps) / (2 fps))``; at 30 fps and
    100 Hz no tie occurs). ``frames``: int array-like; returns int64 of the same shape, not
    clipped.
    """
    t = np.asarray(frames, dtype=np.int64)
    if isinstance(fps, (int, np.integer)):
        return (2 * t * rate + fps) // (2 * fps)
    return np.floor(t * rate / fps + 0.5).astype(np.int64)
