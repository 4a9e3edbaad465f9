"""Shared plumbing for every dataset step: atomic writes, failure records, the step runner.

Every per-take (or per-song) step of the DAG is a pure function plus a small CLI. The CLI runs the
function through :func:`run_step`, which gives the DAG its robustness contract:

* outputs are written atomically (temp name in the same folder + ``os.replace``), so a killed job
  never leaves a half file that looks done;
* when the step fails on bad input (a :class:`StepError`) it prints ONE line to stderr,
  ``musicface: take 'T' step 'S': <reason>`` (song steps: ``musicface: song 'X' step 'S': ...``),
  and writes a *failure record* in place of every declared output, then exits 0. Downstream steps
  see the record (:func:`check_upstream`) and pass the failure on; ``qc`` collects the reason;
  gather rules leave the take out. Other takes never notice.
* any other exception is a bug in our code (or bad input nobody foresaw, which is a bug too): it is
  NOT turned into a QC reason. It propagates, so the job exits non-zero with its traceback in the
  log and Snakemake reports the usual job failure (``--keep-going``, set by the profiles, still
  runs every job that does not depend on it). A bug must never silently remove takes.

A failure record is a small file starting with :data:`FAILED_MAGIC` followed by one JSON object
(``{"unit", "step", "reason"}``). No valid wav/npz/json/h5 file starts with those bytes, so any
reader can tell a record from data whatever the file type.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

FAILED_MAGIC = b"MUSICFACE-FAILED\n"
_UMASK = os.umask(0)
os.umask(_UMASK)


class StepError(Exception):
    """Bad input for one take or song: the message is the one-line reason shown to the user."""


class UpstreamFailed(StepError):
    """An input of this step is a failure record written by an earlier step."""

    def __init__(self, step: str, reason: str):
        self.step = step
        self.reason = reason
        super().__init__(f"upstream step '{step}' failed: {reason}")


# --------------------------------------------------------------------------------------- atomic I/O
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); rename it to ``path`` on success.

    The temp name keeps the final suffix so libraries that pick the format from the extension
    (soundfile, numpy, h5py, PyAV) behave. On any exception the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files: give the final file the usual umask mode
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """Atomic, uncompressed ``np.savez`` (deterministic bytes for the same arrays)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int) -> None:
    """Atomic float32 mono/stereo WAV with deterministic bytes.

    scipy's writer, not soundfile's: libsndfile adds a PEAK chunk holding the current time to float
    WAVs, so the same audio would give different files on every run.
    """
    from scipy.io import wavfile

    audio = np.asarray(audio, dtype=np.float32)
    with atomic_path(path) as tmp:
        wavfile.write(str(tmp), int(sr), audio)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------- failure records
def write_failure(path: str | os.PathLike, unit: str, step: str, reason: str) -> None:
    """Write a failure record at ``path`` (atomically), replacing whatever was there."""
    payload = json.dumps({"unit": unit, "step": step, "reason": reason}, sort_keys=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(FAILED_MAGIC + payload.encode() + b"\n")


def read_failure(path: str | os.PathLike) -> dict | None:
    """Return the failure record stored at ``path``, or None if it holds data."""
    with open(path, "rb") as fh:
        head = fh.read(len(FAILED_MAGIC))
        if head != FAILED_MAGIC:
            return None
        return json.loads(fh.read().decode())


def check_upstream(*paths: str | os.PathLike) -> None:
    """Raise :class:`UpstreamFailed` for the first input that is a failure record."""
    for p in paths:
        if p is None:
            continue
        rec = read_failure(p)
        if rec is not None:
            # pass on the root cause, not a chain of "upstream failed" messages
            raise UpstreamFailed(rec["step"], rec["reason"])


def load_json(path: str | os.PathLike) -> dict:
    check_upstream(path)
    return json.loads(Path(path).read_text())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    check_upstream(path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -------------------------------------------------------------------------------------- step runner
def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_step(step: str, unit: str, outputs: Iterable[str | os.PathLike], fn: Callable[[], object],
             *, kind: str = "take", strict: bool | None = None) -> int:
    """Run ``fn`` for one take/song; on bad input print one line and write failure records.

    ``kind`` names what ``unit`` is in the message:
    ``musicface: <kind> '<unit>' step '<step>': ...`` (``"take"``, or ``"song"`` for the
    song-level steps).

    Returns the process exit code: 0 on success and on a handled failure (a :class:`StepError`:
    bad input, so the DAG goes on), 1 when ``strict`` (or env ``MUSICFACE_STRICT=1``) asks failures
    to stop the run. Any other exception is a bug: it propagates unchanged (traceback on stderr,
    exit status 1 from the interpreter) and no failure record is written, so Snakemake fails the
    job (module docstring).
    """
    outputs = [Path(o) for o in outputs]
    if strict is None:
        strict = os.environ.get("MUSICFACE_STRICT", "0") == "1"
    rec_step = step
    who = f"musicface: {kind} '{unit}' step '{step}'"
    try:
        fn()
        return 0
    except UpstreamFailed as e:
        # pass the root cause on unchanged: qc reports the step that really failed
        rec_step, reason = e.step, e.reason
        msg = f"{who}: skipped, upstream step '{e.step}' failed: {e.reason}"
    except StepError as e:
        reason = one_line(e)
        msg = f"{who}: {reason}"
    print(msg, file=sys.stderr, flush=True)
    for out in outputs:
        write_failure(out, unit, rec_step, reason)
    return 1 if strict else 0


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_sha(obj) -> str:
    """Stable short hash of a JSON-able config fragment."""
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]
