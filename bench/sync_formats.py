"""Sync of a singer take against the song as people have it, and faulty files; prints JSON lines.

    .venv/bin/python bench/sync_formats.py [--out /tmp/sync_formats] [--rows all|formats|...]

The table of docs/sync.md ("The song as people have it"), measured through the steps' own functions
(``ingest``, ``song``, ``separate`` builtin, ``track``, ``sync``; QC = ``sync.min_confidence`` 7
and qc's reason). Material (``tests/badinputs.py``): the real MUSDB18 clip of ``stempeg``
(``stempeg.example_stem_path()``), played in a room and recorded by a camera with a singer along
(``SINGER_CAMERA``: reverb RT60 0.6 s, room noise at 5 dB SNR, clipping; 48 kHz AAC in MP4 unless
the row says otherwise); the song written in each format of ``SONG_FORMATS`` with PyAV's encoders
(FFmpeg's AAC, LAME); a loop (the clip three times, sample for sample); an AVI camera with MP3
audio (MPEG-4 Part 2, as old cameras), whole or with damaged stretches; Debian opencv-doc's
``Megamind.avi`` (a real AC-3 track whose first frame does not decode) and ``Megamind_bugy.avi``.

Per row one JSON line: ``row``, ``qc`` (pass / fail), ``reason`` (when it fails),
``offset_error_ms`` (offset_s - truth), ``confidence``, ``confidence_ratio`` (song formats: to the
44.1 kHz WAV row's), ``method``, ``band_hz``. The code measured is the first ``preprocessing`` on
``PYTHONPATH`` (this tree's by default), so the same material can be measured on another checkout.
"""
from __future__ import annotations

import os

os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                 "NUMBA_NUM_THREADS"), "1"))

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# the repository after PYTHONPATH: PYTHONPATH=/other/checkout measures that code
sys.path.append(str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import badinputs as bi
from preprocessing.common import StepError, save_json, save_npz, save_wav
from preprocessing.media import decode_audio
from preprocessing.song import song_step

ROOT = Path(__file__).resolve().parents[1]

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
MEGAMIND_BUGY = MEGAMIND.with_name("Megamind_bugy.avi")
MIN_CONFIDENCE = 7.0


def code_frames(n: int):
    return (np.full((32, 32, 3), (k * 7) % 256, np.uint8) for k in range(n))


def clip() -> tuple[np.ndarray, np.ndarray]:
    """The MUSDB18 clip that ships with stempeg (``stempeg.example_stem_path()``; found without
    importing stempeg, which wants an ffmpeg binary): stereo mixture and vocal stem at 44.1 kHz."""
    import importlib.util

    spec = importlib.util.find_spec("stempeg")
    path = next(Path(spec.submodule_search_locations[0]).rglob("*.stem.mp4"))
    return (decode_audio(path, sr=44100, stream=0, mono=False)[0],
            decode_audio(path, sr=44100, stream=4)[0].astype(np.float64))


def run_row(name: str, d: Path, video: Path, song: Path, truth: float | None,
            track: bool = False) -> dict:
    """ingest + song (+ separate + track) + sync of one take; the QC verdict on the sync alone."""
    from preprocessing.ingest import ingest
    from preprocessing.sync import sync_take

    d.mkdir(parents=True, exist_ok=True)
    save_json(d / "ingest.json", ingest(name, video))
    song_step("song", song, d / "mix.wav", d / "song.json")
    if track:
        from preprocessing.media import read_wav
        from preprocessing.separate import separate_builtin
        from preprocessing.track import track_video

        vocals, _ = separate_builtin(read_wav(d / "mix.wav", 16000), 16000)
        save_wav(d / "vocals.wav", vocals, 16000)
        n = json.loads((d / "ingest.json").read_text())["n_frames"]
        save_npz(d / "track.npz", **track_video(str(video), n, progress=False))
    row = {"row": name}
    try:
        res = sync_take(name, video, d / "ingest.json", d / "track.npz", d / "mix.wav",
                        d / "vocals.wav" if track else None)
    except StepError as e:
        return {**row, "qc": "fail", "reason": f"sync: {e}"}
    conf = res["confidence"]
    err = None if truth is None else round(1000 * (res["offset_s"] - truth), 4)
    row.update(qc="pass" if conf >= MIN_CONFIDENCE else "fail", confidence=round(conf, 2),
               method=res["method"], offset_error_ms=err, band_hz=res["details"].get("band_hz"))
    if conf < MIN_CONFIDENCE:
        try:
            from preprocessing.qc import _sync_why
            why = _sync_why(res, MIN_CONFIDENCE)
        except ImportError:  # (older code: no reason beyond the number)
            why = ""
        row["reason"] = f"low sync confidence: {conf:.2f} < {MIN_CONFIDENCE:g}{why}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/sync_formats")
    ap.add_argument("--rows", default="all", help="all, or some of: formats,loop,avi,megamind")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    which = set(a.rows.split(",")) if a.rows != "all" else {"formats", "loop", "avi", "megamind"}
    stereo, vocals = clip()
    mix = stereo.mean(axis=1).astype(np.float64)
    cam, truth = bi.simulate_camera(mix, vocals, np.random.default_rng(21), **bi.SINGER_CAMERA)
    take = out / "singer.mp4"
    bi.write_take(take, code_frames(int(len(cam) / 48000 * 30)), cam, 48000)
    ref = None

    def emit(row: dict) -> None:
        nonlocal ref
        if row["row"] == "44.1 kHz WAV":
            ref = row.get("confidence")
        if ref and row.get("confidence") is not None and row["row"] in bi.SONG_FORMATS:
            row["confidence_ratio"] = round(row["confidence"] / ref, 2)
        print(json.dumps(row), flush=True)

    if "formats" in which:
        for kind in bi.SONG_FORMATS:
            song = bi.write_song(out / kind.replace(" ", "_"), stereo, 44100, kind)
            emit(run_row(kind, out / f"row {kind}", take, song, truth))
    if "loop" in which:
        loop = np.concatenate([stereo] * 3)
        song = bi.write_song(out / "loop", loop, 44100, "44.1 kHz WAV")
        rows = (("loop: take inside two copies (song 4-11 s of 18.2 s)", (4.0, 11.0), 0.0),
                ("loop: camera started 1 s before the song", (0.0, 7.0), 1.0),
                ("loop: the song ends with the take", (14.0, 18.25), 0.0))
        for label, seg, lead in rows:
            c, t = bi.simulate_camera(loop.mean(axis=1), np.concatenate([vocals] * 3),
                                      np.random.default_rng(7),
                                      **{**bi.SINGER_CAMERA, "seg": seg, "lead_s": lead})
            v = out / f"{label[:24]}.mp4".replace(" ", "_").replace(":", "")
            bi.write_take(v, code_frames(int(len(c) / 48000 * 30)), c, 48000)
            emit(run_row(label, out / f"row {label[:24]}", v, song, t))
    if "avi" in which:
        song = bi.write_song(out / "wav44", stereo, 44100, "44.1 kHz WAV")
        avi = out / "camera.avi"
        bi.write_take(avi, code_frames(int(len(cam) / 48000 * 30)), cam, 48000, fmt="avi",
                      vcodec="mpeg4", acodec="libmp3lame")
        emit(run_row("MP3-in-AVI camera", out / "row avi", avi, song, truth))
        for label, span in (("MP3-in-AVI camera, audio damaged 1.5-2.5 s", (1.5, 2.5)),
                            ("MP3-in-AVI camera, audio damaged 0.4-5.5 s", (0.4, 5.5))):
            bad = out / f"damaged {span[0]}.avi"
            bi.damage_audio(avi, bad, *span)
            emit(run_row(label, out / f"row {label[-12:]}", bad, song, truth))
    if "megamind" in which and MEGAMIND.exists():
        emit(run_row("Megamind.avi (a broken AC-3 frame) vs its own soundtrack",
                     out / "row megamind", MEGAMIND, MEGAMIND, 0.0))
        emit(run_row("Megamind_bugy.avi (no audio stream) vs Megamind.avi's soundtrack",
                     out / "row bugy", MEGAMIND_BUGY, MEGAMIND, None, track=True))


if __name__ == "__main__":
    main()
