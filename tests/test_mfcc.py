"""mfcc: window contract, feature values against a by-hand computation, offset handling, bad input,
CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest

from preprocessing.common import (
    StepError,
    load_npz,
    read_failure,
    save_json,
    save_wav,
    write_failure,
)
from preprocessing.media import read_wav
from preprocessing.mfcc import SR, features_at, mfcc, mfcc_windows, take_features
from preprocessing.timebase import n_mfcc_rows as n_rows

LOG_EPS = math.log(np.finfo(float).eps)   # -36.04: log energy of digital silence


def noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, int(round(seconds * SR))).astype(np.float32)


# ------------------------------------------------------------------------------ window contract
def test_n_rows():
    assert [n_rows(n) for n in (0, 1, 2, 3, 30, 31, 128)] == [0, 4, 7, 10, 100, 104, 427]
    assert n_rows(9000) == 30000


def test_mfcc_windows_matches_hand_built_index():
    M, D, N, W = n_rows(50), 26, 50, 39
    feats = np.arange(M * D, dtype=np.float32).reshape(M, D)        # row r holds r*26 .. r*26+25
    win = mfcc_windows(feats, N)
    assert win.shape == (N, W, D) and win.dtype == np.float32
    ref = np.empty_like(win)
    # the contract, one frame at a time
    for i in range(N):
        centre = int(math.floor(i * 100 / 30 + 0.5))
        for j in range(W):
            ref[i, j] = feats[min(max(centre - 19 + j, 0), M - 1)]
    np.testing.assert_array_equal(win, ref)
    # centres: frame 1 at 3.33 -> row 3, frame 2 at 6.67 -> row 7, frame 3 at row 10
    assert [int(win[i, 19, 0]) // D for i in range(5)] == [0, 3, 7, 10, 13]
    # left edge replicated
    assert np.all(win[0, :19] == feats[0]) and np.all(win[0, 19:] == feats[:20])
    # last frame: 49 * 100 / 30 = 163.3
    assert int(win[N - 1, 19, 0]) // D == 163
    # rows 166.. replicate the last row
    assert np.all(win[N - 1, 22:] == feats[M - 1])
    assert int(win[N - 1, 21, 0]) // D == 165


def test_mfcc_windows_other_rates_and_errors():
    feats = np.arange(20, dtype=np.float64)[:, None]
    # centres 0, 2.5 -> 3 (half up), 5, 7.5 -> 8, 10
    w = mfcc_windows(feats, 5, fps=40, width=3)
    assert w.dtype == np.float64
    np.testing.assert_array_equal(w[:, 1, 0], [0, 3, 5, 8, 10])
    np.testing.assert_array_equal(w[0, :, 0], [0, 0, 1])
    w = mfcc_windows(feats, 3, fps=25, width=4)                     # even width: 2 before, 1 after
    np.testing.assert_array_equal(w[1, :, 0], [2, 3, 4, 5])
    assert mfcc_windows(feats, 0).shape == (0, 39, 1)
    with pytest.raises(ValueError, match=r"features must be \(M >= 1, D\)"):
        mfcc_windows(np.zeros((0, 26)), 3)
    with pytest.raises(ValueError, match="width >= 1"):
        mfcc_windows(feats, 3, width=0)


# ------------------------------------------------------------------------------- feature values
def hand_mfcc_rows(x: np.ndarray, centres: list[int]) -> np.ndarray:
    """13 MFCCs of the frames centred at the given samples, computed here from the definitions."""

    def xe(p):  # the signal is zero outside
        return float(x[p]) if 0 <= p < len(x) else 0.0

    # HTK mel filterbank, 26 triangles, 0..8000 Hz, FFT bins floor(513 * f / 16000)
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def imel(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = np.floor(513 * imel(np.linspace(mel(0), mel(8000), 28)) / SR).astype(int)
    fb = np.zeros((26, 257))
    for j in range(26):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        for k in range(lo, mid):
            fb[j, k] = (k - lo) / (mid - lo)
        for k in range(mid, hi):
            fb[j, k] = (hi - k) / (hi - mid)
    n = np.arange(26)
    dct = np.sqrt(2 / 26) * np.cos(np.pi * np.arange(13)[:, None] * (2 * n[None, :] + 1) / 52)
    dct[0] /= np.sqrt(2)
    lift = 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    rows = []
    for c in centres:
        frame = np.zeros(400)
        for i in range(400):                                        # pre-emphasis
            p = c - 200 + i
            frame[i] = xe(p) - 0.97 * xe(p - 1)
        frame = frame * (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 399))   # Hamming
        power = np.abs(np.fft.rfft(frame, 512)) ** 2 / 512
        cep = (dct @ np.log(np.maximum(fb @ power, np.finfo(float).eps))) * lift
        cep[0] = np.log(max(power.sum(), np.finfo(float).eps))
        rows.append(cep)
    return np.array(rows)


def test_mfcc_values_match_hand_computation():
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1375 * t)
         + noise(1, 3, 0.01)).astype(np.float32)
    feats = mfcc(x)
    assert feats.shape == (100, 26) and feats.dtype == np.float32
    rows = [0, 1, 37, 50, 51, 52, 53, 54, 99]
    ref = hand_mfcc_rows(x, [r * 160 for r in rows])
    np.testing.assert_allclose(feats[rows, :13], ref, rtol=2e-4, atol=2e-3)
    # deltas: regression over +-2 rows, d = (c[t+1]-c[t-1] + 2 (c[t+2]-c[t-2])) / 10
    c = {r: v for r, v in zip(rows, ref)}
    d52 = (c[53] - c[51] + 2 * (c[54] - c[50])) / 10
    np.testing.assert_allclose(feats[52, 13:], d52, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("seconds", [0.03, 5.13, 31.0])
def test_blocked_cepstra_are_bit_identical_to_python_speech_features(seconds):
    """preprocessing.mfcc computes psf.mfcc in cache-sized blocks (speed): the dataset's features
    must not change by a single bit. Lengths: under one block, several blocks with a partial last
    one; speech-like signal with digital silence (the eps branch) and a full-scale stretch."""
    import python_speech_features as psf

    from preprocessing.mfcc import BLOCK, HOP, WIN, _cepstra

    n = int(round(seconds * SR))
    # a whole number of frames, as _features cuts
    n = (max(n - WIN, 0) // HOP) * HOP + WIN
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x = (x + noise(n / SR, 7, 0.05)[:n]).astype(np.float32)
    x[n // 3: n // 3 + 4000] = 0.0
    x[n // 2: n // 2 + 2000] = np.sign(x[n // 2: n // 2 + 2000])
    sig = np.asarray(x, np.float64)
    ref = psf.mfcc(sig, samplerate=SR, winlen=0.025, winstep=0.01, numcep=13, nfilt=26, nfft=512,
                   lowfreq=0, highfreq=SR / 2, preemph=0.97, ceplifter=22, appendEnergy=True,
                   winfunc=np.hamming)
    got = _cepstra(sig)
    assert got.shape == ref.shape == ((n - WIN) // HOP + 1, 13) and got.dtype == np.float64
    np.testing.assert_array_equal(got, ref)
    if seconds > 30:
        assert len(got) > 5 * BLOCK and len(got) % BLOCK != 0
        assert np.sum(got[:, 0] == LOG_EPS) >= 20                     # the silent stretch: log(eps)


def test_mfcc_shapes_and_silence():
    assert mfcc(noise(0.5)).shape == (50, 26)
    assert mfcc(noise(0.501)).shape == (51, 26)
    assert mfcc(np.zeros(10, np.float32)).shape == (1, 26)
    silent = mfcc(np.zeros(SR, np.float32))
    assert (np.all(np.isfinite(silent)) and np.allclose(silent[:, 0], LOG_EPS)
            and np.allclose(silent[:, 13:], 0))
    with pytest.raises(StepError, match=r"empty audio \(0 samples\)"):
        mfcc(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="multiple of 100"):
        mfcc(noise(1), sr=22050)


# ------------------------------------------------------------------------------------ the offset
def click_song(seconds: float, click_s: float) -> np.ndarray:
    # quiet floor, not digital silence
    x = noise(seconds, 1, 1e-4)
    x[int(round(click_s * SR))] = 1.0
    return x


@pytest.mark.parametrize("offset_s, click_s, row", [
    (1.5, 5.0, 350),              # click at video time 3.5 s
    (-2.0, 1.0, 300),             # the recording started 2 s before the song: video time 3.0 s
    (0.25 + 7 / SR, 4.0, 375),    # 4.0 - 0.250437 = 3.749563 s -> row 375 (3.75 s, 0.4 ms away)
    (0.0, 0.0, 0),                # click on the song's first sample, row 0
])
def test_click_lands_on_the_right_row(offset_s, click_s, row):
    song = click_song(12.0, click_s)
    stems = {"vocals": song, "music": song * 0, "mix": song}
    out = take_features(stems, offset_s, n_frames=150)
    assert out["mfcc_mix"].shape == (500, 26)
    energy = out["mfcc_mix"][:, 0]
    assert int(np.argmax(energy)) == row


@pytest.mark.parametrize("drift_ppm", [500.0, -800.0])
def test_clock_drift_moves_late_rows(drift_ppm):
    """song time = offset + t (1 + d): with d = 500 ppm a click at song time 1.5 + 240.06 s is at
    video time 240.0 s; over a 4-minute take that is 12 rows, which offset_s alone would miss."""
    offset_s, t_click = 1.5, 240.0
    song_click = offset_s + t_click * (1 + drift_ppm * 1e-6)
    song = click_song(250.0, song_click)
    stems = {"vocals": song, "music": song * 0, "mix": song}
    n_frames = 30 * 245
    out = take_features(stems, offset_s, n_frames=n_frames, drift_ppm=drift_ppm)
    plain = take_features(stems, offset_s, n_frames=n_frames)
    assert out["mfcc_mix"].shape == plain["mfcc_mix"].shape
    assert abs(int(np.argmax(out["mfcc_mix"][:, 0])) - 24000) <= 1
    assert abs(int(np.argmax(plain["mfcc_mix"][:, 0])) - 24000) >= 11   # 240 s x 500 ppm = 120 ms
    # early rows: the same features as without drift (within interpolation of neighbouring rows)
    np.testing.assert_allclose(out["mfcc_mix"][:10], plain["mfcc_mix"][:10], atol=0.5)


def test_offset_is_applied_at_sample_precision():
    song = noise(10, 5)
    n_frames, M = 120, n_rows(120)
    for shift in (12345, 12346, 16000 * 2 + 1):
        for frac in (-0.49, 0.0, 0.49):                            # rounds to the same sample
            out = take_features({"vocals": song, "music": song, "mix": song},
                                (shift + frac) / SR, n_frames)
            ref = features_at(song, shift, M)
            np.testing.assert_array_equal(out["mfcc_vocals"], ref)
    # and equals the whole-signal features of the song cut at that sample (away from the cut's edge)
    cutsong = song[12345:]
    whole = mfcc(cutsong)[:M]
    out = take_features({"vocals": song, "music": song, "mix": song}, 12345 / SR, n_frames)
    np.testing.assert_allclose(out["mfcc_mix"][4:], whole[4:], rtol=1e-5, atol=1e-4)


def test_take_runs_past_the_song_is_padded_with_silence():
    song = noise(3.0, 2)
    # 5 s take
    out = take_features({"vocals": song, "music": song, "mix": song}, offset_s=-1.0, n_frames=150)
    e = out["mfcc_mix"][:, 0]
    assert out["mfcc_mix"].shape == (500, 26)
    assert out["coverage"] == pytest.approx(300 / 500)             # rows 100..399 lie in the song
    assert np.allclose(e[:98], LOG_EPS) and np.allclose(e[402:], LOG_EPS)   # silence before / after
    assert np.all(e[102:398] > -10)


def test_bad_inputs():
    song = noise(3.0, 2)
    stems = {"vocals": song, "music": song, "mix": song}
    with pytest.raises(StepError, match=r"take does not overlap the song: the take covers song "
                                        r"time 5\.00\.\.9\.99 s, "
                                        r"the song is 0\.\.3\.00 s long"):
        take_features(stems, 5.0, 150)
    with pytest.raises(StepError, match="take does not overlap the song"):
        take_features(stems, -6.0, 150)
    quiet = {"vocals": song, "music": song,
             "mix": np.concatenate([song[:SR], np.zeros(2 * SR, np.float32)])}
    with pytest.raises(StepError,
                       match=r"the song is silent during the whole take \(song time 1\.50\.\.3\.00 "
                             r"s\)"):
        take_features(quiet, 1.5, 60)
    with pytest.raises(StepError, match=r"mix\.wav is empty \(0 samples\)"):
        take_features({k: np.zeros(0, np.float32) for k in stems}, 0.0, 30)
    with pytest.raises(StepError, match="vocals/music/mix lengths differ"):
        take_features({**stems, "music": song[:-1]}, 0.0, 30)
    with pytest.raises(StepError, match="no video frames"):
        take_features(stems, 0.0, 0)
    with pytest.raises(StepError, match="not a number"):
        take_features(stems, float("nan"), 30)
    # an instrumental passage (silent vocals) is fine
    out = take_features({**stems, "vocals": np.zeros_like(song)}, 0.0, 30)
    assert np.allclose(out["mfcc_vocals"][:, 0], LOG_EPS)


# ------------------------------------------------------------------------------------------- CLI
def write_take(d, n_frames=90, offset_s=0.75, mix=None):
    mix = noise(6.0, 4) if mix is None else mix
    save_wav(d / "vocals.wav", 0.5 * mix, SR)
    save_wav(d / "music.wav", 0.5 * mix, SR)
    save_wav(d / "mix.wav", mix, SR)
    save_json(d / "ingest.json", {"take": "t 1", "n_frames": n_frames, "fps": 30})
    save_json(d / "sync.json", {"take": "t 1", "offset_s": offset_s, "confidence": 9.0,
                                "method": "gcc-phat", "details": {}})


def cli_args(d):
    return ["preprocessing.mfcc", "--take", "t1", "--ingest", d / "ingest.json", "--sync",
            d / "sync.json", "--vocals", d / "vocals.wav", "--music", d / "music.wav", "--mix",
            d / "mix.wav", "--out", d / "mfcc.npz"]


def test_cli_writes_contract(tmp_path, run_cli):
    d = tmp_path / "take 'quoted'"
    d.mkdir()
    mix = noise(6.0, 4)
    write_take(d, mix=mix)
    run_cli(cli_args(d))
    z = load_npz(d / "mfcc.npz")
    for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
        assert z[k].dtype == np.float32 and z[k].shape == (300, 26)
    assert z["offset_s"].shape == () and float(z["offset_s"]) == 0.75
    np.testing.assert_array_equal(z["mfcc_mix"], features_at(mix, 12000, 300))
    assert float(z["coverage"]) == 1.0


def test_cli_failures_become_records(tmp_path, run_cli):
    write_take(tmp_path, mix=np.zeros(6 * SR, np.float32))
    proc = run_cli(cli_args(tmp_path))
    assert proc.stderr.strip().splitlines()[-1] == \
        "musicface: take 't1' step 'mfcc': the song is silent during the whole take (song time " \
        "0.75..3.74 s)"
    assert read_failure(tmp_path / "mfcc.npz")["step"] == "mfcc"
    write_take(tmp_path)
    write_failure(tmp_path / "sync.json", "t1", "sync", "no audio track")
    proc = run_cli(cli_args(tmp_path))
    assert "skipped, upstream step 'sync' failed: no audio track" in proc.stderr
    assert read_failure(tmp_path / "mfcc.npz") == {"unit": "t1", "step": "sync",
                                                   "reason": "no audio track"}


# ------------------------------------------------------------------------- demo song, true timing
def test_separated_vocals_follow_the_demo_singing_on_the_take_timeline():
    """Demo song (true syllable times) -> built-in separation -> take features with an offset: the
    vocals' log energy marks sung rows (AUC vs the score), best at lag 0 (the offset applied
    once)."""
    from scipy.signal import resample_poly
    from sklearn.metrics import roc_auc_score

    from preprocessing.demo import render_song
    from preprocessing.separate import separate_builtin

    song = render_song(0, 2, 20.0)
    mix = resample_poly(song.mix.astype(np.float64), 160, 441).astype(np.float32)
    vocals, music = separate_builtin(mix)
    # video frame 0 = song time 2.345 s, 15 s take
    offset_s, n_frames = 2.345, 450
    out = take_features({"vocals": vocals, "music": music, "mix": mix}, offset_s, n_frames)
    energy = out["mfcc_vocals"][:, 0]
    rows = np.arange(len(energy))

    def auc(lag_rows):
        sung = song.active(rows / 100 + offset_s + lag_rows / 100)
        return roc_auc_score(sung, energy)

    aucs = {lag: auc(lag) for lag in (-15, -5, 0, 5, 15)}
    assert aucs[0] > 0.9, aucs                           # measured 0.96
    assert aucs[0] > max(aucs[-5], aucs[5]) > max(aucs[-15], aucs[15]), aucs
    # separation helps: the mix's energy marks singing less well (measured 0.89)
    assert aucs[0] > roc_auc_score(song.active(rows / 100 + offset_s), out["mfcc_mix"][:, 0]) + 0.03


# ----------------------------------------------------------------------- partly corrupt songs
def invalid_from_gap_times(gaps_s, offset_s, n_frames, drift_ppm=0.0) -> np.ndarray:
    """The frames that must be invalid, one at a time from the gap times (docs/data.md): frame
    ``i``'s window holds rows ``c - 19 .. c + 19`` (``c = round(i * 100 / 30)``, clipped to the
    take's ``M`` rows); row ``r`` is at song time ``offset_s + r / 100 (1 + drift)``, on the
    song's 100 Hz grid between rows ``floor`` and ``ceil`` of ``r (1 + drift)``; a row reads the
    song within 32.5 ms of its centre (520 samples after, 521 before: one more for the
    pre-emphasis). Frame ``i`` is invalid when that stretch of the song overlaps a gap."""
    m = n_rows(n_frames)
    ratio = 1 + drift_ppm * 1e-6
    first = round(offset_s * SR)                       # the song sample of video time 0
    gaps = [(math.floor(a * SR), math.ceil(b * SR)) for a, b in gaps_s]
    out = np.zeros(n_frames, bool)
    for i in range(n_frames):
        c = math.floor(i * 100 / 30 + 0.5)
        r0, r1 = max(c - 19, 0), min(c + 19, m - 1)
        j0, j1 = math.floor(r0 * ratio), math.ceil(r1 * ratio)   # song-grid rows read
        lo, hi = first + 160 * j0 - 521, first + 160 * j1 + 520   # song samples read: [lo, hi)
        out[i] = any(g0 < hi and lo < g1 for g0, g1 in gaps)
    return out


@pytest.mark.parametrize("offset_s, drift_ppm", [
    (1.2345, 0.0),
    (-0.5, 0.0),          # the camera started before the song: the gap at the song's start
    (0.77, 300.0),
    (2.0, -900.0),
])
def test_frames_over_song_gaps_are_exactly_those_that_read_them(offset_s, drift_ppm):
    """A song with stretches that did not decode (zeros): the frames marked invalid are exactly
    those whose 39-row MFCC window changes when music is put back in the gaps (the truth: which
    frames read the gaps), and exactly those the gap times give (docs/data.md's mapping through
    offset and drift); at drift 0 the same holds row by row."""
    from preprocessing.mfcc import rows_over_gaps

    gaps = [(0.0, 0.3), (3.0371, 3.41), (5.5, 5.52), (7.99, 9.2345), (11.5, 11.8)]
    n_frames = 300                                          # 10 s: the last gap is past the take
    song = noise(12.0, 11)
    other = noise(12.0, 12)
    gapped, filled = song.copy(), song.copy()
    for a, b in gaps:
        gapped[math.floor(a * SR):math.ceil(b * SR)] = 0.0
        filled[math.floor(a * SR):math.ceil(b * SR)] = other[math.floor(a * SR):math.ceil(b * SR)]
    out = {name: take_features({"vocals": 0.5 * x, "music": 0.5 * x, "mix": x}, offset_s,
                               n_frames, drift_ppm=drift_ppm, gaps_s=gaps)
           for name, x in (("gapped", gapped), ("filled", filled))}
    valid = out["gapped"]["valid"]
    assert valid.dtype == np.uint8 and valid.shape == (n_frames,)
    np.testing.assert_array_equal(valid, out["filled"]["valid"])   # the gap times alone decide
    reads = np.zeros(n_frames, bool)
    for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
        reads |= (mfcc_windows(out["gapped"][k], n_frames)
                  != mfcc_windows(out["filled"][k], n_frames)).any(axis=(1, 2))
    assert 80 < reads.sum() < 200
    np.testing.assert_array_equal(valid == 0, reads)
    np.testing.assert_array_equal(valid == 0,
                                  invalid_from_gap_times(gaps, offset_s, n_frames, drift_ppm))
    if drift_ppm == 0:
        rows = (out["gapped"]["mfcc_mix"] != out["filled"]["mfcc_mix"]).any(axis=1)
        centres = round(offset_s * SR) + 160 * np.arange(len(rows))
        np.testing.assert_array_equal(rows_over_gaps(centres, gaps), rows)
    # without gaps every frame is valid, and the features are the same
    plain = take_features({"vocals": 0.5 * gapped, "music": 0.5 * gapped, "mix": gapped},
                          offset_s, n_frames, drift_ppm=drift_ppm)
    assert plain["valid"].all()
    for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
        np.testing.assert_array_equal(plain[k], out["gapped"][k])


def test_take_wholly_over_a_song_gap_is_left_to_qc():
    """The song is zero under the whole take because it did not decode there: not "silent" (a
    reason that would blame the song), every frame invalid (QC: too few valid frames)."""
    song = noise(10.0, 3)
    song[2 * SR:8 * SR] = 0.0
    stems = {"vocals": song, "music": song, "mix": song}
    out = take_features(stems, 3.0, 90, gaps_s=[(2.0, 8.0)])
    assert not out["valid"].any()
    with pytest.raises(StepError, match="the song is silent during the whole take"):
        take_features(stems, 3.0, 90)


@pytest.fixture(scope="module")
def corrupt_song(tmp_path_factory):
    """A demo song as a 44.1 kHz MP3 with its packets from 3.0 to 3.4 s and from 7.0 to 10.0 s
    damaged (tests/badinputs.py), and the same MP3 undamaged, through the song and separate steps:
    ``{name: folder with mix.wav, song.json, vocals.wav, music.wav}`` for "corrupt" and "clean"."""
    from badinputs import damage_audio, write_audio_file
    from preprocessing.demo import render_song
    from preprocessing.separate import separate_builtin
    from preprocessing.song import song_step

    d = tmp_path_factory.mktemp("corrupt song")
    song = render_song(0, 0, 14.0)
    write_audio_file(d / "clean.mp3", np.repeat(song.mix[:, None], 2, 1), song.sr, "libmp3lame")
    damage_audio(d / "clean.mp3", d / "half.mp3", 3.0, 3.4)
    damage_audio(d / "half.mp3", d / "corrupt.mp3", 7.0, 10.0, seed=1)
    out = {}
    for name in ("clean", "corrupt"):
        w = d / name
        song_step(name, d / f"{name}.mp3", w / "mix.wav", w / "song.json")
        vocals, music = separate_builtin(read_wav(w / "mix.wav", SR))
        save_wav(w / "vocals.wav", vocals, SR)
        save_wav(w / "music.wav", music, SR)
        out[name] = w
    out["mp3"] = d / "corrupt.mp3"
    return out


def test_corrupt_song_stems_hold_the_mix_gaps(corrupt_song):
    """The stems are the mix's length, on its timeline: inside every gap of the mix they are
    silent too (exact zeros further than the separator's STFT reach, 64 ms, from the gap's ends),
    so the mix's gaps are the stems' gaps. The Spleeter backend decodes the song again at 44.1 kHz
    (``separate_spleeter``): the same gaps at the same times."""
    import json

    from preprocessing.media import decode_audio

    d = corrupt_song["corrupt"]
    gaps = json.loads((d / "song.json").read_text())["gaps_s"]
    # damaged MP3 frames that decode to garbage; a frame that decodes to plausible values stays
    assert len(gaps) == 5 and gaps[0][0] == pytest.approx(2.98, abs=0.03)
    assert gaps[-1][1] == pytest.approx(9.98, abs=0.03)
    mix = read_wav(d / "mix.wav", SR)
    stems = {k: read_wav(d / f"{k}.wav", SR) for k in ("vocals", "music")}
    reach = 1024                                                # STFT frames of 1024 at hop 256
    inner = 0
    for a, b in gaps:
        s = slice(math.ceil(a * SR) + reach, math.floor(b * SR) - reach)
        for k, x in stems.items():
            assert len(x) == len(mix)
            assert not x[s].any(), (k, a, b)
        inner += max(0, s.stop - s.start)
    assert inner > 2.5 * SR
    _, _, gaps_44k = decode_audio(corrupt_song["mp3"], sr=44100, mono=False, with_gaps=True)
    np.testing.assert_allclose(np.array(gaps_44k), np.array(gaps), atol=1e-4)


def test_frames_over_a_corrupt_song_are_marked_invalid(corrupt_song, tmp_path, run_cli):
    """The mfcc CLI, as the rule runs it, on a 13 s take over the corrupt demo song (offset 0.5 s,
    camera 120 ppm fast): the frames invalid are exactly those the song's gaps give through the
    offset and the drift; over the gaps the mix's features are those of silence (what the model
    would have learnt from); the clean song's take: every frame valid, the same features as
    without song.json."""
    import json

    n_frames, offset_s, drift = 390, 0.5, 120.0
    save_json(tmp_path / "ingest.json", {"take": "t", "n_frames": n_frames, "fps": 30})
    save_json(tmp_path / "sync.json", {"take": "t", "offset_s": offset_s, "drift_ppm": drift,
                                       "confidence": 30.0, "method": "gcc-phat", "details": {}})
    z, log = {}, {}
    for name, info in (("corrupt", True), ("clean", True), ("clean-no-info", False)):
        d = corrupt_song[name.split("-")[0]]
        argv = ["preprocessing.mfcc", "--take", "t", "--ingest", tmp_path / "ingest.json",
                "--sync", tmp_path / "sync.json", "--vocals", d / "vocals.wav", "--music",
                d / "music.wav", "--mix", d / "mix.wav", "--out", tmp_path / f"{name}.npz"]
        if info:
            argv += ["--song-info", d / "song.json"]
        log[name] = run_cli(argv).stderr
        z[name] = load_npz(tmp_path / f"{name}.npz")
    gaps = json.loads((corrupt_song["corrupt"] / "song.json").read_text())["gaps_s"]
    invalid = z["corrupt"]["valid"] == 0
    np.testing.assert_array_equal(invalid, invalid_from_gap_times(gaps, offset_s, n_frames, drift))
    # the broken stretches are 2.98-3.40 and 6.98-9.98 s of the song: video 2.48-2.90 and
    # 6.48-9.48 s, each widened by the window's reach (0.2225 s) -> about 0.86 + 3.44 s of frames
    assert invalid.sum() == pytest.approx(30 * (0.86 + 3.44), abs=4)
    assert f"{invalid.sum()} of 390 frames over the song's 5 corrupt stretches" in log["corrupt"]
    t = np.arange(n_frames) / 30
    song_t = offset_s + t * (1 + drift * 1e-6)
    # frames whose whole window lies in the first part of the long gap (6.98-8.49 s; at 8.49 s a
    # damaged MP3 frame decoded to plausible values, 26 ms of noise between two gaps)
    deep = (song_t > 7.3) & (song_t < 8.2)
    assert invalid[deep].all() and deep.sum() == 27
    rows = mfcc_windows(z["corrupt"]["mfcc_mix"], n_frames)[deep][:, 19, 0]
    assert np.allclose(rows, LOG_EPS)                       # silence where the singer sang
    assert not invalid[(song_t > 4.0) & (song_t < 6.5)].any()
    # the clean song: nothing invalid, the features as before
    assert z["clean"]["valid"].all() and z["clean-no-info"]["valid"].all()
    for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
        np.testing.assert_array_equal(z["clean"][k], z["clean-no-info"][k])


def test_corrupt_song_takes_through_qc_and_shards(corrupt_song, tmp_path):
    """Takes sung to the corrupt demo song, their face files synthetic (tests/test_qc.py), mfcc.npz
    from the step: QC's valid fraction counts the frames over the song's gaps out (a take mostly
    over them fails with the usual reason, saying why), the shards' ``valid`` is face AND audio
    with zeros in the invalid frames; the same take sung to the clean song keeps the face's valid
    frames and its features."""
    from preprocessing import qc
    from preprocessing import shards as sh
    from preprocessing.mfcc import main as mfcc_main
    from test_qc import paths, write_take

    takes = {  # take -> (song, offset_s, frames, face lost on frames)
        "over_short_gap": ("corrupt", 0.2, 200, ()),
        "clean_song": ("clean", 0.2, 200, ()),
        "face_lost_too": ("corrupt", 0.5, 390, range(300, 330)),
        "mostly_over_gap": ("corrupt", 6.5, 150, ()),
    }
    res, audio, face = {}, {}, {}
    for take, (song, offset_s, n, lost) in takes.items():
        d = tmp_path / take
        face[take] = np.ones(n, np.uint8)
        face[take][list(lost)] = 0
        write_take(d, take, n=n, offset_s=offset_s, valid=face[take], backend="deep3d")
        s = corrupt_song[song]
        assert mfcc_main(["--take", take, "--ingest", str(d / "ingest.json"), "--sync",
                          str(d / "sync.json"), "--vocals", str(s / "vocals.wav"), "--music",
                          str(s / "music.wav"), "--mix", str(s / "mix.wav"), "--song-info",
                          str(s / "song.json"), "--out", str(d / "mfcc.npz")]) == 0
        audio[take] = load_npz(d / "mfcc.npz")["valid"].astype(bool)
        res[take] = qc.check_take(take, "alice", song, paths(d), min_sync_confidence=7.0,
                                  min_valid_fraction=0.8, min_frames=128)
    # the short gap (2.98-3.40 s of the song) costs 26 frames: 0.42 s + 2 x 0.2225 s of windows
    assert (~audio["over_short_gap"]).sum() == 26 and audio["clean_song"].all()
    assert res["over_short_gap"]["status"] == "pass"
    assert res["over_short_gap"]["valid_fraction"] == pytest.approx(174 / 200, abs=1e-12)
    assert res["clean_song"]["valid_fraction"] == 1.0 and res["clean_song"]["status"] == "pass"
    # 130 frames over the gaps, 30 without a face (elsewhere): 230 / 390 valid
    assert (~audio["face_lost_too"]).sum() == 130 and audio["face_lost_too"][300:330].all()
    assert res["face_lost_too"]["valid_fraction"] == pytest.approx(230 / 390, abs=1e-12)
    assert res["face_lost_too"]["reasons"] == [
        "too few valid frames: 59.0% < 80% (33.3% over corrupt stretches of the song)"]
    # song 6.5-11.5 s over the gaps 6.98-9.98 s: 3.45 s of the 5 s take's frames
    gone = (~audio["mostly_over_gap"]).sum()
    assert gone == pytest.approx(30 * 3.445, abs=2)
    assert res["mostly_over_gap"]["reasons"] == [
        f"too few valid frames: {1 - gone / 150:.1%} < 80% ({gone / 150:.1%} over corrupt "
        f"stretches of the song)"]
    # shards: the passing takes (deep3d coefficients: exp as is, no basis to fit)
    for take in ("over_short_gap", "clean_song"):
        t = sh.assemble_take(tmp_path / take, {"identity": np.array(True)}, take, "alice",
                             takes[take][0], "train")
        v = t.arrays["valid"].astype(bool)
        np.testing.assert_array_equal(v, face[take].astype(bool) & audio[take])
        coeffs = load_npz(tmp_path / take / "coeffs.npz")
        np.testing.assert_array_equal(t.arrays["pose"][v], coeffs["pose"][v])
        assert not t.arrays["pose"][~v].any() and not t.arrays["exp"][~v].any()
    assert t.arrays["valid"].all()                                  # the clean song's take
