"""preprocessing.ingest: ingest.json from any video; bad videos fail with one line, nothing else
lost."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from preprocessing.common import read_failure
from preprocessing.ingest import ingest
from preprocessing.media import write_video
from test_media import code_frame, write_audio_file, write_with_pts

KEYS = {"take", "video", "n_frames", "fps", "duration_s", "width", "height", "source_fps", "vfr",
        "has_audio", "audio_sr", "audio_channels", "video_codec", "audio_codec"}


def test_ingest_25fps_with_audio(tmp_path):
    """10 s at 25 fps (250 frames) + 48 kHz stereo AAC -> N = 300 frames at 30 fps."""
    audio = np.zeros((48000 * 10, 2), np.float32)
    audio[::4800] = 0.5
    write_video(tmp_path / "v.mp4", (code_frame(k % 200, 48, 64) for k in range(250)), fps=25,
                audio=audio, sr=48000)
    info = ingest("take1", tmp_path / "v.mp4")
    assert KEYS <= set(info)
    assert ((info["take"], info["n_frames"], info["fps"], info["width"], info["height"])
            == ("take1", 300, 30, 64, 48))
    assert info["duration_s"] == pytest.approx(10.0, abs=1e-9)
    assert info["source_fps"] == pytest.approx(25.0) and info["vfr"] is False
    assert (info["has_audio"], info["audio_sr"], info["audio_channels"]) == (True, 48000, 2)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["audio_start_s"] == pytest.approx(0.0, abs=1e-6)


def test_ingest_vfr_without_audio(tmp_path):
    rng = np.random.default_rng(0)
    ms = np.concatenate([[0], np.cumsum(rng.integers(20, 60, 99))])
    write_with_pts(tmp_path / "v.mkv", ms / 1000, tb=Fraction(1, 1000))
    info = ingest("t", tmp_path / "v.mkv")
    assert info["vfr"] is True and info["has_audio"] is False and info["audio_sr"] is None
    # the last frame lasts what the container says (as ffprobe): Matroska's default duration, the
    # nominal 1/30 s (33 ms in its 1 ms time base), not the median interval (41 ms)
    assert info["duration_s"] == pytest.approx((ms[-1] + 33) / 1000, abs=1e-9)
    assert info["n_frames"] == int(np.ceil(info["duration_s"] * 30 - 1e-6))


def test_ingest_cli_and_path_with_spaces_and_quotes(tmp_path, run_cli):
    video = tmp_path / "my take's \"best\" one.mp4"
    write_video(video, (code_frame(k) for k in range(45)), fps=30)
    out = tmp_path / "out dir" / "ingest.json"
    run_cli(["preprocessing.ingest", "--take", "t1", "--video", video, "--out", out])
    info = json.loads(out.read_text())
    assert info["n_frames"] == 45 and info["video"] == str(video)


def _unsupported_codec(tmp_path):
    write_video(tmp_path / "ok.mp4", (code_frame(k) for k in range(10)))
    # codec tag FFmpeg does not know
    data = (tmp_path / "ok.mp4").read_bytes().replace(b"avc1", b"zzzz")
    (tmp_path / "bad.mp4").write_bytes(data)


def _truncated(tmp_path):
    write_video(tmp_path / "ok.mp4", (code_frame(k) for k in range(30)))
    data = (tmp_path / "ok.mp4").read_bytes()
    # the index (moov) at the end is lost
    (tmp_path / "bad.mp4").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make,reason", [
    (lambda d: None, "file not found: {path}"),
    (lambda d: (d / "bad.mp4").write_bytes(b""), "empty file (0 bytes): {path}"),
    (lambda d: (d / "bad.mp4").write_bytes(b"\x00garbage" * 100),
     "unreadable media file 'bad.mp4' (corrupt, truncated or not audio/video): Invalid data found "
     "when processing input"),
    (_truncated,
     "unreadable media file 'bad.mp4' (corrupt, truncated or not audio/video): Invalid data found "
     "when processing input"),
    (lambda d: write_audio_file(d / "bad.mp4", np.zeros((16000, 1), np.float32), 16000, "aac"),
     "no video stream"),
    (_unsupported_codec, "unsupported video codec (FFmpeg has no decoder for it)"),
])
def test_ingest_bad_videos_one_line(tmp_path, run_cli, make, reason):
    make(tmp_path)
    path = tmp_path / "bad.mp4"
    out = tmp_path / "ingest.json"
    proc = run_cli(["preprocessing.ingest", "--take", "t9", "--video", path, "--out", out])
    reason = reason.format(path=path)
    assert proc.stderr.strip().splitlines()[-1] == f"musicface: take 't9' step 'ingest': {reason}"
    assert read_failure(out) == {"unit": "t9", "step": "ingest", "reason": reason}
