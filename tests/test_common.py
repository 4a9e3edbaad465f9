import json

import numpy as np
import pytest

from preprocessing.common import (
    FAILED_MAGIC,
    StepError,
    UpstreamFailed,
    atomic_path,
    load_json,
    load_npz,
    read_failure,
    run_step,
    save_json,
    save_npz,
)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_save_npz_roundtrip_and_deterministic_bytes(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npz(tmp_path / "a.npz", x=a)
    save_npz(tmp_path / "b.npz", x=a)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    np.testing.assert_array_equal(load_npz(tmp_path / "a.npz")["x"], a)


def test_run_step_writes_failure_records_and_one_line(tmp_path, capsys):
    outs = [tmp_path / "x.npz", tmp_path / "y.wav"]

    def bad():
        raise StepError("no audio track\nin this file")

    assert run_step("ingest", "take1", outs, bad) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["musicface: take 'take1' step 'ingest': no audio track in this file"]
    for o in outs:
        assert o.read_bytes().startswith(FAILED_MAGIC)
        assert read_failure(o) == {"unit": "take1", "step": "ingest",
                                   "reason": "no audio track in this file"}


def test_run_step_names_a_song_as_a_song(tmp_path, capsys):
    """Song-level steps (song, separate) pass kind="song": the line names the song, not a take."""
    out = tmp_path / "mix.wav"
    assert run_step("song", "my song", [out],
                    lambda: (_ for _ in ()).throw(StepError("no audio track")), kind="song") == 0
    run_step("separate", "my song", [tmp_path / "vocals.wav"], lambda: load_json(out), kind="song")
    assert capsys.readouterr().err.strip().splitlines() == [
        "musicface: song 'my song' step 'song': no audio track",
        "musicface: song 'my song' step 'separate': skipped, upstream step 'song' failed: no audio "
        "track"]
    assert read_failure(tmp_path / "vocals.wav") == {"unit": "my song", "step": "song",
                                                     "reason": "no audio track"}


def test_upstream_failure_passes_root_cause(tmp_path, capsys):
    up = tmp_path / "ingest.json"
    run_step("ingest", "t", [up], lambda: (_ for _ in ()).throw(StepError("corrupt file")))
    capsys.readouterr()
    down = tmp_path / "sync.json"
    run_step("sync", "t", [down], lambda: load_json(up))
    err = capsys.readouterr().err.strip()
    assert err == ("musicface: take 't' step 'sync': skipped, upstream step 'ingest' failed: "
                   "corrupt file")
    assert read_failure(down)["step"] == "ingest"
    with pytest.raises(UpstreamFailed, match="corrupt file"):
        load_json(down)


def test_a_bug_is_not_bad_input(tmp_path, capsys):
    """Only StepError is bad input. Any other exception is a bug: it propagates (traceback, non-zero
    exit), no failure record is written and no musicface: line is printed, strict or not."""
    out = tmp_path / "o.json"
    for strict in (False, True):
        with pytest.raises(ZeroDivisionError):
            run_step("mfcc", "t", [out], lambda: 1 / 0, strict=strict)
    assert not out.exists() and capsys.readouterr().err == ""
    bad = (_ for _ in ()).throw
    assert run_step("mfcc", "t", [out], lambda: bad(StepError("bad")), strict=True) == 1


@pytest.mark.slow
def test_planted_bug_fails_the_run_and_keep_going_carries_on(tmp_path, repo):
    """A copy of the workflow whose song step has a bug (a misspelt key): ``snakemake --keep-going``
    exits non-zero, the song job fails with its traceback in its log and no output (no failure
    record that would turn the bug into a QC reason), and the takes' ingest jobs, which do not
    depend on it, still finish."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from preprocessing.media import write_video
    from test_media import code_frame, write_audio_file

    code = tmp_path / "code"
    shutil.copytree(repo, code, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "tests", "docs", "bench", "work", "dataset", "runs", "logs", ".snakemake",
        "*.pyc"))
    song_py = code / "preprocessing/song.py"
    src = song_py.read_text()
    assert src.count('"source_sr": a["sample_rate"]') == 1
    song_py.write_text(src.replace('"source_sr": a["sample_rate"]',
                                   '"source_sr": a["sample_rate_hz"]'))
    raw = tmp_path / "raw"
    raw.mkdir()
    for t in ("t1", "t2"):
        write_video(raw / f"{t}.mp4", (code_frame(k) for k in range(10)))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    write_audio_file(raw / "s.wav", tone[:, None].astype(np.float32), 16000, "pcm_s16le")
    (raw / "samples.tsv").write_text("take\tsubject\tvideo\tsong\nt1\ta\tt1.mp4\ts.wav\n"
                                     "t2\ta\tt2.mp4\ts.wav\n")
    work = tmp_path / "work dir"
    targets = ["work/songs/s/mix.wav", "work/takes/t1/ingest.json", "work/takes/t2/ingest.json"]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), *targets, "--cores", "1", "--keep-going",
         "-s", str(code / "Snakefile"), "-d", str(work), "--config",
         f"samples={raw / 'samples.tsv'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "Error in rule song" in proc.stdout
    log = (work / "logs/song/s.log").read_text()
    assert "Traceback" in log and "KeyError: 'sample_rate_hz'" in log
    assert "musicface:" not in log
    assert not any((work / f"work/songs/s/{f}").exists() for f in ("mix.wav", "song.json"))
    for t in ("t1", "t2"):  # --keep-going: the jobs that do not need the song ran
        assert load_json(work / f"work/takes/{t}/ingest.json")["n_frames"] == 10


def test_save_json(tmp_path):
    save_json(tmp_path / "a.json", {"b": np.float32(1.5), "a": np.arange(2)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [0, 1], "b": 1.5}


def test_atomic_outputs_get_umask_mode(tmp_path):
    from preprocessing.common import _UMASK
    save_json(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~_UMASK
    assert 0o666 & ~_UMASK != 0o600 or _UMASK == 0o066  # i.e. not mkstemp's private mode


def test_save_wav_is_byte_deterministic_and_readable(tmp_path):
    import time

    import soundfile as sf

    from preprocessing.common import save_wav
    a = np.random.default_rng(0).standard_normal(1600).astype(np.float32) * 0.1
    save_wav(tmp_path / "a.wav", a, 16000)
    time.sleep(1.1)
    save_wav(tmp_path / "b.wav", a, 16000)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    x, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 16000 and np.array_equal(x, a)
