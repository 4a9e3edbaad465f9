"""Media I/O for every step: probe, audio decoding, constant-frame-rate frames, H.264/AAC writing.

Everything goes through PyAV (FFmpeg bundled in the wheel), so no ffmpeg binary is needed.

Time conventions (docs/data.md "Time and units"):

* The **video timeline** of a file starts at its *origin* ``t0``: the presentation time of the first
  video frame (``video.start_time``); for a file without video it is the audio stream's start time
  (for MP3 that is after the encoder delay, which FFmpeg already skips), or 0.
* :func:`decode_audio` returns samples such that sample ``k`` is at video time ``k / sr`` s. Frames
  are placed by their presentation timestamps (pts): AAC/Opus priming samples, which FFmpeg's
  decoder drops using the container's edit list / pre-skip, do not shift time, an audio track that
  starts after the video is padded with zeros in front, one that starts before is trimmed, and holes
  in the audio timestamps are filled with zeros.
* :func:`iter_frames` turns any frame rate (24, 25, 29.97, 60, variable) into a constant rate:
  output frame ``i`` is the source frame *shown* at video time ``i / fps``, i.e. the last source
  frame whose pts is at or before that time.
* Frame-count convention: ``N`` = the number of output frames whose time ``i / fps`` is strictly
  before the video duration ``D`` (end of the last frame minus ``t0``): ``N = ceil(D * fps)``. At a
  constant rate the last frame lasts the frame interval (or the longer duration the container
  stores for it); at a variable one, the duration the container gives it (as ffprobe: MP4's stored
  sample duration, Matroska's default duration), the median interval only where it gives none.

**Encoder delay.** Lossy encoders put silent priming samples first: AAC 1024, MP3 1105 (LAME's 576
plus the decoder's 529), AC-3 256 (FFmpeg's encoders; LAME is behind nearly every MP3). MP4/MOV
edit lists, the LAME/Xing header of an .mp3, Matroska's CodecDelay and Ogg pre-skip say how many
to drop, and FFmpeg drops them (the first packet carries ``skip_samples`` side data; MPEG-TS puts
the priming before the video's first timestamp). Raw ADTS ``.aac``, raw ``.ac3``, an .mp3 without
a LAME header and AVI cannot say it, so FFmpeg decodes the priming as audio, ~23 ms late (measured
1024 / 1105 / 256 samples, exactly these values). :func:`decode_audio` drops the codec's priming
for those containers (:data:`PRIMING`, :func:`_unsignalled_priming`).

**Joined files.** MPEG-TS/PS files cut or joined end to end (``cat a.ts b.ts``) restart their
clock at the join. FFmpeg's demuxer flags such formats (``AVFMT_TS_DISCONT``) and leaves the
timestamps as they are; ``ffmpeg`` itself shifts everything after a backward jump (or a forward one
over 10 s). :class:`_Joins` does the same for probe, frames and audio: the part after a join starts
where the part before it ended (its first frame right after the last one; no frame dropped), its
audio moved with it.

**Partly corrupt audio.** Packets that do not decode, and decoded frames far above full scale
(MP3 decodes some corrupt frames to values of 10-20 000), are left out: their time holds zeros,
and :func:`decode_audio` (``with_gaps=True``) says where (the *gaps*), so that a step can leave
them out and tell whether enough is left. A file that stops demuxing half-way keeps what was read.
"""
from __future__ import annotations

import bisect
import math
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from preprocessing.common import StepError, atomic_path, one_line
from preprocessing.timebase import FPS, SR

_EPS_FRAMES = 1e-6  # tolerance (in output frames) for float error in N = ceil(D * fps)
# encoder delay (priming samples) of each codec as FFmpeg's/LAME's encoders write it; dropped only
# where the container cannot signal it (module docstring)
PRIMING = {"aac": 1024, "mp3": 1105, "ac3": 256, "eac3": 256}
_NO_PRIMING_INFO = {"aac", "mp3", "ac3", "eac3", "avi"}  # demuxers: raw ADTS/MP3/AC-3, AVI
GARBAGE_LEVEL = 4.0      # a decoded float frame peaking above this (+12 dBFS) is corrupt, not audio
JOIN_BACK_S = 0.1        # a timestamp this far behind its stream's last one is a join (as ffmpeg)
JOIN_FORWARD_S = 10.0    # ... or this far ahead (ffmpeg's -dts_delta_threshold)


# --------------------------------------------------------------------------------------- helpers
def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file for reading; every failure becomes a one-line StepError."""
    path = Path(path)
    if not path.exists():
        raise StepError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise StepError(f"empty file (0 bytes): {path}")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise StepError(f"unreadable media file {path.name!r} (corrupt, truncated or not "
                        f"audio/video): {_av_reason(e)}") from e


def _av_reason(e: Exception) -> str:
    """FFmpeg's message without PyAV's errno/filename decoration."""
    msg = getattr(e, "strerror", None) or str(e)
    return one_line(msg)


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _pick_audio(container, stream: int | None):
    """The audio stream to decode: ``stream`` is an index among ALL streams of the file (as ffprobe
    numbers them), or None for the first audio stream."""
    if stream is None:
        if not container.streams.audio:
            raise StepError("no audio track")
        return container.streams.audio[0]
    if not 0 <= stream < len(container.streams) or container.streams[stream].type != "audio":
        raise StepError(f"stream {stream} is not an audio stream")
    return container.streams[stream]


def _video_stream(container):
    """The first real video stream (cover art in MP3/M4A/stem files is a 'video' stream too:
    skipped)."""
    for v in container.streams.video:
        if not v.disposition & av.stream.Disposition.attached_pic:
            return v
    return None


def _origin(container) -> float:
    """Origin ``t0`` (seconds, container clock) of the video timeline, see the module docstring."""
    v = _video_stream(container)
    if v is not None:
        if v.start_time is not None:
            return float(v.start_time * v.time_base)
        return 0.0
    if container.streams.audio:
        a = container.streams.audio[0]
        if a.start_time is not None:
            return float(a.start_time * a.time_base)
    return 0.0


def n_frames_cfr(duration_s: float, fps: float = FPS) -> int:
    """``N``: number of frames ``i`` with ``i / fps < duration_s`` (0 for an empty video)."""
    if duration_s <= 0:
        return 0
    return int(math.ceil(duration_s * fps - _EPS_FRAMES))


class _Joins:
    """Timestamps of a file joined from parts that each restart their clock (module docstring).

    For formats with FFmpeg's ``ts_discont`` flag (MPEG-TS/PS) the file's video and first audio
    packets are read once ahead (timestamps only): a packet whose dts is more than
    :data:`JOIN_BACK_S` behind its stream's previous one, or :data:`JOIN_FORWARD_S` ahead of it,
    starts a new part at its byte position (everything after it in the file belongs to that part).
    Each part is shifted so that its first video frame follows the previous part's last one (its
    end: pts + duration); its audio moves with it, keeping the part's own audio/video timing (as
    recorded). Without video, the audio continues the previous part's audio. Then, called on
    every demuxed packet before it is used or decoded, it shifts the packet's pts/dts. Other
    formats pass through unchanged. ``joins``: the (shifted) container time where each part
    starts. Written by hand: FFmpeg does this in the ``ffmpeg`` program
    (``ts_discontinuity_detect``), not in the libraries PyAV wraps.
    """

    def __init__(self, container):
        self.active = bool(container.format.flags & av.format.Flags.ts_discont.value)
        v = _video_stream(container)
        a = container.streams.audio[0] if container.streams.audio else None
        # the streams that show joins: the video and the first audio stream (probe's two)
        self.streams = [x for x in (v, a) if x is not None]
        self.starts: list[int] = []      # byte position where each part after the first starts
        self.offsets: list[float] = [0.0]
        self.joins: list[float] = []
        if self.active and self.streams:
            self._scan(container.name, v)

    def _scan(self, name: str, video) -> None:
        def new_part() -> dict:  # first / last (pts + duration) time of video and audio
            return {"v0": math.inf, "v1": -math.inf, "a0": math.inf, "a1": -math.inf}

        parts = [new_part()]
        last: dict[int, float] = {}
        try:
            with av.open(name) as c:
                for pk in c.demux(*[c.streams[x.index] for x in self.streams]):
                    if not pk.size or pk.dts is None:
                        continue
                    tb = pk.time_base
                    dts = float(pk.dts * tb)
                    prev = last.get(pk.stream.index)
                    if prev is not None and pk.pos is not None and pk.pos >= 0 and \
                            (dts < prev - JOIN_BACK_S or dts > prev + JOIN_FORWARD_S):
                        self.starts.append(int(pk.pos))
                        parts.append(new_part())
                        last = {}
                    last[pk.stream.index] = dts
                    t = float((pk.pts if pk.pts is not None else pk.dts) * tb)
                    k = "v" if video is not None and pk.stream.index == video.index else "a"
                    part = parts[-1]
                    part[k + "0"] = min(part[k + "0"], t)
                    part[k + "1"] = max(part[k + "1"], t + float((pk.duration or 0) * tb))
        except av.error.FFmpegError:  # a truncated file: the parts read so far
            pass
        for prev, part in zip(parts, parts[1:]):
            k = "v" if prev["v1"] > -math.inf and part["v0"] < math.inf else "a"
            off = self.offsets[-1] + prev[k + "1"] - part[k + "0"]
            self.offsets.append(off)
            self.joins.append(part[k + "0"] + off)
        self.starts = self.starts[:len(self.offsets) - 1]

    def __call__(self, packet) -> None:
        if not self.starts or packet.pos is None or packet.pos < 0:
            return
        offset = self.offsets[bisect.bisect_right(self.starts, packet.pos)]
        if offset:
            shift = int(round(offset / packet.time_base))
            if packet.dts is not None:
                packet.dts += shift
            if packet.pts is not None:
                packet.pts += shift


def _unsignalled_priming(container, astream, packet) -> int:
    """Priming samples FFmpeg will decode as audio: the codec's (:data:`PRIMING`) when the
    container cannot signal them and the first packet carries no ``skip_samples`` (module
    docstring); else 0. AAC only in its LC profile (HE-AAC's delay differs)."""
    if container.format.name not in _NO_PRIMING_INFO or packet.has_sidedata("skip_samples"):
        return 0
    cc = astream.codec_context
    name = cc.codec.canonical_name if cc is not None else None
    if name == "aac" and cc.profile != "LC":
        return 0
    return PRIMING.get(name, 0)


# ----------------------------------------------------------------------------------------- probe
def probe(path: str | os.PathLike, fps: float = FPS) -> dict:
    """Describe a media file by reading its header and demuxing (not decoding) every packet.

    Returns ``{"path", "container", "duration_s", "size_bytes", "origin_s", "video", "audio",
    "n_frames"}``. ``video`` (None when absent) holds ``index, codec, width, height`` (as displayed,
    i.e. after ``rotation``), ``rotation`` (degrees counter-clockwise from the display matrix),
    ``average_fps`` (frames / duration), ``real_fps`` (FFmpeg's r_frame_rate), ``n_packets``,
    ``duration_s`` (end of the last frame minus the origin), ``vfr`` (True when the frame intervals
    are not constant), ``min_interval_s``, ``max_interval_s``, ``corrupt_packets``. ``audio`` (None
    when absent) holds ``index, codec, sample_rate, channels, start_s`` (relative to the video
    timeline origin) and ``duration_s``. ``n_frames`` is ``N`` at ``fps`` (0 without video).
    ``joins_s``: the video times where a joined file's parts meet (:class:`_Joins`; usually []).
    Raises StepError on unreadable files.
    """
    path = Path(path)
    container = _open(path)
    try:
        v = _video_stream(container)
        a = container.streams.audio[0] if container.streams.audio else None
        t0 = _origin(container)
        streams = [s for s in (v, a) if s is not None]
        pts = {s.index: [] for s in streams}
        ends = {s.index: [] for s in streams}
        corrupt = {s.index: 0 for s in streams}
        truncated = False
        joins = _Joins(container)
        if streams:
            try:
                for packet in container.demux(*streams):
                    if packet.size == 0 or packet.pts is None:  # flush packets / no timestamps
                        continue
                    joins(packet)
                    i = packet.stream.index
                    pts[i].append(packet.pts)
                    ends[i].append(packet.pts + (packet.duration or 0))
                    corrupt[i] += bool(packet.is_corrupt)
            except av.error.FFmpegError:  # a truncated file: keep what could be read
                truncated = True
        info = {
            "path": str(path),
            "container": container.format.name,
            "size_bytes": path.stat().st_size,
            "origin_s": t0,
            "truncated": truncated,
            "joins_s": [t - t0 for t in joins.joins],
            "video": None,
            "audio": None,
            "n_frames": 0,
        }
        if v is not None:
            info["video"] = _probe_video(v, np.asarray(pts[v.index], np.int64),
                                         np.asarray(ends[v.index], np.int64), corrupt[v.index], t0)
            info["n_frames"] = n_frames_cfr(info["video"]["duration_s"], fps)
        if a is not None:
            cc = a.codec_context
            if cc is None:  # no decoder: describe the stream as unusable
                info["audio"] = {"index": a.index, "codec": None, "sample_rate": 0, "channels": 0,
                                 "start_s": 0.0, "duration_s": 0.0, "n_packets": len(pts[a.index]),
                                 "corrupt_packets": corrupt[a.index]}
                a = None
        if a is not None:
            p, e = np.asarray(pts[a.index], np.int64), np.asarray(ends[a.index], np.int64)
            start = _seconds(a.start_time, a.time_base)
            if start is None:
                start = float(p.min() * a.time_base) if len(p) else 0.0
            end = float(e.max() * a.time_base) if len(e) else start
            info["audio"] = {
                "index": a.index,
                "codec": cc.codec.canonical_name,  # "mp3", not the decoder "mp3float"
                "sample_rate": int(cc.sample_rate or a.rate or 0),
                "channels": int(cc.channels or 0),
                "start_s": start - t0,
                "duration_s": max(0.0, end - start),
                "n_packets": int(len(p)),
                "corrupt_packets": corrupt[a.index],
            }
        durations = [s["duration_s"] for s in (info["video"], info["audio"]) if s]
        if container.duration is not None:
            durations.append(container.duration / av.time_base)
        info["duration_s"] = max(durations) if durations else 0.0
        return info
    finally:
        container.close()


def _probe_video(v, pts: np.ndarray, ends: np.ndarray, corrupt: int, t0: float) -> dict:
    cc = v.codec_context  # None when FFmpeg has no decoder for the stream's codec
    tb = v.time_base
    width, height = (int(cc.width), int(cc.height)) if cc is not None else (0, 0)
    rotation = _stream_rotation(v) if cc is not None else 0
    if rotation % 180 == 90:
        width, height = height, width
    info = {
        "index": v.index,
        "codec": cc.codec.canonical_name if cc is not None else None,
        "width": width,
        "height": height,
        "rotation": rotation,
        "real_fps": float(v.base_rate) if v.base_rate else None,
        "n_packets": int(len(pts)),
        "corrupt_packets": int(corrupt),
        "duration_s": 0.0,
        "average_fps": None,
        "vfr": False,
        "min_interval_s": None,
        "max_interval_s": None,
    }
    if len(pts) == 0:
        return info
    order = np.sort(pts)  # B-frames: packets come in decode order, presentation order is sorted pts
    intervals = np.diff(order)
    if len(intervals):
        typical = float(np.median(intervals))
    else:
        rate = v.average_rate or v.base_rate or FPS
        typical = float(1 / (Fraction(rate) * tb))
    if len(intervals):
        # CFR means every interval equals the typical one up to timestamp rounding: 2 time-base
        # ticks (a 29.97 fps stream in a 1 ms time base alternates 33/34 ms) or 1 % of the interval
        tol = max(2.0, 0.01 * typical)
        info["vfr"] = bool(np.any(np.abs(intervals - typical) > tol))
        info["min_interval_s"] = float(intervals.min() * tb)
        info["max_interval_s"] = float(intervals.max() * tb)
    # end of the last frame. CFR: every frame lasts the interval (or longer, when the container
    # stores a longer last one: a still held at the end). VFR: no interval is the last frame's, so
    # the duration the container gives it (as ffprobe), the median interval only where it gives none
    last = int(np.argmax(pts))
    stored = int(ends[last] - pts[last])
    if info["vfr"]:
        last_end = int(pts[last] + (stored if stored > 0 else typical))
    else:
        last_end = max(int(ends.max()), int(order[-1] + typical))
    info["duration_s"] = float(last_end * tb) - t0
    info["average_fps"] = len(pts) / info["duration_s"] if info["duration_s"] > 0 else None
    return info


def _stream_rotation(v) -> int:
    """Display rotation of a video stream in degrees counter-clockwise (0, 90, 180, 270).

    Read from the first decoded frame's display matrix (PyAV exposes it there); 0 when absent.
    """
    try:
        container = av.open(v.container.name)
    except (av.error.FFmpegError, OSError):
        return 0
    try:
        for frame in container.decode(container.streams[v.index]):
            return int(round(frame.rotation or 0)) % 360
    except av.error.FFmpegError:
        pass
    finally:
        container.close()
    return 0


# ----------------------------------------------------------------------------------------- audio
def decode_audio(path: str | os.PathLike, sr: int = SR, mono: bool = True,
                 stream: int | None = None, with_gaps: bool = False):
    """Decode one audio stream, resampled to ``sr`` Hz (PyAV's resampler, i.e. FFmpeg's swresample).

    Returns ``(audio, start_s)``: float32 ``(n,)`` when ``mono`` (the mean of the channels) else
    ``(n, channels)`` (more than 2 are downmixed to stereo), with sample 0 at time 0 of the video
    timeline (see the module docstring), and ``start_s``, the time on that timeline of the first
    decoded sample (> 0: zeros were padded in front; < 0: audio before the first video frame was
    dropped). Encoder priming is dropped, also where the container cannot signal it (module
    docstring). ``stream`` is a stream index of the file (e.g. 4 = the vocal stem of a MUSDB18 stem
    file) or None for the first audio stream. With ``with_gaps`` returns ``(audio, start_s, gaps)``:
    ``gaps`` lists ``(from_s, to_s)`` on the video timeline where the stream holds no decodable
    audio (undecodable or garbage frames, holes in its timestamps; zeros in ``audio``), merged and
    cut to ``audio``; a stream that stops early is just shorter.
    Raises StepError("no audio track"), StepError on unreadable files or when nothing decodes.
    """
    container = _open(path)
    try:
        astream = _pick_audio(container, stream)
        if astream.codec_context is None:
            raise StepError("unsupported audio codec (FFmpeg has no decoder for it)")
        t0 = _origin(container)
        # keep mono/stereo as they are and average the channels ourselves below: FFmpeg's float
        # stereo->mono matrix is 0.707 (L + R), +3 dB over the mean that librosa & co. use; more
        # than two channels (5.1) are first folded to stereo with FFmpeg's downmix matrix
        channels = astream.codec_context.channels or 2
        layout = None if channels <= 2 else "stereo"
        resampler = av.AudioResampler(format="flt", layout=layout, rate=sr)
        out: list[np.ndarray] = []
        first_t: float | None = None  # container time of the first decoded sample
        fed = 0  # input samples placed so far (incl. filled gaps and dropped priming), at in_rate
        in_rate = None
        prime = None  # unsignalled priming of the stream (known at its first packet)
        pkt0_t = None  # container time of the stream's first packet
        skip = 0      # priming samples still to drop
        primed = 0    # priming samples dropped
        holes: list[tuple[int, int]] = []  # [from, to) input samples (from first_t) without audio
        kind = None  # (sample format, layout) of the first decoded frame: every frame is made so
        converters: dict = {}
        joins = _Joins(container)
        # garbage is looked for in lossy codecs' float output only: PCM and lossless decoders
        # return the file's samples as they are (a float WAV's NaN/inf is the song step's to name)
        codec_name = astream.codec_context.codec.canonical_name
        lossy = not codec_name.startswith(("pcm_", "flac", "alac", "wavpack", "tta", "ape", "mlp",
                                           "truehd"))

        def resample(frame):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1, f.layout.nb_channels))

        packets = container.demux(astream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # the file stops demuxing (truncated): keep what was read
                break
            joins(packet)
            if prime is None and packet.size:
                prime = _unsignalled_priming(container, astream, packet)
                pkt0_t = float(packet.pts * packet.time_base) if packet.pts is not None else None
            try:
                frames = packet.decode()
            except av.error.FFmpegError:  # a corrupt packet: skip it, its time becomes a gap
                continue
            for frame in frames:
                if frame.samples == 0:
                    continue
                if first_t is None:
                    in_rate = frame.sample_rate
                    kind = (frame.format.name, frame.layout.name)
                    first_t = frame.time if frame.time is not None else t0
                    if prime:
                        # unsignalled priming: every decoded sample is `prime` samples late; those
                        # whose true time is before the first packet's are the priming itself
                        # (none when the first packet did not decode: the priming went with it)
                        t_pkt = pkt0_t if pkt0_t is not None else first_t
                        skip = max(0, prime + int(round((t_pkt - first_t) * in_rate)))
                    t = None
                else:
                    if frame.sample_rate != in_rate:  # a corrupt frame header: left out (a hole)
                        continue
                    t = frame.time
                    if (frame.format.name, frame.layout.name) != kind:  # a corrupt header or a
                        frame = _conform(frame, kind, converters)      # layout change: convert
                if t is not None:
                    # place the frame by its pts: fill holes with zeros, cut overlaps
                    expected = int(round((t - first_t) * in_rate))
                    hole = expected - fed
                    if hole > max(2, in_rate // 1000):  # > 1 ms: a real hole, not pts rounding
                        resample(_silence_like(frame, hole))
                        holes.append((fed, fed + hole))
                        fed += hole
                    elif hole < -max(2, in_rate // 1000):
                        frame = _trim_front(frame, min(-hole, frame.samples))
                        if frame is None:
                            continue
                if skip:  # priming the container could not mark: not audio, and not a hole
                    n = min(skip, frame.samples)
                    skip -= n
                    fed += n
                    primed += n
                    frame = _trim_front(frame, n)
                    if frame is None:
                        continue
                if lossy and np.abs(frame.to_ndarray()).max(initial=0.0) > GARBAGE_LEVEL:
                    holes.append((fed, fed + frame.samples))  # a corrupt frame decoded to garbage
                    frame = _silence_like(frame, frame.samples)
                frame.pts = None  # the resampler must not re-time frames itself: we did it above
                resample(frame)
                fed += frame.samples
        resample(None)  # flush the resampler's delay line
    except av.error.FFmpegError as e:
        raise StepError(f"cannot decode audio of {Path(path).name!r}: {_av_reason(e)}") from e
    finally:
        container.close()
    if first_t is None or not out:
        raise StepError("audio track has no decodable samples")
    audio = np.concatenate(out, axis=0).astype(np.float32, copy=False)
    lag = (prime or 0) / in_rate  # the decoded audio's lateness (unsignalled priming)
    start_s = first_t - lag + primed / in_rate - t0  # true time of the first sample kept
    shift = int(round(start_s * sr))
    if shift > 0:
        audio = np.concatenate([np.zeros((shift, audio.shape[1]), np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    if mono:
        audio = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0].copy()
    if not with_gaps:
        return audio, float(start_s)
    # holes are counted in input samples from the first decoded one, the dropped priming included
    gaps = _merge_gaps([(start_s + (h0 - primed) / in_rate, start_s + (h1 - primed) / in_rate)
                        for h0, h1 in holes], len(audio) / sr)
    return audio, float(start_s), gaps


def _conform(frame: av.AudioFrame, kind: tuple[str, str], converters: dict) -> av.AudioFrame:
    """``frame`` in the sample format and channel layout ``kind`` (same rate, same samples)."""
    key = (frame.format.name, frame.layout.name)
    if key not in converters:
        converters[key] = av.AudioResampler(format=kind[0], layout=kind[1], rate=frame.sample_rate)
    parts = [f.to_ndarray() for f in converters[key].resample(frame)]
    x = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0), np.float32)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=kind[0], layout=kind[1])
    out.sample_rate = frame.sample_rate
    return out


def _merge_gaps(gaps: list[tuple[float, float]], end_s: float) -> list[tuple[float, float]]:
    """Sorted, merged ``(from_s, to_s)`` intervals cut to ``[0, end_s]`` (empty ones dropped)."""
    merged: list[list[float]] = []
    for a, b in sorted((max(0.0, a), min(end_s, b)) for a, b in gaps):
        if b <= a:
            continue
        if merged and a <= merged[-1][1] + 1e-9:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _silence_like(frame: av.AudioFrame, samples: int) -> av.AudioFrame:
    z = av.AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=samples)
    for plane in z.planes:
        plane.update(bytes(plane.buffer_size))
    z.sample_rate = frame.sample_rate
    z.pts = None
    return z


def _trim_front(frame: av.AudioFrame, n: int) -> av.AudioFrame | None:
    if n >= frame.samples:
        return None
    x = frame.to_ndarray()
    x = x[:, n:] if not frame.format.is_packed else x[:, n * frame.layout.nb_channels:]
    f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=frame.format.name,
                                   layout=frame.layout.name)
    f.sample_rate = frame.sample_rate
    return f


def read_wav(path: str | os.PathLike, sr: int | None = None) -> np.ndarray:
    """Read a float32 mono wav (as written by ``common.save_wav``); check its rate when ``sr``."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise StepError(f"unreadable wav {Path(path).name!r}: {one_line(e)}") from e
    if sr is not None and rate != sr:
        raise StepError(f"{Path(path).name}: sample rate {rate} Hz, expected {sr} Hz")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- frames
class iter_frames:  # lower case: used like a generator function; a class so it can carry .stats
    """Iterate ``(i, rgb)`` at a constant ``fps``: ``rgb`` is uint8 ``(H, W, 3)``, frame ``i`` the
    source frame shown at video time ``i / fps`` (by pts), for ``i < N`` (module docstring).

    Streaming: one decoded frame is held at a time, so memory does not grow with video length.
    ``size=(width, height)`` rescales every frame; by default frames keep the first frame's
    (displayed) size and a frame whose size changes mid-video is rescaled to it. The display
    rotation (phones) is applied. Corrupt packets are skipped: the previous good frame is repeated.
    ``start`` skips the first output frames (they are decoded, not yielded); ``threads`` sets the
    decoder's thread count (0: FFmpeg's choice). ``lazy=True`` yields ``(i, Frame)`` instead: a
    :class:`Frame` converts to RGB only when asked (``.rgb()`` is the array yielded otherwise) and
    can cut a resized square out of the frame without converting the whole frame (``.crop``).
    After (or during) iteration ``.stats`` holds ``n_frames, decoded, repeated, dropped,
    corrupt_packets`` (could not be decoded), ``corrupt_frames`` (decoded with error concealment),
    ``size_changes, first_size, out_size``.
    """

    def __init__(self, path: str | os.PathLike, fps: float = FPS,
                 size: tuple[int, int] | None = None, n_frames: int | None = None, start: int = 0,
                 threads: int = 0, lazy: bool = False):
        self.path = Path(path)
        self.lazy = lazy
        self.threads = threads  # decoder threads; 0 = FFmpeg's choice (frame + slice threading)
        self.fps = fps
        self.size = size
        info = probe(self.path, fps) if n_frames is None else None
        if info is not None and info["video"] is None:
            raise StepError("no video stream")
        self.n_frames = info["n_frames"] if n_frames is None else int(n_frames)
        self.start = start
        self.stats = {"n_frames": self.n_frames, "decoded": 0, "repeated": 0, "dropped": 0,
                      "corrupt_packets": 0, "corrupt_frames": 0, "size_changes": 0,
                      "first_size": None, "out_size": None}

    def __len__(self) -> int:
        return max(0, self.n_frames - self.start)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        container = _open(self.path)
        try:
            vs = _video_stream(container)
            if vs is None:
                raise StepError("no video stream")
            if vs.codec_context is None:
                raise StepError("unsupported video codec (FFmpeg has no decoder for it)")
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = self.threads
            t0 = _origin(container)
            # tolerance for timestamp rounding: a pts is an integer number of ticks, so a frame due
            # at time t may carry a pts up to half a tick later
            eps = 0.5 * float(vs.time_base) + 1e-9
            period = 1.0 / self.fps
            i = self.start  # next output frame
            held: np.ndarray | None = None  # the frame currently on screen
            held_used = True
            stamp = _BestEffortTimestamp()
            tb = float(vs.time_base)
            for frame in self._decode(container, vs):
                ts = stamp(frame.pts, frame.dts)
                t = ts * tb - t0 if ts is not None else i * period
                # every output time before this frame's time shows the held frame
                while i < self.n_frames and i * period < t - eps:
                    if held is None:  # output starts before the first decodable frame
                        held = self._convert(frame)
                    self.stats["repeated"] += held_used
                    held_used = True
                    yield i, held
                    i += 1
                if i >= self.n_frames:
                    break
                if not held_used:
                    self.stats["dropped"] += 1  # never shown at an output time (fps > self.fps)
                held, held_used = self._convert(frame), False
            while i < self.n_frames and held is not None:  # the last frame lasts until the end
                self.stats["repeated"] += held_used
                held_used = True
                yield i, held
                i += 1
            if i < self.n_frames:
                raise StepError(f"no decodable video frame in {self.path.name!r}")
        finally:
            container.close()

    def _decode(self, container, vs) -> Iterator[av.VideoFrame]:
        joins = _Joins(container)
        packets = container.demux(vs)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:  # truncated file: stop reading, keep what we have
                self.stats["corrupt_packets"] += 1
                break
            joins(packet)
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.stats["corrupt_packets"] += 1
                continue
            for frame in frames:
                self.stats["decoded"] += 1
                self.stats["corrupt_frames"] += bool(frame.is_corrupt)  # decoded with concealment
                yield frame
        try:  # drain the decoder after a truncated read
            yield from vs.decode(None)
        except av.error.FFmpegError:
            pass

    def _convert(self, frame: av.VideoFrame) -> np.ndarray | Frame:
        """What is yielded for a decoded frame: its RGB array, or a :class:`Frame` when ``lazy``."""
        rot, sw, sh = self._geometry(frame)
        lazy = Frame(frame, rot, (sw, sh))
        return lazy if self.lazy else lazy.rgb()

    def _geometry(self, frame: av.VideoFrame) -> tuple[int, int, int]:
        """(rotation, width, height): the display rotation (degrees counter-clockwise) and the size
        to scale the stored frame to before rotating it (size changes are counted in ``stats``)."""
        rot = int(round(frame.rotation or 0)) % 360
        w, h = frame.width, frame.height
        disp = (h, w) if rot % 180 == 90 else (w, h)
        if self.stats["first_size"] is None:
            self.stats["first_size"] = list(disp)
            self.stats["out_size"] = list(self.size or disp)
        elif list(disp) != self.stats["first_size"] and disp != getattr(self, "_last_disp", None):
            self.stats["size_changes"] += 1
        self._last_disp = disp
        ow, oh = self.stats["out_size"]
        # scale in the stored orientation, then rotate
        sw, sh = (oh, ow) if rot % 180 == 90 else (ow, oh)
        return rot, sw, sh


# 8-bit planar YUV formats that Frame.crop cuts in place: log2 of the chroma subsampling (x, y)
_PLANAR_YUV = {"yuv420p": (1, 1), "yuvj420p": (1, 1), "yuv422p": (1, 0), "yuvj422p": (1, 0),
               "yuv444p": (0, 0), "yuvj444p": (0, 0)}


class Frame:
    """One decoded video frame as :class:`iter_frames` yields it, converted only when asked
    (``iter_frames(..., lazy=True)``).

    ``shape`` is ``(H, W, 3)`` of its RGB array; :meth:`rgb` returns that array (exactly what
    ``iter_frames`` yields without ``lazy``; computed once); :meth:`crop` cuts a square out of it.
    Holds a reference to the decoder's frame (FFmpeg reference-counts its buffers, so the frame
    stays valid while held).
    """

    def __init__(self, frame: av.VideoFrame, rot: int, size: tuple[int, int]):
        self.frame = frame
        self.rot = rot            # display rotation, degrees counter-clockwise
        self.size = size          # (width, height) the stored frame is scaled to before rotating
        w, h = size if rot % 180 == 0 else size[::-1]
        self.shape = (h, w, 3)
        self._rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        """The frame as uint8 RGB ``(H, W, 3)`` (swscale does resize + colour conversion in one
        pass)."""
        if self._rgb is None:
            rgb = self.frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
            if self.rot:
                # rotation is counter-clockwise for display: np.rot90 with k = rot / 90 does the
                # same
                rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rot // 90))
            self._rgb = rgb
        return self._rgb

    def crop(self, x0: int, y0: int,
             side: int, out_px: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        """The square ``[x0, x0 + side) x [y0, y0 + side)`` of :meth:`rgb` (pixels; black where it
        leaves the frame), area-averaged to uint8 ``(out_px, out_px, 3)``.

        Returns ``(image, (x0, y0, side))`` with the square actually cut. 8-bit planar YUV frames at
        their decoded size (nearly all camera video): the square is cut from the Y, U, V planes and
        only the small result is converted to RGB (swscale, with the frame's colour space and range,
        as :meth:`rgb`): ~1.3 ms instead of ~6 ms (RGB of the whole frame, then the crop) for a
        1080p frame. Its side is grown to a multiple of ``k = side // out_px`` (at most ``k - 1``
        pixels, centre kept within half a pixel) so OpenCV's fast integer box filter does the first
        ``k``x; the chroma planes give the samples covering the square (4:2:0: up to half a chroma
        sample more on a side; the luma square, which FaceMesh & co. mostly see, is exact - snapping
        it to even pixels for the chroma instead made tracked landmarks measurably less steady).
        Other frames (10-bit, RGB, scaled by ``size``): cut from :meth:`rgb`, the square unchanged.
        """
        f = self.frame
        sub = _PLANAR_YUV.get(f.format.name)
        if sub is None or (f.width, f.height) != tuple(self.size):
            return crop_square(self.rgb(), x0, y0, side, out_px), (x0, y0, side)
        cw, ch = sub
        k = max(1, side // out_px)                  # integer shrink factor of the first pass
        s = -(-side // k) * k                       # luma side: a multiple of k
        grow = (s - side) // 2
        sx, sy = self._to_stored(x0 - grow, y0 - grow, s)
        full_range = f.format.name.startswith("yuvj") or f.color_range == 2   # 2: AVCOL_RANGE_JPEG
        small = av.VideoFrame(out_px, out_px, f.format.name)
        for p, (src, dst) in enumerate(zip(f.planes[:3], small.planes)):
            fx, fy = (1, 1) if p == 0 else (1 << cw, 1 << ch)
            black = (0 if full_range else 16) if p == 0 else 128
            plane = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)[:, :src.width]
            # chroma: the samples covering the luma square (up to half a sample wider per side)
            px0, py0, px1, py1 = sx // fx, sy // fy, -(-(sx + s) // fx), -(-(sy + s) // fy)
            region = _cut(plane, px0, py0, px1 - px0, py1 - py0, black)
            out = np.frombuffer(dst, np.uint8).reshape(dst.height, dst.line_size)[:, :dst.width]
            out[:] = _shrink(region, dst.width, dst.height)
        small.colorspace, small.color_range = f.colorspace, f.color_range
        rgb = _small_sws().reformat(small, format="rgb24", threads=1).to_ndarray()
        if self.rot:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rot // 90))
        return rgb, (*self._to_display(sx, sy, s), s)

    # square corners between display (rotated) and stored pixel coordinates; np.rot90(stored, k)
    # puts stored (x, y) at display (y, W - 1 - x) for k = 1 (W, H: stored width, height)
    def _to_stored(self, x0: int, y0: int, s: int) -> tuple[int, int]:
        w, h = self.size
        return {0: (x0, y0), 90: (w - y0 - s, x0), 180: (w - x0 - s, h - y0 - s),
                270: (y0, h - x0 - s)}[self.rot]

    def _to_display(self, sx: int, sy: int, s: int) -> tuple[int, int]:
        w, h = self.size
        return {0: (sx, sy), 90: (sy, w - sx - s), 180: (w - sx - s, h - sy - s),
                270: (h - sy - s, sx)}[self.rot]


_SWS = threading.local()


def _small_sws() -> av.video.reformatter.VideoReformatter:
    """This thread's reformatter for Frame.crop (reused, so its SwsContext is set up once)."""
    if not hasattr(_SWS, "reformatter"):
        _SWS.reformatter = av.video.reformatter.VideoReformatter()
    return _SWS.reformatter


def _cut(img: np.ndarray, x0: int, y0: int, w: int, h: int, fill: int = 0) -> np.ndarray:
    """``img[y0:y0 + h, x0:x0 + w]`` (a view when inside), padded with ``fill`` where it leaves
    img."""
    ih, iw = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, iw), min(y0 + h, ih)
    if (xa, ya, xb, yb) == (x0, y0, x0 + w, y0 + h):
        return img[ya:yb, xa:xb]
    out = np.full((h, w) + img.shape[2:], fill, img.dtype)
    if xa < xb and ya < yb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = img[ya:yb, xa:xb]
    return out


def _shrink(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area-average ``img`` to ``(h, w)``: OpenCV's integer box filter first when the size is a
    multiple of the factor (its fast path), then INTER_AREA (exact pixel-area weights) for the rest
    (bilinear when enlarging). Written here because no library call does both fast: a single
    INTER_AREA from 888 to 256 px, or PIL's antialiased resize, costs about twice the two passes."""
    import cv2  # opencv-contrib-python, a mediapipe dependency; imported here: most steps need none

    ih, iw = img.shape[:2]
    k = min(iw // w, ih // h)
    if k >= 2 and iw % k == 0 and ih % k == 0:
        img = cv2.resize(img, (iw // k, ih // k), interpolation=cv2.INTER_AREA)
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def crop_square(rgb: np.ndarray, x0: int, y0: int, side: int, out_px: int) -> np.ndarray:
    """The square ``[x0, x0 + side) x [y0, y0 + side)`` of an ``(H, W, C)`` image (zero where it
    leaves the image), area-averaged to ``(out_px, out_px, C)``."""
    return _shrink(_cut(rgb, x0, y0, side, side), out_px, out_px)


class _BestEffortTimestamp:
    """FFmpeg's ``guess_correct_pts`` (libavcodec/decode.c), which PyAV does not expose: use the
    frame's pts unless pts has gone backwards more often than the packet dts has; then use dts.

    Needed for files whose demuxer guesses pts badly, e.g. MPEG-4 Part 2 with packed B-frames in
    AVI (the real Megamind.avi): frames come out of the decoder in display order with pts labels
    swapped in pairs (1, 2, 3, 5, 4, ...) while their dts count 1, 2, 3, 4, 5, ...
    """

    def __init__(self):
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = None

    def __call__(self, pts, dts):
        if pts is not None and self.last_pts is not None:
            self.faulty_pts += pts <= self.last_pts
        if dts is not None and self.last_dts is not None:
            self.faulty_dts += dts <= self.last_dts
        self.last_pts = pts if pts is not None else self.last_pts
        self.last_dts = dts if dts is not None else self.last_dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


# --------------------------------------------------------------------------------------- writing
def write_video(path: str | os.PathLike, frames: Iterable, fps: float = FPS,
                audio: np.ndarray | None = None, sr: int = SR, crf: int = 18,
                preset: str = "veryfast", rotation: int = 0) -> int:
    """Write H.264 (yuv420p) + AAC (when ``audio`` is given) to an .mp4, atomically.

    ``frames`` yields RGB uint8 ``(H, W, 3)`` arrays (or ``(i, rgb)`` pairs as from
    :func:`iter_frames`); odd sizes are padded by one edge row/column (yuv420p needs even sizes).
    ``audio`` is float ``(n,)`` or ``(n, channels)`` at ``sr``; its sample 0 is at video time 0
    (AAC priming is recorded in the MP4 edit list, so :func:`decode_audio` reads it back in place).
    ``rotation`` (degrees counter-clockwise) sets the display matrix, as phones do.
    Returns the number of video frames written.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        audio = audio[:, None] if audio.ndim == 1 else audio
        if audio.shape[1] > 2:
            raise ValueError("write_video: at most 2 audio channels")
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset}
            if rotation:
                vs.set_display_rotation(rotation)
            aus = None
            if audio is not None:
                aus = out.add_stream("aac", rate=sr)
                aus.layout = "mono" if audio.shape[1] == 1 else "stereo"
                apos = 0
            for item in frames:
                rgb = item[1] if isinstance(item, tuple) else item
                rgb = np.asarray(rgb, np.uint8)
                if rgb.shape[0] % 2 or rgb.shape[1] % 2:
                    rgb = np.pad(rgb,
                                 ((0, rgb.shape[0] % 2),
                                  (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
                if n == 0:
                    vs.width, vs.height = rgb.shape[1], rgb.shape[0]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = n
                frame.time_base = 1 / rate
                out.mux(vs.encode(frame))
                n += 1
                if aus is not None:  # interleave: audio up to the end of this video frame
                    upto = min(len(audio), int(round(n / rate * sr)))
                    apos = _mux_audio(out, aus, audio, apos, upto, sr)
            if aus is not None:
                _mux_audio(out, aus, audio, apos, len(audio), sr)
                out.mux(aus.encode(None))
            out.mux(vs.encode(None))
    return n


def _mux_audio(out, aus, audio: np.ndarray, start: int, stop: int, sr: int) -> int:
    step = 1024  # AAC frame size
    pos = start
    while pos + step <= stop or (stop == len(audio) and pos < stop):
        chunk = audio[pos:min(pos + step, stop)]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.reshape(1, -1)), format="flt",
                                           layout=aus.layout.name)
        frame.sample_rate = sr
        frame.pts = pos
        frame.time_base = Fraction(1, sr)
        out.mux(aus.encode(frame))
        pos += len(chunk)
    return pos
