"""Demo singers: files in the user's raw form, truth consistent with the media, FaceMesh sees the
truth."""
from __future__ import annotations

import csv

import av
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from preprocessing import demo
from preprocessing.demo import BLINK_DURATION, BLINK_INTERVAL, CAM_SR, FPS, LONG_MIN, demo_rows

TAKES = [r["take"] for r in demo_rows(2, 2)]
SECONDS = 12          # conftest: generate(out, subjects=2, songs=2, seconds=12, seed=0)


def truth(demo_dir, take):
    with np.load(demo_dir / take.split("_")[0] / f"{take}.truth.npz") as z:
        return {k: z[k] for k in z.files}


def song_truth(demo_dir, song):
    with np.load(demo_dir / "songs" / f"{song}.truth.npz") as z:
        return {k: z[k] for k in z.files}


def runs(mask):
    """[(start, end_exclusive)] of the runs of 1 in a 0/1 array."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, int), 0]))
    return list(zip(edges[::2], edges[1::2]))


def decode_audio(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().mean(0) for f in c.decode(audio=0)])


# ------------------------------------------------------------------------------------------- files
def test_sample_sheet_and_files(demo_dir):
    with open(demo_dir / "samples.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows == demo_rows(2, 2)
    for r in rows:
        assert (demo_dir / r["video"]).stat().st_size > 100_000
        assert (demo_dir / r["song"]).exists()
    for j in (1, 2):
        for f in (f"song{j}.wav", f"song{j}.stems/vocals.wav", f"song{j}.stems/music.wav",
                  f"song{j}.truth.npz"):
            assert (demo_dir / "songs" / f).exists(), f
    assert not [p for p in demo_dir.rglob("*") if ".tmp" in p.name]          # atomic writes only


def test_song_stems_sum_to_mix_and_truth_matches_audio(demo_dir):
    tempi = []
    for j in (1, 2):
        mix, sr = sf.read(demo_dir / "songs" / f"song{j}.wav", dtype="float32")
        voc, sr_v = sf.read(demo_dir / "songs" / f"song{j}.stems" / "vocals.wav", dtype="float32")
        mus, sr_m = sf.read(demo_dir / "songs" / f"song{j}.stems" / "music.wav", dtype="float32")
        assert sr == sr_v == sr_m == 44100 and mix.ndim == 1
        assert len(mix) == len(voc) == len(mus) == SECONDS * 44100
        np.testing.assert_array_equal(mix, voc + mus)
        assert 0.5 < np.abs(mix).max() <= 1.0
        t = song_truth(demo_dir, f"song{j}")
        assert int(t["sr"]) == 44100 and t["vocal_activity"].shape == (SECONDS * 100,)
        assert t["vocal_activity"].dtype == np.uint8 and 0.15 < t["vocal_activity"].mean() < 0.8
        # the vocal stem sounds exactly where the truth says somebody sings
        # (row r is the instant r/100 s; window r covers [r/100, (r+1)/100): look at whole silent
        # windows)
        rms = np.sqrt(np.mean(voc[: SECONDS * 44100].reshape(-1, 441) ** 2, 1))
        act = t["vocal_activity"]
        silent = (act == 0) & (np.r_[act[1:], 0] == 0)
        assert rms[silent].max() < 1e-6
        assert np.median(rms[act == 1]) > 0.02
        # syllables: inside the song, ordered, pitch in a singing range, matching the activity
        syl = t["syllables"]
        assert (syl.shape[1] == 3 and np.all(np.diff(syl[:, 0]) > 0)
                and np.all(syl[:, 1] > syl[:, 0]))
        assert 150 < syl[:, 2].min() and syl[:, 2].max() < 800
        # pitch of the vocal stem in the middle of the longest syllable = the syllable's pitch
        k = int(np.argmax(syl[:, 1] - syl[:, 0]))
        mid = int((syl[k, 0] + syl[k, 1]) / 2 * sr)
        seg = voc[mid - 4096:mid + 4096] * np.hanning(8192)
        spec = np.abs(np.fft.rfft(seg, 8 * 8192))
        f = np.fft.rfftfreq(8 * 8192, 1 / sr)
        band = (f > syl[k, 2] * 0.8) & (f < syl[k, 2] * 1.2)
        assert abs(f[band][np.argmax(spec[band])] / syl[k, 2] - 1) < 0.02
        # sections tile the song: intro ... outro with an instrumental gap, no singing outside
        # verses
        labels, sec = list(t["section_labels"]), t["sections"]
        assert (labels[0] == "intro" and labels[-1] == "outro" and "gap" in labels
                and "verse" in labels)
        assert (sec[0, 0] == 0 and abs(sec[-1, 1] - SECONDS) < 1e-9
                and np.allclose(sec[1:, 0], sec[:-1, 1]))
        for (a, b), lab in zip(sec, labels):
            if lab != "verse":
                assert t["vocal_activity"][int(np.ceil(a * 100)):int(b * 100)].sum() == 0, lab
        # beats: steady at the stated tempo; the kick makes the music's onsets fall on the beat grid
        beats = t["beat_times"]
        np.testing.assert_allclose(np.diff(beats), 60 / float(t["tempo_bpm"]), atol=1e-9)
        tempi.append(float(t["tempo_bpm"]))
        hop = 441
        env = np.sqrt(np.mean(mus[: len(mus) // hop * hop].reshape(-1, hop) ** 2, 1))
        onset = np.maximum(np.diff(env), 0)
        peaks = signal.find_peaks(onset, height=onset.max() * 0.3)[0] / 100
        dist = np.abs(peaks[:, None] - beats[None, :]).min(1)
        assert np.mean(dist < 0.02) > 0.9
    assert abs(tempi[0] - tempi[1]) > 5                                    # songs differ


# ------------------------------------------------------------------------------------------ videos
@pytest.mark.parametrize("take", TAKES)
def test_video_streams_and_duration(demo_dir, take):
    t = truth(demo_dir, take)
    n = len(t["pose"])
    with av.open(str(demo_dir / take.split("_")[0] / f"{take}.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.average_rate == 30
                and (v.codec_context.width, v.codec_context.height) == (640, 480))
        assert a.codec_context.name == "aac" and a.rate == CAM_SR
        frames = list(c.decode(video=0))
    assert len(frames) == n
    assert [f.pts * f.time_base for f in frames[:3]] == [0, pytest.approx(1 / 30),
                                                         pytest.approx(2 / 30)]
    delay = -float(t["offset_s"])
    assert 0.2 <= delay <= 3.0
    assert 0.35 <= n / FPS - (delay + SECONDS) <= 0.65                       # d + song + ~0.5 s
    for k in ("pose", "mouth_open", "eye_closure", "long_mask", "blink_mask", "vocal_activity"):
        assert len(t[k]) == n, k
    assert t["pose"].shape == (n, 6) and t["pose"].dtype == np.float32
    assert t["mouth_open"].dtype == t["eye_closure"].dtype == np.float32
    assert t["long_mask"].dtype == t["blink_mask"].dtype == t["vocal_activity"].dtype == np.uint8


@pytest.mark.parametrize("take", TAKES)
def test_camera_audio_is_the_song_delayed_by_minus_offset(demo_dir, take):
    t = truth(demo_dir, take)
    cam = decode_audio(demo_dir / take.split("_")[0] / f"{take}.mp4")
    # AAC pads its last frame
    assert abs(len(cam) - len(t["pose"]) * CAM_SR / FPS) < 2048
    song, sr = sf.read(demo_dir / "songs" / f"{take.split('_')[1]}.wav", dtype="float32")
    ref = signal.resample_poly(song, 160, 147)                                # 44.1 -> 48 kHz
    cc = signal.fftconvolve(cam, ref[::-1], mode="full")
    k = int(np.argmax(cc))
    y0, y1, y2 = cc[k - 1:k + 2]
    lag = (k - (len(ref) - 1) + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / CAM_SR
    assert abs(lag - (-float(t["offset_s"]))) < 0.001
    assert cc[k] / np.sqrt(np.sum(cam ** 2) * np.sum(ref ** 2)) > 0.5     # it really is the song


# ------------------------------------------------------------------------------------------- truth
@pytest.mark.parametrize("take", TAKES)
def test_mouth_follows_the_singing(demo_dir, take):
    t = truth(demo_dir, take)
    s = song_truth(demo_dir, take.split("_")[1])
    mouth, act = t["mouth_open"], t["vocal_activity"]
    assert np.all(mouth[act == 0] == 0)
    assert 0 <= mouth.min() and mouth.max() <= 1 and mouth.max() > 0.7
    # frame i shows song time i/30 + offset_s: compare with the song's 100 Hz truth there
    ts = np.arange(len(mouth)) / FPS + float(t["offset_s"])
    inside = (ts >= 0) & (ts < SECONDS - 0.01)
    ref = s["mouth_open_100hz"][np.round(ts[inside] * 100).astype(int).clip(0, SECONDS * 100 - 1)]
    assert np.corrcoef(mouth[inside], ref)[0, 1] > 0.9
    assert act[~inside].sum() == 0 and mouth[~inside].max() == 0            # silent before/after


@pytest.mark.parametrize("take", TAKES)
def test_blinks_and_long_closures(demo_dir, take):
    t = truth(demo_dir, take)
    eye, blink, long_ = t["eye_closure"], t["blink_mask"], t["long_mask"]
    np.testing.assert_array_equal((eye >= 0.5), (blink | long_).astype(bool))
    assert not np.any(blink & long_)
    ev = t["events"]
    blinks, longs = ev[ev[:, 3] == 0], ev[ev[:, 3] == 1]
    assert len(longs) >= 1 and len(blinks) >= 4
    for a, b, dur, _ in longs:
        assert dur >= LONG_MIN and (b - a) / FPS >= LONG_MIN - 1 / FPS
        assert long_[int(a):int(b)].all()
    # long closures happen on sung sustained notes
    s = song_truth(demo_dir, take.split("_")[1])
    for a, _b in t["long_events_s"] + float(t["offset_s"]):
        k = np.searchsorted(s["syllables"][:, 0], a) - 1
        assert s["sustained"][k] and s["syllables"][k, 0] <= a < s["syllables"][k, 1]
    lo, hi = BLINK_DURATION
    assert np.all((blinks[:, 2] >= lo) & (blinks[:, 2] <= hi))
    # closed frames per blink
    frames = blinks[:, 1] - blinks[:, 0]
    assert np.all((frames >= np.floor(lo * FPS)) & (frames <= np.ceil(hi * FPS) + 1))
    be = t["blink_events_s"]
    gaps = np.diff(be[:, 0])
    no_long_between = [not np.any((t["long_events_s"][:, 0] > be[i, 0])
                                  & (t["long_events_s"][:, 0] < be[i + 1, 0]))
                       for i in range(len(be) - 1)]
    gaps = gaps[no_long_between]
    assert len(gaps) >= 3 and np.all((gaps >= BLINK_INTERVAL[0]) & (gaps <= BLINK_INTERVAL[1]))
    # each subject stays in its own sub-range
    assert np.all((be[:, 1] - be[:, 0] >= t["style_blink_duration"][0] - 1e-6)
                  & (be[:, 1] - be[:, 0] <= t["style_blink_duration"][1] + 1e-6))


@pytest.mark.parametrize("take", TAKES)
def test_head_pose_bounded_and_driven_by_the_music(demo_dir, take):
    t = truth(demo_dir, take)
    pose = t["pose"].astype(np.float64)
    assert np.abs(pose[:, :3]).max() < 0.3 and np.abs(pose[:, 3:]).max() < 0.1
    assert pose[:, 2].std() > 0.04                                         # enough roll to measure
    speed = np.linalg.norm(np.diff(pose[:, :3], axis=0), axis=1) * FPS
    ts = np.arange(1, len(pose)) / FPS + float(t["offset_s"])
    playing = (ts > 0.2) & (ts < SECONDS - 0.5)
    # the head moves faster when the music is loud (energy: the music stem's loudness, 0
    # before/after)
    energy = t["music_energy"][1:]
    music, sr = sf.read(demo_dir / "songs" / f"{take.split('_')[1]}.stems" / "music.wav",
                        dtype="float32")
    idx = (ts * sr).astype(int)
    rms = np.array([np.sqrt(np.mean(music[max(i - 1100, 0):i + 1100] ** 2)) if 0 <= i < len(music)
                    else 0.0
                    for i in idx])
    assert np.corrcoef(rms, energy)[0, 1] > 0.9
    assert np.corrcoef(speed, energy)[0, 1] > 0.6
    loud, quiet = energy >= np.quantile(energy, 0.75), energy <= np.quantile(energy, 0.25)
    assert speed[loud].mean() > 2.5 * speed[quiet].mean()
    # speed rises on the beat: mean speed in the 150 ms after beats > mean speed in the 150 ms
    # before
    s = song_truth(demo_dir, take.split("_")[1])
    beats = s["beat_times"][(s["beat_times"] > 0.5) & (s["beat_times"] < SECONDS - 1)]
    since = ts[:, None] - beats[None, :]
    after = ((since > 0) & (since < 0.15)).any(1)
    before = ((since > -0.2) & (since < -0.05)).any(1)
    assert speed[after & playing].mean() > 1.3 * speed[before & playing].mean()
    # direction changes: the sign of the yaw velocity flips several times
    vel = np.diff(pose[:, 1])
    assert np.sum(np.diff(np.sign(vel[np.abs(vel) > 1e-4])) != 0) >= 3


def test_subjects_differ_in_style(demo_dir):
    a, b = truth(demo_dir, "singer1_song1"), truth(demo_dir, "singer2_song1")

    def speed(t):
        return np.mean(np.linalg.norm(np.diff(t["pose"][:, :3], axis=0), axis=1)) * FPS

    def dur(t):
        return np.mean(np.diff(t["blink_events_s"], axis=1))

    assert max(speed(a), speed(b)) > 1.3 * min(speed(a), speed(b))
    assert abs(dur(a) - dur(b)) > 0.04
    assert not np.allclose(a["style_tint"], b["style_tint"])
    assert float(a["style_mirror"]) != float(b["style_mirror"])


# -------------------------------------------------------------------------- FaceMesh sees the truth
def facemesh(path):
    """Per-frame FaceMesh landmarks (pixels), tracking mode as the track step runs it."""
    import mediapipe as mp

    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                         max_num_faces=1) as fm, \
            av.open(str(path)) as c:
        for f in c.decode(video=0):
            r = fm.process(f.to_ndarray(format="rgb24"))
            lm = r.multi_face_landmarks[0].landmark if r.multi_face_landmarks else None
            out.append([[p.x * 640, p.y * 480] for p in lm] if lm else np.full((478, 2), np.nan))
    return np.array(out)


@pytest.mark.parametrize("take", ["singer1_song1", "singer2_song2"])
def test_facemesh_measures_what_the_truth_says(demo_dir, take):
    t = truth(demo_dir, take)
    L = facemesh(demo_dir / take.split("_")[0] / f"{take}.mp4")
    assert not np.isnan(L).any()
    eye_w = np.linalg.norm(L[:, 33] - L[:, 263], axis=1)
    line = L[:, [362, 263]].mean(1) - L[:, [33, 133]].mean(1)
    mouth = np.linalg.norm(L[:, 13] - L[:, 14], axis=1) / eye_w
    lids = (np.linalg.norm(L[:, 159] - L[:, 145], axis=1)
            + np.linalg.norm(L[:, 386] - L[:, 374], axis=1)) / eye_w
    # the truth pose has the dataset's signs (preprocessing.coeffs): measured in the image, y up
    # nose tip right of the oval
    seen = {"yaw": (L[:, 1, 0] - L[:, [234, 454], 0].mean(1)) / eye_w,
            # counter-clockwise eye line
            "roll": np.arctan2(-line[:, 1], line[:, 0]),
            "tx": (L[:, :, 0].mean(1) - 320) / 480, "ty": (240 - L[:, :, 1].mean(1)) / 480,
            # face size
            "tz": np.log(np.sqrt(((L - L.mean(1, keepdims=True)) ** 2).sum(2).mean(1)))}
    r = {k: np.corrcoef(v, t["pose"][:, "pitch yaw roll tx ty tz".split().index(k)])[0, 1]
         for k, v in seen.items()}
    # measured (seed 0): singer1_song1 yaw 0.96 roll 0.96 tx 0.80 ty 0.95 tz 0.81; singer2_song2
    # 0.98 0.99 0.80 0.90 0.89
    assert (r["roll"] >= 0.95 and r["yaw"] >= 0.9 and r["ty"] >= 0.85 and r["tx"] >= 0.6
            and r["tz"] >= 0.7), r
    assert np.corrcoef(mouth, t["mouth_open"])[0, 1] >= 0.9
    assert np.corrcoef(lids, t["eye_closure"])[0, 1] <= -0.9
    # closures found from the lids (min-max, >= 0.5 as the eyes step does) match the truth's events
    au = (lids.max() - lids) / (lids.max() - lids.min())
    found, true = runs(au >= 0.5), runs(t["blink_mask"] | t["long_mask"])
    tp = sum(any(a < d and c < b for c, d in found) for a, b in true)
    precision, recall = tp / len(found), tp / len(true)
    assert 2 * precision * recall / (precision + recall) >= 0.9
    for a, b in runs(t["long_mask"]):
        match = [(c, d) for c, d in found if c < b and a < d]
        assert len(match) == 1 and abs(match[0][0] - a) <= 2 and abs(match[0][1] - b) <= 2


# ------------------------------------------------------------------------------- determinism + CLI
def test_cli_is_deterministic_and_equals_the_api(tmp_path, run_cli):
    run_cli(["preprocessing.demo", "--out", tmp_path / "cli dir", "--subjects", "1", "--songs", "1",
             "--seconds", "6", "--seed", "3"])
    demo.generate(tmp_path / "api", subjects=1, songs=1, seconds=6, seed=3)
    files = sorted(p.relative_to(tmp_path / "api")
                   for p in (tmp_path / "api").rglob("*") if p.is_file())
    assert len(files) == 7
    for f in files:
        assert (tmp_path / "cli dir" / f).read_bytes() == (tmp_path / "api" / f).read_bytes(), f
    other = tmp_path / "seed4"
    demo.generate(other, subjects=1, songs=1, seconds=6, seed=4)
    assert ((other / "songs/song1.wav").read_bytes()
            != (tmp_path / "api/songs/song1.wav").read_bytes())


def test_cli_refuses_bad_arguments(tmp_path, run_cli):
    proc = run_cli(["preprocessing.demo", "--out", tmp_path, "--seconds", "3"], check=False)
    assert proc.returncode == 2
    assert (proc.stderr.strip().splitlines()[-1]
            == "musicface: demo: seconds must be at least 6 (got 3.0)")
    assert not (tmp_path / "samples.tsv").exists()
