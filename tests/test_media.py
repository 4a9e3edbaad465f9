"""preprocessing.media: probe, pts-exact audio decoding, constant-frame-rate frames, writing."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.signal import resample_poly

from badinputs import damage_audio, write_audio_file  # other tests import them from here
from preprocessing.common import StepError
from preprocessing.media import (
    decode_audio,
    iter_frames,
    n_frames_cfr,
    probe,
    read_wav,
    write_video,
)


# ------------------------------------------------------------------------------------ material
def code_frame(k: int, h: int = 32, w: int = 32) -> np.ndarray:
    """A flat frame whose colour encodes the source frame index k (survives H.264 compression)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (k % 16) * 16 + 8
    img[..., 1] = (k // 16) * 16 + 8
    return img


def read_code(img: np.ndarray) -> int:
    return int(img[..., 0].mean() // 16) + 16 * int(img[..., 1].mean() // 16)


def clicks(sr: int, seconds: float, at_s: list[float], channels: int = 1) -> np.ndarray:
    x = np.zeros((int(sr * seconds), channels), np.float32)
    for t in at_s:
        x[int(round(t * sr))] = 0.9
    return x


def write_with_pts(path, times_s, codec="libx264", tb=Fraction(1, 1000), size=(32, 32),
                   audio=None, sr=16000, audio_start_s=0.0, rate=30):
    """Video frames at arbitrary times (VFR), optional audio track starting at ``audio_start_s``.
    ``rate`` is the nominal frame rate (the muxer gives the last frame a 1/rate duration)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = tb
        if audio is not None:
            aus = out.add_stream("aac", rate=sr)
            aus.layout = "mono"
        for k, t in enumerate(times_s):
            f = av.VideoFrame.from_ndarray(code_frame(k, size[1], size[0]), format="rgb24")
            f.pts, f.time_base = int(round(t / tb)), tb
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if audio is not None:
            start = int(round(audio_start_s * sr))
            for s in range(0, len(audio), 1024):
                fr = av.AudioFrame.from_ndarray(audio[None, s:s + 1024].copy(), format="flt",
                                                layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = sr, start + s, Fraction(1, sr)
                out.mux(aus.encode(fr))
            out.mux(aus.encode(None))


def stempeg_clip() -> Path:
    spec = importlib.util.find_spec("stempeg")
    return next(Path(spec.submodule_search_locations[0]).rglob("*.stem.mp4"))


# ------------------------------------------------------------------------------------- probing
def test_n_frames_convention():
    assert n_frames_cfr(10.0) == 300            # i/30 < 10 for i = 0..299
    assert n_frames_cfr(10.01) == 301
    assert n_frames_cfr(300 / 30 + 1e-12) == 300  # float noise does not add a frame
    assert n_frames_cfr(0.0) == 0
    assert n_frames_cfr(1.0, fps=25) == 25


def test_write_probe_roundtrip(tmp_path):
    sr = 16000
    audio = clicks(sr, 3.0, [0.5, 2.5])
    n = write_video(tmp_path / "a b'c.mp4", (code_frame(k, 48, 64) for k in range(90)), fps=30,
                    audio=audio, sr=sr)
    assert n == 90
    p = probe(tmp_path / "a b'c.mp4")
    v, a = p["video"], p["audio"]
    assert (v["codec"], v["width"], v["height"], v["n_packets"]) == ("h264", 64, 48, 90)
    assert v["duration_s"] == pytest.approx(3.0, abs=1e-9) and p["n_frames"] == 90
    assert v["average_fps"] == pytest.approx(30.0) and not v["vfr"]
    assert (a["codec"], a["sample_rate"], a["channels"]) == ("aac", 16000, 1)
    assert a["start_s"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("src_fps", [24, 25, 30000 / 1001, 60])
def test_iter_frames_constant_rate_from_any_rate(tmp_path, src_fps):
    """Output frame i is the source frame k shown at i/30: k = floor(i * src_fps / 30)."""
    n_src = int(round(2 * src_fps))  # 2 s (60 fps: 120 frames, colour code holds 256)
    tb = Fraction(1, 30000) if src_fps == 30000 / 1001 else Fraction(1, int(src_fps) * 100)
    times = [k / src_fps for k in range(n_src)]
    path = tmp_path / "v.mp4"
    write_with_pts(path, times, tb=tb, rate=src_fps)
    p = probe(path)
    duration = n_src / src_fps
    assert p["video"]["duration_s"] == pytest.approx(duration, abs=1e-6)
    assert p["n_frames"] == n_frames_cfr(duration)
    assert p["video"]["vfr"] is False
    it = iter_frames(path)
    got = [(i, read_code(f)) for i, f in it]
    assert [i for i, _ in got] == list(range(p["n_frames"]))
    truth = [int(np.floor(i * src_fps / 30 + 1e-9)) for i in range(p["n_frames"])]
    assert [k for _, k in got] == truth
    assert it.stats["decoded"] == n_src and it.stats["corrupt_packets"] == 0


def test_iter_frames_variable_frame_rate(tmp_path):
    rng = np.random.default_rng(0)
    ms = np.concatenate([[0], np.cumsum(rng.integers(10, 80, 59))])  # frame times in whole ms
    # avoid the ambiguity of a pts within half a tick of an output time
    ms = np.array([m + 2 if abs((m / 1000 * 30) - round(m / 1000 * 30)) < 0.04
                   and m else m for m in ms])
    path = tmp_path / "vfr.mkv"
    write_with_pts(path, ms / 1000, tb=Fraction(1, 1000))
    p = probe(path)
    assert p["video"]["vfr"] is True
    frames = [read_code(f) for _, f in iter_frames(path)]
    assert len(frames) == p["n_frames"] == n_frames_cfr(p["video"]["duration_s"])
    truth = [int(np.searchsorted(ms / 1000, i / 30, side="right") - 1) for i in range(len(frames))]
    assert frames == truth


def test_iter_frames_size_change_and_resize(tmp_path):
    """A stream whose frame size changes mid-video (new SPS in MPEG-TS) keeps the first size."""
    path = tmp_path / "sz.ts"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(20):
            f = av.VideoFrame.from_ndarray(code_frame(k), format="rgb24")
            f.pts = k
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = 64, 48, "yuv420p"
        cc.time_base, cc.framerate = vs.codec_context.time_base, 25
        for k in range(20, 40):
            f = av.VideoFrame.from_ndarray(code_frame(k, 48, 64), format="rgb24")
            f.pts = k
            for pkt in cc.encode(f):
                pkt.stream = vs
                out.mux(pkt)
        for pkt in cc.encode(None):
            pkt.stream = vs
            out.mux(pkt)
    it = iter_frames(path)
    got = [(f.shape, read_code(f)) for _, f in it]
    assert len(got) == 48 and {s for s, _ in got} == {(32, 32, 3)}
    assert [k for _, k in got] == [int(i * 25 / 30 + 1e-9) for i in range(48)]
    assert it.stats["size_changes"] == 1 and it.stats["first_size"] == [32, 32]
    small = [f.shape for _, f in iter_frames(path, size=(16, 8))]
    assert set(small) == {(8, 16, 3)}


def test_iter_frames_rotation_matches_ffmpeg_autorotate(tmp_path):
    import imageio_ffmpeg

    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :8, 1] = 255   # green left edge
    img[:6, :, 2] = 255   # blue top edge
    write_video(tmp_path / "r.mp4", [img] * 3, fps=30, rotation=90)
    p = probe(tmp_path / "r.mp4")
    assert (p["video"]["width"], p["video"]["height"], p["video"]["rotation"]) == (48, 64, 90)
    ours = next(iter(iter_frames(tmp_path / "r.mp4")))[1]
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i",
                          str(tmp_path / "r.mp4"), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"],
                         capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(64, 48, 3)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref).mean() < 3


def test_iter_frames_survives_corrupt_and_truncated(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(60)]
    with av.open(str(tmp_path / "fs.mp4"), "w", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for k, f in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(f, format="rgb24")
            fr.pts = k
            out.mux(vs.encode(fr))
        out.mux(vs.encode(None))
    data = bytearray((tmp_path / "fs.mp4").read_bytes())
    # garbage inside the media data: decoding goes on, every output frame is produced
    bad = bytearray(data)
    start = len(bad) // 2
    for off in range(start, start + 20000, 997):
        bad[off:off + 50] = rng.integers(0, 255, 50, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp4").write_bytes(bytes(bad))
    out = [f.shape for _, f in iter_frames(tmp_path / "bad.mp4")]
    assert len(out) == 60 and set(out) == {(48, 64, 3)}
    # cut in half (index at the front): the readable part is the video
    (tmp_path / "cut.mp4").write_bytes(bytes(data[: len(data) // 2]))
    p = probe(tmp_path / "cut.mp4")
    assert 0 < p["n_frames"] < 60
    assert sum(1 for _ in iter_frames(tmp_path / "cut.mp4")) == p["n_frames"]


@pytest.mark.parametrize("content,reason", [
    (None, "file not found"),
    (b"", "empty file (0 bytes)"),
    (b"not a video at all" * 40, "unreadable media file"),
])
def test_probe_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad file 'x'.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StepError, match=re.escape(reason)):
        probe(path)


def test_truncated_mp4_without_index_is_unreadable(tmp_path):
    write_video(tmp_path / "v.mp4", (code_frame(k) for k in range(30)))
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) * 6 // 10])  # moov (at the end) is lost
    with pytest.raises(StepError, match="corrupt, truncated or not audio/video"):
        probe(tmp_path / "t.mp4")


# --------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize("sr_out", [16000, 44100])
def test_decode_audio_pts_exact_after_aac_priming(tmp_path, sr_out):
    sr = 48000
    audio = clicks(sr, 2.0, [0.25, 1.5])
    write_video(tmp_path / "v.mp4", (code_frame(k) for k in range(60)), audio=audio, sr=sr)
    y, start = decode_audio(tmp_path / "v.mp4", sr=sr_out)
    assert y.dtype == np.float32 and y.ndim == 1 and start == pytest.approx(0.0, abs=1e-9)
    assert abs(int(np.argmax(np.abs(y[:sr_out]))) - 0.25 * sr_out) <= 1
    assert abs(int(np.argmax(np.abs(y[sr_out:]))) + sr_out - 1.5 * sr_out) <= 1
    assert len(y) == pytest.approx(2.0 * sr_out, abs=0.03 * sr_out)


@pytest.mark.parametrize("audio_start", [0.5, -0.3])
def test_decode_audio_aligns_to_video_timeline(tmp_path, audio_start):
    """Audio starting after the video is padded, before the video is trimmed."""
    sr = 16000
    audio = clicks(sr, 2.0, [0.8])[:, 0]
    write_with_pts(tmp_path / "v.mp4", [k / 30 for k in range(60)], tb=Fraction(1, 15360),
                   audio=audio, sr=sr, audio_start_s=audio_start)
    y, start = decode_audio(tmp_path / "v.mp4")
    assert abs(int(np.argmax(np.abs(y))) - (0.8 + audio_start) * sr) <= 1
    if audio_start > 0:  # the first decoded sample is the encoder's priming, 1024 samples early
        assert start == pytest.approx(audio_start - 1024 / sr, abs=1 / sr)
        assert np.abs(y[: int(start * sr)]).max() == 0.0
    else:  # the MP4 edit list starts the track at 0: the decoder drops what comes before
        assert start == pytest.approx(0.0, abs=1 / sr)


@pytest.mark.parametrize("ext,codec,sr,channels", [
    ("wav", "pcm_s16le", 8000, 1),
    ("flac", "flac", 22050, 2),
    ("mp3", "libmp3lame", 44100, 2),
    ("m4a", "aac", 48000, 2),
    ("ogg", "libopus", 48000, 1),
    ("mkv", "libopus", 48000, 2),
])
def test_decode_audio_codecs_rates_channels(tmp_path, ext, codec, sr, channels):
    """Any codec/rate/layout decodes to 16 kHz mono, in time (lag 0) and faithful (SNR)."""
    t = np.arange(int(1.5 * sr)) / sr
    # a chirp 200..3000 Hz (its autocorrelation has one sharp peak), right channel at half gain
    mono = 0.4 * np.sin(2 * np.pi * (200 * t + 1400 * t**2 / 1.5))
    x = np.repeat(mono[:, None], channels, axis=1).astype(np.float32)
    if channels == 2:
        x[:, 1] *= 0.5
        mono = 0.75 * mono  # the mono mix is the mean of the channels
    path = tmp_path / f"song.{ext}"
    write_audio_file(path, x, sr, codec)
    p = probe(path)
    assert p["video"] is None and p["n_frames"] == 0
    assert (p["audio"]["sample_rate"], p["audio"]["channels"]) == (sr, channels)
    y, start = decode_audio(path)
    ref = resample_poly(mono, 16000, sr).astype(np.float32)
    n = min(len(ref), len(y))
    assert abs(len(y) - len(ref)) < 0.05 * 16000
    xc = np.correlate(y[:n], ref[:n], mode="full")[n - 1 - 20:n + 20]
    assert int(np.argmax(xc)) - 20 == 0  # no shift: priming / encoder delay removed
    inner = slice(800, n - 800)  # the two resamplers differ at the edges only
    snr = 10 * np.log10(np.sum(ref[inner] ** 2) / np.sum((y[inner] - ref[inner]) ** 2))
    assert snr > (40 if codec in ("pcm_s16le", "flac") else 15)
    y2, _ = decode_audio(path, sr=sr, mono=False)
    assert y2.shape[1] == channels


def test_decode_audio_stem_streams_of_real_clip():
    """The real MUSDB18 clip: stream 0 = mixture, 4 = vocals; mixture ~ sum of the four stems."""
    path = stempeg_clip()
    assert probe(path)["video"] is None  # the cover picture is not a video
    stems = [decode_audio(path, stream=i)[0] for i in range(5)]
    assert (all(len(s) == len(stems[0]) for s in stems)
            and len(stems[0]) == pytest.approx(6.08 * 16000, rel=0.01))
    resid = stems[0] - sum(stems[1:])  # each stream went through AAC on its own: ~ -16 dB
    assert np.sqrt(np.mean(resid**2)) < 0.25 * np.sqrt(np.mean(stems[0] ** 2))
    xc = np.correlate(stems[0][16000:32000], sum(stems[1:])[16000 - 50:32000 + 50], mode="valid")
    assert int(np.argmax(xc)) == 50  # the streams are in time with each other
    with pytest.raises(StepError, match="stream 5 is not an audio stream"):
        decode_audio(path, stream=5)


def test_decode_audio_without_audio_track(tmp_path):
    write_video(tmp_path / "v.mp4", (code_frame(k) for k in range(10)))
    assert probe(tmp_path / "v.mp4")["audio"] is None
    with pytest.raises(StepError, match="^no audio track$"):
        decode_audio(tmp_path / "v.mp4")


def test_iter_frames_on_audio_only_file(tmp_path):
    write_audio_file(tmp_path / "a.wav", np.zeros((8000, 1), np.float32), 8000, "pcm_s16le")
    with pytest.raises(StepError, match="^no video stream$"):
        iter_frames(tmp_path / "a.wav")


def test_read_wav_checks_rate(tmp_path):
    from preprocessing.common import save_wav

    save_wav(tmp_path / "m.wav", np.ones(100, np.float32) * 0.5, 16000)
    assert read_wav(tmp_path / "m.wav", 16000).tolist() == [0.5] * 100
    with pytest.raises(StepError, match="sample rate 16000 Hz, expected 22050 Hz"):
        read_wav(tmp_path / "m.wav", 22050)


MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


@pytest.mark.skipif(not MEGAMIND.exists(), reason="Debian opencv-doc not installed")
def test_real_avi_with_packed_b_frames():
    """Megamind.avi (MPEG-4 ASP with packed B-frames in AVI, 23.976 fps, AC-3): the demuxer's pts
    come out swapped in pairs; FFmpeg's best-effort timestamps put every frame back in order."""
    p = probe(MEGAMIND)
    assert (p["video"]["codec"], p["video"]["width"], p["video"]["height"]) == ("mpeg4", 720, 528)
    assert p["video"]["real_fps"] == pytest.approx(23.976, abs=1e-3)
    assert p["n_frames"] == n_frames_cfr(p["video"]["duration_s"]) == 340
    with av.open(str(MEGAMIND)) as c:  # the decoder's output order is the display order
        native = [f.to_ndarray(format="rgb24")[::8, ::8] for f in c.decode(video=0)]
    it = iter_frames(MEGAMIND)
    shown = []
    for i, f in it:
        small = f[::8, ::8]
        lo = max(0, int(i * 0.8) - 4)
        d = [np.abs(small.astype(int) - native[j]).mean()
             for j in range(lo, min(len(native), lo + 8))]
        assert min(d) == 0.0  # an exact source frame, not a blend
        shown.append(lo + int(np.argmin(d)))
    steps = np.diff(shown)
    assert len(shown) == 340 and steps.min() >= 0 and steps.max() <= 2  # in display order
    assert len(set(shown)) >= len(native) - 2 and it.stats["repeated"] >= 340 - 270
    # its first AC-3 packet (pts 0) does not decode: the next one, at 32 ms, is placed at 32 ms less
    # AC-3's encoder delay (256 samples at 48 kHz), which AVI cannot signal
    y, start, gaps = decode_audio(MEGAMIND, with_gaps=True)
    assert start == pytest.approx(0.032 - 256 / 48000, abs=1e-6) and gaps == []
    assert np.abs(y[: int(start * 16000)]).max() == 0.0 and np.abs(y).max() > 0.1
    assert len(y) / 16000 == pytest.approx(p["audio"]["duration_s"] - 256 / 48000, abs=0.001)


# -------------------------------------------------------------- encoder delay, joins, corrupt audio
def click_and_tones(sr: int, seconds: float = 3.0) -> np.ndarray:
    """Quiet tones with a click at 0.5 s (mono, (n, 1)): the click's sample says where time is.
    (Tones, not noise: AAC codes noise-like bands as noise, drawn afresh by the decoder.)"""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.03 * np.sin(2 * np.pi * f * t + f) for f in (220, 347, 1210, 2650))
    x = x[:, None].astype(np.float32)
    x[int(0.5 * sr)] = 0.9
    return x


@pytest.mark.parametrize("codec,sr,honoured,unsignalled", [
    ("aac", 44100, ("m4a", None, {}), ("aac", None, {})),              # MP4 edit list / raw ADTS
    ("libmp3lame", 48000, ("mp3", None, {}), ("avi", None, {})),            # LAME header / AVI
    ("libmp3lame", 22050, ("mp3", None, {}), ("nolame.mp3", "mp3", {"write_xing": "0"})),
    ("ac3", 48000, ("mka", None, {}), ("ac3", None, {})),                   # Matroska / raw AC-3
])
def test_decode_audio_drops_priming_the_container_cannot_signal(tmp_path, codec, sr, honoured,
                                                                unsignalled):
    """The same encoder output in a container that signals its priming (FFmpeg drops it) and in
    one that cannot (FFmpeg decodes it as audio, 1024 / 1105 / 256 samples late): decoded
    sample for sample the same, the click on its sample."""
    x = click_and_tones(sr)
    out = []
    for ext, fmt, options in (honoured, unsignalled):
        path = tmp_path / f"song.{ext}"
        write_audio_file(path, x, sr, codec, fmt=fmt, options=options)
        y, start = decode_audio(path, sr=sr)
        assert start == pytest.approx(0.0, abs=1e-9)
        assert int(np.argmax(np.abs(y))) == int(0.5 * sr), ext
        out.append(y)
    n = min(len(out[0]), len(out[1]))
    assert abs(len(out[0]) - len(out[1])) <= 1152
    np.testing.assert_array_equal(out[0][:n], out[1][:n])


def write_ts(path, first_code: int, n: int, click_s=(), sr: int = 48000) -> None:
    """An MPEG-TS take as FFmpeg writes it (H.264 + AAC, clock starting at 1.4 s): frame ``k`` shows
    code ``first_code + k``, clicks at ``click_s`` (s from the file's start)."""
    audio = np.zeros(int(n / 30 * sr), np.float32)
    for c in click_s:
        audio[int(round(c * sr))] = 0.9
    with av.open(str(path), "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        aus = out.add_stream("aac", rate=sr, layout="mono")
        apos = 0
        for k in range(n):
            f = av.VideoFrame.from_ndarray(code_frame(first_code + k), format="rgb24")
            f.pts, f.time_base = k, Fraction(1, 30)
            out.mux(vs.encode(f))
            while apos + 1024 <= int((k + 1) / 30 * sr):
                fr = av.AudioFrame.from_ndarray(audio[None, apos:apos + 1024].copy(), format="flt",
                                                layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = sr, apos, Fraction(1, sr)
                out.mux(aus.encode(fr))
                apos += 1024
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


def test_mpegts_files_joined_end_to_end(tmp_path):
    """``cat a.ts b.ts``: b's clock restarts at the join. Probe, frames and audio continue b after
    a: every frame in order (none dropped), b's clicks 5 s later than in b."""
    write_ts(tmp_path / "a.ts", 0, 150, click_s=[1.0, 4.0])
    write_ts(tmp_path / "b.ts", 150, 90, click_s=[0.5, 2.0])
    joined = tmp_path / "joined.ts"
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    p = probe(joined)
    assert p["n_frames"] == 240 and p["video"]["duration_s"] == pytest.approx(8.0, abs=1e-6)
    assert p["joins_s"] == [pytest.approx(5.0, abs=1e-9)]  # b's first frame right after a's last
    it = iter_frames(joined)
    assert [read_code(f) for _, f in it] == list(range(240)) and it.stats["dropped"] == 0
    y, _ = decode_audio(joined, sr=48000)
    peaks = np.flatnonzero(np.abs(y) > 0.5) / 48000
    assert peaks == pytest.approx([1.0, 4.0, 5.5, 7.0], abs=1e-6)  # to the sample
    assert probe(tmp_path / "a.ts")["joins_s"] == []


def test_vfr_last_frame_lasts_its_stored_duration(tmp_path):
    """A VFR mp4 whose frames come every 40 ms on a nominal 30 fps stream: the container stores
    33.3 ms for the last frame (1 / nominal rate). The take ends there, not a median interval
    (40 ms) after the last frame's start."""
    times = np.arange(100) * 0.04
    times[50:] += 0.005  # not constant: VFR
    write_with_pts(tmp_path / "v.mp4", times, tb=Fraction(1, 90000), rate=30)
    p = probe(tmp_path / "v.mp4")
    assert p["video"]["vfr"]
    assert p["video"]["duration_s"] == pytest.approx(times[-1] + 1 / 30, abs=1e-4)
    assert p["n_frames"] == int(np.ceil((times[-1] + 1 / 30) * 30 - 1e-6))


@pytest.mark.parametrize("ext,codec", [("mp4", "aac"), ("avi", "libmp3lame"), ("avi", "ac3")])
def test_decode_audio_leaves_out_corrupt_stretches(tmp_path, ext, codec):
    """Audio packets from 1.0 to 1.5 s damaged: what does not decode, and MP3 frames that decode to
    garbage (values in the thousands), become zeros listed in ``gaps``; the rest is the clean
    decode, in place."""
    sr = 48000
    x = np.tile(click_and_tones(sr), (1, 2))
    write_audio_file(tmp_path / f"clean.{ext}", x, sr, codec)
    damage_audio(tmp_path / f"clean.{ext}", tmp_path / f"bad.{ext}", 1.0, 1.5)
    clean, _ = decode_audio(tmp_path / f"clean.{ext}")
    y, start, gaps = decode_audio(tmp_path / f"bad.{ext}", with_gaps=True)
    assert decode_audio(tmp_path / f"clean.{ext}", with_gaps=True)[2] == []
    assert start == 0.0 and len(y) == pytest.approx(len(clean), abs=2)
    assert np.abs(y).max() < 1.0  # no garbage left
    assert len(gaps) >= 1 and gaps[0][0] == pytest.approx(1.0, abs=0.03)
    assert 0.3 < sum(b - a for a, b in gaps) < 0.55 and gaps[-1][1] < 1.55
    for a, b in gaps:
        assert np.abs(y[int(a * 16000) + 24:int(b * 16000) - 24]).max() == 0.0  # (resampler edges)
    # outside the damaged packets' reach (decoder memory: MP3's bit reservoir and delay, a frame
    # of overlap; the resampler's edge), the clean decode. (Inside it, MP3 frames that decode to
    # plausible values cannot be told from audio: they stay.) AC-3's decoder dithers with a random
    # generator that runs on across frames: it is off after the damage by up to 7e-5 (-83 dB).
    t = np.arange(min(len(y), len(clean))) / 16000
    far = (t < 0.95) | (t > 1.6)
    atol = 1e-4 if codec == "ac3" else 1e-6
    np.testing.assert_allclose(y[:len(t)][far], clean[:len(t)][far], atol=atol)
