"""preprocessing.song: any song file -> 16 kHz mono mix.wav + song.json; bad songs fail by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from preprocessing.common import read_failure
from preprocessing.media import decode_audio, write_video
from preprocessing.song import decode_song
from test_media import code_frame, stempeg_clip, write_audio_file


def chirp(sr, seconds=3.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * (150 * t + 600 * t**2 / seconds))).astype(np.float32)


@pytest.mark.parametrize("ext,codec,sr,channels", [
    ("wav", "pcm_s16le", 44100, 2),
    ("flac", "flac", 48000, 1),
    ("mp3", "libmp3lame", 44100, 2),
    ("m4a", "aac", 22050, 2),
])
def test_song_cli_formats(tmp_path, run_cli, ext, codec, sr, channels):
    x = chirp(sr)
    write_audio_file(tmp_path / f"my song.{ext}", np.repeat(x[:, None], channels, 1), sr, codec)
    wav, js = tmp_path / "songs" / "s1" / "mix.wav", tmp_path / "songs" / "s1" / "song.json"
    run_cli(["preprocessing.song", "--song", "s1", "--audio", tmp_path / f"my song.{ext}",
             "--out-wav", wav, "--out-json", js])
    mix, rate = sf.read(wav, dtype="float32")
    assert rate == 16000 and mix.ndim == 1 and sf.info(str(wav)).subtype == "FLOAT"
    ref = resample_poly(x, 16000, sr)
    n = min(len(ref), len(mix))
    inner = slice(800, n - 800)
    err = np.sqrt(np.mean((mix[inner] - ref[inner]) ** 2)) / np.sqrt(np.mean(ref[inner] ** 2))
    assert err < (0.01 if codec in ("pcm_s16le", "flac") else 0.2)
    info = json.loads(js.read_text())
    assert (info["song"], info["source_sr"], info["channels"], info["sr"]) == ("s1", sr,
                                                                               channels, 16000)
    assert (info["codec"]
            == {"pcm_s16le": "pcm_s16le", "flac": "flac", "libmp3lame": "mp3", "aac": "aac"}[codec])
    assert (info["duration_s"] == pytest.approx(len(mix) / 16000)
            and info["duration_s"] == pytest.approx(3.0, abs=0.05))


def test_song_from_stem_file_is_the_mixture():
    """A MUSDB18 .stem.mp4 (5 audio streams + cover picture): the song is stream 0, the mixture."""
    mix, info = decode_song(stempeg_clip())
    ref = decode_audio(stempeg_clip(), stream=0)[0]
    np.testing.assert_array_equal(mix, ref)
    assert (info["source_sr"], info["channels"], info["codec"]) == (44100, 2, "aac")
    assert info["duration_s"] == pytest.approx(6.08, abs=0.01)


def _video_only(d):
    write_video(d / "bad.mp4", (code_frame(k) for k in range(30)))


@pytest.mark.parametrize("make,reason", [
    (lambda d: write_audio_file(d / "bad.mp4", np.zeros((44100 * 3, 2), np.float32), 44100, "aac"),
     "silent audio (peak -inf dBFS, below -60 dBFS)"),
    (lambda d: write_audio_file(d / "bad.mp4", np.full((8000 * 3, 1), 1e-4, np.float32),
                                8000, "pcm_s16le"),
     "silent audio (peak -81 dBFS, below -60 dBFS)"),
    (lambda d: write_audio_file(d / "bad.mp4", chirp(16000, 0.5)[:, None], 16000, "flac"),
     "song too short: 0.50 s (need at least 1 s)"),
    (_video_only, "no audio track"),
    (lambda d: (d / "bad.mp4").write_bytes(b"ID3" + b"\x00" * 5000),
     "unreadable media file 'bad.mp4' (corrupt, truncated or not audio/video): Invalid data found "
     "when processing input"),
])
def test_song_bad_files_fail_by_name(tmp_path, run_cli, make, reason):
    make(tmp_path)
    wav, js = tmp_path / "mix.wav", tmp_path / "song.json"
    proc = run_cli(["preprocessing.song", "--song", "my_song", "--audio", tmp_path / "bad.mp4",
                    "--out-wav", wav, "--out-json", js])
    assert (proc.stderr.strip().splitlines()[-1]
            == f"musicface: song 'my_song' step 'song': {reason}")
    for out in (wav, js):
        assert read_failure(out) == {"unit": "my_song", "step": "song", "reason": reason}


def test_song_with_nan_or_inf_samples_fails_by_name(tmp_path, run_cli):
    """A 32-bit float WAV with a NaN burst at 3 s and +inf 2 s later (44.1 kHz: resampled) and one
    -inf at 16 kHz (not resampled): named as such, not as silence (max |x| of NaN is NaN)."""
    from badinputs import nan_samples
    from preprocessing.common import StepError

    sf.write(tmp_path / "clean.wav", chirp(44100, 6.0), 44100, subtype="FLOAT")
    nan_samples(tmp_path / "clean.wav", tmp_path / "nan song.wav", at_s=3.0)
    wav, js = tmp_path / "mix.wav", tmp_path / "song.json"
    proc = run_cli(["preprocessing.song", "--song", "nan_song", "--audio",
                    tmp_path / "nan song.wav", "--out-wav", wav, "--out-json", js])
    reason = "audio contains NaN or infinite samples (the first at 3.0 s)"
    assert (proc.stderr.strip().splitlines()[-1]
            == f"musicface: song 'nan_song' step 'song': {reason}")
    for out in (wav, js):
        assert read_failure(out) == {"unit": "nan_song", "step": "song", "reason": reason}
    x = chirp(16000, 3.0)
    x[20000] = -np.inf
    sf.write(tmp_path / "inf.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(StepError,
                       match=r"^audio contains NaN or infinite samples \(the first at 1\.2 s\)$"):
        decode_song(tmp_path / "inf.wav")


@pytest.mark.parametrize("damaged_s,reason", [
    ((2.0, 2.5), None),
    ((0.5, 5.5), r"only 1[6-9]% of the song decodes \(4\.[89] s of 6\.0 s corrupt in \d stretches, "
                 r"the first at 0\.5 s\): too little is left"),
])
def test_partly_corrupt_song_keeps_what_decodes(tmp_path, run_cli, damaged_s, reason):
    """An MP3 song whose frames from 2.0 to 2.5 s are damaged: the rest decodes in place (the broken
    stretches are zeros, listed in song.json; an MP3 frame that decodes to plausible values cannot
    be told from music and stays); damaged from 0.5 to 5.5 s, too little is left: it fails,
    saying so."""
    import re

    from badinputs import damage_audio

    sr = 44100
    x = chirp(sr, 6.0)
    write_audio_file(tmp_path / "clean.mp3", np.repeat(x[:, None], 2, 1), sr, "libmp3lame")
    damage_audio(tmp_path / "clean.mp3", tmp_path / "song.mp3", *damaged_s)
    wav, js = tmp_path / "mix.wav", tmp_path / "song.json"
    proc = run_cli(["preprocessing.song", "--song", "s", "--audio", tmp_path / "song.mp3",
                    "--out-wav", wav, "--out-json", js])
    if reason is not None:
        line = proc.stderr.strip().splitlines()[-1]
        assert re.fullmatch("musicface: song 's' step 'song': " + reason, line), line
        assert read_failure(js)["reason"] == line.split("step 'song': ", 1)[1]
        return
    info = json.loads(js.read_text())
    gaps = info["gaps_s"]
    broken = sum(b - a for a, b in gaps)
    assert gaps[0][0] == pytest.approx(2.0, abs=0.05) and gaps[-1][1] < 2.56 and 0.3 < broken < 0.56
    assert info["decoded_fraction"] == pytest.approx(1 - broken / 6.0, abs=1e-3)
    mix, _ = sf.read(wav, dtype="float32")
    clean = decode_audio(tmp_path / "clean.mp3")[0]
    t = np.arange(len(mix)) / 16000
    for a, b in gaps:
        assert np.abs(mix[(t > a + 0.002) & (t < b - 0.002)]).max() == 0.0
    far = (t < 1.9) | (t > 2.6)
    np.testing.assert_allclose(mix[far], clean[:len(mix)][far], atol=1e-6)
