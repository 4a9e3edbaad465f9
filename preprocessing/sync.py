"""sync: where in the song does the take start? -> ``sync.json``.

``offset_s`` is the song time of video frame 0: ``song_time = video_time + offset_s`` (negative when
the camera started before the song); with a clock drift the song time of video time ``t`` is
``offset_s + t (1 + drift_ppm 1e-6)``. Methods, in this order: **gcc-phat** (the camera audio
against the whole song: half-whitened search, full PHAT refinement on the frequency band both
signals hold, sub-sample peak, clock drift measured on 2 s pieces and compensated), **mouth-
envelope** (no usable camera audio: mouth opening against the vocal stem's envelope), **syncnet**
(optional refinement on our face crops). ``confidence`` is a peak-to-sidelobe scale (QC passes
``sync.min_confidence``, 7): the peak must not rest on one shared second, and no other offset may
fit about as well - competing offsets of a repeated section are weighed on the part of the take
where the song under them differs. The method, the confidence and every measurement are in
``docs/sync.md``.

CLI: ``python -m preprocessing.sync --take T --video V --ingest ingest.json --track track.npz
--mix mix.wav --vocals vocals.wav [--backend builtin|syncnet --syncnet-weights W --device cpu
--search-frames 15] --out sync.json``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy.signal import fftconvolve

from preprocessing import geometry
from preprocessing.common import (
    StepError,
    UpstreamFailed,
    check_upstream,
    load_json,
    load_npz,
    read_failure,
    run_step,
    save_json,
)
from preprocessing.media import decode_audio, iter_frames, read_wav
from preprocessing.timebase import FPS, SR

EXCLUDE_S = 0.1          # sidelobes: lags farther than this from the peak (reverb tails stay out)
TRIM_S = 1.0             # confidence: the peak without its best second of the take (shared samples)
TAIL_PEAKS = 20          # confidence: the spacing of the 20 largest sidelobe peaks (tail)
DRIFT_MIN_CONFIDENCE = 7.0  # drift trusted at this confidence (a constant, not sync.min_confidence)
MAX_DRIFT_PPM = 1000.0   # clock drift: the largest drift looked for (cameras: 10-100 ppm, some
                         # 200+)
DRIFT_PIECE_S = 2.0      # clock drift: pieces of the take aligned on their own
DRIFT_WINDOW_S = 0.02    # clock drift: pieces are searched within this + MAX_DRIFT_PPM x take
                         # length
DRIFT_INLIER_S = 0.001   # clock drift: pieces this close to the robust line (+ half their smear)
                         # agree
DRIFT_MIN_SUPPORT = 1 / 3  # clock drift: the share of pieces that must agree before it is corrected
DRIFT_MIN_SMEAR = 1.0    # samples: a drift x take length below this is not corrected (nothing to
                         # gain)
BAND_NPERSEG = 512       # usable band: Welch spectrum in 31 Hz bins (at 16 kHz) ...
BAND_SEGMENTS = 400      # ... of at most this many segments (13 s) spread over the signal
BAND_FLOOR_DB = 60.0     # bins this far below the spectrum's 90th percentile hold nothing
BAND_TAPER_HZ = 100.0    # raised-cosine edges of the shared band
MIN_BAND_HZ = 500.0      # a shared band narrower than this cannot align anything
AMBIG_RATIO = 0.5        # another peak with this share of the best's strength competes
AMBIG_MAX = 3            # at most this many competitors are examined (the strongest)
AMBIG_BLOCK_S = 0.25     # competing offsets: the song under each is compared in blocks this long
AMBIG_DIFF = 0.1         # ... whose magnitude spectra differ by this share of their energy, or more
AMBIG_PEAK = 2           # peak strength: energy within +-2 lags (a sub-sample peak spreads there)
AMBIG_EXPECT = 0.5       # the telling part must show half the match the rest of the take shows
SEARCH_BETA = 0.5        # whole-song search weighting |G|^-0.5 (PHAT is 1): robust to room noise
REFINE_S = 0.03          # then full PHAT within +-30 ms of that peak: exact under reverb
MIN_OVERLAP = 0.5        # the song must cover at least this fraction of the take
MIN_SEARCH_OVERLAP_S = 1.0  # lags where take and song overlap less than this are not searched
SILENCE_DBFS = -60.0     # camera audio whose peak is below this counts as "no camera audio"
MIN_CAMERA_AUDIO_S = 2.0  # corrupt camera audio with less than this decodable counts as none
SYNCNET_FPS = 25         # SyncNet was trained on 25 fps video: we feed it 25 fps crops
SYNCNET_CROP = 224
SYNCNET_CROP_SCALE = 0.4  # crop side = 2 (1 + 0.4) x half face size, as syncnet_python's pipeline
SYNCNET_URL = "https://github.com/joonson/syncnet_python (download_model.sh)"

# FaceMesh indices (see preprocessing/landmarks.py)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
MOUTH_LEFT, MOUTH_RIGHT = 61, 291


# ------------------------------------------------------------------------------ cross-correlation
def _sidelobes(corr: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """Mean and std of ``corr`` outside the peak zone ``lo:hi`` (NaN when fewer than 2 values)."""
    n_side = len(corr) - (hi - lo)
    if n_side < 2:  # nothing to compare with (a search range shorter than the exclusion zone)
        return float("nan"), float("nan")
    # from totals minus the peak zone (no copy of a long array)
    s1 = float(corr.sum() - corr[lo:hi].sum())
    s2 = float(np.dot(corr, corr) - np.dot(corr[lo:hi], corr[lo:hi]))
    mean = s1 / n_side
    return mean, float(np.sqrt(max(s2 / n_side - mean * mean, 0.0))) + 1e-30


def _best_window(x: np.ndarray, w: int) -> tuple[int, float, int]:
    """``(start, sum, length)`` of the about ``w`` circularly consecutive values of ``x`` with the
    largest sum; windows of ``w // step`` blocks of ``step = w // 20`` samples. By hand: numpy has
    no circular running sum, and block sums keep a 10-minute array from needing a float64 running
    sum."""
    w = min(w, len(x))
    step = max(1, w // 20)
    blocks = np.add.reduceat(x, np.arange(0, len(x), step), dtype=np.float64)
    k = max(1, w // step)
    c = np.concatenate([[0.0], np.cumsum(np.concatenate([blocks, blocks[:k - 1]]))])
    sums = c[k:k + len(blocks)] - c[:len(blocks)]  # sums[j] = blocks j .. j + k - 1 (circular)
    j = int(np.argmax(sums))
    return j * step, float(sums[j]), min(k * step, len(x))


def _trimmed_peak(aw: np.ndarray, bw: np.ndarray, corr: np.ndarray, i: int, first: int, lo: int,
                  hi: int, trim: int) -> tuple[float, float, int]:
    """The peak zone's maximum once the ``trim`` samples of ``a`` that add most to ``corr[i]`` are
    left out: ``(value, their share of corr[i], where they start in a)``.

    ``aw``, ``bw``: the (weighted) signals whose circular correlation is ``corr`` (``corr[j]`` is
    lag ``first + j``); sample ``n`` of ``a`` adds ``aw[n] bw[n + lag]`` to the correlation at
    ``lag``. Only the zone ``lo:hi`` is recomputed (the correlation is linear in ``a``), so drift
    that moves the rest of the take a few samples off ``i`` still counts for it.
    """
    nfft = len(aw)
    lag = first + i
    s = lag % nfft
    contrib = aw.copy()  # contrib[n] = aw[n] bw[(n + lag) mod nfft]; sums to corr[i]
    contrib[:nfft - s] *= bw[s:]
    contrib[nfft - s:] *= bw[:s]
    start, best, w = _best_window(contrib, trim)
    total = float(contrib.sum())
    del contrib
    seg_a = aw[(start + np.arange(w)) % nfft]
    seg_b = bw[(start + first + lo + np.arange(w + hi - lo - 1)) % nfft]
    # removed[j]: what seg_a adds at lag first+lo+j
    removed = fftconvolve(seg_b, seg_a[::-1], mode="valid")
    value = float(np.max(corr[lo:hi] - removed))
    return (value, (best / total if total > 0 else 1.0),
            (start if start < nfft // 2 else start - nfft))


def _tail_scale(corr: np.ndarray, lo: int, hi: int, block: int,
                k: int = TAIL_PEAKS) -> tuple[float, float]:
    """``(p_1, scale)``: the sidelobe peaks are the block maxima (blocks of ``block`` lags outside
    the peak zone ``lo:hi``) at least as high as both neighbouring blocks' (not the shoulder of a
    peak); of the ``k`` largest, ``p_1 >= ... >= p_k``, ``scale = mean(p_1 .. p_k-1) - p_k``, the
    mean spacing of the top order statistics of the sidelobe process. NaN with fewer than 5
    peaks."""
    nb = len(corr) // block
    m = corr[:nb * block].reshape(nb, block)
    top = m.max(axis=1)
    at = m.argmax(axis=1) + np.arange(nb) * block
    del m
    left = np.concatenate([[-np.inf], top[:-1]])
    right = np.concatenate([top[1:], [-np.inf]])
    p = np.sort(top[(top >= left) & (top >= right) & ((at < lo) | (at >= hi))])[::-1][:k]
    if len(p) < 5:
        return float("nan"), float("nan")
    return float(p[0]), float(p[:-1].mean() - p[-1])


def _score(corr: np.ndarray, i: int, lo: int, hi: int, trimmed: float, block: int) -> dict:
    """The peak ``corr[i]`` (peak zone ``lo:hi``) against its sidelobes, and the confidence
    (docs/sync.md): ``confidence``, ``psr``, ``trimmed_psr`` (of the value ``trimmed``), ``lead``,
    ``tail``, ``runner_up_psr``, ``noise_psr``, ``peak_to_second``; ``block``: the sidelobe block
    length for ``tail`` (:func:`_tail_scale`)."""
    mean, std = _sidelobes(corr, lo, hi)
    noise = float(np.sqrt(2 * np.log(max(len(corr), 2))))
    if np.isnan(mean):
        return {"confidence": 0.0, "psr": 0.0, "trimmed_psr": 0.0, "lead": 0.0, "tail": 0.0,
                "runner_up_psr": 0.0, "noise_psr": noise, "peak_to_second": 1.0}
    peak = float(corr[i])
    second = max(float(np.abs(corr[:lo]).max(initial=0.0)),
                 float(np.abs(corr[hi:]).max(initial=0.0)))
    # runner-up: the best other alignment = the largest local maximum outside the peak zone (a broad
    # peak's shoulders are not local maxima, so they do not count against it)
    local = np.zeros(len(corr), bool)
    local[1:-1] = (corr[1:-1] > corr[:-2]) & (corr[1:-1] >= corr[2:])
    local[lo:hi] = False
    runner = float(corr[local].max()) if local.any() else mean
    del local
    psr, trimmed_psr, runner_psr = ((peak - mean) / std, (trimmed - mean) / std,
                                    (runner - mean) / std)
    lead = psr - runner_psr
    p1, scale = _tail_scale(corr, lo, hi, block)
    tail = (peak - p1) / scale if scale > 0 else 0.0  # (NaN scale: too few sidelobe peaks to tell)
    return {"confidence": float(max(0.0, min(trimmed_psr, max(lead, tail)))), "psr": float(psr),
            "trimmed_psr": float(trimmed_psr), "lead": float(lead), "tail": float(tail),
            "runner_up_psr": float(runner_psr), "noise_psr": noise,
            "peak_to_second": peak / second if second > 0 else float("inf")}


def usable_band(x: np.ndarray, rate: float) -> tuple[float, float]:
    """``(lo_hz, hi_hz)``: the band in which ``x`` holds signal. A low sample rate or a low-bitrate
    codec empties the top of the spectrum (a song at 11 kHz, a 32 kbps MP3, a camera at 8 kHz: after
    the resampler 60-100 dB down); a small speaker, the bottom. The long-term spectrum (Welch,
    :data:`BAND_NPERSEG` bins, at most :data:`BAND_SEGMENTS` segments spread over ``x``) is
    compared with its 90th percentile: a run of bins :data:`BAND_FLOOR_DB` below it that reaches
    Nyquist (DC) is outside the band. Music itself falls 20-40 dB from bass to 8 kHz, far above
    the floor. ``(0, rate / 2)`` when nothing is cut (or ``x`` is silent)."""
    from scipy.signal import welch

    x = np.asarray(x, np.float32)
    n = BAND_NPERSEG
    if len(x) < 4 * n:
        return 0.0, rate / 2
    starts = np.linspace(0, len(x) - n, min(BAND_SEGMENTS, len(x) // n)).astype(int)
    f, p = welch(np.concatenate([x[s0:s0 + n] for s0 in starts]), rate, nperseg=n, noverlap=0)
    if not np.any(p > 0):
        return 0.0, rate / 2
    db = 10 * np.log10(np.maximum(p, 1e-30))
    empty = db < np.percentile(db, 90) - BAND_FLOOR_DB
    full = np.flatnonzero(~empty)
    lo = f[full[0]] if full[0] > 1 else 0.0                  # an empty run from DC
    hi = f[full[-1] + 1] if full[-1] < len(f) - 2 else rate / 2  # an empty run up to Nyquist
    return float(lo), float(hi)


def _band_mask(nfft: int, rate: float, band: tuple[float, float] | None) -> np.ndarray | None:
    """Weights of the ``nfft // 2 + 1`` rfft bins: 1 inside ``band`` (Hz), 0 outside, raised-cosine
    edges :data:`BAND_TAPER_HZ` wide inside it (a hard edge rings along the lags); None: no band."""
    if band is None:
        return None
    f = np.arange(nfft // 2 + 1) * (rate / nfft)
    lo, hi = band
    w = np.ones(len(f))
    if lo > 0:
        w *= np.clip((f - lo) / BAND_TAPER_HZ, 0, 1)
    if hi < rate / 2:
        w *= np.clip((hi - f) / BAND_TAPER_HZ, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * w)).astype(np.float32)


def xcorr_peak(a: np.ndarray, b: np.ndarray, rate: float, beta: float = 0.0, refine_s: float = 0.0,
               min_overlap: int = 1, band: tuple[float, float] | None = None,
               disambiguate: bool = False, valid: np.ndarray | None = None) -> dict:
    """Find ``k`` maximising ``r[k] = sum_n a[n] b[n + k]`` over all lags with overlap >=
    ``min_overlap``.

    Both spectra are weighted by ``|X|^-beta`` for the search (0: plain correlation, 1: PHAT; the
    same as ``|G|^-beta`` on the cross-spectrum ``G = conj(A) B``, since ``|G| = |A| |B|``). With
    ``refine_s > 0`` the peak is then looked up again within ``+-refine_s`` of the search peak in
    the PHAT-weighted correlation (one sample wide), and the statistics are those of that peak in
    the PHAT correlation over all lags; otherwise the search correlation's. The final peak is
    refined below one sample by a parabola. Returns ``offset_s`` (``k / rate``), ``lag`` (integer),
    ``search_lag``, ``confidence``, ``psr``, ``trimmed_psr``, ``trim_fraction``, ``trim_at_s``
    (where the left-out second starts in ``a``, s), ``lead``, ``tail``, ``runner_up_psr``,
    ``noise_psr``, ``peak_to_second``, ``search_psr``, ``n_lags`` (docs/sync.md). ``band``
    (Hz): only the frequencies both signals hold vote (:func:`_band_mask`; None: all of them).
    ``disambiguate``: other peaks nearly as strong are weighed on the part of ``a`` where the
    song under them differs (:func:`_competitors`); adds ``competitors``.
    ``valid``: which samples of ``a`` hold recorded audio (None: all; see :func:`_competitors`).
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    na, nb = len(a), len(b)
    nfft = sfft.next_fast_len(na + nb - 1, real=True)
    # lags with overlap(k) = min(na, nb - k) - max(0, -k) >= m are the range m - na <= k <= nb - m
    m = max(1, min(min_overlap, na, nb))
    first, last = m - na, nb - m

    def floored_abs(spec: np.ndarray) -> np.ndarray:
        mag = np.abs(spec)
        return np.maximum(mag, 1e-6 * float(mag.max()) + 1e-30, out=mag)

    mask = _band_mask(nfft, rate, band)

    def lagged(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
        """Correlation at lags first..last (circular index k >= 0 is lag k, nfft + k is k < 0)."""
        g = np.conj(wa) * wb
        if mask is not None:
            g *= mask
        r = sfft.irfft(g, nfft, workers=1)
        del g
        out = np.empty(last - first + 1)
        neg = max(0, -first)
        out[:neg] = r[nfft + first:] if neg else r[:0]
        out[neg:] = r[max(first, 0):last + 1]
        return out

    # memory: a 10-minute take and song make each spectrum ~80 MB: arrays are freed as soon as done
    wa, wb = sfft.rfft(a, nfft, workers=1), sfft.rfft(b, nfft, workers=1)
    ma, mb = (floored_abs(wa), floored_abs(wb)) if beta or refine_s > 0 else (None, None)
    corr = lagged(wa / ma**beta, wb / mb**beta) if beta else lagged(wa, wb)
    i = int(np.argmax(corr))
    exclude = max(1, int(round(EXCLUDE_S * rate)))
    mean, std = _sidelobes(corr, max(0, i - exclude), i + exclude + 1)
    search_psr = 0.0 if np.isnan(mean) else float((corr[i] - mean) / std)
    search_lag = first + i
    if refine_s > 0:
        del corr
        wa /= ma  # PHAT: every frequency votes with its phase alone
        wb /= mb
        corr = lagged(wa, wb)
        w = max(1, int(round(refine_s * rate)))
        lo = max(0, i - w)
        i = lo + int(np.argmax(corr[lo:i + w + 1]))
    elif beta:
        wa /= ma**beta
        wb /= mb**beta
    del ma, mb
    aw = sfft.irfft(wa, nfft, workers=1)
    del wa
    if mask is not None:
        wb *= mask
    bw = sfft.irfft(wb, nfft, workers=1)
    extra = {}
    if disambiguate:
        def lagged_in(region: np.ndarray, aw: np.ndarray = aw, wb: np.ndarray = wb) -> np.ndarray:
            """The correlation of ``a`` restricted to ``region`` (a mask of its samples)."""
            return lagged(sfft.rfft(aw[:na] * region, nfft, workers=1), wb)

        i, extra = _competitors(corr, i, exclude, a, b, first, rate, lagged_in, bw, valid)
    del wb
    lo, hi = max(0, i - exclude), min(len(corr), i + exclude + 1)  # the peak zone
    trimmed, frac, at = _trimmed_peak(aw, bw, corr, i, first, lo, hi,
                                      max(1, int(round(TRIM_S * rate))))
    del aw, bw
    stats = _score(corr, i, lo, hi, trimmed, exclude)
    if extra.get("competitors"):
        # another offset fits about as well: only what tells them apart counts (docs/sync.md)
        lead = min(c["lead"] for c in extra["competitors"])
        stats["confidence"] = float(max(0.0, min(stats["trimmed_psr"], lead)))
    delta = 0.0
    if 0 < i < len(corr) - 1:  # parabola through the peak and its neighbours
        y0, y1, y2 = corr[i - 1], corr[i], corr[i + 1]
        den = y0 - 2 * y1 + y2
        delta = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    lag = first + i
    return {"offset_s": float((lag + delta) / rate), "lag": int(lag), "search_lag": int(search_lag),
            **stats, "trim_fraction": frac, "trim_at_s": at / rate, "search_psr": search_psr,
            "n_lags": len(corr), **extra}


def _strength(corr: np.ndarray, i: int, mean: float, std: float) -> float:
    """How many sidelobe standard deviations the peak at ``i`` rises, from the energy of ``corr``
    within +-:data:`AMBIG_PEAK` lags (less the noise's): unlike the largest sample, it does not
    depend on where between two samples the true peak falls (a loop of 6.0839 s puts its copies
    at different fractions of a sample at 16 kHz: their largest samples differ by up to a third)."""
    z = (corr[max(0, i - AMBIG_PEAK):i + AMBIG_PEAK + 1] - mean) / std
    return float(np.sqrt(max(float(np.dot(z, z)) - len(z), 0.0)))


def _competitors(corr: np.ndarray, i: int, exclude: int, a: np.ndarray, b: np.ndarray, first: int,
                 rate: float, lagged_in, bw: np.ndarray,
                 valid: np.ndarray | None) -> tuple[int, dict]:
    """Other offsets that fit about as well as the peak ``i``, weighed on what tells them apart.

    Competitors: the local maxima outside the peak zone at least :data:`AMBIG_RATIO` as strong
    (:func:`_strength`) and above the noise (``sqrt(2 ln n_lags)`` + 1), the :data:`AMBIG_MAX`
    strongest. For each, the *telling part* of the take: the :data:`AMBIG_BLOCK_S` blocks where the
    song under the two offsets differs (:func:`_differing`; where the song repeats itself sample
    for sample the take cannot say which copy it heard) and the camera audio is valid (``valid``).
    Two kinds of evidence are read there, by the correlation of the telling part alone
    (``lagged_in``): an offset under which the song holds music there should show a match in
    proportion to that music (``e``: :data:`AMBIG_EXPECT` x the match per unit of whitened song
    energy the whole take shows, at the better of the two offsets, x the whitened song energy under
    it in the telling part), and the one the camera heard shows it (``o``: its strength there, in
    standard deviations of that correlation). A Gaussian log-likelihood ratio of the two hypotheses
    (each: ``o`` about ``e`` at its own offset, about 0 at the other), divided by ``e_p + e_c``, is
    ``lead``, in the same units as ``o``: a song that differs under both offsets and a match at one
    gives its strength; a take that runs past the song's end (start) under one offset and hears
    nothing there counts against the offset that puts music there. When a competitor wins
    (``lead < 0``; the most clearly, if several) it becomes the peak and the others are weighed
    against it (once). Returns ``(i, {"competitors": [{"lag", "offset_s", "telling_s", "lead",
    "o", "e"}]})`` (``o``, ``e``: ``[peak, competitor]``).
    """
    lo, hi = max(0, i - exclude), min(len(corr), i + exclude + 1)
    mean, std = _sidelobes(corr, lo, hi)
    if np.isnan(mean):
        return i, {}
    noise = float(np.sqrt(2 * np.log(max(len(corr), 2)))) + 1.0
    local = np.zeros(len(corr), bool)
    local[1:-1] = (corr[1:-1] > corr[:-2]) & (corr[1:-1] >= corr[2:])
    local[lo:hi] = False
    floor = min(noise, AMBIG_RATIO * (corr[i] - mean) / std)
    cand = np.flatnonzero(local & ((corr - mean) / std > floor))
    del local
    if not len(cand):
        return i, {"competitors": []}
    top = _strength(corr, i, mean, std)
    cand = cand[np.argsort(corr[cand])[::-1]]
    picked: list[int] = []  # one per peak zone: the highest sample of each cluster
    for j in cand:
        if all(abs(j - k) > exclude for k in picked):
            picked.append(int(j))
        if len(picked) >= 4 * AMBIG_MAX:
            break
    strength = {j: _strength(corr, j, mean, std) for j in picked}
    picked = sorted((j for j in picked if strength[j] >= AMBIG_RATIO * top and strength[j] > noise),
                    key=lambda j: -strength[j])[:AMBIG_MAX]
    if not picked:
        return i, {"competitors": []}
    na = len(a)
    valid = np.ones(na, np.float32) if valid is None else np.asarray(valid[:na], np.float32)
    totals: dict[int, float] = {}

    def song_energy(k: int) -> np.ndarray:
        """The whitened song's energy under each (valid) take sample at lag index k; none outside
        the song (PHAT's whitening spills into the zero padding)."""
        lag = first + k
        e = np.zeros(na, np.float32)
        lo_n, hi_n = max(0, -lag), min(na, len(b) - lag)
        if hi_n > lo_n:
            e[lo_n:hi_n] = bw[lo_n + lag:hi_n + lag] ** 2
        return e * valid

    def rate_of(k: int) -> float:
        """Match per unit of whitened song energy under the take at lag index k."""
        if k not in totals:
            totals[k] = float(song_energy(k).sum(dtype=np.float64))
        return _strength(corr, k, mean, std) * std / totals[k] if totals[k] > 0 else 0.0

    def signed(r: np.ndarray, k: int, m: float, sd: float) -> float:
        z = r[max(0, k - AMBIG_PEAK):k + AMBIG_PEAK + 1]
        return _strength(r, k, m, sd) * (1.0 if z.max() - m >= m - z.min() else -1.0)

    def weigh(i: int, js: list[int]) -> list[dict]:
        out = []
        for j in js:
            region = _differing(b, first + i, first + j, na, rate) * valid
            o, e, lead = [0.0, 0.0], [0.0, 0.0], 0.0
            if region.any():
                r = lagged_in(region)
                m, sd = _sidelobes(r, max(0, min(i, j) - exclude), max(i, j) + exclude + 1)
                if not np.isnan(m):
                    kappa = AMBIG_EXPECT * max(rate_of(i), rate_of(j))
                    o = [signed(r, k, m, sd) for k in (i, j)]
                    e = [kappa * float(np.dot(song_energy(k), region).astype(np.float64)) / sd
                         for k in (i, j)]
                    if e[0] + e[1] > 1.0:
                        llr = 2 * o[0] * e[0] - e[0] ** 2 - 2 * o[1] * e[1] + e[1] ** 2
                        lead = llr / (e[0] + e[1])
            out.append({"lag": int(first + j), "offset_s": float((first + j) / rate),
                        "telling_s": float(region.sum() / rate), "lead": float(lead),
                        "o": [float(x) for x in o], "e": [float(x) for x in e], "index": j})
        return out

    comps = weigh(i, picked)
    worst = min(comps, key=lambda c: c["lead"])
    if worst["lead"] < 0:  # the telling part says the competitor is the right one
        j = worst["index"]
        i, comps = j, weigh(j, [k for k in picked if k != j] + [i])
    for c in comps:
        c.pop("index")
    return i, {"competitors": comps}


def _differing(song: np.ndarray, lag_p: int, lag_c: int, n: int, rate: float) -> np.ndarray:
    """Mask of the ``n`` take samples whose :data:`AMBIG_BLOCK_S` block hears different song at
    lag ``lag_p`` than at ``lag_c`` (song sample ``t + lag`` under take sample ``t``; outside the
    song is silence): Hann-windowed magnitude spectra differing by :data:`AMBIG_DIFF` of their
    energy or more (magnitudes, so that a copy a fraction of a sample off counts as the same),
    one of them not silent (below 1e-6 of the song's mean block energy)."""
    blk = max(16, int(round(AMBIG_BLOCK_S * rate)))
    nb = -(-n // blk)
    song = np.asarray(song, np.float32)
    win = np.hanning(blk).astype(np.float32)
    floor = 1e-6 * float(np.mean(song.astype(np.float64) ** 2)) * blk + 1e-30
    differ = np.zeros(nb, bool)
    for c0 in range(0, nb, 256):  # chunks of blocks (a 10-minute take: 2400 blocks)
        k = np.arange(c0, min(nb, c0 + 256))
        specs = []
        for lag in (lag_p, lag_c):
            idx = (k[:, None] * blk + lag) + np.arange(blk)[None, :]
            ok = (idx >= 0) & (idx < len(song))
            seg = np.where(ok, song[np.clip(idx, 0, len(song) - 1)], 0.0).astype(np.float32)
            specs.append(np.abs(sfft.rfft(seg * win, axis=1, workers=1)))
        e = (specs[0] ** 2).sum(1) + (specs[1] ** 2).sum(1)
        d = ((specs[0] - specs[1]) ** 2).sum(1)
        differ[k] = (d > AMBIG_DIFF * e) & (e > floor)
    return np.repeat(differ, blk)[:n].astype(np.float32)


DETAILS = ("lag", "search_lag", "psr", "trimmed_psr", "trim_fraction", "trim_at_s", "lead", "tail",
           "runner_up_psr", "noise_psr", "peak_to_second", "search_psr", "n_lags")


def gcc_phat_offset(camera: np.ndarray, song: np.ndarray, sr: int = SR,
                    valid: np.ndarray | None = None) -> dict:
    """``offset_s`` of a camera track inside a song (both mono at ``sr``) by GCC-PHAT
    (docs/sync.md).

    Two passes: the **plain** one (:func:`xcorr_peak` of the camera track as recorded) and, when the
    clock drift measured around its offset (:func:`clock_drift`) is supported by the pieces of the
    take and large enough to smear the one-sample PHAT peak (:data:`DRIFT_MIN_SMEAR`), a
    **drift-compensated** one: the camera track resampled onto the song's clock
    (:func:`resample_clock`), aligned and scored again over the whole song. The compensated pass
    is kept when its peak is the sharper (higher PSR: a real drift sharpens the peak, a wrong one
    smears it; ``details.pass``): the confidence is that pass's own, never the larger of two, so
    a second try cannot make a wrong song pass. Either way ``offset_s`` is the song time of camera
    sample 0 (video frame 0). ``details.drift_ppm`` and the fitted line
    (``offset_start_s``, ``offset_end_s``) are reported only when the confidence reaches
    :data:`DRIFT_MIN_CONFIDENCE` (a drift measured around an unknown offset means nothing).

    ``valid`` (bool per camera sample, None: all) marks decoded audio: the rest (corrupt stretches,
    zeros) tells nothing about the competing offsets of a repeated section and no drift piece
    mostly made of it is used.

    Returns ``{"offset_s", "confidence", "method", "details": {...}}``.
    """
    if valid is not None:
        camera = np.where(valid, camera, 0.0).astype(np.float32)
    if len(camera) < sr // 10 or len(song) < sr // 10:
        raise StepError("audio too short to align (less than 0.1 s)")
    cam_band, song_band = usable_band(camera, sr), usable_band(song, sr)
    lo, hi = max(cam_band[0], song_band[0]), min(cam_band[1], song_band[1])
    if hi - lo < MIN_BAND_HZ:
        raise StepError(f"camera audio ({cam_band[0]:.0f}-{cam_band[1]:.0f} Hz) and song "
                        f"({song_band[0]:.0f}-{song_band[1]:.0f} Hz) share no frequency band to "
                        "align on")
    band = None if (lo, hi) == (0.0, sr / 2) else (lo, hi)
    kw = dict(beta=SEARCH_BETA, refine_s=REFINE_S, min_overlap=int(MIN_SEARCH_OVERLAP_S * sr),
              band=band, disambiguate=True)
    res = xcorr_peak(camera, song, sr, valid=valid, **kw)
    drift = clock_drift(camera, song, res["offset_s"], sr, band=band, valid=valid)
    used = "plain"
    extra = {"confidence_plain": res["confidence"]}
    if (drift.get("drift_supported")
            and abs(drift["drift_ppm"]) * 1e-6 * len(camera) >= DRIFT_MIN_SMEAR):
        cam2, realised = resample_clock(camera, drift["drift_ppm"])
        valid2 = None if valid is None else valid[np.minimum(np.round(
            np.arange(len(cam2)) / (1 + realised * 1e-6)).astype(np.int64), len(valid) - 1)]
        res2 = xcorr_peak(cam2, song, sr, valid=valid2, **kw)
        del cam2
        extra.update(confidence_compensated=res2["confidence"], offset_plain_s=res["offset_s"],
                     drift_applied_ppm=realised)
        # the sharper peak: a real drift sharpens it, a wrong one smears it
        if res2["psr"] >= res["psr"]:
            res, used = res2, "drift-compensated"
    details = {k: res[k] for k in DETAILS}
    details["competitors"] = res.get("competitors", [])
    details["valid_fraction"] = 1.0 if valid is None else float(np.mean(valid))
    details.update(camera_s=len(camera) / sr, song_s=len(song) / sr, sr=sr, **extra,
                   band_hz=[lo, hi], camera_band_hz=list(cam_band), song_band_hz=list(song_band))
    details["pass"] = used
    if drift:
        details.update(drift_pieces=drift["drift_pieces"], drift_supported=drift["drift_supported"])
    if drift and res["confidence"] >= DRIFT_MIN_CONFIDENCE:  # the offset is known: so is the drift
        details.update({k: drift[k]
                        for k in ("drift_ppm", "drift_segments", "offset_start_s", "offset_end_s")})
    return {"offset_s": res["offset_s"], "confidence": res["confidence"], "method": "gcc-phat",
            "details": details}


def piece_offsets(camera: np.ndarray, song: np.ndarray, lag: int, piece: int, window: int,
                  batch: int = 16, band: tuple[float, float] | None = None, sr: int = SR,
                  valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Local offsets of consecutive ``piece``-sample pieces of ``camera`` (in samples).

    Piece ``p`` (camera samples ``a = p * piece`` .. ``a + piece``) is aligned by PHAT against the
    song samples it holds if the take sits at ``lag`` (``song[a + lag - window : a + lag + window +
    piece]``): the best lag within ``lag +- window``, refined by a parabola. Pieces whose song
    samples fall outside the song are left out. No piece has to be confident on its own: a
    robust line through all of them (:func:`clock_drift`) tells good from bad. Returns
    ``(centres, offsets)``: the piece centre (camera samples) and its lag (fractional samples).
    Pieces are transformed ``batch`` at a time (one 2-D FFT), not one by one.
    """
    starts = np.arange(len(camera) // piece) * piece
    first = starts + lag - window  # song sample matching lag - window
    ok = (first >= 0) & (first + piece + 2 * window <= len(song))
    if valid is not None:  # pieces mostly without decoded audio (corrupt stretches) are left out
        ok &= np.array([valid[a:a + piece].mean() >= 0.5 for a in starts], bool)
    starts, first = starts[ok], first[ok]
    nfft = sfft.next_fast_len(piece + 2 * window, real=True)  # lags 0..2 window do not wrap around
    mask = _band_mask(nfft, sr, band)
    lags = np.empty(len(starts))
    for b in range(0, len(starts), batch):
        c = np.stack([camera[a:a + piece] for a in starts[b:b + batch]]).astype(np.float32)
        s = np.stack([song[f:f + piece + 2 * window]
                      for f in first[b:b + batch]]).astype(np.float32)
        g = np.conj(sfft.rfft(c, nfft, axis=1, workers=1)) * sfft.rfft(s, nfft, axis=1, workers=1)
        mag = np.abs(g)
        g /= np.maximum(mag, 1e-6 * mag.max(axis=1, keepdims=True) + 1e-30)  # PHAT
        if mask is not None:
            g *= mask
        r = sfft.irfft(g, nfft, axis=1, workers=1)[:, :2 * window + 1]
        i = np.argmax(r, axis=1)
        rows = np.arange(len(r))
        j = np.clip(i, 1, 2 * window - 1)
        y0, y1, y2 = r[rows, j - 1], r[rows, j], r[rows, j + 1]
        den = y0 - 2 * y1 + y2
        delta = np.where((i == j) & (den < 0), 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
        lags[b:b + len(r)] = lag - window + i + delta
    return starts + piece / 2, lags


def clock_drift(camera: np.ndarray, song: np.ndarray, offset_s: float, sr: int = SR,
                segment_s: float = DRIFT_PIECE_S, window_s: float | None = None,
                band: tuple[float, float] | None = None, valid: np.ndarray | None = None) -> dict:
    """Clock drift between camera and player, from the take's ``segment_s`` pieces.

    A camera and a playback device never run at exactly the same rate: with a drift of ``d`` (ppm
    x 1e-6), camera sample ``n`` (video time ``t = n / sr``) holds song time ``offset_start + t (1
    + d)``, so the local offset (song time - video time) is a line of slope ``d`` and the
    whole-take correlation peak is smeared over ``d x take length``. Every piece is aligned on its
    own within ``+-window_s`` of ``offset_s`` (:func:`piece_offsets`; default window: 20 ms +
    :data:`MAX_DRIFT_PPM` x take length, so the line fits in it wherever the smeared peak put
    ``offset_s``), a robust line (Theil-Sen: the median of all pairwise slopes, any share of bad
    pieces below ~29 % cannot move it) goes through (piece centre, local offset), the pieces
    within :data:`DRIFT_INLIER_S` (+ half the piece's own smear) of it are the inliers, a
    least-squares line goes through them (more precise than the median once the outliers are
    out), and once more through those within 4 robust standard deviations (1.4826 x MAD, at least
    2 samples) of it.

    ``drift_supported``: at least 3 inliers, at least :data:`DRIFT_MIN_SUPPORT` of the pieces, and
    ``|drift| <= 2 MAX_DRIFT_PPM``. Pieces of a wrong song land anywhere in the window, so few fall
    on any line (measured: docs/sync.md). Returns ``drift_ppm``, ``offset_start_s`` /
    ``offset_end_s`` (the line at the first / past the last camera sample), ``drift_segments``
    (inliers), ``drift_pieces``, ``drift_supported``; ``{}`` with fewer than 3 pieces.
    """
    from scipy.stats import theilslopes

    n, piece = len(camera), int(round(segment_s * sr))
    if window_s is None:
        window_s = DRIFT_WINDOW_S + MAX_DRIFT_PPM * 1e-6 * n / sr
    window = int(round(window_s * sr))
    centres, lags = piece_offsets(camera, song, int(round(offset_s * sr)), piece, window, band=band,
                                  sr=sr, valid=valid)
    if len(centres) < 3:
        return {}
    t, off = centres / sr, lags / sr
    slope = theilslopes(off, t)[0]
    # the line through the median residual (theilslopes' own intercept, median(off) - slope x
    # median(t), is off by slope x (t of the median offset - median t) when outliers move the
    # median)
    intercept = float(np.median(off - slope * t))
    inlier = np.abs(off - (intercept + slope * t)) <= DRIFT_INLIER_S + abs(slope) * segment_s / 2
    if inlier.sum() >= 3:
        slope, intercept = np.polyfit(t[inlier], off[inlier], 1)
        # tighten to 4 robust standard deviations of the inliers' scatter (at least 2 samples): a
        # stray piece that fell inside the 1 ms band by chance no longer tilts the line
        resid = off - (intercept + slope * t)
        scale = 1.4826 * np.median(np.abs(resid[inlier] - np.median(resid[inlier])))
        tight = inlier & (np.abs(resid) <= max(4 * scale, 2 / sr))
        if tight.sum() >= 3:
            inlier = tight
            slope, intercept = np.polyfit(t[inlier], off[inlier], 1)
    k = int(inlier.sum())
    # a slope the window cannot hold is no measurement (the window holds up to 2 MAX_DRIFT_PPM when
    # offset_s is the line's middle, MAX_DRIFT_PPM wherever it is)
    supported = (k >= 3 and k >= DRIFT_MIN_SUPPORT * len(t)
                 and abs(slope) <= 2 * MAX_DRIFT_PPM * 1e-6)
    return {"drift_ppm": float(slope * 1e6), "offset_start_s": float(intercept),
            "offset_end_s": float(intercept + slope * n / sr), "drift_segments": k,
            "drift_pieces": len(t), "drift_supported": bool(supported)}


def _smooth(v: np.ndarray, primes=(2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59,
                                   61, 67, 71, 73, 79, 83, 89, 97)) -> np.ndarray:
    """True where ``v`` (int64) has no prime factor above 97 (FFTs of such lengths are fast)."""
    r = v.copy()
    for p in primes:
        while True:
            m = r % p == 0
            if not m.any():
                break
            r[m] //= p
    return r == 1


def resample_clock(x: np.ndarray, drift_ppm: float, pad: int = 1600) -> tuple[np.ndarray, float]:
    """``x`` moved onto the other clock: ``y[m] = x(m / (1 + d))``, ``d = drift_ppm 1e-6`` (``x``
    band-limited, ``x(.)`` its sinc interpolation), ``round(len(x) (1 + d))`` samples. Returns ``(y,
    realised_ppm)``.

    Exact Fourier resampling (``scipy.signal.resample``: the spectrum of ``x`` zero-padded to ``n``
    samples, cut or extended to ``m`` samples, inverse FFT; the ratio is exactly ``m / n``). Not
    ``resample_poly``: a ratio like 1 + 37.3e-6 has no small rational form, and the nearest one
    with a short filter is tens of ppm off. ``n >= len(x) + pad`` (the padding keeps the end from
    wrapping onto the start) is the shortest among the next 50 000 lengths (and, for small
    drifts, those near ``k / d`` for whole ``k``) such that ``m = round(n (1 + d))`` is within 0.05
    samples over ``x`` of the wanted ratio and ``n``, ``m`` have no prime factor above 97 (a length
    with a large prime factor makes the FFT ~10x slower).
    """
    from scipy.signal import resample

    ratio, d = 1.0 + drift_ppm * 1e-6, abs(drift_ppm) * 1e-6
    n0 = len(x) + pad
    cands = [np.arange(n0, n0 + 50000)]
    k0 = int(np.ceil(n0 * d))
    # small drifts: around the n where n d is a whole number (n <= 2 n0)
    for k in range(k0, k0 + 3):
        if 0 < k <= 2 * n0 * d:
            c = int(round(k / d))
            cands.append(np.arange(max(n0, c - 10000), c + 10000))
    n = np.unique(np.concatenate(cands)).astype(np.int64)
    m = np.rint(n * ratio).astype(np.int64)
    err = np.abs(n * ratio - m) * len(x) / n  # samples of clock error at the end of x
    good = np.flatnonzero((err < 0.05) & _smooth(n) & _smooth(m))
    j = int(good[0]) if len(good) else int(np.argmin(err))  # the shortest good n
    n, m = int(n[j]), int(m[j])
    y = resample(np.pad(np.asarray(x, np.float32), (0, n - len(x))), m)
    return y[:int(round(len(x) * ratio))].astype(np.float32), (m / n - 1.0) * 1e6


# --------------------------------------------------------------------------------- mouth envelope
def mouth_opening(landmarks: np.ndarray, frame_size: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`preprocessing.geometry.mouth_opening` of a take's track, in pixels; NaN where invalid.

    ``landmarks`` (N, 478, >=2) normalised x/width, y/height; ``frame_size`` (N, 2) = width, height.
    """
    px = np.asarray(landmarks, np.float64)[..., :2] * np.asarray(frame_size, np.float64)[:, None, :]
    out = geometry.mouth_opening(px)
    out[~np.asarray(valid, bool)] = np.nan
    return out


def vocal_envelope(vocals: np.ndarray, sr: int = SR, fps: float = FPS) -> np.ndarray:
    """RMS of ``vocals`` in windows of one video frame centred on song times ``j / fps``."""
    hop = sr / fps
    n = int(np.ceil(len(vocals) / hop))
    x = np.asarray(vocals, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centre = np.arange(n) * hop
    lo = np.clip(np.round(centre - hop / 2).astype(int), 0, len(x))
    hi = np.clip(np.round(centre + hop / 2).astype(int), 0, len(x))
    return np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))


def mouth_envelope_offset(mouth: np.ndarray, vocals: np.ndarray, sr: int = SR,
                          fps: float = FPS) -> dict:
    """``offset_s`` from mouth opening per video frame (NaN = no face) vs the vocal stem
    (docs/sync.md)."""
    ok = np.isfinite(mouth)
    if ok.sum() < 2 * fps:
        raise StepError(f"too few frames with a face to align the mouth ({int(ok.sum())} frames)")
    m = np.where(ok, mouth, 0.0)
    m = np.where(ok, (m - m[ok].mean()) / (m[ok].std() + 1e-12), 0.0)  # no face -> neutral 0
    env = vocal_envelope(vocals, sr, fps)
    if env.max() <= 0:
        raise StepError("vocal track is silent: nothing to align the mouth with")
    env = np.sqrt(env)  # compress loudness: the mouth opens for quiet sung vowels too
    env = (env - env.mean()) / (env.std() + 1e-12)
    res = xcorr_peak(m, env, fps, beta=0.0, min_overlap=int(min(ok.sum(), len(env)) // 2))
    details = {k: res[k] for k in DETAILS if k not in ("search_lag", "search_psr")}
    details.update(face_frames=int(ok.sum()), fps=fps)
    return {"offset_s": res["offset_s"], "confidence": res["confidence"],
            "method": "mouth-envelope", "details": details}


# ---------------------------------------------------------------------------------------- SyncNet
def load_syncnet(weights: str | Path | None, device: str = "cpu"):
    """SyncNet (syncnet-python's model class) with the state dict at ``weights``; fails at once."""
    if not weights:
        raise StepError("sync backend 'syncnet' needs sync.syncnet.weights: the path of "
                        f"syncnet_v2.model (get it with the download script of {SYNCNET_URL})")
    weights = Path(weights)
    if not weights.is_file():
        raise StepError(f"SyncNet weights not found: {weights} (get syncnet_v2.model with the "
                        f"download script of {SYNCNET_URL})")
    import torch
    from syncnet_python.SyncNetModel import S

    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling problem means "not a SyncNet state dict"
        raise StepError(f"cannot load SyncNet weights {weights}: {type(e).__name__}: {e}") from e
    net = S(num_layers_in_fc_layers=1024)
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError) as e:
        raise StepError(f"{weights} is not a SyncNet state dict: {str(e).splitlines()[0]}") from e
    return net.to(device).eval()


def crop_boxes(track: dict, n_out: int,
               fps_out: float = SYNCNET_FPS) -> tuple[np.ndarray, np.ndarray]:
    """Square mouth-centred crops for ``n_out`` frames at ``fps_out``: ``(cx, cy, side)`` in pixels
    and a valid mask. Side = 2 (1 + crop_scale) x half the face size (the larger bbox side), centre
    = the mouth (corners + inner lips); both median-filtered over 0.5 s, gaps filled from
    neighbours."""
    from scipy.ndimage import median_filter

    lm = np.asarray(track["landmarks"], np.float64)[..., :2]
    size = np.asarray(track["frame_size"], np.float64)
    valid = np.asarray(track["valid"], bool)
    n_in = len(lm)
    src = np.clip(np.round(np.arange(n_out) * FPS / fps_out).astype(int), 0, n_in - 1)
    px = lm[src] * size[src][:, None, :]
    box = (np.asarray(track["bbox"], np.float64)[src]
           * np.concatenate([size[src], size[src]], axis=1))
    ok = (valid[src]
          & np.all(np.isfinite(px[:, [MOUTH_LEFT, MOUTH_RIGHT, UPPER_INNER_LIP, LOWER_INNER_LIP]]),
                   axis=(1, 2))
          & np.all(np.isfinite(box), axis=1))
    if not ok.any():
        raise StepError("no face in any frame: nothing to crop for SyncNet")
    mouth = px[:, [MOUTH_LEFT, MOUTH_RIGHT, UPPER_INNER_LIP, LOWER_INNER_LIP]].mean(axis=1)
    half = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) / 2
    params = np.stack([mouth[:, 0], mouth[:, 1], 2 * (1 + SYNCNET_CROP_SCALE) * half], axis=1)
    t = np.arange(n_out)
    for j in range(3):  # fill frames without a face from the nearest faces, then smooth
        params[:, j] = np.interp(t, t[ok], params[ok, j])
        params[:, j] = median_filter(params[:, j], size=max(1, int(fps_out // 2) | 1),
                                     mode="nearest")
    return params, ok


def crop_frame(rgb: np.ndarray, cx: float, cy: float, side: float,
               out_px: int = SYNCNET_CROP) -> np.ndarray:
    """BGR uint8 ``(out_px, out_px, 3)`` square crop centred at (cx, cy); outside the frame = grey
    110 (syncnet_python pads with 110). One affine warp does crop + resize."""
    import cv2

    s = out_px / side
    mat = np.array([[s, 0, out_px / 2 - s * cx], [0, s, out_px / 2 - s * cy]], np.float64)
    crop = cv2.warpAffine(np.ascontiguousarray(rgb[..., ::-1]), mat, (out_px, out_px),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(110, 110, 110))
    return crop


def syncnet_audio_windows(audio: np.ndarray, start_s: float, n_windows: int,
                          sr: int = SR) -> np.ndarray:
    """MFCC windows as SyncNet wants them: ``(n_windows, 1, 13, 20)``; window ``a`` covers song time
    ``start_s + a / 25`` s for 0.2 s (python_speech_features MFCC at 100 Hz on int16-scaled audio,
    syncnet_python's input). Song time outside the song reads as silence."""
    import python_speech_features

    n = int(round((n_windows / SYNCNET_FPS + 0.2) * sr)) + 400
    first = int(round(start_s * sr))
    seg = np.zeros(n, np.float64)
    lo, hi = max(0, first), min(len(audio), first + n)
    if hi > lo:
        seg[lo - first:hi - first] = audio[lo:hi]
    mfcc = python_speech_features.mfcc(seg * 32768.0, sr).T  # (13, T) at 100 Hz
    step = 100 // SYNCNET_FPS  # 4 MFCC frames per video frame
    idx = np.arange(n_windows)[:, None] * step + np.arange(20)[None, :]
    return mfcc[:, idx].transpose(1, 0, 2)[:, None].astype(np.float32)


def syncnet_shift(im_feat: np.ndarray, cc_feat: np.ndarray, search: int,
                  window_ok: np.ndarray | None = None) -> dict:
    """Best shift from embeddings: ``im_feat`` (n, D) for video windows, ``cc_feat`` (n + 2 search,
    D) for audio windows where audio window ``j + search + s`` pairs with video window ``j`` at
    shift ``s``. Returns ``shift`` (frames: audio at +shift/25 s matches), ``mdist`` curve, LSE-D,
    LSE-C."""
    n = len(im_feat)
    if window_ok is None:
        window_ok = np.ones(n, bool)
    if not window_ok.any():
        raise StepError("no 5-frame window with a face for SyncNet")
    shifts = np.arange(-search, search + 1)
    dist = np.stack([np.linalg.norm(im_feat - cc_feat[search + s:search + s + n], axis=1)
                     for s in shifts], 1)
    mdist = dist[window_ok].mean(axis=0)
    best = int(np.argmin(mdist))
    return {"shift": int(shifts[best]), "mdist": mdist, "lse_d": float(mdist[best]),
            "lse_c": float(np.median(mdist) - mdist[best])}


def lip_features(net, clip: np.ndarray, device: str = "cpu") -> np.ndarray:
    """SyncNet lip embeddings ``(T - 4, 1024)`` of every 5-frame window of ``clip`` (T, 224, 224, 3)
    BGR.

    Equal to ``net.forward_lip`` on each window (tests check it): the 3D CNN's only temporal kernel
    is the first layer's (5 frames, stride 1, no padding), so running it once over the clip gives
    every window's output without building a (T - 4, 3, 5, 224, 224) copy (5x the memory).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)[None],
                                              np.float32)).to(device)
    with torch.no_grad():
        mid = net.netcnnlip(x)  # (1, 512, T - 4, 1, 1)
        mid = mid[0, :, :, 0, 0].transpose(0, 1)  # (T - 4, 512)
        return net.netfclip(mid).cpu().numpy()


def syncnet_refine(net, video: str | Path, track: dict, audio: np.ndarray, offset_s: float,
                   search: int = 15, n_frames: int | None = None, device: str = "cpu",
                   batch: int = 20) -> dict:
    """SyncNet refinement of ``offset_s`` within +-``search`` frames at 25 fps (docs/sync.md).

    ``audio``: the vocal stem (16 kHz) of the song; ``track``: the take's track.npz arrays.
    Returns ``{"offset_s", "shift_frames", "lse_c", "lse_d", "mdist", "windows"}``.
    """
    import torch
    from tqdm import tqdm

    n30 = len(track["valid"]) if n_frames is None else n_frames
    n25 = int(np.ceil(n30 / FPS * SYNCNET_FPS - 1e-6))
    if n25 < 5:
        raise StepError(f"take too short for SyncNet ({n25} frames at 25 fps, need 5)")
    boxes, ok = crop_boxes(track, n25)
    n_win = n25 - 4
    window_ok = np.array([ok[j:j + 5].all() for j in range(n_win)])
    frames = iter_frames(video, fps=SYNCNET_FPS, n_frames=n25)
    crops: list[np.ndarray] = []
    im_feat: list[np.ndarray] = []
    done = 0  # windows computed

    def flush(upto: int):
        nonlocal done, crops
        while done < upto:
            k = min(batch, upto - done)
            # crops[0] is frame `done`: the k windows starting there need frames done..done+k+3
            im_feat.append(lip_features(net, np.stack(crops[:k + 4]), device))
            crops = crops[k:]
            done += k

    for j, rgb in tqdm(frames, total=n25, desc="syncnet crops", unit="frame",
                       mininterval=5, leave=False):
        crops.append(crop_frame(rgb, *boxes[j]))
        if len(crops) >= batch + 4:
            flush(done + batch)
    flush(n_win)
    im = np.concatenate(im_feat)
    mf = syncnet_audio_windows(audio, offset_s - search / SYNCNET_FPS, n_win + 2 * search)
    cc = []
    with torch.no_grad():
        for s in range(0, len(mf), 100):
            cc.append(net.forward_aud(torch.from_numpy(mf[s:s + 100]).to(device)).cpu().numpy())
    res = syncnet_shift(im, np.concatenate(cc), search, window_ok)
    return {"offset_s": offset_s + res["shift"] / SYNCNET_FPS, "shift_frames": res["shift"],
            "lse_c": res["lse_c"], "lse_d": res["lse_d"], "mdist": res["mdist"].tolist(),
            "windows": int(window_ok.sum())}


# ------------------------------------------------------------------------------------------- step
def camera_audio(video: str | Path, ingest: dict, with_valid: bool = False):
    """The camera track at 16 kHz, or ``(None, why not)``; with ``with_valid``, ``(audio, why,
    valid)``, ``valid`` marking the samples that hold decoded audio (not the corrupt stretches nor
    the zeros before a late audio track; :func:`preprocessing.media.decode_audio`).

    A track of which less than :data:`MIN_CAMERA_AUDIO_S` decodes, because of corrupt stretches,
    counts as no usable camera audio (why: how much decodes); so does a silent one."""
    if not ingest.get("has_audio"):
        return (None, "no audio track", None) if with_valid else (None, "no audio track")
    try:
        cam, start, gaps = decode_audio(video, sr=SR, mono=True, with_gaps=True)
    except StepError as e:
        return (None, str(e), None) if with_valid else (None, str(e))
    n = int(np.ceil(ingest["n_frames"] / FPS * SR))
    cam = cam[:n]  # audio past the last frame is not the take
    valid = np.ones(len(cam), bool)
    valid[:max(0, int(round(start * SR)))] = False
    for a, b in gaps:
        valid[int(a * SR):int(np.ceil(b * SR))] = False
    why = ""
    peak = float(np.max(np.abs(cam))) if len(cam) else 0.0
    decoded = valid.sum() / SR
    if gaps and decoded < MIN_CAMERA_AUDIO_S:
        cam, why = None, (f"only {decoded:.1f} s of the {n / SR:.1f} s take's camera audio decodes "
                          f"({len(gaps)} corrupt stretches, the first at {gaps[0][0]:.1f} s)")
    elif peak <= 10 ** (SILENCE_DBFS / 20):
        cam, why = None, "camera audio is silent"
    if not with_valid:
        return cam, why
    return cam, why, (valid if cam is not None else None)


def sync_take(take: str, video: str | Path, ingest_json: str | Path, track_npz: str | Path,
              mix_wav: str | Path, vocals_wav: str | Path, backend: str = "builtin",
              weights: str | None = None, device: str = "cpu", search_frames: int = 15) -> dict:
    """The sync step for one take (docs/sync.md); returns the ``sync.json`` dict."""
    ingest = load_json(ingest_json)
    net = load_syncnet(weights, device) if backend == "syncnet" else None  # fail before any work
    check_upstream(mix_wav)
    song = read_wav(mix_wav, SR)
    n = int(ingest["n_frames"])
    take_s = n / FPS
    cam, why, valid = camera_audio(video, ingest, with_valid=True)
    track = None
    if cam is not None:
        res = gcc_phat_offset(cam, song, SR, valid=None if valid.all() else valid)
    else:
        track = _load_track(track_npz, why)
        vocals, source = _vocals_or_mix(vocals_wav, song)
        mouth = mouth_opening(track["landmarks"], track["frame_size"], track["valid"])
        res = mouth_envelope_offset(mouth, vocals, SR, FPS)
        res["details"].update(why_not_camera=why, envelope_of=source)
    offset = res["offset_s"]
    song_s = len(song) / SR
    overlap = max(0.0, min(offset + take_s, song_s) - max(offset, 0.0)) / take_s
    if overlap < MIN_OVERLAP:
        raise StepError(f"the song covers only {100 * overlap:.0f}% of the take "
                        f"(song {song_s:.1f} s, take {take_s:.1f} s, offset {offset:+.2f} s): "
                        f"wrong or truncated song?")
    res["details"].update(overlap_fraction=overlap, take_s=take_s)
    if net is not None:
        if track is None:
            track = _load_track(track_npz, "SyncNet needs face crops")
        vocals, source = _vocals_or_mix(vocals_wav, song)
        sn = syncnet_refine(net, video, track, vocals, offset, search_frames, n, device)
        res["details"].update(builtin_method=res["method"], builtin_offset_s=offset, syncnet=sn,
                              syncnet_audio=source)
        res.update(offset_s=sn["offset_s"], method="syncnet")
    # drift_ppm (top level, 0 when not measured or not trusted): song time of video time t is
    # offset_s + t * (1 + drift_ppm * 1e-6); mfcc applies it
    drift = (float(res["details"].get("drift_ppm", 0.0))
             if res["confidence"] >= DRIFT_MIN_CONFIDENCE else 0.0)
    return {"take": take, "offset_s": float(res["offset_s"]), "drift_ppm": drift,
            "confidence": float(res["confidence"]),
            "method": res["method"], "details": res["details"]}


def _load_track(track_npz, why: str) -> dict:
    try:
        track = load_npz(track_npz)
    except UpstreamFailed as e:
        raise StepError(f"{why} and no face track ({e.step}: {e.reason})") from e
    except FileNotFoundError as e:
        raise StepError(f"{why} and no face track ({track_npz} missing)") from e
    if not np.asarray(track["valid"]).any():
        raise StepError(f"{why} and no face in any frame")
    return track


def _vocals_or_mix(vocals_wav, mix: np.ndarray) -> tuple[np.ndarray, str]:
    """The vocal stem, or the mix when separation failed or is absent."""
    try:
        if vocals_wav and Path(vocals_wav).exists() and read_failure(vocals_wav) is None:
            return read_wav(vocals_wav, SR), "vocals"
    except StepError:
        pass
    return mix, "mix"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--take", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--ingest", required=True, help="ingest.json of the take")
    ap.add_argument("--track", required=True,
                    help="track.npz (used without camera audio, and by syncnet)")
    ap.add_argument("--mix", required=True, help="the song's mix.wav (16 kHz)")
    ap.add_argument("--vocals", default=None, help="the song's vocals.wav (16 kHz)")
    ap.add_argument("--backend", choices=["builtin", "syncnet"], default="builtin")
    ap.add_argument("--syncnet-weights", default=None, help="syncnet_v2.model (backend syncnet)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--search-frames", type=int, default=15,
                    help="SyncNet search, +- frames at 25 fps")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    def work():
        save_json(a.out, sync_take(a.take, a.video, a.ingest, a.track, a.mix, a.vocals, a.backend,
                                   a.syncnet_weights, a.device, a.search_frames))

    return run_step("sync", a.take, [a.out], work)


if __name__ == "__main__":
    sys.exit(main())
