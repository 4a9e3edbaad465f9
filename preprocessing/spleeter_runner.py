"""Spleeter 2stems runner: run by the Spleeter interpreter (``.venv-spleeter``), not by MusicFace's.

``preprocessing.separate --backend spleeter`` decodes the song at 44.1 kHz stereo, saves it as a
float32 ``(n, 2)`` .npy and runs::

    <spleeter python> preprocessing/spleeter_runner.py --input in.npy --model-dir MODEL/2stems
        --out-dir D [--chunk-s 120 --overlap-s 2 --threads 0]

which writes ``D/vocals.npy`` and ``D/accompaniment.npy`` (float32 ``(n, 2)``, 44.1 kHz).

How Spleeter is used: its own model code (``EstimatorSpecBuilder`` on its ``spleeter:2stems``
configuration, Wiener filtering off, as ``spleeter separate`` by default) builds the prediction
graph once; the weights are restored with a TF Saver from the given checkpoint, which fails loudly
when a variable is missing - so no download and no silent fallback to fresh random weights, whatever
Spleeter's ``MODEL_PATH`` logic would do. The whole input is separated (no 600 s ``duration``
limit): the network runs on ``chunk_s`` pieces (bounded memory: Spleeter needs ~25 MB per second of
audio per call) cross-faded linearly over ``overlap_s``.

Only numpy is imported at module level, so the chunking helpers can be imported and tested from
MusicFace's own environment (numpy 2); tensorflow / spleeter are imported in :func:`main`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

SAMPLE_RATE = 44100
STEMS = ("vocals", "accompaniment")


def chunk_spans(n: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """Cover ``[0, n)`` with windows ``[start, stop)`` of at most ``chunk`` samples; consecutive
    windows share exactly ``overlap`` samples (the cross-fade) and the last one is longer than
    ``overlap``."""
    if chunk <= 0 or overlap < 0 or overlap >= chunk:
        raise ValueError(f"chunk_spans: need chunk > overlap >= 0, got chunk={chunk} "
                         f"overlap={overlap}")
    if n <= chunk:
        return [(0, n)]
    step = chunk - overlap
    count = -(-(n - overlap) // step)  # ceil
    return [(i * step, min(i * step + chunk, n)) for i in range(count)]


def separate_in_chunks(wave: np.ndarray, separate: Callable[[np.ndarray], dict], chunk: int,
                       overlap: int, log=None) -> dict[str, np.ndarray]:
    """Run ``separate`` (``(m, 2) -> {stem: (m, 2)}``) on overlapping pieces of ``wave`` and join
    them.

    In each shared region the earlier piece fades out and the later fades in linearly
    (weights sum to 1), so a separator that is the same everywhere gives back exactly its output on
    the whole input. Returns ``{stem: float32 (n, channels)}``.
    """
    n = len(wave)
    spans = chunk_spans(n, chunk, overlap)
    out: dict[str, np.ndarray] = {}
    ramp = (((np.arange(overlap) + 0.5) / overlap).astype(np.float32) if overlap
            else np.zeros(0, np.float32))
    for i, (a, b) in enumerate(spans):
        t = time.time()
        pieces = separate(np.ascontiguousarray(wave[a:b]))
        w = np.ones(b - a, np.float32)
        if i > 0:
            w[:overlap] = ramp
        if i < len(spans) - 1:
            w[-overlap:] = ramp[::-1] if overlap else w[-overlap:]
        for name, y in pieces.items():
            y = np.asarray(y, np.float32)
            if y.shape[0] != b - a:  # the network pads internally; keep exactly the input's samples
                y = y[: b - a] if y.shape[0] > b - a else np.pad(y,
                                                                 ((0, b - a - y.shape[0]), (0, 0)))
            if name not in out:
                out[name] = np.zeros((n,) + y.shape[1:], np.float32)
            out[name][a:b] += y * w.reshape((-1,) + (1,) * (y.ndim - 1))
        if log:
            log(f"chunk {i + 1}/{len(spans)}: {a / SAMPLE_RATE:.1f}-{b / SAMPLE_RATE:.1f} s "
                f"in {time.time() - t:.1f} s")
    return out


def find_checkpoint(model_dir: Path) -> str:
    """The checkpoint prefix in a 2stems folder (``model`` in the release tarball)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest and Path(latest + ".index").is_file():
        return latest
    if (model_dir / "model.index").is_file():
        return str(model_dir / "model")
    raise SystemExit(f"spleeter_runner: error: no checkpoint in {model_dir}")


def _tf_reason(e: Exception) -> str:
    """The informative line of a TF graph-execution error (the one after ``Node: '...'``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines[:-1]):
        if ln.startswith("Node:"):
            return lines[i + 1]
    return lines[0] if lines else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Spleeter 2stems on a float32 (n, 2) 44.1 kHz .npy")
    ap.add_argument("--input", required=True)
    ap.add_argument("--model-dir", required=True,
                    help="the 2stems folder (checkpoint, model.*, .probe)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--chunk-s", type=float, default=120.0)
    ap.add_argument("--overlap-s", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0,
                    help="TensorFlow intra/inter-op threads (0 = default)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def log(msg):
        print(f"spleeter_runner: {msg}", file=sys.stderr, flush=True)

    import tensorflow as tf
    from spleeter.model import EstimatorSpecBuilder, InputProviderFactory
    from spleeter.utils.configuration import load_configuration

    model_dir = Path(args.model_dir)
    wave = np.load(args.input).astype(np.float32, copy=False)
    if wave.ndim != 2 or wave.shape[1] != 2:
        raise SystemExit(f"spleeter_runner: error: input must be (n, 2), got {wave.shape}")
    params = load_configuration("spleeter:2stems")
    params["MWF"] = False
    if params["sample_rate"] != SAMPLE_RATE or tuple(params["instrument_list"]) != STEMS:
        raise SystemExit(f"spleeter_runner: error: unexpected 2stems configuration: "
                         f"{params['sample_rate']} Hz, {params['instrument_list']}")
    t0 = time.time()
    graph = tf.Graph()
    with graph.as_default():
        provider = InputProviderFactory.get(params)
        features = provider.get_input_dict_placeholders()
        built = EstimatorSpecBuilder(features, params).outputs  # {stem: waveform tensor, audio_id}
        outputs = {name: built[name] for name in STEMS}
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.threads,
                                          inter_op_parallelism_threads=args.threads)
        session = tf.compat.v1.Session(graph=graph, config=config)
        checkpoint = find_checkpoint(model_dir)
        try:
            # raises if any variable is missing
            tf.compat.v1.train.Saver().restore(session, checkpoint)
        except Exception as e:  # TF raises several kinds; all mean "not a 2stems model"
            raise SystemExit(f"spleeter_runner: error: cannot restore a 2stems model from "
                             f"{checkpoint}: {type(e).__name__}: {_tf_reason(e)}") from e
    log(f"restored {checkpoint} in {time.time() - t0:.1f} s; separating "
        f"{len(wave) / SAMPLE_RATE:.1f} s")

    def separate(piece: np.ndarray) -> dict:
        feed = provider.get_feed_dict(features, piece, "musicface")
        return session.run(outputs, feed_dict=feed)

    chunk = max(1, int(round(args.chunk_s * SAMPLE_RATE)))
    overlap = min(int(round(args.overlap_s * SAMPLE_RATE)), chunk - 1)
    stems = separate_in_chunks(wave, separate, chunk, overlap, log=log)
    session.close()
    out = Path(args.out_dir)
    for name in STEMS:
        np.save(out / f"{name}.npy", stems[name])
    log(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
