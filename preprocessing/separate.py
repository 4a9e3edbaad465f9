"""separate: song -> vocals.wav + music.wav (16 kHz mono, same length as mix.wav).

Two backends behind one CLI (README, "The real tools"):

* ``builtin`` - a DSP separator that ships with MusicFace (REPET-SIM with soft masks, below).
* ``spleeter`` - Spleeter 2stems (the paper's tool, section 4.2), run in its own Python
  environment (``make spleeter-env``) by ``preprocessing/spleeter_runner.py`` on the original song
  decoded at 44.1 kHz stereo; its 44.1 kHz stereo stems are resampled here to 16 kHz mono.

Built-in method (REPET-SIM, Rafii & Pardo 2012, iterated; our choices measured on real and demo
stems):

1. STFT of the 16 kHz mix: periodic Hann window of ``N_FFT`` = 1024 samples (64 ms), hop ``HOP`` =
   256 (16 ms), frames centred on ``t * HOP``.
2. Frame similarity: cosine similarity of log-compressed 64-band mel spectra
   ``log1p(mel / (0.1 * mean(mel)))`` (loudness-invariant; log compression lets quiet accompaniment
   structure count, which measured ~+0.7 dB better than linear magnitudes).
3. For every frame, its k most similar frames at least ``MIN_DIST_S`` = 1 s away (a sustained sung
   note cannot pick its own neighbours), k = ``K_FRACTION`` = 5 % of the song's frames, at most
   ``K_MAX`` (a fixed k = 100 lost to the band-pass baseline below on a 240 s demo song by 6.4 dB
   SI-SDR: in a long song the sung notes recur often enough to fill 100 neighbours). The repeating
   background is the geometric mean of their magnitude spectra, clipped to the mix:
   ``R = min(gmean, |X|)``.
4. Soft (Wiener-like) vocal mask ``Mv = V^2 / (V^2 + (MARGIN * R)^2)`` with ``V = |X| - R`` and
   ``MARGIN`` = 3, times a high-pass prior (4th-order Butterworth magnitude at ``VOCAL_LOW_HZ`` =
   150 Hz: bass and kick go to the accompaniment).
5. ``REFINE`` = 3 times: the background is re-estimated from the neighbours' *accompaniment
   estimate* ``(1 - Mv) |X|`` instead of ``|X|`` (neighbours that also hold singing no longer count
   it as background), and the mask recomputed.
6. A 3-bin x 5-frame median filter of the mask (``MASK_MEDIAN``: less "musical noise").
7. ``vocals = iSTFT(Mv * X)``; ``music = mix - vocals`` (the two stems add up to the mix exactly).

Scores: SI-SDR (:func:`si_sdr`; a gain cannot help it) and plain SDR (:func:`sdr`), against two
baselines: the mixture itself, and a fixed 300-3400 Hz band-pass of the mix (:func:`vocal_band`;
``0.5 x band`` gains +8.8 dB of plain SDR over the mixture on the clip: plain SDR alone cannot tell
it from a separator). Vocals / accompaniment SI-SDR in dB (band-pass baseline, mixture):

* the 6 s MUSDB18 clip shipped in stempeg: vocals 0.6 (-2.6, -7.1), accompaniment 10.1 (8.3, 7.2);
  plain SDR: vocals 3.3 dB (+10.5 over the mixture, +1.4 over the band-pass at its best fixed gain);
* 30 s demo songs (seed 0, songs 1-3): vocals 12.2 / 8.5 / 10.4 (5.5 / 4.6 / 5.6),
  accompaniment 15.9 / 12.3 / 13.3 (7.5 / 7.1 / 6.8); six more demo songs: vocals 3.5 to 7.8 dB,
  accompaniment 2.4 to 11.1 dB over the band-pass;
* a 240 s demo song (``bench/separate.py``): vocals 13.0 (6.6, -2.8), accompaniment 15.6 (6.7, 2.7).

Before steps 5-6 and the proportional k (fixed k = 100), the band-pass beat the separator's vocals
on four of those ten demo songs (the 30 s ones by up to 2.2 dB, the 240 s one by 6.4 dB). HPSS
(percussive part to the accompaniment) helped the demo songs but cost 0.4-0.9 dB on the clip and was
left out.
Speed: ~17x real time on one core (4-minute song, ``bench/separate.py``; k = 750 there: the sparse
neighbour averages are most of the time).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from preprocessing.common import StepError, check_upstream, one_line, run_step, save_wav
from preprocessing.timebase import SR

N_FFT = 1024            # samples (64 ms at 16 kHz)
HOP = 256               # samples (16 ms)
N_MELS = 64             # bands of the similarity features
K_FRACTION = 0.05       # share of the song's frames averaged into each frame's repeating background
K_MAX = 800             # ... at most (a 4-minute song has 15,000 frames: k = 750)
MIN_DIST_S = 1.0        # s; neighbours closer than this to the frame are not used
MARGIN = 3.0            # background weight in the soft mask (larger = cleaner, thinner vocals)
VOCAL_LOW_HZ = 150.0    # Hz; below this the mix is accompaniment (high-pass prior on the mask)
REFINE = 3              # background re-estimated this often from the accompaniment estimate
MASK_MEDIAN = (3, 5)    # bins x frames median filter of the final vocal mask (less musical noise)
BLOCK = 1024            # frames per similarity block (bounds memory: BLOCK x n_frames floats)

SPLEETER_SR = 44100     # Spleeter's models work at 44.1 kHz stereo
SPLEETER_MODEL_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0/2stems.tar.gz"
RUNNER = Path(__file__).with_name("spleeter_runner.py")


# ------------------------------------------------------------------------------------- metric
def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB: ``10 log10(|s|^2 / |s - s_hat|^2)``.

    No projection onto the reference (unlike BSS-eval's SDR): a gain error counts as distortion.
    Both arrays must have the same shape. +inf for a perfect estimate.
    """
    s = np.asarray(reference, np.float64)
    e = np.asarray(estimate, np.float64)
    if s.shape != e.shape:
        raise ValueError(f"sdr: shapes differ: {s.shape} vs {e.shape}")
    num = float(np.sum(s * s))
    den = float(np.sum((s - e) ** 2))
    if den == 0.0:
        return math.inf
    if num == 0.0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019, no mean removal):
    ``10 log10(|a s|^2 / |a s - s_hat|^2)`` with ``a = <s_hat, s> / |s|^2``.

    Unlike :func:`sdr`, turning the estimate up or down changes nothing, so a separator cannot score
    by being quiet (``0.3 x mix`` gains 7.4 dB of plain SDR over the mix on the clip, 0 of SI-SDR).
    By hand: two lines, and no package we ship (torchmetrics, museval) provides it.
    """
    s = np.asarray(reference, np.float64)
    e = np.asarray(estimate, np.float64)
    if s.shape != e.shape:
        raise ValueError(f"si_sdr: shapes differ: {s.shape} vs {e.shape}")
    ss = float(np.sum(s * s))
    if ss == 0.0:
        return -math.inf
    target = (float(np.sum(e * s)) / ss) * s
    num, den = float(np.sum(target ** 2)), float(np.sum((target - e) ** 2))
    if den == 0.0:
        return math.inf
    return -math.inf if num == 0.0 else 10.0 * math.log10(num / den)


def vocal_band(mix: np.ndarray, sr: int = SR) -> np.ndarray:
    """The baseline every separator must beat: a fixed 300-3400 Hz (telephone voice band) band-pass
    of the mix, 4th-order Butterworth run forwards and backwards (zero phase, so it keeps its best
    SI-SDR). Scored as ``0.5 x vocal_band`` (plain SDR) or at any gain (SI-SDR)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, np.asarray(mix, np.float64)).astype(np.float32)


# ------------------------------------------------------------------------- built-in separator
def neighbour_matrix(feat: np.ndarray, k: int, min_dist: int = 62, block: int = BLOCK,
                     progress: bool = False):
    """REPET-SIM's frame neighbours as a sparse (T, T) averaging matrix ``W``.

    ``feat``: (D, T) similarity features. For each frame t the ``k`` frames with the highest cosine
    similarity of ``feat`` among those with ``|t' - t| >= min_dist`` are its neighbours;
    ``W[t', t] = 1 / k`` for them, so ``(log S) @ W`` averages any (F, T) spectrogram S's log over
    each frame's neighbours. Similarities are computed in blocks of ``block`` frames (memory ~
    block x T).
    Written by hand: librosa's ``nn_filter`` builds the full T x T recurrence matrix (900 MB for a
    4-minute song at our hop) with scikit-learn, far slower than our 20x real-time bar.
    """
    from scipy.sparse import csr_matrix
    from tqdm import tqdm

    n = feat.shape[1]
    k = max(1, min(k, n - 1))
    min_dist = max(1, min(min_dist, (n - k + 1) // 2))  # short songs: keep >= k candidates
    norm = np.linalg.norm(feat, axis=0, keepdims=True)
    f = np.ascontiguousarray((feat / np.maximum(norm, 1e-9)).T.astype(np.float32))  # (T, D)
    band = np.arange(-(min_dist - 1), min_dist)                  # offsets that are too close
    neighbours = np.empty((n, k), np.int32)
    for i0 in tqdm(range(0, n, block), desc="separate: similarity", unit="block",
                   disable=not progress or n <= block, file=sys.stderr):
        i1 = min(n, i0 + block)
        sim = f[i0:i1] @ f.T                                         # (b, T) cosine similarity
        rows = np.arange(i1 - i0)[:, None]
        # clipping maps out-of-range offsets to frame 0 / T-1, which are inside the band anyway
        sim[rows, np.clip(np.arange(i0, i1)[:, None] + band, 0, n - 1)] = -np.inf
        neighbours[i0:i1] = np.argpartition(sim, n - k, axis=1)[:, n - k:]   # the k largest
    return csr_matrix((np.full(n * k, 1.0 / k, np.float32),
                       (neighbours.ravel(), np.repeat(np.arange(n), k))), shape=(n, n))


def repeating_background(source: np.ndarray, W, mag: np.ndarray) -> np.ndarray:
    """REPET-SIM background: the geometric mean of ``source``'s (F, T) magnitude columns over each
    frame's neighbours (``W`` from :func:`neighbour_matrix`), clipped to the mixture's ``mag``.

    Geometric mean rather than REPET-SIM's median: it measured as good (+0.1 dB on the clip) and is
    one sparse matrix product, where the median of k gathered spectra took 17 s for a 4-minute song
    already at k = 20.
    """
    floor = max(float(source.max()), 1e-12) * 1e-7                # -140 dB: silence stays finite
    log_src = np.log(source + floor)
    background = np.exp(np.asarray((W.T @ log_src.T).T)) - floor
    return np.minimum(np.maximum(background, 0.0), mag).astype(mag.dtype, copy=False)


def vocal_mask(mag: np.ndarray, background: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Soft vocal mask ``V^2 / (V^2 + (MARGIN R)^2) * prior``, ``V = |X| - R`` (module doc)."""
    V = mag - background
    return V * V / (V * V + (MARGIN * background) ** 2 + 1e-20) * prior


def stft(x: np.ndarray) -> np.ndarray:
    """STFT (F = N_FFT/2 + 1, T = 1 + len(x) // HOP) complex64: periodic Hann of ``N_FFT``, hop
    ``HOP``, frame t centred on sample ``t * HOP`` (zeros beyond the ends), as librosa's
    ``stft(center=True)``.

    Written by hand (a strided view + one batched FFT): scipy's ShortTimeFFT runs a Python loop over
    frames (~4 s for a 4-minute song) and librosa's first call costs ~4 s of lazy imports, each a
    third of our whole time budget for a song.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.fft import rfft

    pad = N_FFT // 2
    frames = sliding_window_view(np.pad(np.asarray(x, np.float32), pad),
                                 N_FFT)[::HOP][: 1 + len(x) // HOP]
    return rfft(frames * _window(), axis=1).T.astype(np.complex64)


def istft(X: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`stft` (weighted overlap-add, normalised by the summed squared window):
    ``istft(stft(x), len(x)) == x`` up to float rounding. Returns float32 ``(length,)``."""
    from scipy.fft import irfft

    pad, q = N_FFT // 2, N_FFT // HOP
    w = _window()
    frames = irfft(X.T, n=N_FFT, axis=1).astype(np.float32) * w                      # (T, N_FFT)
    T = frames.shape[0]
    out = np.zeros((T + q - 1, HOP), np.float32)            # output in HOP-sample segments
    norm = np.zeros((T + q - 1, HOP), np.float32)             # summed squared window, same layout
    # frame t's block b lands on segment t + b
    for b in range(q):
        out[b: b + T] += frames[:, b * HOP:(b + 1) * HOP]
        norm[b: b + T] += (w[b * HOP:(b + 1) * HOP] ** 2)[None, :]
    out, norm = out.ravel(), norm.ravel()
    y = np.where(norm > 1e-6, out / np.maximum(norm, 1e-6), 0.0)[pad: pad + length]
    return np.pad(y, (0, length - len(y))).astype(np.float32)


def _window() -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", N_FFT, fftbins=True).astype(np.float32)   # periodic Hann


def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale from 0 Hz to sr / 2
    (python_speech_features' filterbank: pure numpy, no import cost)."""
    from python_speech_features.base import get_filterbanks

    return get_filterbanks(nfilt=n_mels, nfft=n_fft, samplerate=sr, lowfreq=0, highfreq=sr / 2)


def separate_builtin(mix: np.ndarray, sr: int = SR,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Built-in REPET-SIM separation (module docstring). ``mix``: float (n,) at ``sr`` Hz.

    Returns ``(vocals, music)``, float32 (n,) each, with ``vocals + music == mix`` (float32
    rounding). Raises StepError when the song is shorter than one analysis window (``N_FFT``
    samples).
    """
    mix = np.asarray(mix, np.float32)
    if mix.ndim != 1:
        raise ValueError(f"separate_builtin: mono audio expected, got shape {mix.shape}")
    if len(mix) < N_FFT:
        raise StepError(f"song too short to separate: {len(mix) / sr:.3f} s (need >= "
                        f"{N_FFT / sr:.3f} s)")
    if not np.all(np.isfinite(mix)):
        raise StepError("song audio contains NaN or infinite samples")
    from scipy.ndimage import median_filter

    X = stft(mix)                                                            # (F, T) complex64
    mag = np.abs(X)
    mel = mel_filterbank(sr, N_FFT, N_MELS).astype(np.float32) @ mag
    feat = np.log1p(mel / max(0.1 * float(mel.mean()), 1e-12))
    k = int(min(K_MAX, round(K_FRACTION * mag.shape[1])))
    W = neighbour_matrix(feat, k, int(round(MIN_DIST_S * sr / HOP)), progress=progress)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sr)
    prior = (1.0 / np.sqrt(1.0 + (VOCAL_LOW_HZ / np.maximum(freqs, 1e-3)) ** 8))[:, None]
    mask = vocal_mask(mag, repeating_background(mag, W, mag), prior)
    for _ in range(REFINE):             # neighbours' background from the accompaniment estimate
        mask = vocal_mask(mag, repeating_background((1.0 - mask) * mag, W, mag), prior)
    mask = median_filter(mask.astype(np.float32), size=MASK_MEDIAN, mode="nearest")
    vocals = istft(mask * X, len(mix))
    return vocals, (mix - vocals).astype(np.float32)


# --------------------------------------------------------------------------------- Spleeter
def check_spleeter_model(model_dir: str | os.PathLike | None) -> Path:
    """Return ``<model_dir>/2stems`` if it holds a complete Spleeter 2stems model, else raise.

    Complete = ``checkpoint``, ``model.index``, at least one ``model.data-*`` and ``.probe`` (the
    layout of the v1.4.0 release's 2stems.tar.gz). Spleeter itself, given a missing folder, creates
    it and tries to download; given a folder without weights, it runs silently on fresh random
    weights. We never let it get that far.
    """
    how = (f"download {SPLEETER_MODEL_URL} (deezer/spleeter GitHub release v1.4.0), unpack it into "
           f"<MODEL_PATH>/2stems and set config separate.spleeter.model_dir to <MODEL_PATH>")
    if not model_dir:
        raise StepError(f"spleeter backend: no model folder configured "
                        f"(separate.spleeter.model_dir): {how}")
    root = Path(model_dir)
    d = root / "2stems" if (root / "2stems").is_dir() or root.name != "2stems" else root
    if not d.is_dir():
        raise StepError(f"spleeter backend: model folder not found: {d}: {how}")
    missing = [name for name in ("checkpoint", "model.index", ".probe") if not (d / name).is_file()]
    if not list(d.glob("model.data-*")):
        missing.append("model.data-*")
    if missing:
        raise StepError(f"spleeter backend: incomplete model in {d} (missing "
                        f"{', '.join(missing)}): {how}")
    return d


def check_spleeter_python(python: str | os.PathLike) -> str:
    """Resolve the Spleeter interpreter (a path or a name on PATH); raise StepError naming the
    fix."""
    p = str(python)
    found = shutil.which(p) if os.sep not in p else (p if os.access(p, os.X_OK)
                                                     and Path(p).is_file() else None)
    if not found:
        raise StepError(f"spleeter backend: Python interpreter not found: {p}: build it with `make "
                        f"spleeter-env` "
                        f"(or `conda env create -p .venv-spleeter -f envs/spleeter.yaml`) or set "
                        f"config separate.spleeter.python")
    return found


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """(n,) or (n, c) -> (n, 2) float32, as Spleeter does: mono is duplicated, > 2 channels keep the
    first two."""
    a = np.asarray(audio, np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape[1] == 1:
        a = np.repeat(a, 2, axis=1)
    return np.ascontiguousarray(a[:, :2])


def to_16k_mono(stereo_44k: np.ndarray, n: int) -> np.ndarray:
    """Spleeter output (m, 2) at 44.1 kHz -> float32 (n,) at 16 kHz (channel mean, polyphase
    resampling 160/441 with scipy's Kaiser-windowed FIR), zero-padded or cut to exactly ``n``
    samples."""
    from scipy.signal import resample_poly

    mono = np.asarray(stereo_44k, np.float64).mean(axis=1)
    y = resample_poly(mono, SR // math.gcd(SR, SPLEETER_SR),
                      SPLEETER_SR // math.gcd(SR, SPLEETER_SR))
    y = y[:n]
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y))])
    return y.astype(np.float32)


def run_spleeter(stereo_44k: np.ndarray, python: str, model_dir: Path, workdir: str | os.PathLike,
                 chunk_s: float = 120.0, overlap_s: float = 2.0,
                 threads: int = 0) -> dict[str, np.ndarray]:
    """Separate (n, 2) float32 audio at 44.1 kHz with Spleeter 2stems in its own interpreter.

    One subprocess for the whole song; it restores the checkpoint once and runs the network on
    ``chunk_s``-second pieces cross-faded over ``overlap_s`` (bounded memory, songs of any length).
    Returns ``{"vocals", "accompaniment"}``: float32 (n, 2) at 44.1 kHz.
    """
    workdir = Path(workdir)
    inp = workdir / "input.npy"
    np.save(inp, to_stereo(stereo_44k))
    cmd = [python, str(RUNNER), "--input", str(inp), "--model-dir", str(model_dir), "--out-dir",
           str(workdir), "--chunk-s", str(chunk_s), "--overlap-s", str(overlap_s), "--threads",
           str(threads)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sys.stderr.write(proc.stdout)  # the runner's log goes to the rule's log
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        errors = [ln.split("error:", 1)[1] for ln in lines
                  if ln.startswith("spleeter_runner: error:")]
        last = errors[-1] if errors else (lines[-1] if lines else f"exit status {proc.returncode}")
        raise StepError(f"spleeter failed: {one_line(last)}")
    out = {name: np.load(workdir / f"{name}.npy") for name in ("vocals", "accompaniment")}
    for name, a in out.items():
        if a.shape != (len(stereo_44k), 2):
            raise StepError(f"spleeter returned {name} of shape {a.shape}, expected "
                            f"{(len(stereo_44k), 2)}")
    return out


def separate_spleeter(song_path: str | os.PathLike, n: int, python: str,
                      model_dir: str | os.PathLike | None, chunk_s: float = 120.0,
                      overlap_s: float = 2.0, threads: int = 0,
                      tmp_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spleeter 2stems on the original song file -> ``(vocals, music)`` float32 (n,) at 16 kHz.

    The song is decoded at 44.1 kHz stereo on the same timeline as mix.wav (``media.decode_audio``),
    so the stems line up with the mix; ``n`` = len(mix.wav).
    """
    from preprocessing.media import decode_audio

    python = check_spleeter_python(python)
    model = check_spleeter_model(model_dir)
    audio, _ = decode_audio(song_path, sr=SPLEETER_SR, mono=False)
    with tempfile.TemporaryDirectory(prefix=".spleeter-", dir=tmp_dir) as work:
        stems = run_spleeter(audio, python, model, work, chunk_s, overlap_s, threads)
    return to_16k_mono(stems["vocals"], n), to_16k_mono(stems["accompaniment"], n)


# ------------------------------------------------------------------------------------------ CLI
def work(args) -> None:
    from preprocessing.media import read_wav

    check_upstream(args.mix)
    mix = read_wav(args.mix, sr=SR)
    if args.backend == "builtin":
        vocals, music = separate_builtin(mix, SR, progress=True)
    else:
        vocals, music = separate_spleeter(args.audio, len(mix), args.spleeter_python,
                                          args.model_dir, args.chunk_s, args.overlap_s,
                                          args.threads, tmp_dir=Path(args.out_vocals).parent)
    save_wav(args.out_vocals, vocals, SR)
    save_wav(args.out_music, music, SR)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--song", required=True, help="song id (for messages)")
    ap.add_argument("--mix", required=True, help="mix.wav (16 kHz mono) from step song")
    ap.add_argument("--audio",
                    help="the original song file (spleeter backend: decoded at 44.1 kHz)")
    ap.add_argument("--backend", choices=["builtin", "spleeter"], default="builtin")
    ap.add_argument("--spleeter-python", default=".venv-spleeter/bin/python",
                    help="interpreter of the Spleeter environment")
    ap.add_argument("--model-dir", default=None,
                    help="Spleeter MODEL_PATH (the folder holding 2stems/)")
    ap.add_argument("--chunk-s", type=float, default=120.0,
                    help="spleeter: seconds per network call")
    ap.add_argument("--overlap-s", type=float, default=2.0,
                    help="spleeter: cross-fade between chunks (s)")
    ap.add_argument("--threads", type=int, default=0,
                    help="spleeter: TensorFlow threads (0 = TF default)")
    ap.add_argument("--out-vocals", required=True)
    ap.add_argument("--out-music", required=True)
    args = ap.parse_args(argv)
    if args.backend == "spleeter":
        # a missing tool or model is a setup error for every song: stop the run (no failure records)
        try:
            if not args.audio:
                raise StepError("spleeter backend needs --audio (the original song file)")
            check_spleeter_python(args.spleeter_python)
            check_spleeter_model(args.model_dir)
        except StepError as e:
            print(f"musicface: song '{args.song}' step 'separate': {e}",
                  file=sys.stderr, flush=True)
            return 2
    return run_step("separate", args.song, [args.out_vocals, args.out_music],
                    lambda: work(args), kind="song")


if __name__ == "__main__":
    sys.exit(main())
