"""Builders of bad (and awkward but good) recordings, made from real demo material with PyAV/numpy.

Used by ``tests/test_bad_inputs_e2e.py``. Every builder writes one file and returns what the test
needs to check the pipeline against the truth (e.g. which source frame each 30 fps output frame
shows). Time conventions are the project's (CONTRIBUTING.md): frame ``i`` at ``i / 30`` s.

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


def corrupt_header(src: str | os.PathLike, dst: str | os.PathLike, n_bytes: int = 4096, seed: int = 0) -> None:
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
def variable_frame_rate(src: str | os.PathLike, dst: str | os.PathLike, seed: int = 0) -> np.ndarray:
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
    return np.floor(k * FPS / fps + 1e-9).astype(int)               # the 30 fps source frame it shows


def excerpt(src: str | os.PathLike, dst: str | os.PathLike, start: int, stop: int) -> None:
    """Frames ``start..stop-1`` of ``src`` (30 fps) with their camera audio, re-encoded: a take that
    starts ``start / 30`` s later in the song (its offset is the source's + ``start / 30``)."""
    audio = camera_audio(src)[start * AUDIO_SR // FPS: stop * AUDIO_SR // FPS]
    frames = (((i - start) / FPS, rgb) for i, rgb in iter_frames(src, FPS, n_frames=stop) if i >= start)
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
