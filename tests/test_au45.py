"""AU45: built-in eyelid aspect ratio, OpenFace CSV parsing/timeline mapping, the OpenFace
subprocess path."""
from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from preprocessing import landmarks as L
from preprocessing.au45 import (
    au45_from_landmarks,
    openface_command,
    openface_to_timeline,
    read_openface_csv,
)
from preprocessing.common import StepError, read_failure, save_json, save_npz, write_failure

FIX = Path(__file__).parent / "fixtures" / "openface"


# ---------------------------------------------------------------------------------------- builtin
@pytest.fixture(scope="module")
def astronaut_lm():
    """Normalised FaceMesh landmarks (478, 3) of skimage's astronaut photo (512 x 512, eyes
    open)."""
    import mediapipe as mp
    from skimage import data

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        res = fm.process(data.astronaut())
    return np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], np.float32)


def test_builtin_closure_is_exact_on_landmarks_with_known_lid_closure(astronaut_lm):
    # frame k: every upper lid point moved a fraction c_k of the way to its lower partner, so the
    # eye aspect ratio is (1 - c_k) * EAR_open and the built-in AU45 must be exactly c_k
    n = 40
    c = np.zeros(n)
    c[10:13] = [0.4, 0.9, 0.4]       # a blink
    c[20:32] = 1.0                   # fully closed
    c[35] = 0.25
    lm = np.repeat(astronaut_lm[None], n, axis=0).astype(np.float64)
    for pairs in (L.RIGHT_LID_PAIRS, L.LEFT_LID_PAIRS):
        up, lo = [u for u, _ in pairs], [d for _, d in pairs]
        lm[:, up] += c[:, None, None] * (lm[:, lo] - lm[:, up])
    # the same face in frames of different sizes: normalised coordinates differ, pixels do not
    size = np.tile([512, 512], (n, 1))
    size[30:] = [1024, 512]
    lm[30:, :, 0] *= 0.5
    lm[30:, :, 2] *= 0.5
    valid = np.ones(n, np.uint8)
    valid[5] = 0
    lm[5] = np.nan
    au45, v = au45_from_landmarks(lm.astype(np.float32), size.astype(np.int32), valid)
    assert au45.dtype == np.float32 and v.dtype == np.uint8 and au45.shape == (n,)
    np.testing.assert_array_equal(v, valid)
    assert np.isnan(au45[5])
    keep = valid.astype(bool)
    np.testing.assert_allclose(au45[keep], c[keep], atol=2e-5)
    with pytest.raises(StepError, match="no tracked face in any frame"):
        au45_from_landmarks(lm, size, np.zeros(n))


# ---------------------------------------------------------------------------------------- CSV
def test_read_openface_csv_real_format():
    rows = read_openface_csv(FIX / "openface_25fps.csv")   # ", " separators, names with spaces
    assert set(rows) == {"frame", "timestamp", "success", "confidence", "AU45_r"}
    np.testing.assert_array_equal(rows["frame"], np.arange(1, 61))
    np.testing.assert_allclose(rows["timestamp"][:3], [0.0, 0.04, 0.08])
    np.testing.assert_array_equal(np.flatnonzero(rows["success"] == 0) + 1, [20, 21, 22])
    np.testing.assert_allclose(rows["AU45_r"][29:34], [1.2, 3.1, 4.4, 3.0, 1.1])
    header = (FIX / "openface_25fps.csv").read_text().splitlines()[0].split(", ")
    assert (sum(h.endswith("_r") for h in header) == 17
            and sum(h.endswith("_c") for h in header) == 18)
    rows = read_openface_csv(FIX / "openface_30fps_comma.csv")  # "," separators, frame 10 missing
    assert 10 not in rows["frame"] and len(rows["frame"]) == 44


@pytest.mark.parametrize("name, message", [
    ("malformed_text.csv",
     "OpenFace CSV malformed_text.csv: non-numeric value 'garbage' in column AU45_r (line 7)"),
    ("malformed_ragged.csv", "OpenFace CSV malformed_ragged.csv is malformed: Error tokenizing "
                             "data. C error: Expected 40 fields in line 5, saw 42"),
    ("no_aus.csv",
     "OpenFace CSV no_aus.csv has no column AU45_r (was FeatureExtraction run with -aus?)"),
])
def test_read_openface_csv_malformed(name, message):
    with pytest.raises(StepError) as e:
        read_openface_csv(FIX / name)
    assert str(e.value) == message


def test_read_openface_csv_edge_cases(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(StepError, match="OpenFace CSV empty.csv is empty"):
        read_openface_csv(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("frame, face_id, timestamp, confidence, success, AU45_r\n")
    with pytest.raises(StepError, match="OpenFace CSV header.csv has no rows"):
        read_openface_csv(tmp_path / "header.csv")
    # rows out of order and two faces on frame 2: sorted by frame, the most confident face kept
    (tmp_path / "multi.csv").write_text(
        "frame, face_id, timestamp, confidence, success, AU45_r\n"
        "2, 0, 0.033, 0.60, 1, 4.00\n1, 0, 0.000, 0.90, 1, 0.10\n2, 1, 0.033, 0.95, 1, 0.20\n")
    rows = read_openface_csv(tmp_path / "multi.csv")
    np.testing.assert_array_equal(rows["frame"], [1, 2])
    np.testing.assert_allclose(rows["AU45_r"], [0.1, 0.2])


def test_timeline_mapping_by_timestamp():
    # 25 fps source onto 30 fps: frame i shows the source frame at or before i/30 s: floor(i * 25 /
    # 30)
    rows = read_openface_csv(FIX / "openface_25fps.csv")
    au45, valid = openface_to_timeline(rows, n_frames=72, source_fps=25)
    src = np.floor(np.arange(72) * 25 / 30 + 1e-9).astype(int)       # 0-based source frame
    expect_valid = rows["success"][src] > 0
    np.testing.assert_array_equal(valid, expect_valid.astype(np.uint8))
    np.testing.assert_allclose(au45[valid == 1],
                               rows["AU45_r"][src][expect_valid].astype(np.float32))
    assert np.isnan(au45[valid == 0]).all()
    # the blink (source frames 30-34, 1-based) lands at 30 fps frames 35..41
    np.testing.assert_array_equal(np.flatnonzero(au45 > 1.0), np.arange(35, 41))
    # beyond the end of the CSV, frames are invalid rather than holding the last row forever
    au45, valid = openface_to_timeline(rows, n_frames=90, source_fps=25)
    assert valid[:72].sum() == 72 - 4 and valid[73:].sum() == 0
    # 30 fps source with frame 10 missing from the CSV: frame 9 (0-based) held for one frame only
    rows = read_openface_csv(FIX / "openface_30fps_comma.csv")
    au45, valid = openface_to_timeline(rows, n_frames=45, source_fps=30)
    # row of frame 9, 1 period old
    assert valid[9] == 1 and au45[9] == np.float32(rows["AU45_r"][8])
    # success == 0 at frame 40
    assert valid[39] == 0
    np.testing.assert_array_equal(np.flatnonzero(au45 > 1.0), [14, 15, 16])
    # no timestamp column: (frame - 1) / source_fps
    rows2 = {k: v for k, v in rows.items() if k != "timestamp"}
    au45b, valid_b = openface_to_timeline(rows2, n_frames=45, source_fps=30)
    np.testing.assert_array_equal(valid_b, valid)
    np.testing.assert_array_equal(au45b[valid == 1], au45[valid == 1])


# --------------------------------------------------------------------------------------- subprocess
FAKE = '''#!{python}
"""Stand-in for OpenFace's FeatureExtraction: -f VIDEO -aus -out_dir DIR -> DIR/<video stem>.csv"""
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
Path(os.environ["FAKE_OPENFACE_LOG"]).write_text(" ".join(args))
if os.environ.get("FAKE_OPENFACE_FAIL"):
    print("Could not open the input video", file=sys.stderr)
    sys.exit(3)
video, out = Path(args[args.index("-f") + 1]), Path(args[args.index("-out_dir") + 1])
assert "-aus" in args and video.exists()
shutil.copy(os.environ["FAKE_OPENFACE_CSV"], out / (video.stem + ".csv"))
(out / (video.stem + "_of_details.txt")).write_text("details")
'''


@pytest.fixture
def fake_openface(tmp_path, monkeypatch):
    exe = tmp_path / "bin dir" / "FeatureExtraction"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_OPENFACE_LOG", str(tmp_path / "argv.txt"))
    monkeypatch.setenv("FAKE_OPENFACE_CSV", str(FIX / "openface_25fps.csv"))
    return exe


def _take_inputs(tmp_path, n=72):
    video = tmp_path / "my take's video.mp4"
    video.write_bytes(b"not read by the fake binary")
    save_json(tmp_path / "ingest.json", {"n_frames": n, "fps": 30, "source_fps": 25.0})
    save_npz(tmp_path / "track.npz", valid=np.ones(n, np.uint8))
    return video


def test_openface_backend_through_the_cli(tmp_path, fake_openface, run_cli):
    video = _take_inputs(tmp_path)
    out = tmp_path / "au45.npz"
    run_cli(["preprocessing.au45", "--take", "t1", "--video", video, "--ingest",
             tmp_path / "ingest.json", "--track", tmp_path / "track.npz", "--backend", "openface",
             "--openface-binary", fake_openface, "--out", out])
    argv = (tmp_path / "argv.txt").read_text()
    assert argv.startswith(f"-f {video} -aus -out_dir ")
    with np.load(out) as z:
        assert str(z["backend"]) == "openface"
        assert (z["au45"].shape == (72,) and z["au45"].dtype == np.float32
                and z["valid"].dtype == np.uint8)
        expect, expect_valid = openface_to_timeline(read_openface_csv(FIX / "openface_25fps.csv"),
                                                    72, 25)
        np.testing.assert_array_equal(z["valid"], expect_valid)
        np.testing.assert_array_equal(z["au45"][expect_valid == 1], expect[expect_valid == 1])


def test_openface_failures(tmp_path, fake_openface, run_cli, monkeypatch):
    video = _take_inputs(tmp_path)
    args = ["preprocessing.au45", "--take", "t1", "--video", video, "--ingest",
            tmp_path / "ingest.json", "--track", tmp_path / "track.npz", "--backend", "openface",
            "--out", tmp_path / "au45.npz"]
    # the binary fails: one line naming take, step and OpenFace's own last message; record written
    monkeypatch.setenv("FAKE_OPENFACE_FAIL", "1")
    proc = run_cli(args + ["--openface-binary", fake_openface])
    assert proc.stderr.strip().splitlines()[-1] == (
        "musicface: take 't1' step 'au45': OpenFace FeatureExtraction exited 3: Could not open the "
        "input video")
    assert read_failure(tmp_path / "au45.npz")["step"] == "au45"
    monkeypatch.delenv("FAKE_OPENFACE_FAIL")
    # a malformed CSV: the parser's message
    monkeypatch.setenv("FAKE_OPENFACE_CSV", str(FIX / "malformed_text.csv"))
    proc = run_cli(args + ["--openface-binary", fake_openface])
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "step 'au45': OpenFace CSV my take's video.csv: non-numeric value 'garbage' in column "
        "AU45_r (line 7)")
    # a missing binary is a setup error: exit 2 at once, naming the binary and where to get it
    proc = run_cli(args + ["--openface-binary", str(tmp_path / "nowhere" / "FeatureExtraction"),
                           "--openface-container", ""], check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"musicface: take 't1' step 'au45': OpenFace binary "
                           f"'{tmp_path}/nowhere/FeatureExtraction' "
                           "not found: build OpenFace 2.x (github.com/TadasBaltrusaitis/OpenFace")
    # an upstream failure (no face) skips the take without running OpenFace
    write_failure(tmp_path / "track.npz", "t1", "track", "no face found in any frame")
    (tmp_path / "argv.txt").unlink()
    proc = run_cli(args + ["--openface-binary", fake_openface])
    assert "upstream step 'track' failed: no face found in any frame" in proc.stderr
    assert not (tmp_path / "argv.txt").exists()


def test_openface_command_resolution(tmp_path, fake_openface, monkeypatch):
    assert openface_command(str(fake_openface), "docker://x", []) == [str(fake_openface)]
    assert openface_command(f"'{fake_openface}' -q", None, []) == [str(fake_openface), "-q"]
    # not installed, but a container runtime is: FeatureExtraction runs in the image, folders bound
    runner = tmp_path / "rt" / "apptainer"
    runner.parent.mkdir()
    runner.write_text("#!/bin/sh\n")
    runner.chmod(0o755)
    monkeypatch.setenv("PATH", str(runner.parent))
    cmd = openface_command("FeatureExtraction", "docker://algebr/openface:latest",
                           ["/data/v", "/tmp/o"])
    assert cmd == [str(runner), "exec", "--bind", "/data/v", "--bind", "/tmp/o",
                   "docker://algebr/openface:latest", "FeatureExtraction"]
    with pytest.raises(StepError, match="OpenFace binary 'FeatureExtraction' not found"):
        openface_command("FeatureExtraction", "", [])
