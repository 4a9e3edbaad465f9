"""ingest: probe a take's video -> ``ingest.json`` (its 30 fps frame count N and its streams).

Nothing is re-encoded: later steps stream the original file with
:func:`preprocessing.media.iter_frames`, which maps any source frame rate (24/25/29.97/60, variable)
onto the 30 fps timeline on the fly. That is faster and needs no disk, unlike writing a
constant-frame-rate copy (the first plan).

``ingest.json`` (docs/data.md): ``take, video, n_frames (N), fps (30), duration_s, width, height,
source_fps, vfr, has_audio, audio_sr, audio_channels, video_codec, audio_codec``, plus
``rotation`` (degrees, applied by iter_frames), ``real_fps``, ``audio_start_s`` (video timeline),
``corrupt_packets``, ``container`` and ``joins_s`` (where the parts of a file joined end to end
meet, its clock restarting there: placed one after the other; :func:`preprocessing.media.probe`).

CLI: ``python -m preprocessing.ingest --take T --video PATH --out work/takes/T/ingest.json``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preprocessing.common import StepError, run_step, save_json
from preprocessing.media import iter_frames, probe
from preprocessing.timebase import FPS


def ingest(take: str, video: str | Path) -> dict:
    """Probe ``video`` and check that its first frame decodes; returns the ``ingest.json`` dict.

    Raises StepError for: missing/empty/corrupt/truncated files, no video stream, a video codec
    FFmpeg cannot decode, a video without frames.
    """
    info = probe(video, FPS)
    v, a = info["video"], info["audio"]
    if v is None:
        raise StepError("no video stream")
    if v["codec"] is None:
        raise StepError("unsupported video codec (FFmpeg has no decoder for it)")
    if info["n_frames"] == 0 or v["n_packets"] == 0:
        raise StepError("video stream has no frames")
    # probing only demuxes: decode one frame so that an undecodable stream fails here, not later
    next(iter(iter_frames(video, FPS, n_frames=1)))
    has_audio = bool(a is not None and a["codec"] is not None and a["n_packets"] > 0)
    return {
        "take": take,
        "video": str(Path(video).absolute()),
        "n_frames": info["n_frames"],
        "fps": FPS,
        "duration_s": v["duration_s"],
        "width": v["width"],
        "height": v["height"],
        "rotation": v["rotation"],
        "source_fps": v["average_fps"],
        "real_fps": v["real_fps"],
        "vfr": v["vfr"],
        "corrupt_packets": v["corrupt_packets"],
        "container": info["container"],
        "video_codec": v["codec"],
        "has_audio": has_audio,
        "audio_sr": a["sample_rate"] if has_audio else None,
        "audio_channels": a["channels"] if has_audio else None,
        "audio_codec": a["codec"] if has_audio else None,
        "audio_start_s": a["start_s"] if has_audio else None,
        "joins_s": info["joins_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--take", required=True)
    ap.add_argument("--video", required=True, help="the take's video file (any container/codec)")
    ap.add_argument("--out", required=True, help="ingest.json to write")
    args = ap.parse_args(argv)
    return run_step("ingest", args.take, [args.out],
                    lambda: save_json(args.out, ingest(args.take, args.video)))


if __name__ == "__main__":
    sys.exit(main())
