"""Benchmark the audio branch on one core; prints JSON.

    .venv/bin/python bench/audio.py [--seconds 240] [--video-seconds 10]

Real-time factors (RTF = seconds of audio or video per second of compute; > 1 is faster than real
time) on ONE core (OMP/MKL/numba/torch threads = 1, FFmpeg decoder threads = 1), for a synthetic
song of ``--seconds`` (default 4 minutes) and a camera take of the same length starting 1.5 s before
it:

* ``decode``: :func:`preprocessing.media.decode_audio` to 16 kHz mono from AAC/M4A 44.1 kHz stereo,
  MP3 44.1 kHz stereo, WAV 44.1 kHz stereo (the song step) and the take's mp4 (AAC 48 kHz mono).
* ``sync_gcc_phat``: :func:`preprocessing.sync.gcc_phat_offset` over the whole song (+ its error
  against the true offset and its confidence), and ``sync_mouth_envelope`` for the fallback.
* ``iter_frames_1080p``: 30 fps RGB frames/s from a 1080p H.264 clip (a photo panning) of
  ``--video-seconds`` and the resident memory growth while iterating (flat = streaming: run with a
  longer ``--video-seconds`` to see it does not grow). ``rss_growth_mb`` everywhere: peak RSS above
  the level before the stage.
* ``separate`` / ``mfcc``: RTF of ``preprocessing.separate.separate_builtin`` and
  ``preprocessing.mfcc.mfcc`` on the 16 kHz mix when those modules exist, else "unavailable".
CPU time (process_time) is reported next to wall time: the machine may be shared.
"""
from __future__ import annotations

import os

os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                 "NUMBA_NUM_THREADS"), "1"))

import argparse
import json
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from preprocessing.media import decode_audio, iter_frames, write_video
from preprocessing.sync import gcc_phat_offset, mouth_envelope_offset


def synth_song(seconds: float, sr: int, rng) -> np.ndarray:
    """Non-repeating stereo 'music': random chords with note envelopes, a noise-burst drum track."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = np.zeros(n)
    pos = 0.0
    while pos < seconds:
        d = rng.uniform(0.2, 0.8)
        a, b = int(pos * sr), min(n, int((pos + d) * sr))
        env = np.exp(-3 * (t[a:b] - pos))
        for f in rng.uniform(110, 880, 3):
            x[a:b] += 0.1 * env * np.sin(2 * np.pi * f * t[a:b])
        k = min(b, a + int(0.05 * sr))
        x[a:k] += 0.2 * rng.standard_normal(k - a) * np.exp(-40 * (t[a:k] - pos))
        pos += d
    return np.stack([x, np.roll(x, 7) * 0.8], axis=1).astype(np.float32)


def write_audio(path: Path, x: np.ndarray, sr: int, codec: str) -> None:
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=sr)
        st.layout = "stereo"
        fs = st.codec_context.frame_size or 1024
        fmt = st.codec_context.format.name
        for s in range(0, len(x), fs):
            c = x[s:s + fs]
            arr = (np.ascontiguousarray(c.T) if fmt.endswith("p")
                   else np.ascontiguousarray(c.reshape(1, -1)))
            if fmt.startswith("s16"):
                arr = (arr * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                arr = (arr * 2147483000.0).astype(np.int32)
            fr = av.AudioFrame.from_ndarray(arr, format=fmt, layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = sr, s, Fraction(1, sr)
            out.mux(st.encode(fr))
        out.mux(st.encode(None))


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def rtf(seconds: float, wall: float, cpu: float) -> dict:
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rtf": round(seconds / wall, 1),
            "rtf_cpu": round(seconds / max(cpu, 1e-9), 1)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RSSGrowth:
    """Peak resident memory above the level at entry (MB), sampled every 2 ms by a thread (the
    process-wide high-water mark cannot tell one stage from the ones before it)."""

    def __enter__(self):
        import threading

        import psutil

        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.done.wait(0.002):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.mb = round((max(self.peak, self.proc.memory_info().rss) - self.base) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--video-seconds", type=float, default=10.0)
    a = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    S = a.seconds
    report: dict = {"song_seconds": S, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        song = synth_song(S, 44100, rng)
        for ext, codec in (("m4a", "aac"), ("mp3", "libmp3lame"), ("wav", "pcm_s16le")):
            write_audio(tmp / f"song.{ext}", song, 44100, codec)
        lead = 1.5
        mono48 = signal.resample_poly(song.mean(axis=1), 160, 147)
        cam = np.concatenate([np.zeros(int(lead * 48000)), mono48])[: int(S * 48000)]
        cam = (0.3 * cam + 0.003 * rng.standard_normal(len(cam))).astype(np.float32)
        # the camera take: tiny frames (its audio is what is timed)
        write_video(tmp / "take.mp4", (np.zeros((16, 16, 3), np.uint8) for _ in range(int(S * 30))),
                    audio=cam, sr=48000, preset="ultrafast")

        dec = {}
        for name, path in (("m4a_aac_44k_stereo", tmp / "song.m4a"),
                           ("mp3_44k_stereo", tmp / "song.mp3"),
                           ("wav_44k_stereo", tmp / "song.wav"),
                           ("take_mp4_aac_48k_mono", tmp / "take.mp4")):
            (x, _), w, c = timed(lambda p=path: decode_audio(p))
            dec[name] = rtf(S, w, c)
        report["decode"] = dec
        mix16, _ = decode_audio(tmp / "song.m4a")
        cam16, _ = decode_audio(tmp / "take.mp4")

        with RSSGrowth() as mem:
            res, w, c = timed(lambda: gcc_phat_offset(cam16, mix16))
        report["sync_gcc_phat"] = {**rtf(S, w, c),
                                   "offset_error_ms": round(1000 * (res["offset_s"] + lead), 4),
                                   "confidence": round(res["confidence"], 1),
                                   "rss_growth_mb": mem.mb}
        # mouth-envelope: a mouth that follows the song's loudness, 1.5 s lead, 10 % of frames
        # untracked
        env = np.abs(signal.hilbert(mix16[::160]))  # 100 Hz envelope
        n = int(S * 30)
        t = np.arange(n) / 30 - lead
        mouth = (np.interp(t, np.arange(len(env)) / 100, env, left=0, right=0)
                 + 0.02 * rng.standard_normal(n))
        mouth[rng.uniform(size=n) < 0.1] = np.nan
        res, w, c = timed(lambda: mouth_envelope_offset(mouth, mix16))
        report["sync_mouth_envelope"] = {
            **rtf(S, w, c), "offset_error_ms": round(1000 * (res["offset_s"] + lead), 2),
            "confidence": round(res["confidence"], 1)}

        vs = a.video_seconds
        # a real photo (skimage's astronaut) panning across a 1080p frame: realistic texture to
        # decode
        from skimage.data import astronaut
        from skimage.transform import resize

        photo = (resize(astronaut(), (1080, 1080), anti_aliasing=True) * 255).astype(np.uint8)
        canvas = np.concatenate([photo, photo[:, ::-1]], axis=1)  # 1080 x 2160
        write_video(tmp / "hd.mp4", (np.ascontiguousarray(canvas[:, 4 * k % 240:4 * k % 240 + 1920])
                                     for k in range(int(vs * 30))), preset="ultrafast")
        frames = iter_frames(tmp / "hd.mp4", threads=1)
        with RSSGrowth() as mem:
            count, w, c = timed(lambda: sum(1 for _ in frames))
        report["iter_frames_1080p"] = {**rtf(vs, w, c), "frames": count, "fps": round(count / w, 1),
                                       "rss_growth_mb": mem.mb}

        try:
            from preprocessing.separate import separate_builtin
        except ImportError as e:
            report["separate"] = f"unavailable ({e})"
        else:
            _, w, c = timed(lambda: separate_builtin(mix16))
            report["separate"] = rtf(S, w, c)
        try:
            from preprocessing.mfcc import mfcc
        except ImportError as e:
            report["mfcc"] = f"unavailable ({e})"
        else:
            _, w, c = timed(lambda: mfcc(mix16))
            report["mfcc"] = rtf(S, w, c)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
