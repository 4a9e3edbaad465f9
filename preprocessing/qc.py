"""QC: one take's step outputs -> qc.json (pass, or fail with EVERY reason).

    python -m preprocessing.qc --take T --subject S --song G --ingest ingest.json --sync sync.json \
        --mfcc mfcc.npz --track track.npz --coeffs coeffs.npz --au45 au45.npz --eyes eyes.npz \
        --min-sync-confidence 7.0 --min-valid-fraction 0.8 --min-frames 128 --out qc.json

The thresholds have no defaults here: they come from the config (``sync.min_confidence``,
``qc.min_valid_fraction``, ``qc.min_frames``; defaults in workflow/schemas/config.schema.yaml).

Checks (each failing one adds a reason; the take fails when there is any):

* every input: a failure record -> ``"<step>: <reason>"`` of the step that really failed (records
  carry the root cause, so one failure seen through several inputs is reported once); a file that
  cannot be read -> ``"<file>: unreadable (<error>)"``.
* ingest: fps is 30; N (``n_frames``) >= ``min_frames`` (one training window), else "too short".
* track: some face (``"no face found in any frame"``); the valid fraction, i.e. frames valid in
  track AND coeffs AND eyes AND mfcc (the frame's audio window reads no stretch of the song that
  failed to decode) over N, >= ``min_valid_fraction``; when song gaps cost frames the reason says
  how many (``"too few valid frames: 35.0% < 80% (61.3% over corrupt stretches of the song)"``).
* sync: confidence >= ``min_sync_confidence`` (the reason says why when sync.json does: the
  offsets a repeated section fits about as well, or why the camera audio could not be used).
* lengths: MFCC arrays ``(ceil(N * 100 / 30), 26)`` (``timebase.n_mfcc_rows``); every per-frame
  array of track / coeffs / au45 / eyes has N rows; the MFCC was computed with sync's offset.
* values: finite in valid frames (MFCC everywhere).

qc.json: ``take, subject, song, status ("pass"/"fail"), reasons [str], n_frames, valid_fraction,
sync_confidence, sync_method, offset_s, duration_s, thresholds {}``. QC itself never fails a take by
crashing: a check that raises becomes a reason.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from preprocessing.common import UpstreamFailed, load_json, load_npz, one_line, run_step, save_json
from preprocessing.timebase import FPS, MFCC_DIM, MFCC_KEYS, n_mfcc_rows

# per-frame arrays (first axis N) that each step's file must hold
FRAME_ARRAYS = {
    "track": ("landmarks", "valid"),
    "coeffs": ("pose", "landmarks2d", "valid"),
    "au45": ("au45", "valid"),
    "eyes": ("au45", "eye_long", "eye_blink", "valid"),
    "mfcc": ("valid",),  # its frames clear of the song's gaps (its MFCC rows: M, checked apart)
}
# arrays that must be finite where the take is valid
FINITE = {"coeffs": ("pose", "landmarks2d", "residual", "exp"), "eyes": ("au45", "eye_long")}


def _load(name: str, path, reasons: list[str]):
    """Load one input; a failure record or unreadable file becomes a reason and gives None."""
    if path is None:
        return None
    try:
        return load_json(path) if str(path).endswith(".json") else load_npz(path)
    except UpstreamFailed as e:
        _add(reasons, f"{e.step}: {e.reason}")
    except Exception as e:  # noqa: BLE001 - any unreadable file is a QC reason, never a crash
        _add(reasons, f"{name}: unreadable ({one_line(f'{type(e).__name__}: {e}')})")
    return None


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def _sync_why(sync: dict, min_conf: float) -> str:
    """Why the sync confidence is low, when sync.json says (preprocessing.sync): an offset that a
    repeated section of the song fits as well as another, or no usable camera audio."""
    d = sync.get("details", {})
    if sync.get("method") == "mouth-envelope" and d.get("why_not_camera"):
        return f" (aligned by mouth movement: {d['why_not_camera']})"
    close = [c for c in d.get("competitors", []) if c["lead"] < min_conf]
    if close and d.get("trimmed_psr", 0.0) >= min_conf:  # a clear match, but not the only one
        offsets = " and ".join(f"{x:+.3f} s" for x in [float(sync["offset_s"])]
                               + [c["offset_s"] for c in close])
        return f" (the take fits the song about as well at {offsets}: a repeated section)"
    return ""


def check_take(take: str, subject: str, song: str, paths: dict, *, min_sync_confidence: float,
               min_valid_fraction: float, min_frames: int) -> dict:
    """The qc.json dict of one take. ``paths``: step name -> file (ingest, sync, mfcc, track,
    coeffs, au45, eyes); a missing key skips that input."""
    reasons: list[str] = []
    d = {name: _load(name, paths.get(name), reasons) for name in
         ("ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes")}
    ingest, sync = d["ingest"], d["sync"]
    n = None
    result = {"take": take, "subject": subject, "song": song, "n_frames": None, "duration_s": None,
              "valid_fraction": None, "sync_confidence": None, "sync_method": None,
              "offset_s": None,
              "thresholds": {"min_sync_confidence": min_sync_confidence,
                             "min_valid_fraction": min_valid_fraction, "min_frames": min_frames}}

    def check(label, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a malformed file is a reason, not a crash
            _add(reasons, f"{label}: malformed ({one_line(f'{type(e).__name__}: {e}')})")

    def ingest_checks():
        nonlocal n
        n = int(ingest["n_frames"])
        result["n_frames"], result["duration_s"] = n, n / FPS
        if float(ingest.get("fps", FPS)) != FPS:
            _add(reasons, f"ingest: fps {ingest['fps']} is not {FPS}")
        if n < min_frames:
            _add(reasons, f"too short: {n} frames < {min_frames} (one training window)")

    if ingest is not None:
        check("ingest", ingest_checks)

    def sync_checks():
        conf = float(sync["confidence"])
        result.update(sync_confidence=conf, sync_method=str(sync["method"]),
                      offset_s=float(sync["offset_s"]))
        if not conf >= min_sync_confidence:
            _add(reasons, f"low sync confidence: {conf:.2f} < {min_sync_confidence:g}"
                          + _sync_why(sync, min_sync_confidence))

    if sync is not None:
        check("sync", sync_checks)

    if n is not None:
        m = n_mfcc_rows(n)

        def mfcc_checks():
            z = d["mfcc"]
            for k in MFCC_KEYS:
                a = np.asarray(z[k])
                if a.shape != (m, MFCC_DIM):
                    _add(reasons, f"mfcc length mismatch: {k} has shape {a.shape}, expected ({m}, "
                                  f"{MFCC_DIM}) for {n} frames")
                elif not np.isfinite(a).all():
                    _add(reasons, f"mfcc: non-finite values in {k}")
            if (sync is not None and "offset_s" in z
                    and abs(float(z["offset_s"]) - float(sync["offset_s"])) > 1e-6):
                _add(reasons, f"mfcc: computed with offset {float(z['offset_s']):.3f} s but sync "
                              f"says {float(sync['offset_s']):.3f} s (stale file)")

        if d["mfcc"] is not None:
            check("mfcc", mfcc_checks)

        def frame_checks(name):
            z = d[name]
            for k in FRAME_ARRAYS[name]:
                if k not in z:
                    _add(reasons, f"{name}: missing array '{k}'")
                elif len(z[k]) != n:
                    _add(reasons,
                         f"{name} length mismatch: {k} has {len(z[k])} frames, expected {n}")

        for name in FRAME_ARRAYS:
            if d[name] is not None:
                check(name, lambda name=name: frame_checks(name))

        def valid_checks():
            masks = {k: np.asarray(d[k]["valid"]).astype(bool)
                     for k in ("track", "coeffs", "eyes", "mfcc")
                     if d[k] is not None and len(d[k].get("valid", ())) == n}
            if not masks:
                return
            if d["track"] is not None and not np.asarray(d["track"]["valid"]).any():
                _add(reasons, "no face found in any frame")
                result["valid_fraction"] = 0.0
                return
            valid = np.logical_and.reduce(list(masks.values()))
            frac = float(valid.mean()) if n else 0.0
            result["valid_fraction"] = frac
            if frac < min_valid_fraction:
                gaps = 1.0 - float(masks["mfcc"].mean()) if "mfcc" in masks and n else 0.0
                why = f" ({gaps:.1%} over corrupt stretches of the song)" if gaps else ""
                _add(reasons, f"too few valid frames: {frac:.1%} < {min_valid_fraction:.0%}{why}")
            for name, keys in FINITE.items():
                z = d[name]
                if z is None:
                    continue
                for k in keys:
                    if (k in z and len(z[k]) == n
                            and not np.isfinite(np.asarray(z[k], np.float64)[valid]).all()):
                        _add(reasons, f"{name}: non-finite values in {k} on valid frames")

        check("valid", valid_checks)

    result["status"] = "fail" if reasons else "pass"
    result["reasons"] = reasons
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.qc",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--take", required=True)
    ap.add_argument("--subject", required=True)
    ap.add_argument("--song", required=True)
    for name in ("ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes"):
        ap.add_argument(f"--{name}", default=None, help=f"the take's {name} output")
    ap.add_argument("--min-sync-confidence", type=float, required=True, help="sync.min_confidence")
    ap.add_argument("--min-valid-fraction", type=float, required=True, help="qc.min_valid_fraction")
    ap.add_argument("--min-frames", type=int, required=True, help="qc.min_frames")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    paths = {k: getattr(a, k)
             for k in ("ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes")}

    def work():
        res = check_take(a.take, a.subject, a.song, paths,
                         min_sync_confidence=a.min_sync_confidence,
                         min_valid_fraction=a.min_valid_fraction, min_frames=a.min_frames)
        save_json(a.out, res)
        line = "pass" if res["status"] == "pass" else "fail: " + "; ".join(res["reasons"])
        print(f"qc {a.take}: {line}", file=sys.stderr)

    return run_step("qc", a.take, [Path(a.out)], work)


if __name__ == "__main__":
    sys.exit(main())
