"""Raw eye-closure intensity per frame (AU45: "blink"), larger = more closed -> ``au45.npz``.

``au45.npz``: ``au45`` float32 ``(N,)`` (NaN where ``valid == 0``), ``valid`` uint8 ``(N,)``,
``backend`` (str). The scale depends on the backend; ``eyes`` min-max normalises it per video.

Backends:

* ``builtin`` - from the FaceMesh landmarks of ``track.npz``: the eye aspect ratio EAR (mean
  upper/lower lid distance of five lid pairs over the corner-to-corner eye width, both eyes
  averaged, in 3-D pixel units so that head yaw shrinks the width less), turned into a closure
  intensity ``au45 = 1 - EAR / EAR_open`` where ``EAR_open`` is the take's 90th percentile of EAR
  over tracked frames (the open eye): 0 = as open as usual, 1 = lids touching, < 0 = wider than
  usual. Valid where the face is tracked.
* ``openface`` - OpenFace 2.x ``FeatureExtraction -f <video> -aus -out_dir <tmp>`` (the paper's
  tool), AU45_r in 0..5 from the CSV it writes. OpenFace reads the video at its source frame rate;
  rows are placed on our 30 fps timeline by their ``timestamp`` the way ``media.iter_frames`` places
  frames: frame ``i`` takes the last row at or before ``i / 30`` s. Valid where OpenFace reports
  ``success == 1`` and a row lies within 1.5 source frame periods of the frame time.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from preprocessing.common import StepError, load_json, load_npz, one_line, run_step, save_npz
from preprocessing.landmarks import eye_aspect_ratio, to_pixels
from preprocessing.timebase import FPS

OPEN_PERCENTILE = 90  # EAR percentile (over tracked frames) taken as the take's open eye

OPENFACE_HELP = ("build OpenFace 2.x (github.com/TadasBaltrusaitis/OpenFace, releases and wiki; "
                 "the binary is build/bin/FeatureExtraction) and set au45.openface.binary to it, "
                 "or "
                 "install apptainer/singularity so the image in au45.openface.container can run it")


# ---------------------------------------------------------------------------------------- builtin
def au45_from_landmarks(landmarks: np.ndarray, frame_size: np.ndarray, valid: np.ndarray):
    """Built-in AU45 from ``track.npz`` arrays -> (au45 float32 (N,), valid uint8 (N,)), see module
    doc."""
    valid = np.asarray(valid).astype(bool)
    au45 = np.full(len(valid), np.nan, np.float32)
    if not valid.any():
        raise StepError("no tracked face in any frame")
    idx = np.flatnonzero(valid)
    ear = np.empty(len(idx))
    for a in range(0, len(idx), 4096):  # in chunks: float64 pixels of a long take would be large
        sel = idx[a:a + 4096]
        px = to_pixels(landmarks[sel], frame_size[sel])    # (chunk, 478, 3) pixels
        ear[a:a + 4096] = eye_aspect_ratio(px).mean(axis=-1)
    ok = np.isfinite(ear)
    ear_open = np.percentile(ear[ok], OPEN_PERCENTILE) if ok.any() else np.nan
    if not np.isfinite(ear_open) or ear_open <= 0:
        raise StepError("eye landmarks are degenerate (eye aspect ratio not positive)")
    au45[idx] = (1.0 - ear / ear_open).astype(np.float32)
    out_valid = np.zeros(len(valid), np.uint8)
    out_valid[idx[ok]] = 1
    au45[out_valid == 0] = np.nan
    return au45, out_valid


# ------------------------------------------------------------------------------------- OpenFace CSV
def read_openface_csv(path: str | os.PathLike):
    """Parse an OpenFace ``FeatureExtraction`` CSV -> dict of float64 arrays ``frame, timestamp,
    success, confidence, AU45_r`` (one entry per frame number, sorted by frame).

    Accepts ", " (OpenFace 2.0-2.2) and "," separators and names with leading spaces. Raises
    StepError naming the file and the problem for anything else (missing column, non-numeric value,
    ragged row, no rows). Duplicate frame numbers (several faces) keep the most confident row.
    """
    import pandas as pd

    path = Path(path)
    name = path.name
    try:
        df = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise StepError(f"OpenFace CSV {name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise StepError(f"OpenFace CSV {name} is malformed: {one_line(e)}") from None
    df.columns = [str(c).strip() for c in df.columns]
    need = ["frame", "success", "AU45_r"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise StepError(f"OpenFace CSV {name} has no column {', '.join(missing)} "
                        f"(was FeatureExtraction run with -aus?)")
    if len(df) == 0:
        raise StepError(f"OpenFace CSV {name} has no rows")
    cols = need + [c for c in ("timestamp", "confidence") if c in df.columns]
    out = {}
    for c in cols:
        raw = df[c].astype(str).str.strip()
        num = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(num)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise StepError(f"OpenFace CSV {name}: non-numeric value {raw.iloc[k]!r} in column {c} "
                            f"(line {k + 2})")
        out[c] = num
    if "confidence" not in out:
        out["confidence"] = out["success"].copy()
    if (out["frame"] < 0).any() or (out["frame"] != np.round(out["frame"])).any():
        raise StepError(f"OpenFace CSV {name}: column frame must hold frame numbers (1, 2, ...)")
    # one row per frame: the most confident (FaceLandmarkVidMulti-style output has several faces)
    order = np.lexsort((-out["success"], -out["confidence"], out["frame"]))
    frame_sorted = out["frame"][order]
    first = np.ones(len(order), bool)
    first[1:] = frame_sorted[1:] != frame_sorted[:-1]
    keep = order[first]
    return {c: v[keep] for c, v in out.items()}


def openface_to_timeline(rows: dict, n_frames: int, source_fps: float | None = None,
                         fps: int = FPS):
    """Place OpenFace rows (from :func:`read_openface_csv`) on the ``fps`` timeline of ``n_frames``.

    Row time: ``timestamp`` when present and increasing, else ``(frame - 1) / source_fps``. Frame
    ``i`` takes the last row with time <= ``i / fps`` (+2 ms for OpenFace's rounding to ms),
    provided that row is at most 1.5 source frame periods older than ``i / fps`` (a missing row is
    not papered over). Returns (au45 float32 (N,) with NaN where invalid, valid uint8 (N,)).
    """
    frame = rows["frame"]
    ts = rows.get("timestamp")
    if ts is None or (len(ts) > 1 and not (np.diff(ts) > 0).all()):
        if not source_fps:
            raise StepError("OpenFace CSV has no usable timestamp column and the source frame rate "
                            "is unknown")
        ts = (frame - 1) / float(source_fps)  # OpenFace numbers frames from 1, at 0.000 s
    if source_fps:
        period = 1.0 / float(source_fps)
    elif len(ts) > 1:
        period = float(np.median(np.diff(ts) / np.maximum(np.diff(frame), 1)))
    else:
        period = 1.0 / fps
    t = np.arange(int(n_frames)) / fps
    j = np.searchsorted(ts, t + 0.002, side="right") - 1
    ok = j >= 0
    jj = np.clip(j, 0, len(ts) - 1)
    ok &= (t - ts[jj]) <= 1.5 * period + 0.002
    ok &= rows["success"][jj] > 0
    au45 = np.where(ok, rows["AU45_r"][jj], np.nan).astype(np.float32)
    return au45, ok.astype(np.uint8)


# ------------------------------------------------------------------------------------- OpenFace run
def _runnable(exe: str) -> bool:
    return bool(shutil.which(exe)) or (Path(exe).is_file() and os.access(exe, os.X_OK))


def openface_command(binary: str, container: str | None, bind: list[str]) -> list[str]:
    """argv prefix that runs FeatureExtraction: ``binary`` on this machine if it exists (it may be a
    command with arguments, split like a shell does), else inside ``container`` with apptainer or
    singularity (binding ``bind`` folders). Raises StepError naming the binary otherwise."""
    binary = binary or "FeatureExtraction"
    # a path with spaces is one program; otherwise split off arguments like a shell
    argv = [binary] if _runnable(binary) else shlex.split(binary)
    exe = argv[0]
    if _runnable(exe):
        return argv
    runner = shutil.which("apptainer") or shutil.which("singularity")
    if container and runner:
        cmd = [runner, "exec"]
        for b in dict.fromkeys(bind):
            cmd += ["--bind", b]
        return cmd + [container, *argv]
    where = (f"; container {container!r} needs apptainer or singularity, neither is installed"
             if container else "")
    raise StepError(f"OpenFace binary {exe!r} not found{where}: {OPENFACE_HELP}")


def run_openface(video: str, binary: str, container: str | None = None,
                 timeout: float | None = None):
    """Run FeatureExtraction on ``video`` into a temp folder; return the parsed CSV rows."""
    video = Path(video).absolute()
    with tempfile.TemporaryDirectory(prefix="openface-") as tmp:
        cmd = openface_command(binary, container, [str(video.parent), tmp])
        cmd += ["-f", str(video), "-aus", "-out_dir", tmp]
        print("au45: running " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepError(f"OpenFace FeatureExtraction took longer than {timeout} s") from None
        except OSError as e:
            raise StepError(f"OpenFace FeatureExtraction could not start: {one_line(e)}") from None
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            tail = one_line(lines[-1]) if lines else "no output"
            raise StepError(f"OpenFace FeatureExtraction exited {proc.returncode}: {tail}")
        csv = Path(tmp) / f"{video.stem}.csv"
        if not csv.exists():
            found = sorted(Path(tmp).glob("*.csv"))
            if len(found) != 1:
                raise StepError(f"OpenFace FeatureExtraction wrote no {video.stem}.csv")
            csv = found[0]
        return read_openface_csv(csv)


# ---------------------------------------------------------------------------------------- step
def compute_au45(backend: str, *, n_frames: int, track: dict | None = None,
                 video: str | None = None, source_fps: float | None = None,
                 binary: str = "FeatureExtraction", container: str | None = None) -> dict:
    """``au45.npz`` arrays for one take with the chosen backend."""
    if backend == "builtin":
        au45, valid = au45_from_landmarks(track["landmarks"], track["frame_size"], track["valid"])
        if len(au45) != n_frames:
            raise StepError(f"track.npz has {len(au45)} frames, ingest says {n_frames}")
    elif backend == "openface":
        rows = run_openface(video, binary, container)
        au45, valid = openface_to_timeline(rows, n_frames, source_fps)
        if not valid.any():
            raise StepError("OpenFace tracked no frame (success == 0 everywhere)")
    else:
        raise StepError(f"unknown au45 backend {backend!r} (builtin | openface)")
    return {"au45": au45, "valid": valid, "backend": np.str_(backend)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--take", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--ingest", required=True)
    p.add_argument("--track", required=True)
    p.add_argument("--backend", choices=["builtin", "openface"], default="builtin")
    p.add_argument("--openface-binary", default="FeatureExtraction",
                   help="FeatureExtraction command (may include arguments)")
    p.add_argument("--openface-container", default="",
                   help="image run with apptainer/singularity when the binary is not installed")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    if a.backend == "openface":
        # a missing tool is a setup error, not bad input: stop the run instead of failing every take
        try:
            openface_command(a.openface_binary, a.openface_container or None, [])
        except StepError as e:
            print(f"musicface: take '{a.take}' step 'au45': {e}", file=sys.stderr)
            return 2

    def work():
        ingest = load_json(a.ingest)
        n = int(ingest["n_frames"])
        track = load_npz(a.track) if a.backend == "builtin" else None
        if track is None:
            load_npz(a.track)  # an upstream failure (no face) still skips the take
        arrays = compute_au45(a.backend, n_frames=n, track=track, video=a.video,
                              source_fps=ingest.get("source_fps"), binary=a.openface_binary,
                              container=a.openface_container or None)
        save_npz(a.out, **arrays)
        print(f"au45 ({a.backend}): {int(arrays['valid'].sum())}/{n} frames valid", file=sys.stderr)

    return run_step("au45", a.take, [a.out], work)


if __name__ == "__main__":
    sys.exit(main())
