"""song: decode the song that was played -> ``mix.wav`` (16 kHz mono float32) + ``song.json``.

Any container/codec FFmpeg reads (WAV, FLAC, MP3, AAC/M4A, OGG/Opus, a music video's sound track...)
at any rate and channel count. The mix is the mean of the channels, resampled by FFmpeg's
swresample (:func:`preprocessing.media.decode_audio`); sample 0 is the first sample of the song
(MP3/AAC encoder delay removed), so song time ``k / 16000`` s is sample ``k``.

``song.json``: ``song, path, duration_s, source_sr, channels, codec``, plus ``container``,
``peak`` (max |x| of the mix), ``rms_dbfs``, ``sr`` (16000), ``gaps_s`` (the ``[from, to]``
stretches that do not decode, zeros in the mix) and ``decoded_fraction``.

A partly corrupt song keeps what decodes, in place (its timestamps; :func:`preprocessing.media.
decode_audio`): sync aligns on the rest. A song that cannot be used fails with a one-line reason
naming it: unreadable file, no audio track, no decodable samples, less than
:data:`MIN_DECODED_FRACTION` of it decodable, NaN or infinite samples (a float export whose effect
chain blew up; every later step would turn them into NaN features), shorter than
:data:`MIN_SECONDS`, or silent (peak below :data:`SILENCE_DBFS`).

CLI: ``python -m preprocessing.song --song S --audio PATH --out-wav mix.wav --out-json song.json``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from preprocessing.common import StepError, run_step, save_json, save_wav
from preprocessing.media import decode_audio, probe
from preprocessing.timebase import SR

MIN_SECONDS = 1.0      # shorter than this cannot be aligned (sync) nor give one training window
SILENCE_DBFS = -60.0   # a mix whose peak is below this is treated as silent (e.g. a muted export)
MIN_DECODED_FRACTION = 0.5  # a song with less than this decodable is too broken to use


def decode_song(path: str | Path, sr: int = SR) -> tuple[np.ndarray, dict]:
    """Decode ``path`` to float32 mono at ``sr``; return ``(mix, info)`` (``info`` without
    ``song``).

    Raises StepError for the bad inputs listed in the module docstring.
    """
    info = probe(path)
    a = info["audio"]
    if a is None:
        raise StepError("no audio track")
    if a["codec"] is None:
        raise StepError("unsupported audio codec (FFmpeg has no decoder for it)")
    mix, _, gaps = decode_audio(path, sr=sr, mono=True, with_gaps=True)
    broken = sum(b - a for a, b in gaps)
    decoded = 1.0 - broken / (len(mix) / sr) if len(mix) else 0.0
    if decoded < MIN_DECODED_FRACTION:
        raise StepError(f"only {100 * decoded:.0f}% of the song decodes ({broken:.1f} s of "
                        f"{len(mix) / sr:.1f} s corrupt in {len(gaps)} stretches, the first at "
                        f"{gaps[0][0]:.1f} s): too little is left")
    finite = np.isfinite(mix)
    # before the peak: max |x| of NaN samples is NaN, which would read as silence
    if not finite.all():
        raise StepError(f"audio contains NaN or infinite samples (the first at "
                        f"{np.argmin(finite) / sr:.1f} s)")
    duration = len(mix) / sr
    if duration < MIN_SECONDS:
        raise StepError(f"song too short: {duration:.2f} s (need at least {MIN_SECONDS:g} s)")
    peak = float(np.max(np.abs(mix)))
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_dbfs < SILENCE_DBFS:
        raise StepError(f"silent audio (peak {peak_dbfs:.0f} dBFS, below {SILENCE_DBFS:.0f} dBFS)")
    rms = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)))
    return mix, {
        "path": str(Path(path).absolute()),
        "duration_s": duration,
        "source_sr": a["sample_rate"],
        "channels": a["channels"],
        "codec": a["codec"],
        "container": info["container"],
        "sr": sr,
        "peak": peak,
        "rms_dbfs": float(20 * np.log10(rms)),
        "gaps_s": [[round(a, 4), round(b, 4)] for a, b in gaps],
        "decoded_fraction": decoded,
    }


def song_step(song: str, audio: str | Path, out_wav: str | Path, out_json: str | Path) -> dict:
    mix, info = decode_song(audio)
    info = {"song": song, **info}
    save_wav(out_wav, mix, SR)
    save_json(out_json, info)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--song", required=True, help="song id (file name without extension)")
    ap.add_argument("--audio", required=True, help="the song file that was played")
    ap.add_argument("--out-wav", required=True)
    ap.add_argument("--out-json", required=True)
    args = ap.parse_args(argv)
    return run_step("song", args.song, [args.out_wav, args.out_json],
                    lambda: song_step(args.song, args.audio, args.out_wav,
                                      args.out_json), kind="song")


if __name__ == "__main__":
    sys.exit(main())
