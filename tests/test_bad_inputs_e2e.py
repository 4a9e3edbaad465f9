"""The DAG's bad-input contract, end to end (docs/bad-input.md).

One ``snakemake dataset`` run over a user-style sample sheet that mixes two good demo takes with bad
and awkward recordings made from the same demo material (``tests/badinputs.py``). Then:

* the run exits 0 and ``dataset/qc.tsv`` lists every take;
* every bad take failed at the expected step with a specific reason (one root cause, no collateral
  reasons), and that step's log holds exactly one line ``musicface: take 'T' step 'S': <reason>``;
  downstream steps each log one "skipped, upstream step ... failed" line; no log holds a traceback;
* awkward but good takes (variable frame rate, 25 fps, a path with spaces and quotes) pass and their
  shard arrays line up with the demo truth frame by frame;
* a second, fresh run over the passing takes only gives the same split and the same shard arrays:
  the bad takes changed nothing of the good ones.

Slow (two DAG runs, ~3-6 min on 2 shared cores).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import badinputs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
FPS = 30
MIN_FRAMES = 128          # qc.min_frames of the run (config below)
MIN_CONFIDENCE = 7.0      # sync.min_confidence of the run
STEPS = ["ingest", "track", "sync", "mfcc", "coeffs", "au45", "eyes"]  # per-take steps with a log
SONG = "demo/songs/song1.wav"
BROKEN_SONG = "bad/broken song.wav"
NAN_SONG = "bad/nan song.wav"
OTHER_SONG = "bad/other song.wav"  # a real song, but not the one played during the take
LOOP_SONG = "bad/loop song.wav"    # the demo song twice in a row, sample for sample
ADTS_SONG = "bad/adts song.aac"    # the demo song as raw ADTS AAC (its encoder delay unsignalled)
CORRUPT_SONG = "bad/corrupt song.mp3"  # the demo song as MP3, its packets from 3 to 6 s damaged
QUOTED = "bad/it's \"take\" 7.mp4"

# take -> (subject, video, song): paths relative to the sheet, as a user writes them
SHEET = {
    "singer1_song1": ("singer1", "demo/singer1/singer1_song1.mp4", SONG),
    "singer2_song1": ("singer2", "demo/singer2/singer2_song1.mp4", SONG),
    "truncated": ("singer1", "bad/truncated.mp4", SONG),
    "zero_bytes": ("singer1", "bad/zero.mp4", SONG),
    "text_file": ("singer2", "bad/text.mp4", SONG),
    "missing_video": ("singer1", "bad/no such take.mp4", SONG),
    "no_audio": ("singer2", "bad/no audio.mp4", SONG),
    "silent_audio": ("singer1", "bad/silent.mp4", SONG),
    "vfr": ("singer1", "bad/vfr.mp4", SONG),
    "fps25": ("singer2", "bad/fps25.mp4", SONG),
    "too_short": ("singer1", "bad/short.mp4", SONG),
    "no_face": ("singer2", "bad/no face.mp4", SONG),
    "quoted_path": ("singer1", QUOTED, SONG),
    "bad_song1": ("singer1", "demo/singer1/singer1_song1.mp4", BROKEN_SONG),
    "bad_song2": ("singer2", "demo/singer2/singer2_song1.mp4", BROKEN_SONG),
    "wrong_song": ("singer1", "demo/singer1/singer1_song1.mp4", OTHER_SONG),
    "nan_song": ("singer2", "demo/singer2/singer2_song1.mp4", NAN_SONG),
    "loop_song": ("singer1", "bad/excerpt 2-7 s.mp4", LOOP_SONG),
    "joined_ts": ("singer2", "bad/joined.ts", SONG),
    "avi_mp3": ("singer1", "bad/old camera.avi", ADTS_SONG),
    "corrupt_song": ("singer2", "demo/singer2/singer2_song1.mp4", CORRUPT_SONG),
}
PASS = ["singer1_song1", "singer2_song1", "vfr", "fps25", "quoted_path", "joined_ts", "avi_mp3"]
# take -> (step that fails it, unit named in the log, stable part of the reason). Step "qc" means no
# step failed: QC judged the finished outputs.
FAIL = {
    "truncated": ("ingest", "truncated",
                  "unreadable media file 'truncated.mp4' (corrupt, truncated"),
    "zero_bytes": ("ingest", "zero_bytes", "empty file (0 bytes)"),
    "text_file": ("ingest", "text_file", "unreadable media file 'text.mp4' (corrupt, truncated"),
    "missing_video": ("ingest", "missing_video", "not found"),
    "no_face": ("track", "no_face", "no face found in any frame"),
    "bad_song1": ("song", "broken_song",
                  "unreadable media file 'broken song.wav' (corrupt, truncated"),
    "bad_song2": ("song", "broken_song",
                  "unreadable media file 'broken song.wav' (corrupt, truncated"),
    "nan_song": ("song", "nan_song", "contains NaN or infinite samples"),
    "too_short": ("qc", None, f"too short: 90 frames < {MIN_FRAMES} (one training window)"),
    "silent_audio": ("qc", None, "low sync confidence: "),
    "wrong_song": ("qc", None, "low sync confidence: "),
    "loop_song": ("qc", None, "low sync confidence: "),
    "corrupt_song": ("qc", None, "too few valid frames: "),
}
# which later steps read each step's output (directly or not): they log "skipped, upstream ..."
DOWNSTREAM = {
    "ingest": ["track", "sync", "mfcc", "coeffs", "au45", "eyes"],
    "track": ["coeffs", "au45", "eyes"],
    "song": ["sync", "mfcc"],
}
SHARD_SHAPES = {  # docs/data.md, shards: name -> (dtype, shape with N, M symbolic)
    "mfcc_vocals": ("float32", ("M", 26)), "mfcc_music": ("float32", ("M", 26)),
    "mfcc_mix": ("float32", ("M", 26)), "exp": ("float32", ("N", 64)),
    "pose": ("float32", ("N", 6)), "au45": ("float32", ("N",)), "eye_long": ("float32", ("N",)),
    "eye_blink": ("uint8", ("N",)), "valid": ("uint8", ("N",)),
    "landmarks": ("float16", ("N", 478, 2)),
}
CONFIG = f"""# small, explicit settings for this test (the thresholds the assertions use)
sync:
  min_confidence: {MIN_CONFIDENCE}
qc:
  min_frames: {MIN_FRAMES}
  min_valid_fraction: 0.8
split:
  by: take
  test_fraction: 0.1
  seed: 0
"""


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    """The user's raw folder: demo takes (2 singers x 1 song x 10 s, seed 1) + bad recordings."""
    import soundfile as sf

    from preprocessing.demo import generate, render_song, write_wav

    root = tmp_path_factory.mktemp("bad inputs")  # a space in every path of the run
    generate(root / "demo", subjects=2, songs=1, seconds=10, seed=1)
    s1, s2 = root / "demo/singer1/singer1_song1.mp4", root / "demo/singer2/singer2_song1.mp4"
    bad = root / "bad"
    bad.mkdir()
    badinputs.truncated(s1, bad / "truncated.mp4", 0.5)
    badinputs.zero_bytes(bad / "zero.mp4")
    badinputs.text_as_mp4(bad / "text.mp4")
    badinputs.remux(s2, bad / "no audio.mp4", audio=False)
    badinputs.remux(s1, bad / "silent.mp4", silent_audio=True)
    shown = {"vfr": badinputs.variable_frame_rate(s1, bad / "vfr.mp4", seed=0),
             "fps25": badinputs.constant_rate(s2, bad / "fps25.mp4", fps=25),
             "joined_ts": badinputs.joined_mpegts(s2, bad / "joined.ts", split=150)}
    badinputs.avi_mp3(s1, bad / "old camera.avi", damaged_s=(3.0, 4.0))
    badinputs.adts_song(root / SONG, root / ADTS_SONG)
    x, sr = sf.read(str(root / SONG), dtype="float32", always_2d=True)
    badinputs.write_audio_file(bad / "clean song.mp3", x, sr, "libmp3lame")
    badinputs.damage_audio(bad / "clean song.mp3", root / CORRUPT_SONG, 3.0, 6.0)
    badinputs.looped(root / SONG, root / LOOP_SONG)
    badinputs.excerpt(s1, bad / "excerpt 2-7 s.mp4", 60, 210)  # inside both copies of the loop
    # 3 s from 5 s in: 90 frames. (Not from 4 s in: there the demo song's drums and chords repeat
    # 1.5 bars later and 3 s of camera audio fit both places about equally: sync confidence 2.5.)
    badinputs.excerpt(s1, bad / "short.mp4", 150, 240)
    badinputs.no_face(s2, bad / "no face.mp4", seconds=6.0)
    badinputs.copy(s1, root / QUOTED)
    badinputs.corrupt_header(root / SONG, root / BROKEN_SONG)
    badinputs.nan_samples(root / SONG, root / NAN_SONG)
    other = render_song(0, 1, 10.0)  # demo song 1 of seed 0: same style, other tune and tempo
    write_wav(root / OTHER_SONG, other.mix, other.sr)
    truth = {s: np.load(root / f"demo/{s}/{s}_song1.truth.npz") for s in ("singer1", "singer2")}
    truth = {s: {k: z[k] for k in z.files} for s, z in truth.items()}
    return {"root": root, "shown": shown, "truth": truth}


def write_sheet(path: Path, takes) -> Path:
    """samples.tsv as a user types it: tab-separated, paths unquoted (spaces and quotes as they
    are)."""
    rows = ["take\tsubject\tvideo\tsong"] + ["\t".join([t, *SHEET[t]]) for t in takes]
    path.write_text("\n".join(rows) + "\n")
    return path


def run_dataset(raw: dict, name: str, takes) -> dict:
    """``snakemake --cores 2 dataset`` over a sheet of ``takes`` in a fresh folder ``name``."""
    root = raw["root"]
    sheet = write_sheet(root / f"samples-{name}.tsv", takes)
    cfg = root / "test-config.yaml"
    cfg.write_text(CONFIG)
    work = root / name
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", "dataset", "-s", str(REPO / "Snakefile"),
                           "-d", str(work), "--configfile", str(cfg), "--config",
                           f"samples={sheet}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)
    qc = pd.read_csv(work / "dataset/qc.tsv", sep="\t", dtype=str, keep_default_na=False) \
        if (work / "dataset/qc.tsv").exists() else None
    return {"dir": work, "rc": proc.returncode, "out": proc.stdout,
            "qc": qc.set_index("take") if qc is not None else None}


@pytest.fixture(scope="module")
def full(raw) -> dict:
    """The one run over every take, good and bad."""
    return run_dataset(raw, "run all", list(SHEET))


@pytest.fixture(scope="module")
def clean(raw, full) -> dict:
    """A fresh run over the takes that passed in ``full`` only (the bad ones left out of the
    sheet)."""
    passed = [t for t in SHEET if full["qc"] is not None and t in full["qc"].index
              and full["qc"].loc[t, "status"] == "pass"]
    return run_dataset(raw, "run clean", passed)


def shard_takes(work: Path) -> dict[str, dict]:
    """take -> {"arrays": {name: ndarray}, "attrs": {...}, "file": name} from
    dataset/shards/*.h5."""
    out = {}
    for f in sorted((work / "dataset/shards").glob("*.h5")):
        with h5py.File(f, "r") as h:
            for take, g in h["takes"].items():
                out[take] = {"arrays": {k: g[k][()] for k in g}, "attrs": dict(g.attrs),
                             "file": f.name}
    return out


def log_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(errors="replace").splitlines()
            if ln.startswith("musicface:")]


def _sync(full, take) -> dict:
    return json.loads((full["dir"] / f"work/takes/{take}/sync.json").read_text())


def corr(a, b) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# --------------------------------------------------------------------------------------- the run
def test_run_finishes_and_qc_lists_every_take(full):
    assert full["rc"] == 0, full["out"][-6000:]
    assert full["qc"] is not None
    assert sorted(full["qc"].index) == sorted(SHEET)
    assert set(full["qc"]["status"]) <= {"pass", "fail"}
    passed = set(full["qc"].index[full["qc"]["status"] == "pass"])
    assert set(PASS) <= passed, full["qc"].to_string()
    # (a FAIL take that passed is reported by test_bad_take_fails_at_its_step_with_its_reason)


@pytest.mark.parametrize("take", sorted(FAIL))
def test_bad_take_fails_at_its_step_with_its_reason(full, take):
    step, _, reason = FAIL[take]
    row = full["qc"].loc[take]
    got = row["reason"]
    if take == "wrong_song" and row["status"] == "pass":
        sync = _sync(full, take)
        pytest.fail(f"take paired with the wrong song passed QC: sync confidence "
                    f"{sync['confidence']:.2f} >= "
                    f"{MIN_CONFIDENCE:g} (peak_to_second "
                    f"{sync['details'].get('peak_to_second', float('nan')):.2f}),"
                    f" offset {sync['offset_s']:+.3f} s")
    assert row["status"] == "fail"
    assert "; " not in got, f"{take}: more than one reason (collateral failures): {got}"
    if step == "qc":
        assert got.startswith(reason), got
    else:
        assert got.startswith(f"{step}: "), got
        assert reason in got, got
    # the terminal / split log names the take once with the same reason
    lines = [ln for ln in log_lines(full["dir"] / "logs/split.log") if f"take '{take}'" in ln]
    assert lines == [f"musicface: take '{take}' failed QC: {got}"]


@pytest.mark.parametrize("take", sorted(t for t, f in FAIL.items() if f[0] != "qc"))
def test_failing_step_logs_one_line_and_downstream_steps_skip(full, take):
    step, unit, _ = FAIL[take]
    reason = full["qc"].loc[take, "reason"].split(": ", 1)[1]
    logs = full["dir"] / "logs"
    kind = "song" if step == "song" else "take"  # song-level steps name the song
    assert log_lines(logs / step / f"{unit}.log") == [f"musicface: {kind} '{unit}' step '{step}': "
                                                      f"{reason}"]
    if step == "song":  # the song's own separation is skipped too
        assert log_lines(logs / "separate" / f"{unit}.log") == [
            f"musicface: song '{unit}' step 'separate': skipped, upstream step 'song' failed: "
            f"{reason}"]
    for later in DOWNSTREAM[step]:
        assert log_lines(logs / later / f"{take}.log") == [
            f"musicface: take '{take}' step '{later}': skipped, upstream step '{step}' failed: "
            f"{reason}"]
    earlier = [s for s in STEPS if s != step and s not in DOWNSTREAM[step]]
    for s in earlier:  # steps that do not depend on the failed one ran normally
        assert log_lines(logs / s / f"{take}.log") == [], s


def test_no_traceback_anywhere(full):
    """Expected bad input is a one-line reason; a traceback would mean an unforeseen crash (a
    bug)."""
    logs = sorted((full["dir"] / "logs").rglob("*.log"))
    assert len(logs) >= len(SHEET) * len(STEPS)
    crashed = [str(p.relative_to(full["dir"])) for p in logs
               if "Traceback" in p.read_text(errors="replace")]
    assert crashed == []
    assert "Traceback" not in full["out"]
    # passing takes log no musicface: line in any step
    for take in PASS:
        for s in STEPS:
            assert log_lines(full["dir"] / "logs" / s / f"{take}.log") == [], (take, s)


# ------------------------------------------------------------------------------- sync fallbacks
def test_no_audio_track_falls_back_to_mouth_envelope(full, raw):
    sync = _sync(full, "no_audio")
    assert sync["method"] == "mouth-envelope"
    assert sync["details"]["why_not_camera"] == "no audio track"
    row = full["qc"].loc["no_audio"]
    if row["status"] == "pass":  # accepted: then the offset must be right
        assert abs(sync["offset_s"] - float(raw["truth"]["singer2"]["offset_s"])) < 1 / FPS
    else:  # rejected honestly: the only reason is the confidence, below the threshold, and why
        assert sync["confidence"] < MIN_CONFIDENCE
        assert row["reason"] == (f"low sync confidence: {sync['confidence']:.2f} < "
                                 f"{MIN_CONFIDENCE:g} (aligned by mouth movement: no audio track)")


def test_silent_camera_audio_fails_on_confidence(full):
    sync = _sync(full, "silent_audio")
    assert sync["method"] == "mouth-envelope"
    assert sync["details"]["why_not_camera"] == "camera audio is silent"
    assert sync["confidence"] < MIN_CONFIDENCE
    assert full["qc"].loc["silent_audio", "reason"] == (
        f"low sync confidence: {sync['confidence']:.2f} < {MIN_CONFIDENCE:g} "
        "(aligned by mouth movement: camera audio is silent)")


def test_partly_corrupt_song_costs_the_frames_over_its_gaps(full):
    """The song as an MP3 damaged from 3 to 6 s: the song step keeps what decodes (the gaps in
    song.json), the take aligns, and mfcc marks exactly the frames whose window reads a gap,
    through sync's offset and drift: about 3.5 s of the 12 s take, so it fails QC on them, saying
    so (measured: 71.3% valid, 28.7% over the gaps). Takes of the songs without gaps: every frame
    clear, the shards' valid is the face's."""
    from test_mfcc import invalid_from_gap_times

    song = json.loads((full["dir"] / "work/songs/corrupt_song/song.json").read_text())
    assert song["gaps_s"][0][0] == pytest.approx(3.0, abs=0.03)
    assert song["gaps_s"][-1][1] == pytest.approx(6.0, abs=0.03)
    take = full["dir"] / "work/takes/corrupt_song"
    sync = _sync(full, "corrupt_song")
    assert sync["confidence"] >= MIN_CONFIDENCE
    audio = np.load(take / "mfcc.npz")["valid"]
    n = len(audio)
    np.testing.assert_array_equal(audio == 0, invalid_from_gap_times(
        song["gaps_s"], sync["offset_s"], n, sync.get("drift_ppm", 0.0)))
    face = np.logical_and.reduce([np.load(take / f"{k}.npz")["valid"].astype(bool)
                                  for k in ("track", "coeffs", "eyes")])
    frac, gone = (face & (audio > 0)).mean(), 1 - audio.mean()
    assert 0.25 < gone < 0.35 and frac < 0.8
    assert full["qc"].loc["corrupt_song", "reason"] == (
        f"too few valid frames: {frac:.1%} < 80% ({gone:.1%} over corrupt stretches of the song)")
    shards = shard_takes(full["dir"])
    for t in PASS:
        d = full["dir"] / "work/takes" / t
        assert np.load(d / "mfcc.npz")["valid"].all(), t
        face = np.logical_and.reduce([np.load(d / f"{k}.npz")["valid"].astype(bool)
                                      for k in ("track", "coeffs", "eyes")])
        np.testing.assert_array_equal(shards[t]["arrays"]["valid"], face.astype(np.uint8))


# ------------------------------------------------------------------------------ awkward but good
@pytest.mark.parametrize("take, good, singer", [("vfr", "singer1_song1", "singer1"),
                                                ("fps25", "singer2_song1", "singer2")])
def test_reencoded_take_lines_up_with_truth(full, raw, take, good, singer):
    """Variable / 25 fps re-encodes: 30 fps frame count, offset within a frame, frame-exact
    content."""
    ingest = json.loads((full["dir"] / f"work/takes/{take}/ingest.json").read_text())
    shards = shard_takes(full["dir"])
    s, g = shards[take]["arrays"], shards[good]["arrays"]
    truth = raw["truth"][singer]
    n_src = len(truth["pose"])
    shown = raw["shown"][take]
    n = int(shards[take]["attrs"]["n_frames"])
    assert ingest["fps"] == FPS and ingest["n_frames"] == n
    if take == "fps25":
        assert ingest["source_fps"] == pytest.approx(25, abs=0.01) and not ingest["vfr"]
        assert n == len(shown)  # ceil(frames * 30 / 25)
    else:
        assert ingest["vfr"] is True
        assert n == n_src  # the last frame lasts the duration the mp4 stores (it was a guess)
    assert len(s["valid"]) == n and s["mfcc_mix"].shape == (-(-n * 100 // FPS), 26)
    # sync: the take starts where the original did
    offset = float(shards[take]["attrs"]["offset_s"])
    assert abs(offset - float(truth["offset_s"])) < 1 / FPS
    assert abs(offset - float(shards[good]["attrs"]["offset_s"])) < 1e-3
    # frame i of the take shows source frame shown[i]: the eye closure (sharp blinks) must match the
    # truth at lag 0 (a one-frame slip costs ~0.05 of correlation, measured)
    idx = shown[np.minimum(np.arange(n), len(shown) - 1)]
    assert s["valid"].mean() > 0.95
    lags = {lag: corr(s["au45"], truth["eye_closure"][np.clip(idx + lag, 0, n_src - 1)])
            for lag in range(-3, 4)}
    assert max(lags, key=lags.get) == 0, lags
    assert lags[0] > 0.95, lags
    # head pose: the original take's at the frames shown, up to re-encoding noise (measured median
    # |diff| <= 0.0044 rad), and closer there than one frame off
    def angle_err(lag):
        return np.abs(s["pose"][:, :3] - g["pose"][np.clip(idx + lag, 0, len(g["pose"]) - 1), :3])

    assert (np.median(angle_err(0), axis=0) < 0.01).all(), np.median(angle_err(0), axis=0)
    assert angle_err(0).mean() < min(angle_err(-1).mean(), angle_err(1).mean())
    # audio features: the same rows as the original take (same song, same offset)
    m = min(len(s["mfcc_vocals"]), len(g["mfcc_vocals"]))
    for key in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
        assert corr(s[key][:m].ravel(), g[key][:m].ravel()) > 0.999, key


def test_path_with_spaces_and_quotes_is_just_another_take(full):
    shards = shard_takes(full["dir"])
    q, g = shards["quoted_path"]["arrays"], shards["singer1_song1"]["arrays"]
    assert sorted(q) == sorted(g)
    for k in q:  # a byte copy of singer1_song1: every array identical
        assert q[k].dtype == g[k].dtype and np.array_equal(q[k], g[k]), k
    ingest = json.loads((full["dir"] / "work/takes/quoted_path/ingest.json").read_text())
    assert ingest["video"].endswith("/" + QUOTED)


# ---------------------------------------------------- repeated sections, joined files, old cameras
def test_take_inside_a_loop_fails_naming_both_offsets(full, raw):
    """The demo song twice in a row and a 5 s take inside it: both copies fit sample for sample.
    It fails QC (never a guessed offset) and the reason names the two offsets, one song apart."""
    import re

    sync = _sync(full, "loop_song")
    reason = full["qc"].loc["loop_song", "reason"]
    m = re.fullmatch(r"low sync confidence: (\S+) < 7 \(the take fits the song about as well at "
                     r"([-+]\d+\.\d+) s and ([-+]\d+\.\d+) s: a repeated section\)", reason)
    assert m, reason
    assert float(m[1]) == pytest.approx(sync["confidence"], abs=0.01)
    assert sync["confidence"] < MIN_CONFIDENCE
    song_s = json.loads((full["dir"] / "work/songs/song1/song.json").read_text())["duration_s"]
    a, b = sorted(float(x) for x in m.groups()[1:])
    truth = float(raw["truth"]["singer1"]["offset_s"]) + 2.0  # the excerpt starts 2 s into the take
    assert a == pytest.approx(truth, abs=1e-3) and b - a == pytest.approx(song_s, abs=1e-3)


def test_joined_mpegts_and_old_camera_line_up(full, raw):
    """Two MPEG-TS files joined end to end (the clock restarts at the join): every frame kept, in
    order, and the offset of the original take. An AVI from an old camera (MPEG-4 Part 2 + MP3,
    a second of its audio damaged) against the song as raw ADTS AAC: neither file can signal its
    encoder delay (23 ms each, in opposite directions), the damaged second is left out: the offset
    of the original take, to 0.1 ms."""
    shards = shard_takes(full["dir"])
    for take, good, singer in (("joined_ts", "singer2_song1", "singer2"),
                               ("avi_mp3", "singer1_song1", "singer1")):
        ingest = json.loads((full["dir"] / f"work/takes/{take}/ingest.json").read_text())
        s, g = shards[take], shards[good]
        assert int(s["attrs"]["n_frames"]) == int(g["attrs"]["n_frames"]) == ingest["n_frames"]
        assert abs(float(s["attrs"]["offset_s"]) - float(g["attrs"]["offset_s"])) < 1e-4, take
        assert abs(float(s["attrs"]["offset_s"]) - float(raw["truth"][singer]["offset_s"])) < 1e-3
        # frames line up: the eye closure against the truth peaks at lag 0
        truth = raw["truth"][singer]["eye_closure"]
        n = len(truth)
        lags = {lag: corr(s["arrays"]["au45"][:n], truth[np.clip(np.arange(n) + lag, 0, n - 1)])
                for lag in (-1, 0, 1)}
        assert max(lags, key=lags.get) == 0 and lags[0] > 0.95, (take, lags)
    joined = json.loads((full["dir"] / "work/takes/joined_ts/ingest.json").read_text())
    assert joined["joins_s"] == [pytest.approx(5.0, abs=1e-6)]
    assert _sync(full, "avi_mp3")["details"]["valid_fraction"] < 0.95


# ----------------------------------------------------------------------------------------- shards
def test_shards_hold_the_passing_takes_with_documented_shapes(full):
    from musicface.data import open_shards

    shards = shard_takes(full["dir"])
    passed = sorted(full["qc"].index[full["qc"]["status"] == "pass"])
    assert set(PASS) <= set(passed)
    assert sorted(shards) == passed
    split = pd.read_csv(full["dir"] / "dataset/split.tsv", sep="\t", dtype=str)
    assert sorted(split["take"]) == passed
    for take, d in shards.items():
        n = int(d["attrs"]["n_frames"])
        dims = {"N": n, "M": -(-n * 100 // FPS)}
        assert sorted(d["arrays"]) == sorted(SHARD_SHAPES)
        for name, (dtype, shape) in SHARD_SHAPES.items():
            a = d["arrays"][name]
            assert str(a.dtype) == dtype, (take, name, a.dtype)
            assert a.shape == tuple(dims.get(x, x) for x in shape), (take, name, a.shape)
        assert (d["attrs"]["subject"] == SHEET[take][0]
                and d["attrs"]["song"] == full["qc"].loc[take, "song"])
        assert d["attrs"]["sync_method"] == "gcc-phat"
    opened = open_shards(full["dir"] / "dataset/shards")  # the training reader accepts the set
    assert sorted(t.take for t in opened.takes()) == passed
    assert opened.subjects == ["singer1", "singer2"]


def test_bad_takes_change_nothing_of_the_good_ones(full, clean):
    assert clean["rc"] == 0, clean["out"][-6000:]
    assert sorted(clean["qc"].index) == sorted(full["qc"].index[full["qc"]["status"] == "pass"])
    assert (clean["qc"]["status"] == "pass").all()
    for name in ("split.tsv",):
        assert ((full["dir"] / "dataset" / name).read_text()
                == (clean["dir"] / "dataset" / name).read_text())
    a, b = (np.load(full["dir"] / "dataset/exp_basis.npz"),
            np.load(clean["dir"] / "dataset/exp_basis.npz"))
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
    sa, sb = shard_takes(full["dir"]), shard_takes(clean["dir"])
    assert sorted(sa) == sorted(sb)
    for take in sb:
        assert sa[take]["file"] == sb[take]["file"]
        for k, x in sb[take]["arrays"].items():
            y = sa[take]["arrays"][k]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (take, k)
        assert sa[take]["attrs"] == sb[take]["attrs"], take
