"""mfcc: vocals / music / mix -> 100 Hz MFCC + deltas (26-D), row 0 = the take's video frame 0.

Paper 3.2.1: 16 kHz audio, MFCC and their first derivatives, 25 ms window, 10 ms step -> 26-D at
100 Hz; windows of 39 rows (390 ms) per 30 fps video frame -> ``(30 T, 39, 26)``.

Feature settings (python_speech_features 0.6, the library most audio-driven face models use; every
setting fixed here, none left to a library default):

* ``WIN`` = 400 samples (25 ms), ``HOP`` = 160 samples (10 ms) at ``SR`` = 16 kHz; a Hamming window.
* pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (over the whole cut, before framing).
* power spectrum ``|rfft(frame, 512)|^2 / 512`` (``N_FFT`` = 512, the frame zero-padded).
* ``N_MELS`` = 26 triangular filters on the HTK mel scale from 0 Hz to 8 kHz; ``log`` of the filter
  energies (exact zeros replaced by the float64 eps, so silence gives finite values: log(eps) =
  -36.04).
* DCT-II (orthonormal), first ``N_CEP`` = 13 coefficients, sinusoidal lifter
  ``1 + 11 sin(pi n / 22)`` (``LIFTER`` = 22); coefficient 0 replaced by the log of the frame's
  total power (appendEnergy).
* deltas: the regression ``d_t = sum_{n=1..2} n (c_{t+n} - c_{t-n}) / 10`` (``DELTA_N`` = 2),
  computed on real audio context (two extra rows each side), so a row's features do not depend on
  where the take starts or ends. Columns: 13 MFCC, then their 13 deltas. float32.
* Row ``r`` is the frame *centred* at time ``r / 100`` s: it covers
  ``[r/100 - 12.5 ms, r/100 + 12.5 ms)``.

Take alignment (docs/data.md, "Time and units"): ``song_time = video_time + offset_s`` (sync.json),
so row ``r`` reads the song around sample ``r * 160 + round(offset_s * 16000)``: the offset is
applied here, once, at 16 kHz sample precision. ``M = ceil(N * 100 / 30)`` rows for ``N`` video
frames (``timebase.n_mfcc_rows``).
Where the take runs past either end of the song (recording started before the song or went on after
it), the song is zero (digital silence, the log(eps) rows above). A take that does not overlap the
song at all, a song that is silent during the whole take, empty or mismatched wav files are errors.

**Song gaps.** A partly corrupt song file decodes with its broken stretches as zeros (song.json
``gaps_s``, :mod:`preprocessing.song`); the stems are computed from that mix, sample for sample on
its timeline, so they hold the same gaps. The features there are those of silence while the singer
sang, so the step also writes ``valid`` (uint8 ``(N,)``, per video frame): 0 where the frame's
39-row window (``mfcc_windows``, ``timebase.MFCC_WIDTH``) reads any song sample inside a gap.
Row ``r`` is computed from the song samples within 32.5 ms of its centre (:func:`reach`: its
25 ms frame, the ``DELTA_N`` frames each side for the deltas, and the sample before for the
pre-emphasis); with drift, from the two song-grid rows it is interpolated between. So frame ``i``
is invalid when a gap overlaps the song time from its window's first row to its last, widened by
32.5 ms each side: about 445 ms around the frame's song time ``offset_s + t (1 + drift_ppm
1e-6)``. A song without gaps gives ``valid`` all 1. QC and the shards AND it into the take's valid
frames.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from preprocessing.common import StepError, check_upstream, load_json, run_step, save_npz
from preprocessing.timebase import FPS, MFCC_DIM, MFCC_WIDTH, SR, centre_rows, n_mfcc_rows
from preprocessing.timebase import MFCC_HOP as HOP  # noqa: F401 - public: tests use mfcc.HOP
from preprocessing.timebase import MFCC_RATE as RATE  # rows per second

WIN = 400            # samples: 25 ms analysis window
N_FFT = 512
N_MELS = 26
N_CEP = MFCC_DIM // 2  # 13 MFCC, then their 13 deltas
LIFTER = 22
PREEMPH = 0.97
DELTA_N = 2
DIM = MFCC_DIM       # 26 = 13 MFCC + 13 deltas
SILENCE = 1e-8       # peak amplitude under which audio counts as digital silence
STEMS = ("vocals", "music", "mix")


# frames per block in _cepstra (~1-2 MB of float64 spectra: stays in the L2 cache)
BLOCK = 512


def _cepstra(signal: np.ndarray, sr: int = SR) -> np.ndarray:
    """``python_speech_features.mfcc`` with this module's settings, bit for bit, in cache-sized
    blocks.

    ``signal`` float64 holding a whole number of frames (``(n - 1) * hop + win`` samples) -> float64
    ``(n, N_CEP)``. psf builds the framed signal with an int index array, a gather and a tiled
    window (four arrays of n x 400 x 8 bytes, 77 MB each for a 4-minute song) and then the whole
    complex spectrum: two thirds of its time is memory traffic. Here the frames are a strided view
    of the block's pre-emphasised samples, and each block of frames is pre-emphasised, windowed and
    goes through psf's own ``sigproc.powspec`` and energy sum while it is in cache: the same float64
    operations on the same values, so the same results (tests/test_mfcc.py compares against
    ``psf.mfcc``), ~3x faster.
    The filterbank product stays one matrix product over all frames, as in psf: BLAS rounds a row
    differently depending on where it falls in its blocking of the matrix (measured: the 26 rows
    after row 3,072 of a 3,098-frame product change in the last bit when the product is cut in
    blocks).
    """
    import python_speech_features as psf
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.fftpack import dct

    hop, win = sr // RATE, int(round(0.025 * sr))
    n = (len(signal) - win) // hop + 1
    assert (n - 1) * hop + win == len(signal), (len(signal), n)
    window = np.hamming(win)
    bank = psf.get_filterbanks(N_MELS, N_FFT, sr, 0, sr / 2)
    pspec, energy = np.empty((n, N_FFT // 2 + 1)), np.empty(n)
    for a in range(0, n, BLOCK):
        b = min(n, a + BLOCK)
        lo, hi = a * hop, (b - 1) * hop + win                       # the block's samples
        # pre-emphasis y[k] = x[k] - 0.97 x[k-1] (y[0] = x[0]), element by element as psf does
        emph = (signal[lo:hi] - PREEMPH * signal[lo - 1:hi - 1] if lo
                else psf.sigproc.preemphasis(signal[:hi], PREEMPH))
        frames = sliding_window_view(emph, win)[::hop]               # (b - a, win) view, no copy
        pspec[a:b] = psf.sigproc.powspec(frames * window, N_FFT)
        energy[a:b] = np.sum(pspec[a:b], 1)
    feat = np.dot(pspec, bank.T)
    # the rest of psf.fbank / psf.mfcc, unchanged: exact zeros -> eps, log, DCT, lifter, log energy
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    cep = psf.base.lifter(dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :N_CEP], LIFTER)
    cep[:, 0] = np.log(energy)
    return cep


def _features(padded: np.ndarray, rows: int, sr: int = SR) -> np.ndarray:
    """MFCC+delta rows of a cut that starts ``DELTA_N * HOP + WIN / 2`` samples before row 0's
    centre.

    ``padded`` must hold exactly ``(rows + 2 DELTA_N - 1) * HOP + WIN`` samples: frames
    ``-DELTA_N .. rows + DELTA_N - 1`` are computed, the deltas use them, the extra rows are
    dropped.
    """
    hop, win = sr // RATE, int(round(0.025 * sr))
    total = rows + 2 * DELTA_N
    assert len(padded) == (total - 1) * hop + win, (len(padded), total)
    cep = _cepstra(np.asarray(padded, np.float64), sr)
    assert cep.shape == (total, N_CEP), cep.shape
    # delta regression, vectorised (psf.delta loops in Python): d_t = sum n (c_{t+n} - c_{t-n}) /
    # denom
    denom = 2 * sum(n * n for n in range(1, DELTA_N + 1))
    d = sum(n * (cep[DELTA_N + n: total - DELTA_N + n] - cep[DELTA_N - n: total - DELTA_N - n])
            for n in range(1, DELTA_N + 1)) / denom
    return np.concatenate([cep[DELTA_N: total - DELTA_N], d], axis=1).astype(np.float32)


def cut(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """``audio[start : start + length]`` with zeros where the range lies outside the signal."""
    out = np.zeros(length, np.float32)
    a, b = max(start, 0), min(start + length, len(audio))
    if b > a:
        out[a - start: b - start] = audio[a:b]
    return out


def features_at(audio: np.ndarray, first_sample: int, rows: int, sr: int = SR) -> np.ndarray:
    """``rows`` MFCC+delta rows (float32 ``(rows, 26)``) of ``audio``; row ``r`` centred at sample
    ``first_sample + r * sr / 100``; the signal is zero outside ``audio``."""
    hop, win = sr // RATE, int(round(0.025 * sr))
    lead = DELTA_N * hop + win // 2
    return _features(cut(audio, first_sample - lead,
                         (rows + 2 * DELTA_N - 1) * hop + win), rows, sr)


def mfcc(wav: np.ndarray, sr: int = SR) -> np.ndarray:
    """MFCC + first derivatives of a whole signal: float32 ``(ceil(n / hop), 26)`` at 100 Hz.

    Row ``r`` is centred at ``r / 100`` s of ``wav`` (module docstring for every setting); frames
    that reach past either end read zeros. ``sr`` must be a multiple of 100 (16 kHz in the
    pipeline).
    """
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"mfcc: mono audio expected, got shape {wav.shape}")
    if sr % RATE:
        raise ValueError(f"mfcc: sample rate must be a multiple of {RATE} Hz, got {sr}")
    if len(wav) == 0:
        raise StepError("empty audio (0 samples)")
    return features_at(wav, 0, -(-len(wav) // (sr // RATE)), sr)


def mfcc_windows(features_100hz: np.ndarray, n_frames: int, fps: int = FPS,
                 width: int = MFCC_WIDTH) -> np.ndarray:
    """Per-video-frame windows of 100 Hz features: ``(n_frames, width, D)`` (docs/data.md).

    Window ``i`` is centred on video-frame time ``i / fps``: its centre row is ``c_i = round(i * 100
    / fps)`` (halves round up, ``timebase.centre_rows``) and it holds rows ``c_i - width // 2 .. c_i
    + (width - 1) // 2``; rows outside ``[0, M)`` replicate the first / last row. One gather, no
    Python loop over frames.
    """
    feats = np.asarray(features_100hz)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"mfcc_windows: features must be (M >= 1, D), got shape {feats.shape}")
    if width < 1 or n_frames < 0:
        raise ValueError(f"mfcc_windows: need width >= 1 and n_frames >= 0, got {width}, "
                         f"{n_frames}")
    centre = centre_rows(np.arange(n_frames, dtype=np.int64), fps)
    rows = np.clip(centre[:, None] + np.arange(width)[None, :] - width // 2, 0, len(feats) - 1)
    return feats[rows]


# ------------------------------------------------------------------------------------- the take
def reach(sr: int = SR) -> tuple[int, int]:
    """``(before, after)``: a row centred on sample ``c`` is computed from the samples
    ``[c - before, c + after)``: its own 25 ms frame and the ``DELTA_N`` frames each side (the
    deltas), one sample more in front (the pre-emphasis). 521 and 520 at 16 kHz (32.5 ms)."""
    hop, win = sr // RATE, int(round(0.025 * sr))
    return DELTA_N * hop + win // 2 + 1, DELTA_N * hop + win - win // 2


def rows_over_gaps(centres: np.ndarray, gaps_s, sr: int = SR) -> np.ndarray:
    """Which rows read a song gap: bool ``(len(centres),)``.

    ``centres``: the rows' centres in song samples, ascending; ``gaps_s``: ``[from_s, to_s]``
    stretches of the song (song.json ``gaps_s``, rounded to 0.1 ms there: taken outwards to whole
    samples). A row reads the samples :func:`reach` gives around its centre.
    """
    centres = np.asarray(centres, np.int64)
    before, after = reach(sr)
    hit = np.zeros(len(centres), bool)
    for a, b in gaps_s:
        g0, g1 = math.floor(float(a) * sr), math.ceil(float(b) * sr)   # samples [g0, g1)
        if g1 <= g0:
            continue
        # overlap: c - before < g1 and g0 < c + after
        lo = np.searchsorted(centres, g0 - after, side="right")
        hi = np.searchsorted(centres, g1 + before, side="left")
        hit[lo:hi] = True
    return hit


def take_features(stems: dict[str, np.ndarray], offset_s: float, n_frames: int, fps: int = FPS,
                  sr: int = SR, drift_ppm: float = 0.0, gaps_s=()) -> dict[str, np.ndarray]:
    """The take's features: ``{"mfcc_vocals", "mfcc_music", "mfcc_mix"}`` float32 ``(M, 26)``.

    ``stems`` maps vocals / music / mix to the song's float mono audio at ``sr`` (same length).
    Row ``r`` is at video time ``t = r / 100`` s = song time ``offset_s + t (1 + drift_ppm 1e-6)``
    (module docstring; ``drift_ppm`` from sync.json, the camera clock's drift against the player).
    With drift the rows are computed on the song's own 100 Hz grid and linearly interpolated at the
    drifted times (exact at drift 0: then no interpolation happens). Also returns ``"coverage"``:
    the fraction of rows whose centre lies inside the song, and ``"valid"``: uint8 ``(n_frames,)``,
    0 for the frames whose window reads a stretch of ``gaps_s`` (song seconds; module docstring).
    """
    lengths = {k: len(v) for k, v in stems.items()}
    if len(set(lengths.values())) != 1:
        raise StepError(f"vocals/music/mix lengths differ: {lengths} samples")
    n = lengths["mix"]
    if n == 0:
        raise StepError("mix.wav is empty (0 samples)")
    if n_frames < 1:
        raise StepError(f"take has no video frames (n_frames={n_frames})")
    if not math.isfinite(offset_s):
        raise StepError(f"sync offset is not a number: {offset_s}")
    if not math.isfinite(drift_ppm):
        raise StepError(f"sync drift is not a number: {drift_ppm}")
    rows = n_mfcc_rows(n_frames, fps)
    hop = sr // RATE
    ratio = 1.0 + drift_ppm * 1e-6         # song seconds per video second
    first = int(round(offset_s * sr))       # song sample at video time 0 (16 kHz precision)
    song_rows = rows if drift_ppm == 0 else int(math.ceil((rows - 1) * ratio)) + 2
    last = first + int(round((rows - 1) * hop * ratio))
    song_s = n / sr
    if last < 0 or first >= n:
        raise StepError(f"take does not overlap the song: the take covers song time "
                        f"{first / sr:.2f}.."
                        f"{last / sr:.2f} s, the song is 0..{song_s:.2f} s long (check sync "
                        f"offset_s)")
    # the rows that read a song gap: on the song grid, then (drift) the video rows interpolated
    # from them, then the frames whose window holds one of those rows
    over_gaps = rows_over_gaps(first + hop * np.arange(song_rows, dtype=np.int64), gaps_s, sr)
    if drift_ppm != 0:
        # fractional song-grid row of each video row
        at = np.arange(rows) * ratio
        lo = np.minimum(at.astype(np.int64), song_rows - 2)
        w = (at - lo)[:, None].astype(np.float32)
        over_gaps = over_gaps[lo] | ((w[:, 0] > 0) & over_gaps[lo + 1])
    valid = ~mfcc_windows(over_gaps[:, None], n_frames, fps).any(axis=(1, 2))
    mix_span = cut(stems["mix"], first, last - first + 1)
    # a take wholly over the song's gaps is silent too: QC fails it for its invalid frames
    if float(np.max(np.abs(mix_span))) < SILENCE and valid.any():
        raise StepError(f"the song is silent during the whole take (song time "
                        f"{max(first, 0) / sr:.2f}..{min(last, n - 1) / sr:.2f} s)")
    out = {f"mfcc_{k}": features_at(np.asarray(stems[k], np.float32), first, song_rows, sr)
           for k in STEMS}
    if drift_ppm != 0:
        for k in STEMS:
            f = out[f"mfcc_{k}"]
            out[f"mfcc_{k}"] = ((1 - w) * f[lo] + w * f[lo + 1]).astype(np.float32)
    centres = first + np.round(np.arange(rows) * hop * ratio)
    out["coverage"] = np.float32(np.mean((centres >= 0) & (centres < n)))
    out["valid"] = valid.astype(np.uint8)
    return out


def work(args) -> None:
    from preprocessing.media import read_wav

    info = load_json(args.ingest)
    sync = load_json(args.sync)
    check_upstream(args.vocals, args.music, args.mix, args.song_info)
    stems = {"vocals": read_wav(args.vocals, SR), "music": read_wav(args.music, SR),
             "mix": read_wav(args.mix, SR)}
    fps = info.get("fps", FPS)
    fps = int(fps) if float(fps).is_integer() else float(fps)
    offset = float(sync["offset_s"])
    drift = float(sync.get("drift_ppm", 0.0))
    gaps = load_json(args.song_info)["gaps_s"] if args.song_info else []
    feats = take_features(stems, offset, int(info["n_frames"]), fps, drift_ppm=drift,
                          gaps_s=gaps)
    print(f"mfcc: {args.take}: {len(feats['mfcc_mix'])} rows, offset {offset:+.4f} s, drift "
          f"{drift:+.1f} ppm, coverage {float(feats['coverage']):.3f}, "
          f"{int(np.sum(feats['valid'] == 0))} of {len(feats['valid'])} frames over the song's "
          f"{len(gaps)} corrupt stretches", file=sys.stderr)
    save_npz(args.out, **feats, offset_s=np.float64(offset))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--take", required=True)
    ap.add_argument("--ingest", required=True, help="ingest.json (n_frames, fps)")
    ap.add_argument("--sync", required=True, help="sync.json (offset_s)")
    ap.add_argument("--vocals", required=True)
    ap.add_argument("--music", required=True)
    ap.add_argument("--mix", required=True)
    ap.add_argument("--song-info", default=None,
                    help="song.json (gaps_s: frames over them are marked invalid; without it "
                         "the song is taken as whole)")
    ap.add_argument("--out", required=True, help="mfcc.npz")
    args = ap.parse_args(argv)
    return run_step("mfcc", args.take, [args.out], lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
