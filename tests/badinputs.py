"""Builders of bad (and awkward but good) recordings, made from real demo material with PyAV/numpy.

Used by ``tests/test_bad_inputs_e2e.py``. Every builder writes one file and returns what the test
needs to check the pipeline against the truth (e.g. which source frame each 30 fps output frame
shows). Time conventions are the project's (docs/data.md): frame ``i`` at ``i / 30`` s.

Definitions used below:

* *remux*: packets copied from the source without decoding (``add_stream_from_template``), so the
  pictures are exactly the source's;
* *re-encode*: frames decoded on the 30 fps timeline (``media.iter_frames``) and written again with
  :func:`write_mp4` (H.264 CRF 18 + AAC), with presentation times chosen by the builder.
"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from math import gcd
from pathlib import Path

import av
import numpy as np

from preprocessing.media import decode_audio, iter_frames, probe

FPS = 30
TB = Fraction(1, 90000)          # MPEG-style 90 kHz video time base: room for irregular timestamps
AUDIO_SR = 48000                 # demo camera audio rate


# ------------------------------------------------------------------------------------ low level
def write_mp4(path: str | os.PathLike, frames, audio: np.ndarray | None = None, sr: int = AUDIO_SR,
              crf: int = 18) -> int:
    """H.264 yuv420p (+ AAC mono when ``audio``) .mp4 from ``frames``: pairs ``(t, rgb)`` with ``t``
    the presentation time in seconds (any spacing: variable frame rates are the point), ``rgb``
    uint8 (H, W, 3). Audio sample 0 is at video time 0. Returns the number of frames written.

    Written by hand rather than with ``media.write_video`` because that one only writes a constant
    frame rate; this one stamps each frame with its own time in a 90 kHz time base.
    """
    n = 0
    with av.open(str(path), mode="w", format="mp4") as box:
        vs = box.add_stream("libx264", rate=FPS)
        vs.pix_fmt = "yuv420p"
        vs.time_base = TB
        vs.codec_context.time_base = TB
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        aus = None
        if audio is not None:
            aus = box.add_stream("aac", rate=sr, layout="mono")
            apos, audio = 0, np.asarray(audio, np.float32)
        for t, rgb in frames:
            if n == 0:
                vs.width, vs.height = rgb.shape[1], rgb.shape[0]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(round(t / TB)), TB
            box.mux(vs.encode(frame))
            n += 1
            if aus is not None:  # interleave: audio up to this frame's time
                apos = _mux_audio(box, aus, audio, apos, min(len(audio), int(t * sr)), sr)
        if aus is not None:
            _mux_audio(box, aus, audio, apos, len(audio), sr, final=True)
            box.mux(aus.encode(None))
        box.mux(vs.encode(None))
    return n


def _mux_audio(box, aus, audio, start, stop, sr, final=False) -> int:
    step = 1024  # one AAC frame
    while start + step <= stop or (final and start < stop):
        chunk = audio[start:min(start + step, stop)]
        frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
        box.mux(aus.encode(frame))
        start += len(chunk)
    return start


def remux(src: str | os.PathLike, dst: str | os.PathLike, audio: bool = True,
          silent_audio: bool = False) -> None:
    """Copy the video packets of ``src`` into ``dst`` unchanged; keep its audio packets (``audio``),
    drop them, or put an AAC track of digital silence as long as the video (``silent_audio``)."""
    with av.open(str(src)) as inp, av.open(str(dst), mode="w", format="mp4") as out:
        iv = inp.streams.video[0]
        ov = out.add_stream_from_template(iv)
        streams, omap = [iv], {iv.index: ov}
        if audio and not silent_audio:
            ia = inp.streams.audio[0]
            omap[ia.index] = out.add_stream_from_template(ia)
            streams.append(ia)
        aus = out.add_stream("aac", rate=AUDIO_SR, layout="mono") if silent_audio else None
        for packet in inp.demux(*streams):
            if packet.dts is None:  # flush packets
                continue
            packet.stream = omap[packet.stream.index]
            out.mux(packet)
        if aus is not None:
            zeros = np.zeros(int(round(probe(src)["video"]["duration_s"] * AUDIO_SR)), np.float32)
            _mux_audio(out, aus, zeros, 0, len(zeros), AUDIO_SR, final=True)
            out.mux(aus.encode(None))


def camera_audio(video: str | os.PathLike) -> np.ndarray:
    """The video's audio at 48 kHz mono, sample 0 at video time 0 (the project's decoder)."""
    return decode_audio(video, sr=AUDIO_SR, mono=True)[0]


# ------------------------------------------------------------------------------------ bad files
def truncated(src: str | os.PathLike, dst: str | os.PathLike, fraction: float = 0.5) -> None:
    """The first ``fraction`` of the bytes of ``src`` (a recording cut off: an mp4 written without
    faststart loses its index, the ``moov`` box at the end)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])


def zero_bytes(dst: str | os.PathLike) -> None:
    Path(dst).write_bytes(b"")


def text_as_mp4(dst: str | os.PathLike) -> None:
    """A text file renamed .mp4 (e.g. a download that saved an HTML error page)."""
    Path(dst).write_text("<html><body>404 Not Found</body></html>\n" * 50)


def corrupt_header(src: str | os.PathLike, dst: str | os.PathLike, n_bytes: int = 4096,
                   seed: int = 0) -> None:
    """``src`` with its first ``n_bytes`` overwritten by random bytes (a damaged file header)."""
    data = bytearray(Path(src).read_bytes())
    data[:n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))


def nan_samples(src: str | os.PathLike, dst: str | os.PathLike, at_s: float = 3.0) -> None:
    """``src`` as a 32-bit float WAV with a burst of 100 NaN samples at ``at_s`` and one +inf 2 s
    later (a float export from an audio tool whose effect chain blew up)."""
    import soundfile as sf

    x, sr = sf.read(str(src), dtype="float32", always_2d=False)
    i = int(at_s * sr)
    x[i:i + 100] = np.nan
    x[i + 2 * sr] = np.inf
    sf.write(str(dst), x, sr, subtype="FLOAT")


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    shutil.copyfile(src, dst)


# ------------------------------------------------------------------------------ re-encoded takes
def variable_frame_rate(src: str | os.PathLike, dst: str | os.PathLike,
                        seed: int = 0) -> np.ndarray:
    """A variable-frame-rate re-encode of ``src`` (as phones record in low light).

    Source frame ``j`` keeps its time ``j / 30`` minus a jitter in [0, 2 ms) (so timestamps are off
    the 30 fps grid), and frames are dropped: every other one in the second 3 s (15 fps), a random
    quarter after 6 s; the first and the last frame are kept. The camera audio is re-encoded.
    Returns ``shown`` (N,): the source frame the pipeline must show at 30 fps output frame ``i``,
    i.e. the last kept frame ``j <= i`` (a frame stamped at or before ``i / 30`` s).
    """
    rng = np.random.default_rng(seed)
    n = probe(src)["n_frames"]
    j = np.arange(n)
    keep = np.ones(n, bool)
    keep[(j >= 90) & (j < 180) & (j % 2 == 1)] = False
    late = j >= 180
    keep[late] = rng.random(late.sum()) >= 0.25
    keep[[0, n - 1]] = True
    jitter = rng.uniform(0, 0.002, n)
    jitter[[0, n - 1]] = 0
    frames = ((i / FPS - jitter[i], rgb) for i, rgb in iter_frames(src, FPS) if keep[i])
    write_mp4(dst, frames, camera_audio(src))
    return np.maximum.accumulate(np.where(keep, j, 0))


def constant_rate(src: str | os.PathLike, dst: str | os.PathLike, fps: float = 25) -> np.ndarray:
    """A constant ``fps`` re-encode of ``src`` (frame ``k`` is the source shown at ``k / fps``).

    Returns ``shown`` (N30,): the source frame shown at 30 fps output frame ``i`` of the new file,
    ``N30 = ceil(n_k * 30 / fps)`` for ``n_k`` frames written.
    """
    n_k = int(np.ceil(probe(src)["video"]["duration_s"] * fps - 1e-6))
    frames = ((k / fps, rgb) for k, rgb in iter_frames(src, fps, n_frames=n_k))
    write_mp4(dst, frames, camera_audio(src))
    n30 = int(np.ceil(n_k * FPS / fps - 1e-6))
    k = np.floor(np.arange(n30) * fps / FPS + 1e-9).astype(int)   # 25 fps frame on screen at i / 30
    # the 30 fps source frame it shows
    return np.floor(k * FPS / fps + 1e-9).astype(int)


def excerpt(src: str | os.PathLike, dst: str | os.PathLike, start: int, stop: int) -> None:
    """Frames ``start..stop-1`` of ``src`` (30 fps) with their camera audio, re-encoded: a take that
    starts ``start / 30`` s later in the song (its offset is the source's + ``start / 30``)."""
    audio = camera_audio(src)[start * AUDIO_SR // FPS: stop * AUDIO_SR // FPS]
    frames = (((i - start) / FPS, rgb)
              for i, rgb in iter_frames(src, FPS, n_frames=stop) if i >= start)
    write_mp4(dst, frames, audio)


def no_face(src_audio_video: str | os.PathLike, dst: str | os.PathLike, seconds: float = 6.0,
            size: tuple[int, int] = (640, 480)) -> None:
    """A moving colour pattern (no face anywhere) with the camera audio of ``src_audio_video``:
    someone filmed the wall while the song played."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    n = int(round(seconds * FPS))

    def frames():
        for i in range(n):
            t = i / FPS
            r = 127 + 120 * np.sin(2 * np.pi * (x / 160 + 0.5 * t))
            g = 127 + 120 * np.sin(2 * np.pi * (y / 120 - 0.3 * t))
            b = 127 + 120 * np.sin(2 * np.pi * ((x + y) / 200 + 0.2 * t))
            yield t, np.stack([r, g, b], axis=-1).astype(np.uint8)

    write_mp4(dst, frames(), camera_audio(src_audio_video)[: int(seconds * AUDIO_SR)])


# ------------------------------------------------------------ songs, cameras, audio faults (sync)
# how people have their songs: name -> (extension, muxer or None, sample rate, channels, codec,
# bit rate or None: the encoder's default)
SONG_FORMATS = {
    "44.1 kHz WAV": ("wav", None, 44100, 2, "pcm_s16le", None),
    "128 kbps MP3": ("mp3", None, 44100, 2, "libmp3lame", 128000),
    "96 kbps AAC (m4a)": ("m4a", None, 44100, 2, "aac", 96000),
    "11.025 kHz mono WAV": ("wav", None, 11025, 1, "pcm_s16le", None),
    "22.05 kHz 32 kbps MP3": ("mp3", None, 22050, 2, "libmp3lame", 32000),
    "8 kHz mono MP3": ("mp3", None, 8000, 1, "libmp3lame", None),
    "raw ADTS .aac": ("aac", None, 44100, 2, "aac", 96000),
}


def write_audio_file(path, x: np.ndarray, sr: int, codec: str, fmt: str | None = None,
                     options: dict | None = None, bit_rate: int | None = None) -> None:
    """Audio-only file with PyAV's encoders (x: (n, channels) float); ``fmt``: the muxer (default:
    from the extension), ``options``: the muxer's options (e.g. ``{"write_xing": "0"}``)."""
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        st = out.add_stream(codec, rate=sr)
        st.layout = layout
        if bit_rate:
            st.bit_rate = bit_rate
        fs = st.codec_context.frame_size or 1024
        kind = st.codec_context.format.name
        for s in range(0, len(x), fs):
            c = x[s:s + fs]
            arr = np.ascontiguousarray(c.T if kind.endswith("p") else c.reshape(1, -1))
            if kind.startswith("s16"):
                arr = (np.clip(arr, -1, 1) * 32767).astype(np.int16)
            elif kind.startswith("s32"):
                arr = (np.clip(arr, -1, 1) * 2**31 * 0.999).astype(np.int32)
            fr = av.AudioFrame.from_ndarray(arr, format=kind, layout=layout)
            fr.sample_rate, fr.pts, fr.time_base = sr, s, Fraction(1, sr)
            out.mux(st.encode(fr))
        out.mux(st.encode(None))


def write_song(path, x: np.ndarray, sr: int, kind: str) -> Path:
    """``x`` ((n, channels) float at ``sr``) written as the song format ``kind`` (SONG_FORMATS):
    resampled (polyphase) to its rate, averaged to mono where it is mono. Returns the path (the
    format's extension added)."""
    from scipy.signal import resample_poly

    ext, fmt, rate, channels, codec, bit_rate = SONG_FORMATS[kind]
    y = np.asarray(x, np.float64)
    if channels == 1:
        y = y.mean(axis=1, keepdims=True)
    if rate != sr:
        g = gcd(rate, sr)
        y = resample_poly(y, rate // g, sr // g, axis=0)
    path = Path(f"{path}.{ext}")
    write_audio_file(path, y.astype(np.float32), rate, codec, fmt=fmt, bit_rate=bit_rate)
    return path


def simulate_camera(mix, vocals, rng, *, seg=(1.0, 5.0), lead_s=0.5, rt60=0.4, snr_db=10.0,
                    clip=0.5, gain=0.3, singer=0.0, cam_sr=48000, src_sr=44100, tail_s=0.5):
    """A camera microphone recording the song played from ``seg[0]`` to ``seg[1]`` (song time),
    heard ``lead_s`` after the camera started: room reverb (direct path + exponential tail), a
    gain, brown room noise at ``snr_db``, clipping at ``clip`` x peak, an optional singer (the
    vocal stem, 120 ms late), resampled to ``cam_sr``. Returns (audio, true offset_s)."""
    from scipy import signal

    a = mix[int(seg[0] * src_sr):int(seg[1] * src_sr)].copy()
    if singer:
        a += singer * np.roll(vocals[int(seg[0] * src_sr):int(seg[1] * src_sr)], int(0.12 * src_sr))
    g = gcd(cam_sr, src_sr)
    x = signal.resample_poly(a, cam_sr // g, src_sr // g)
    lead = int(round(lead_s * cam_sr))
    y = np.zeros(lead + len(x) + int(tail_s * cam_sr))
    y[lead:lead + len(x)] = x
    t = np.arange(int(rt60 * cam_sr)) / cam_sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.05
    ir[: int(0.003 * cam_sr)] = 0
    ir[0] = 1.0
    y = signal.fftconvolve(y, ir)[: len(y)]
    y = gain * y / np.abs(y).max()
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(len(y)))
    y += noise * np.std(y[lead:lead + len(x)]) / np.std(noise) * 10 ** (-snr_db / 20)
    y = np.clip(y, -clip * gain, clip * gain)
    return y.astype(np.float32), seg[0] - lead_s


# the "singer video with a reverberant, noisy camera track" of the sync table
# (bench/sync_formats.py, tests/test_sync.py): the song from 1 to 5 s heard 0.5 s after the camera
# started, a singer along (the vocal stem 120 ms late, as loud as the song), RT60 0.6 s, room noise
# at 5 dB SNR, clipping
SINGER_CAMERA = dict(seg=(1.0, 5.0), lead_s=0.5, rt60=0.6, snr_db=5.0, singer=1.0, clip=0.5)


def write_take(path, frames, audio: np.ndarray | None = None, sr: int = AUDIO_SR, fmt: str = "mp4",
               vcodec: str = "libx264", acodec: str = "aac") -> int:
    """A take in any container: ``frames`` RGB uint8 at 30 fps, ``audio`` (float, mono) its camera
    track from video time 0, e.g. AVI with MPEG-4 Part 2 + MP3 (``fmt="avi", vcodec="mpeg4",
    acodec="libmp3lame"``, as old cameras wrote; 4 Mbit/s). Returns the number of frames."""
    n = 0
    # the encoder's priming (MP3: 1105 samples) comes out at negative times; FFmpeg would shift
    # every stream later to avoid them (AVI: the video by a frame), a camera writes the audio from 0
    with av.open(str(path), mode="w", format=fmt, options={"avoid_negative_ts": "disabled"}) as box:
        vs = box.add_stream(vcodec, rate=FPS)
        vs.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            vs.options = {"crf": "18", "preset": "veryfast"}
        else:
            vs.bit_rate = 4_000_000
        aus = box.add_stream(acodec, rate=sr, layout="mono") if audio is not None else None
        if aus is not None:
            audio = np.asarray(audio, np.float32)
            kind = aus.codec_context.format.name
            step = aus.codec_context.frame_size or 1152
            apos = 0

        def mux_audio(upto: int, final: bool = False) -> int:
            nonlocal apos
            while apos + step <= upto or (final and apos < upto):
                chunk = audio[apos:min(apos + step, upto)][None]
                if kind.startswith("s32"):
                    chunk = (np.clip(chunk, -1, 1) * 2**31 * 0.999).astype(np.int32)
                elif kind.startswith("s16"):
                    chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=kind,
                                                layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = sr, apos, Fraction(1, sr)
                box.mux(aus.encode(fr))
                apos += chunk.shape[1]
            return apos

        for rgb in frames:
            if n == 0:
                vs.width, vs.height = rgb.shape[1], rgb.shape[0]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            box.mux(vs.encode(frame))
            n += 1
            if aus is not None:
                mux_audio(min(len(audio), n * sr // FPS))
        if aus is not None:
            mux_audio(len(audio), final=True)
            box.mux(aus.encode(None))
        box.mux(vs.encode(None))
    return n


def damage_audio(src, dst, from_s: float, to_s: float, seed: int = 0) -> None:
    """``src`` with the payload of its audio packets from ``from_s`` to ``to_s`` (pts) overwritten
    by random bytes (the container intact): a recording with a broken stretch of audio."""
    with av.open(str(src)) as c:
        a = c.streams.audio[0]
        where = [(p.pos, p.size) for p in c.demux(a)
                 if p.size and from_s <= float(p.pts * p.time_base) < to_s]
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    for pos, size in where:
        data[pos + 4:pos + size] = rng.integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))


def joined_mpegts(src, dst, split: int) -> np.ndarray:
    """``src`` re-encoded as two MPEG-TS files, frames ``0..split-1`` and ``split..``, each with its
    camera audio and its own clock (both start at 1.4 s), joined end to end (``cat a.ts b.ts``).
    Returns ``shown`` (N,): the source frame of each 30 fps output frame (all of them, in order)."""
    frames = [rgb for _, rgb in iter_frames(src, FPS)]
    audio = camera_audio(src)
    cut = split * AUDIO_SR // FPS
    parts = [Path(f"{dst}.part{k}.ts") for k in (0, 1)]
    write_take(parts[0], frames[:split], audio[:cut], fmt="mpegts")
    write_take(parts[1], frames[split:], audio[cut:len(frames) * AUDIO_SR // FPS], fmt="mpegts")
    Path(dst).write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    for part in parts:
        part.unlink()
    return np.arange(len(frames))


def looped(src_wav, dst_wav, copies: int = 2) -> None:
    """The song of ``src_wav`` ``copies`` times in a row, sample for sample (a loop: copy-pasted
    sections are common in produced music)."""
    import soundfile as sf

    x, sr = sf.read(str(src_wav), dtype="float32", always_2d=True)
    sf.write(str(dst_wav), np.concatenate([x] * copies), sr, subtype="FLOAT")


def avi_mp3(src, dst, damaged_s: tuple[float, float] | None = None) -> None:
    """``src`` as an old camera wrote it: AVI, MPEG-4 Part 2 video and MP3 audio (whose encoder
    delay AVI cannot signal), optionally with its audio packets from ``damaged_s[0]`` to
    ``damaged_s[1]`` s damaged (:func:`damage_audio`)."""
    frames = (rgb for _, rgb in iter_frames(src, FPS))
    tmp = Path(f"{dst}.whole.avi")
    write_take(tmp if damaged_s else dst, frames, camera_audio(src), fmt="avi", vcodec="mpeg4",
               acodec="libmp3lame")
    if damaged_s:
        damage_audio(tmp, dst, *damaged_s)
        tmp.unlink()


def adts_song(src_wav, dst) -> None:
    """The song of ``src_wav`` as a raw ADTS ``.aac`` file (FFmpeg's AAC, 96 kbit/s): no container
    to say that its first 1024 samples are the encoder's priming."""
    import soundfile as sf

    x, sr = sf.read(str(src_wav), dtype="float32", always_2d=True)
    write_audio_file(dst, x, sr, "aac", fmt="adts", bit_rate=96000)
