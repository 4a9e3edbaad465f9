"""`musicface evaluate` and `musicface ablation-table`: a trained model on the test split
(paper 4.3-4.4).

    musicface evaluate --checkpoint runs/demo/model.pt --shards dataset/shards --out runs/demo/eval
    musicface ablation-table --out runs/demo-ablation/table.md runs/demo-*/eval/metrics.json

For every TEST take of the shards the model generates the whole take (seed ``--seed`` + the take's
rank, initial pose = the take's first valid ground-truth pose) and is scored against the ground
truth (:mod:`musicface.metrics` states each definition):

* lip sync: AVC (SyncNet confidence; only with SyncNet weights AND rendered videos, otherwise null +
  reason), LMD of the mouth and the whole face (% of the inter-ocular distance; landmarks from the
  coefficients through the backend's landmark model, both with the ground-truth pose), and our
  renderer-free proxy (corr of mouth opening with vocal energy; mouth-open ratio in vocal silence);
* pose realism: CCA of head-pose speed (pooled over test takes), roughness (Eq. 14, deg/frame^2);
* eye realism: CCA of the long-closure state (e_long vs ground-truth eye_long; the short blinks are
  sampled at random by design), CCA of the combined state, blinks/s and mean blink duration;
* rendered video (``--render-metrics``: the ``<take>.json`` files of ``musicface render``): SSIM and
  PSNR of the held-out reconstruction (and of the mean-frame baseline), CPBD of the generated video
  (ground truth: the real frames'), LMD and mouth-voice correlation of FaceMesh re-tracked on it;
  their folder's ``<take>.mp4`` also give AVC when SyncNet weights are set.

Outputs in ``--out``: ``metrics.json`` (summary, ground-truth reference values, per take,
definitions), ``table.md`` (paper Table 1 layout), and figures ``pose.png`` (Fig. 5b),
``attention.png`` (Fig. 6), ``eye_durations.png`` (Fig. 9), ``training.png`` (``metrics.csv`` next
to the checkpoint).
A take that cannot be scored is skipped with one line on stderr and listed under ``skipped``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from musicface import figures
from musicface import metrics as M
from musicface.config import VARIANTS
from preprocessing.common import StepError, atomic_path, one_line, save_json
from preprocessing.timebase import CENTRE_ROW, FPS

# table row names, in the paper's order (VARIANTS)
VARIANT_NAMES = dict(zip(VARIANTS, ("Single-Stream", "Two-Stream", "With-ATM", "Ours (full)")))
FIGURES = {"pose": "pose.png", "attention": "attention.png", "eye_durations": "eye_durations.png",
           "training": "training.png"}
PAPER_GROUND_TRUTH = {"blinks_per_s": 0.35, "blink_duration_s": 0.23}
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")

DEFINITIONS = {
    "avc": "SyncNet audio-visual confidence (LSE-C: median - min of the mean embedding distance "
           "over +-15 frame shifts at 25 fps); needs SyncNet weights and rendered face videos",
    "lmd_mouth": "mean distance of the 40 lip landmarks (FaceMesh; 20 iBUG), % of the ground-truth "
                 "inter-ocular distance; both landmark sets from the coefficients with the "
                 "ground-truth pose",
    "lmd_face": "the same over all landmarks",
    "lip_energy_corr": "Pearson correlation of the generated mouth opening (inner-lip gap / "
                       "inter-ocular) with the vocal energy envelope (dB), frame-weighted mean "
                       "over takes",
    "silent_open_ratio": "fraction of vocal-silence frames (Otsu on vocal energy, >= 10 dB below "
                         "its 95th percentile) where the mouth is open (above p5 + 0.3 (p95 - p5) "
                         "of the take's ground-truth opening)",
    "cca_pose_speed": "first canonical correlation of |p_t - p_(t-1)| (6 pose parameters), "
                      "generated vs ground truth, valid frames of all test takes pooled",
    "rough": "Eq. 14: mean over frames of ||R''(t)||^2, R = pitch, yaw, roll in degrees, central "
             "second difference per frame^2; frame-weighted mean over takes",
    "cca_eye": "first canonical correlation of the long eye-closure state (e_long vs ground-truth "
               "eye_long), valid frames pooled",
    "cca_eye_combined": "the same for the combined eye state (eq. 9, filtered) vs ground-truth "
                        "AU45",
    "blinks_per_s": "closed runs (state >= closed_threshold) shorter than tau, per second "
                    "(generated: the combined eye state; ground truth: normalised AU45)",
    "blink_duration_s": "mean duration of those blinks (s)",
}
# metrics of rendered video (musicface render -> <take>.json), averaged over the test takes
RENDER_KEYS = ("ssim_recon", "psnr_recon", "ssim_mean_frame", "psnr_mean_frame", "cpbd",
               "cpbd_real", "lmd_mouth_rendered", "lip_energy_corr_rendered", "mouth_corr_rendered")


# ------------------------------------------------------------------------------------- helpers
def _np(x):
    if x is None:
        return None
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _clean(obj):
    """JSON-ready copy: NaN/inf -> None, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return M.finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def landmarks(exp, pose, basis: dict, bfm_dir=None) -> np.ndarray:
    """Coefficients -> 2-D landmarks through the backend's landmark model, isotropic frame (1 x 1)
    (builtin: 478 FaceMesh points of the reference face; deep3d: 68 BFM points, needs
    ``bfm_dir``)."""
    from preprocessing.coeffs import landmarks_from_coeffs

    return np.asarray(landmarks_from_coeffs(np.asarray(exp), np.asarray(pose), basis,
                                            frame_size=(1, 1), bfm_dir=bfm_dir))


def vocal_energy_db(mfcc_vocals, mfcc_index) -> np.ndarray:
    """Vocal energy envelope (dB) per video frame from the vocal MFCC rows and each frame's window
    start (:func:`musicface.data.take_arrays`): the window's centre row's first coefficient, the log
    frame energy (python_speech_features ``appendEnergy``: ln of the frame's power-spectrum sum),
    converted to dB (x 10 / ln 10)."""
    rows = np.asarray(mfcc_vocals)[np.asarray(mfcc_index) + CENTRE_ROW, 0]
    return rows.astype(np.float64) * (10.0 / math.log(10.0))


# ------------------------------------------------------------------------------------- per take
def score_take(gen: dict, gt: dict, basis: dict | None, *, fps: float = FPS, tau: float = 0.5,
               closed_threshold: float = 0.5, bfm_dir=None) -> dict:
    """Metrics of one generated take vs its ground truth (arrays of
    :func:`musicface.data.take_arrays`).

    Returns per-take values plus the pieces pooled over takes (``_pool``: speeds, eye states).
    """
    valid = gt["valid"].astype(bool)
    n = len(valid)
    out: dict = {"n_frames": n, "valid_frames": int(valid.sum())}
    # pose
    keep = M.speed_valid(valid)
    sp_gen, sp_gt = M.pose_speed(gen["pose"])[keep], M.pose_speed(gt["pose"])[keep]
    out["cca_pose_speed"] = M.cca(sp_gen, sp_gt) if len(sp_gen) >= 3 else float("nan")
    out["rough"] = M.roughness(gen["pose"])
    out["rough_gt"] = M.roughness(gt["pose"], valid=valid)
    # eyes
    e_long, eye = np.asarray(gen["e_long"], np.float64), np.asarray(gen["eye"], np.float64)
    out["cca_eye"] = M.cca(e_long[valid], gt["eye_long"][valid])
    out["cca_eye_combined"] = M.cca(eye[valid], gt["au45"][valid])
    ev_gen = M.closure_events(eye, fps=fps, tau=tau, closed_threshold=closed_threshold)
    ev_gt = M.closure_events(gt["au45"], fps=fps, tau=tau, closed_threshold=closed_threshold,
                             valid=valid)
    out["blinks"] = M.blink_stats(ev_gen, n, fps)
    out["blinks_gt"] = M.blink_stats(ev_gt, int(valid.sum()), fps)
    pool = {"speed": (sp_gen, sp_gt), "eye": (e_long[valid], gt["eye_long"][valid]),
            "eye_combined": (eye[valid], gt["au45"][valid]), "events": (ev_gen, ev_gt)}
    # lip sync through the landmark model (both with the ground-truth pose: expression only)
    if basis is not None:
        try:
            lm_gen = landmarks(gen["exp"][valid], gt["pose"][valid], basis, bfm_dir)
            lm_gt = landmarks(gt["exp"][valid], gt["pose"][valid], basis, bfm_dir)
        except Exception as e:  # noqa: BLE001 - no landmark model: lip metrics missing, take kept
            out["landmark_error"] = one_line(f"{type(e).__name__}: {e}")
            out["_pool"] = pool
            return out
        out["lmd_mouth"] = M.lmd(lm_gen, lm_gt, region="mouth")
        out["lmd_face"] = M.lmd(lm_gen, lm_gt, region="face")
        energy = vocal_energy_db(gt["mfcc_vocals"], gt["mfcc_index"])[valid]
        o_gen, o_gt = M.mouth_opening(lm_gen), M.mouth_opening(lm_gt)
        silent = M.silence_mask(energy)
        p = M.lipsync_proxy(o_gen, energy, opening_gt=o_gt, silent=silent)
        q = M.lipsync_proxy(o_gt, energy, opening_gt=o_gt, silent=silent)
        out.update(lip_energy_corr=p["energy_corr"], silent_open_ratio=p["silent_open_ratio"],
                   lip_energy_corr_gt=q["energy_corr"], silent_open_ratio_gt=q["silent_open_ratio"],
                   silent_frames=p["silent_frames"])
        pool["mouth"] = (o_gen, o_gt)  # valid frames; scored against the truth by score_truth
    out["_pool"] = pool
    return out


def _weighted(rows: list[dict], key: str, weight: str = "valid_frames") -> float:
    pairs = [(r[key], r[weight]) for r in rows
             if key in r and r[key] is not None and math.isfinite(r[key])]
    if not pairs:
        return float("nan")
    v, w = np.array(pairs, dtype=np.float64).T
    return float(np.sum(v * w) / np.sum(w)) if w.sum() > 0 else float("nan")


def summarise(rows: list[dict], fps: float = FPS) -> tuple[dict, dict, list, list]:
    """Per-take rows -> (generated summary, ground-truth reference values, closure durations of the
    generated and the real eye states). Blink statistics pool the takes' closure events over their
    total time (generated: every frame; ground truth: the valid frames)."""
    cat = lambda key, i: np.concatenate([r["_pool"][key][i] for r in rows])  # noqa: E731
    gen_blinks = M.blink_stats(cat("events", 0), sum(r["n_frames"] for r in rows), fps)
    gt_blinks = M.blink_stats(cat("events", 1), sum(r["valid_frames"] for r in rows), fps)
    summary = {
        "lmd_mouth": _weighted(rows, "lmd_mouth"), "lmd_face": _weighted(rows, "lmd_face"),
        "lip_energy_corr": _weighted(rows, "lip_energy_corr"),
        "silent_open_ratio": _weighted(rows, "silent_open_ratio", "silent_frames"),
        "cca_pose_speed": M.cca(cat("speed", 0), cat("speed", 1)),
        "rough": _weighted(rows, "rough", "n_frames"),
        "cca_eye": M.cca(cat("eye", 0), cat("eye", 1)),
        "cca_eye_combined": M.cca(cat("eye_combined", 0), cat("eye_combined", 1)),
        "blinks_per_s": gen_blinks["blinks_per_s"],
        "blink_duration_s": gen_blinks["blink_duration_s"],
        "long_per_s": gen_blinks["long_per_s"], "long_duration_s": gen_blinks["long_duration_s"],
    }
    ground = {
        "lip_energy_corr": _weighted(rows, "lip_energy_corr_gt"),
        "silent_open_ratio": _weighted(rows, "silent_open_ratio_gt", "silent_frames"),
        "rough": _weighted(rows, "rough_gt"),
        "blinks_per_s": gt_blinks["blinks_per_s"],
        "blink_duration_s": gt_blinks["blink_duration_s"],
        "long_per_s": gt_blinks["long_per_s"], "long_duration_s": gt_blinks["long_duration_s"],
    }
    return summary, ground, gen_blinks["durations_s"], gt_blinks["durations_s"]


# --------------------------------------------------------------------------- against known truth
TRUTH_DEFINITIONS = {
    "head_speed_r": "Pearson r of the generated head angular speed ||d(pitch, yaw, roll)/dt|| with "
                    "the truth's head_speed (what drove the demo head: music loudness x beat "
                    "pulses), per take, frame-weighted mean",
    "cca_pose_speed_truth": "first canonical correlation of |p_t - p_(t-1)| (6 parameters), "
                            "generated vs the TRUE pose (not the tracked one), frames of all test "
                            "takes pooled",
    "rough": "Eq. 14 roughness of the generated Euler angles (deg/frame^2); reference: the true "
             "pose's",
    "mouth_r": "Pearson r of the generated mouth opening (landmarks from exp, ground-truth pose) "
               "with the truth's mouth_open, tracked frames, frame-weighted mean",
    "silent_open_truth": "fraction of silent frames (truth vocal_activity 0 on the frame and 3 "
                         "frames each side) where the generated mouth is open (above p5 + 0.3 "
                         "(p95 - p5) of the take's tracked opening), pooled",
    "long_precision": "fraction of generated long closures (closed >= tau) that overlap a true "
                      "long closure (truth events of kind 1), pooled",
    "long_recall": "fraction of true long closures overlapped by a generated one, pooled",
    "blinks_per_s": "generated blinks (closed runs shorter than tau) per second; truth: the truth "
                    "file's blink events",
    "blink_duration_s": "mean duration of those blinks (s); truth: time at or above 0.5 closure",
    "att_vocal_diff": "per ATM (exp/pose/eye): mean attention over the vocal-stream channels on "
                      "sung frames (truth vocal_activity 1) minus instrumental frames (in the "
                      "song, vocal_activity 0), 0-1 scale, frame-weighted mean over takes",
    "att_off_fraction": "per ATM: fraction of channels below 0.1 on every frame of a take, largest "
                        "over takes",
    "att_temporal_std": "per ATM: each channel's std over time, mean over channels and takes",
}
TRUTH_SUFFIX = ".truth.npz"


def truth_files(truth_dir) -> dict[str, Path]:
    """Every ``<name>.truth.npz`` under ``truth_dir`` (a demo folder: the takes' and the songs'
    truth, ``preprocessing.demo``), by name."""
    root = Path(truth_dir)
    if not root.is_dir():
        raise StepError(f"truth folder not found: {root}")
    found: dict[str, Path] = {}
    for p in sorted(root.rglob(f"*{TRUTH_SUFFIX}")):
        name = p.name[: -len(TRUTH_SUFFIX)]
        if name in found:
            raise StepError(f"two truth files for '{name}': {found[name]} and {p}")
        found[name] = p
    return found


def load_truth(files: dict[str, Path], take: str, song: str, n_frames: int) -> dict:
    """The truth of one take (per video frame, ``preprocessing.demo``) and its song's length."""
    from preprocessing.common import load_npz

    if take not in files:
        raise StepError(f"no truth file {take}{TRUTH_SUFFIX}")
    truth = load_npz(files[take])
    if int(truth["n_frames"]) != n_frames:
        raise StepError(f"the truth has {int(truth['n_frames'])} frames, the take {n_frames}")
    seconds = float(load_npz(files[song])["seconds"]) if song in files else float("inf")
    t = np.arange(n_frames) / float(truth["fps"]) + float(truth["offset_s"])   # song time
    truth["in_song"] = (t >= 0) & (t < seconds)
    return truth


def score_truth(gen: dict, gt: dict, truth: dict, pool: dict, *, fps: float = FPS, tau: float = 0.5,
                closed_threshold: float = 0.5) -> dict:
    """One test take against its known truth (:data:`TRUTH_DEFINITIONS`); the tracked parameters
    of the take are scored the same way as a reference (``*_tracked``), and the truth's own values
    (``*_true``). ``pool``: :func:`score_take`'s pieces (the mouth openings). The attention's
    first half of channels is the vocal stream's (f_v ++ f_b). Returns per-take values and
    ``_pool``."""
    valid = gt["valid"].astype(bool)
    n = len(valid)
    pose_true = np.asarray(truth["pose"], np.float64)
    hs = np.asarray(truth["head_speed"], np.float64)
    pair = np.concatenate([[False], valid[1:] & valid[:-1]])
    out: dict = {"n_frames": n, "valid_frames": int(valid.sum())}
    out["head_speed_r"] = M.pearson(M.angular_speed(gen["pose"], fps), hs)
    out["head_speed_r_tracked"] = M.pearson(M.angular_speed(gt["pose"], fps)[pair], hs[pair])
    out["head_speed_r_true"] = M.pearson(M.angular_speed(pose_true, fps), hs)
    keep = M.speed_valid(valid)
    sp_gen, sp_true = M.pose_speed(gen["pose"]), M.pose_speed(pose_true)
    out["cca_pose_speed_truth"] = M.cca(sp_gen, sp_true)
    out["rough"] = M.roughness(gen["pose"])
    out["rough_true"] = M.roughness(pose_true)
    out["rough_tracked"] = M.roughness(gt["pose"], valid=valid)
    tp = {"speed": (sp_gen, sp_true),
          "speed_tracked": (M.pose_speed(gt["pose"])[keep], sp_true[keep])}
    # mouth (tracked frames: the landmarks of score_take)
    if "mouth" in pool:
        o_gen, o_gt = pool["mouth"]
        mouth = np.asarray(truth["mouth_open"], np.float64)[valid]
        out["mouth_r"] = M.pearson(o_gen, mouth)
        out["mouth_r_tracked"] = M.pearson(o_gt, mouth)
        silent = M.silent_frames(truth["vocal_activity"])[valid]
        lo, hi = np.percentile(o_gt, [5, 95])
        thr = lo + 0.3 * (hi - lo)
        tp["silent"] = (int(np.sum(o_gen[silent] > thr)), int(np.sum(o_gt[silent] > thr)),
                        int(silent.sum()))
        out["silent_open_truth"] = (tp["silent"][0] / max(tp["silent"][2], 1) if silent.any()
                                    else float("nan"))
    # eyes: generated closures vs the truth's events (and the tracked AU45's as a reference)
    ev_gen = M.closure_events(gen["eye"], fps=fps, tau=tau, closed_threshold=closed_threshold)
    ev_trk = M.closure_events(gt["au45"], fps=fps, tau=tau, closed_threshold=closed_threshold,
                              valid=valid)
    ev_true = np.asarray(truth["events"], np.float64).reshape(-1, 4)
    longs = {k: e[e[:, 3] == 1]
             for k, e in (("gen", ev_gen), ("tracked", ev_trk), ("true", ev_true))}
    tp["long"] = {k: (M.overlapping(longs[k], longs["true"]), len(longs[k]),
                      M.overlapping(longs["true"], longs[k])) for k in ("gen", "tracked")}
    tp["long"]["n_true"] = len(longs["true"])
    tp["blinks"] = {k: e[e[:, 3] == 0, 2]
                    for k, e in (("gen", ev_gen), ("tracked", ev_trk), ("true", ev_true))}
    for k in ("gen", "tracked"):
        hits, count, found = tp["long"][k]
        sfx = "" if k == "gen" else "_tracked"
        out["long_precision" + sfx] = hits / count if count else float("nan")
        out["long_recall" + sfx] = (found / len(longs["true"]) if len(longs["true"])
                                    else float("nan"))
    out["blinks_per_s"] = len(tp["blinks"]["gen"]) * fps / n
    out["blinks_per_s_true"] = len(tp["blinks"]["true"]) * fps / n
    # attention (ATM variants)
    att = gen.get("att")
    if att is not None:
        va = np.asarray(truth["vocal_activity"]).astype(bool)
        sung, instrumental = va, truth["in_song"] & ~va
        out["attention"] = {k: M.attention_stats(a, sung, instrumental, np.shape(a)[1] // 2)
                            for k, a in att.items()}
    out["_pool"] = tp
    return out


def summarise_truth(rows: list[dict], fps: float = FPS) -> tuple[dict, dict]:
    """Per-take truth rows -> (generated summary, reference: the tracked parameters and the truth
    itself, scored the same way)."""
    pools = [r["_pool"] for r in rows]
    cat = lambda key, i: np.concatenate([p[key][i] for p in pools])  # noqa: E731
    seconds = sum(r["n_frames"] for r in rows) / fps

    def ratio(num, den):
        return num / den if den else float("nan")

    def long_sum(k, i):
        return sum(p["long"][k][i] for p in pools)

    n_true_long = sum(p["long"]["n_true"] for p in pools)
    blinks = {k: np.concatenate([p["blinks"][k] for p in pools])
              for k in ("gen", "tracked", "true")}
    silent = [p["silent"] for p in pools if "silent" in p]
    summary = {
        "head_speed_r": _weighted(rows, "head_speed_r", "n_frames"),
        "cca_pose_speed_truth": M.cca(cat("speed", 0), cat("speed", 1)),
        "rough": _weighted(rows, "rough", "n_frames"),
        "mouth_r": _weighted(rows, "mouth_r"),
        "silent_open_truth": ratio(sum(s[0] for s in silent), sum(s[2] for s in silent)),
        "long_precision": ratio(long_sum("gen", 0), long_sum("gen", 1)),
        "long_recall": ratio(long_sum("gen", 2), n_true_long),
        "n_long": long_sum("gen", 1),
        "blinks_per_s": ratio(len(blinks["gen"]), seconds),
        "blink_duration_s": float(blinks["gen"].mean()) if len(blinks["gen"]) else float("nan"),
    }
    att_rows = [r for r in rows if "attention" in r]
    if att_rows:
        for task in att_rows[0]["attention"]:
            w = np.array([r["n_frames"] for r in att_rows], np.float64)
            st = [r["attention"][task] for r in att_rows]
            diffs = np.array([s["vocal_diff"] for s in st], np.float64)
            ok = np.isfinite(diffs)
            summary[f"att_vocal_diff_{task}"] = (float(np.sum(diffs[ok] * w[ok]) / w[ok].sum())
                                                 if ok.any() else float("nan"))
            summary[f"att_off_fraction_{task}"] = max(s["off_fraction"] for s in st)
            summary[f"att_temporal_std_{task}"] = float(np.mean([s["temporal_std"] for s in st]))
            summary[f"att_mean_{task}"] = float(np.mean([s["mean"] for s in st]))
    reference = {
        "head_speed_r_tracked": _weighted(rows, "head_speed_r_tracked", "n_frames"),
        "head_speed_r_true": _weighted(rows, "head_speed_r_true", "n_frames"),
        "cca_pose_speed_tracked": M.cca(cat("speed_tracked", 0), cat("speed_tracked", 1)),
        "rough_true": _weighted(rows, "rough_true", "n_frames"),
        "rough_tracked": _weighted(rows, "rough_tracked", "n_frames"),
        "mouth_r_tracked": _weighted(rows, "mouth_r_tracked"),
        "silent_open_tracked": ratio(sum(s[1] for s in silent), sum(s[2] for s in silent)),
        "long_precision_tracked": ratio(long_sum("tracked", 0), long_sum("tracked", 1)),
        "long_recall_tracked": ratio(long_sum("tracked", 2), n_true_long),
        "n_long_true": n_true_long,
        "blinks_per_s_true": ratio(len(blinks["true"]), seconds),
        "blink_duration_s_true": (float(blinks["true"].mean()) if len(blinks["true"])
                                  else float("nan")),
        "blinks_per_s_tracked": ratio(len(blinks["tracked"]), seconds),
        "blink_duration_s_tracked": (float(blinks["tracked"].mean()) if len(blinks["tracked"])
                                     else float("nan")),
    }
    return summary, reference


# ------------------------------------------------------------------------------------------- AVC
def avc_value(syncnet_weights, rendered_dir, takes: list[str], vocals_for=None) -> dict:
    """AVC over the test takes, or ``{"value": None, "reason": ...}`` when it cannot be measured.

    Needs the user's SyncNet weights and a folder of rendered videos ``<take>.mp4`` (the generated
    parameters rendered with the song as audio: ``musicface render`` writes them).
    """
    if not rendered_dir:
        return M.unavailable("no rendered face videos: enable the renderer (render.enabled, "
                             "snakemake render) or pass --rendered DIR with <take>.mp4 videos, and "
                             "--syncnet-weights, to score AVC")
    if not syncnet_weights:
        return M.unavailable("SyncNet weights not configured (evaluate.syncnet_weights / "
                             "--syncnet-weights: syncnet_v2.model from the syncnet_python download "
                             "script)")
    if not Path(syncnet_weights).is_file():
        return M.unavailable(f"SyncNet weights not found: {syncnet_weights}")
    confs, missing = {}, []
    for take in takes:
        videos = [Path(rendered_dir) / f"{take}{ext}" for ext in VIDEO_EXTS]
        video = next((v for v in videos if v.is_file()), None)
        if video is None:
            missing.append(take)
            continue
        confs[take] = avc_of_video(video, syncnet_weights)["confidence"]
    if not confs:
        return M.unavailable(f"no rendered video for any test take in {rendered_dir} "
                             "(expected <take>.mp4)")
    out = {"value": float(np.mean(list(confs.values()))), "per_take": confs}
    if missing:
        out["missing"] = missing
    return out


def face_crops(video, fps: float = 25.0, size: int = 224) -> np.ndarray:
    """Face crops ``(T, size, size, 3)`` uint8 of a video resampled to ``fps`` (SyncNet's 25).

    MediaPipe's face detector on every frame; the box (median-filtered over 5 frames against jitter,
    the last box kept where no face is found) is widened to a square of 1.5 x its larger side, as
    SyncNet's own pipeline enlarges its S3FD boxes, and resized with Pillow.
    """
    import mediapipe as mp
    from PIL import Image
    from scipy.ndimage import median_filter

    from preprocessing.media import iter_frames

    frames, boxes = [], []
    with mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                   min_detection_confidence=0.5) as det:
        last = None
        for _, rgb in iter_frames(video, fps=fps):
            h, w = rgb.shape[:2]
            res = det.process(rgb)
            if res.detections:
                b = res.detections[0].location_data.relative_bounding_box
                last = np.array([(b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h,
                                 max(b.width * w, b.height * h)])
            boxes.append(last)
            frames.append(rgb)
    if all(b is None for b in boxes):
        raise StepError(f"no face found in any frame of {Path(video).name}")
    first = next(b for b in boxes if b is not None)
    boxes = np.array([first if b is None else b for b in boxes])
    boxes = median_filter(boxes, size=(5, 1), mode="nearest")
    crops = []
    for rgb, (cx, cy, side) in zip(frames, boxes):
        half = 0.75 * side
        img = Image.fromarray(rgb).crop((int(cx - half), int(cy - half),
                                         int(cx + half), int(cy + half)))
        crops.append(np.asarray(img.resize((size, size), Image.BILINEAR)))
    return np.stack(crops)


def avc_of_video(video, weights, device: str = "cpu") -> dict:
    """SyncNet confidence of a rendered video (its own audio track) via
    :func:`metrics.syncnet_confidence`."""
    from preprocessing.media import decode_audio

    audio, _ = decode_audio(video, sr=16000)  # SyncNet's audio rate
    return M.syncnet_confidence(face_crops(video), audio, sr=16000, weights=weights, device=device)


# ------------------------------------------------------------------------------------------ table
COLUMNS = [  # (group, header, key in summary, digits)
    ("Lip sync", "AVC ↑", "avc", 2),
    ("Lip sync", "LMD mouth ↓", "lmd_mouth", 2),
    ("Lip sync", "LMD face ↓", "lmd_face", 2),
    ("Lip sync", "mouth~voice corr ↑", "lip_energy_corr", 2),
    ("Lip sync", "open in silence ↓", "silent_open_ratio", 2),
    ("Pose realism", "CCA ↑", "cca_pose_speed", 2),
    ("Pose realism", "Rough ↓", "rough", 3),
    ("Eye realism", "CCA ↑", "cca_eye", 2),
    ("Eye realism", "blinks/s", "blinks_per_s", 2),
    ("Eye realism", "blink dur. (s)", "blink_duration_s", 2),
]
# shown when the results hold rendered-video metrics (musicface render); paper Table 2 has CPBD
RENDER_COLUMNS = [
    ("Rendered", "LMD mouth ↓", "lmd_mouth_rendered", 2),
    ("Rendered", "mouth~voice corr ↑", "lip_energy_corr_rendered", 2),
    ("Rendered", "SSIM recon ↑", "ssim_recon", 3),
    ("Rendered", "PSNR recon ↑", "psnr_recon", 1),
    ("Rendered", "CPBD ↑", "cpbd", 2),
]


def _cell(summary: dict, key: str, digits: int) -> str:
    v = summary.get(key)
    if isinstance(v, dict):
        v = v.get("value")
    return _fmt(v, digits)


TRUTH_COLUMNS = [  # (header, key in truth summary, key in the reference of the tracked parameters,
    #   key in the reference of the truth itself, digits)
    ("head speed r ↑", "head_speed_r", "head_speed_r_tracked", "head_speed_r_true", 2),
    ("pose-speed CCA ↑", "cca_pose_speed_truth", "cca_pose_speed_tracked", None, 2),
    ("Rough ↓", "rough", "rough_tracked", "rough_true", 3),
    ("mouth r ↑", "mouth_r", "mouth_r_tracked", None, 2),
    ("open in silence ↓", "silent_open_truth", "silent_open_tracked", None, 2),
    ("long-closure precision ↑", "long_precision", "long_precision_tracked", None, 2),
    ("long-closure recall ↑", "long_recall", "long_recall_tracked", None, 2),
    ("blinks/s", "blinks_per_s", "blinks_per_s_tracked", "blinks_per_s_true", 2),
    ("blink dur. (s)", "blink_duration_s", "blink_duration_s_tracked", "blink_duration_s_true", 2),
]
ATM_TASKS = ("exp", "pose", "eye")


def _row_name(r: dict) -> str:
    name = VARIANT_NAMES.get(r.get("variant"), r.get("variant", "?"))
    return f"{name}, mixed wave" if r.get("audio") == "mix" else name


def truth_table_markdown(results: list[dict]) -> str:
    """The results' scores against the demo truth: one row per run, then the tracked parameters
    (what the model learns from) and the truth itself scored the same way; then the attention."""
    rows = [r for r in results if r.get("truth", {}).get("summary")]
    if not rows:
        return ""
    lines = ["## Against the known truth (demo recordings)", "",
             "| Method | " + " | ".join(h for h, *_ in TRUTH_COLUMNS) + " |",
             "|---|" + "---:|" * len(TRUTH_COLUMNS)]
    for r in rows:
        t = r["truth"]["summary"]
        lines.append(f"| {_row_name(r)} | "
                     + " | ".join(_fmt(t.get(k), d) for _, k, _, _, d in TRUTH_COLUMNS) + " |")
    ref = rows[0]["truth"]["reference"]
    lines.append("| Tracked parameters | " + " | ".join(
        _fmt(ref.get(k) if k else None, d) for _, _, k, _, d in TRUTH_COLUMNS) + " |")
    lines.append("| Truth | " + " | ".join(
        _fmt(ref.get(k) if k else None, d) for _, _, _, k, d in TRUTH_COLUMNS) + " |")
    atm = [r for r in rows if "att_vocal_diff_exp" in r["truth"]["summary"]]
    if atm:
        lines += ["", "Attention (ATM variants): vocal-channel attention sung - instrumental / "
                  "channels off for a whole take / temporal std, per task", "",
                  "| Method | "
                  + " | ".join(f"{k}: Δ sung-instr. | {k}: off | {k}: std" for k in ATM_TASKS)
                  + " |", "|---|" + "---:|" * (3 * len(ATM_TASKS))]
        for r in atm:
            t = r["truth"]["summary"]
            cells = []
            for k in ATM_TASKS:
                cells += [_fmt(t.get(f"att_vocal_diff_{k}"), 2),
                          _fmt(t.get(f"att_off_fraction_{k}"), 2),
                          _fmt(t.get(f"att_temporal_std_{k}"), 3)]
            lines.append(f"| {_row_name(r)} | " + " | ".join(cells) + " |")
    n = ", ".join(str(len(r["truth"].get("takes", {}))) for r in rows)
    lines += ["", f"Test takes scored against the truth: {n}. Tracked parameters: the take's "
              "coefficients (what the model is trained on) scored as if generated.", "",
              "Definitions:", ""] + [f"* **{k}**: {v}" for k, v in TRUTH_DEFINITIONS.items()] + [""]
    return "\n".join(lines)


def table_markdown(results: list[dict], title: str = "") -> str:
    """Paper Table 1 layout: one row per variant (``metrics.json`` dicts), then the ground truth;
    the Rendered columns when a result has rendered-video metrics."""
    rendered = any(r["summary"].get("ssim_recon") is not None for r in results)
    columns = COLUMNS + (RENDER_COLUMNS if rendered else [])
    head = [f"{g}: {h}" for g, h, _, _ in columns]
    lines = [f"## {title}" if title else "## MusicFace evaluation (test split)", "",
             "| Method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(columns)]
    for r in results:
        name = _row_name(r)
        lines.append(f"| {name} | "
                     + " | ".join(_cell(r["summary"], k, d) for _, _, k, d in columns) + " |")
    gt = results[0].get("ground_truth", {}) if results else {}
    lines.append("| Ground truth | " + " | ".join(_cell(gt, k, d) for _, _, k, d in columns) + " |")
    lines.append("| Paper ground truth | " + " | ".join(
        _fmt(PAPER_GROUND_TRUTH.get(k), d) for _, _, k, d in columns) + " |")
    lines += ["", f"Test takes: {', '.join(str(len(r.get('takes', {}))) for r in results)} "
              f"({', '.join(r.get('variant', '?') for r in results)}); "
              "— = not applicable or not measurable.", ""]
    notes = []  # why a cell is empty, each reason once
    for r in results:
        avc = r["summary"].get("avc")
        if isinstance(avc, dict) and avc.get("value") is None:
            notes.append(f"AVC ({r.get('variant')}): unavailable: {avc.get('reason')}")
        for key, why in (r.get("notes") or {}).items():
            notes.append(f"{key} ({r.get('variant')}): {why}")
    seen = set()
    for n in notes:
        reason = n.split(": ", 1)[-1]
        if reason not in seen:
            seen.add(reason)
            lines.append(f"* {n}")
    for r in results:
        sm = r["summary"]
        if sm.get("ssim_mean_frame") is not None:
            lines.append(f"* Rendered ({r.get('variant')}): the mean-frame baseline (the training "
                         f"frames' median shown all the time) scores SSIM "
                         f"{_fmt(sm.get('ssim_mean_frame'), 3)}, PSNR "
                         f"{_fmt(sm.get('psnr_mean_frame'), 1)} dB; re-tracked mouth vs driving "
                         f"mouth r = {_fmt(sm.get('mouth_corr_rendered'))}; Ground truth CPBD = "
                         f"real frames")
    defs = results[0].get("definitions", DEFINITIONS) if results else DEFINITIONS
    lines += ["", "Definitions:", ""] + [f"* **{k}**: {v}" for k, v in defs.items()] + [""]
    truth = truth_table_markdown(results)
    return "\n".join(lines) + ("\n" + truth if truth else "")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------------------- evaluate
def render_summary(paths) -> tuple[dict, dict, dict, dict, dict]:
    """``musicface render``'s per-take JSON files -> (summary values frame-weighted over takes,
    reference values (real frames' CPBD), notes, per take, definitions)."""
    from musicface.render import DEFINITIONS as RENDER_DEFINITIONS

    per_take = {}
    for p in paths:
        r = json.loads(Path(p).read_text())
        per_take[r["take"]] = {k: v for k, v in r.items() if k != "definitions"}
    rows = [{**r, "valid_frames": r.get("valid_frames", 0)} for r in per_take.values()]
    rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]
    summary = {k: _weighted(rows, k) for k in RENDER_KEYS}
    ground = {"cpbd": summary.pop("cpbd_real")}
    notes = {}
    for r in per_take.values():
        for k, why in (r.get("notes") or {}).items():
            notes[k] = why
    return summary, ground, notes, per_take, RENDER_DEFINITIONS


def evaluate(checkpoint, shards, out, *, seed: int = 0, device: str = "cpu",
             syncnet_weights=None, rendered=None, tau: float = 0.5, closed_threshold: float = 0.5,
             figure_take: str | None = None, bfm_dir=None, render_metrics=None,
             progress: bool = True, truth=None) -> dict:
    """Generate and score every test take; write metrics.json, table.md and the figures into
    ``out``.
    ``truth``: a folder of ``<take>.truth.npz`` / ``<song>.truth.npz`` (the demo's): the test takes
    are also scored against it (``metrics.json`` ``truth``; :data:`TRUTH_DEFINITIONS`)."""
    from tqdm import tqdm

    from musicface.data import open_shards, take_arrays
    from musicface.model import load_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise StepError(f"checkpoint not found: {checkpoint}")
    model, meta = load_checkpoint(checkpoint, device)
    variant = model.cfg.variant
    shardset = open_shards(shards)
    tests = shardset.takes("test")
    if not tests:
        raise StepError(f"no test takes in {shards}: nothing to evaluate")
    unknown = sorted({t.subject for t in tests} - set(model.subjects))
    if unknown:
        raise StepError(f"test takes of subjects the model does not know: {', '.join(unknown)} "
                        f"(model subjects: {', '.join(model.subjects)})")
    basis_dict = model.exp_basis  # the landmark model travels in the model file
    fps = float(shardset.fps)

    rows, skipped, keep = {}, {}, {}
    truth_index = truth_files(truth) if truth else None
    truth_rows, truth_skipped = {}, {}
    fig_take = figure_take or max(tests, key=lambda t: t.n_frames).take
    for rank, info in enumerate(tqdm(tests, desc="evaluate", unit="take", disable=not progress)):
        try:
            gt = {k: _np(v) for k, v in take_arrays(shardset, info.take).items()}
            valid = gt["valid"].astype(bool)
            if valid.sum() < 3:
                raise StepError("fewer than 3 frames with a tracked face")
            pose0 = gt["pose"][int(np.argmax(valid))]
            gen = model.generate(gt["mfcc_vocals"], gt["mfcc_music"], gt["mfcc_mix"], info.subject,
                                 mfcc_index=gt["mfcc_index"],
                                 pose0=pose0, seed=seed + rank)
            rows[info.take] = score_take(gen, gt, basis_dict, fps=fps, tau=tau,
                                         closed_threshold=closed_threshold, bfm_dir=bfm_dir)
            if info.take == fig_take:
                keep = {"gen": gen, "gt": gt}
        except (StepError, ValueError) as e:
            print(f"musicface: take '{info.take}' step 'evaluate': {one_line(e)}",
                  file=sys.stderr, flush=True)
            skipped[info.take] = one_line(e)
            continue
        if truth_index is not None:
            try:
                tr = load_truth(truth_index, info.take, info.song, len(gt["valid"]))
                truth_rows[info.take] = score_truth(gen, gt, tr, rows[info.take]["_pool"], fps=fps,
                                                    tau=tau, closed_threshold=closed_threshold)
            except StepError as e:
                print(f"musicface: take '{info.take}' step 'evaluate': truth: {one_line(e)}",
                      file=sys.stderr, flush=True)
                truth_skipped[info.take] = one_line(e)
    if not rows:
        raise StepError(f"no test take could be evaluated ({len(skipped)} skipped)")

    summary, ground, dur_gen, dur_gt = summarise(list(rows.values()), fps)
    notes = {}
    definitions = dict(DEFINITIONS)
    rendered_takes = None
    if render_metrics:  # rendered-video metrics of musicface render; its videos also give AVC
        r_sum, r_ground, r_notes, rendered_takes, r_defs = render_summary(render_metrics)
        summary.update(r_sum)
        ground.update(r_ground, lip_energy_corr_rendered=ground.get("lip_energy_corr"))
        notes.update(r_notes)
        definitions.update(r_defs)
        rendered = rendered or str(Path(render_metrics[0]).parent)
    summary["avc"] = avc_value(syncnet_weights, rendered, list(rows))
    errors = sorted({r["landmark_error"] for r in rows.values() if "landmark_error" in r})
    if basis_dict is None or errors:
        reason = (f"{checkpoint.name} carries no expression basis (written before model files "
                  "embedded it, or trained without --basis): retrain it" if basis_dict is None
                  else f"landmark model failed: {errors[0]}")
        for k in ("lmd_mouth", "lmd_face", "lip_energy_corr", "silent_open_ratio"):
            notes[k] = reason
    if (not math.isfinite(summary.get("silent_open_ratio", float("nan")))
            and "silent_open_ratio" not in notes):
        notes["silent_open_ratio"] = "no vocal-silence frames in the test takes"
    if not math.isfinite(summary["cca_eye"]):
        notes["cca_eye"] = ("undefined: a constant sequence (no long eye closure generated or in "
                            "the ground truth)")

    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FIGURES.items()}
    title = f"{checkpoint.parent.name} ({variant}), take {fig_take}"
    if keep:
        figures.pose_curves(paths["pose"], keep["gen"]["pose"], keep["gt"]["pose"], fps=fps,
                            title=title, valid=keep["gt"]["valid"].astype(bool))
        figures.attention_maps(paths["attention"], keep["gen"].get("att"), fps=fps, title=title,
                               note=f"variant '{variant}' has no ATM: no attention maps "
                                    "(paper Fig. 6 needs with_atm or full)")
    else:
        figures.note_figure(paths["pose"], f"take {fig_take} could not be evaluated")
        figures.note_figure(paths["attention"], f"take {fig_take} could not be evaluated")
    figures.eye_durations(paths["eye_durations"], dur_gen, dur_gt, tau=tau,
                          title=f"Eye-closure durations, test split ({variant})")
    figures.training_curves(paths["training"], checkpoint.parent / "metrics.csv")

    per_take = {t: {k: v for k, v in r.items() if k != "_pool"} for t, r in rows.items()}
    for r in per_take.values():
        for k in ("blinks", "blinks_gt"):
            r[k] = {kk: vv for kk, vv in r[k].items() if kk != "durations_s"}
    result = {
        "variant": variant, "audio": getattr(model.cfg, "audio", "separated"),
        "checkpoint": str(checkpoint), "shards": str(shards), "seed": seed, "fps": fps,
        "tau": tau, "closed_threshold": closed_threshold,
        "basis_sha256": model.exp_basis_sha256,
        "summary": summary, "ground_truth": ground, "paper_ground_truth": PAPER_GROUND_TRUTH,
        "notes": notes, "takes": per_take, "skipped": skipped, "figure_take": fig_take,
        "figures": {k: p.name for k, p in paths.items()}, "definitions": definitions,
        "rendered_takes": rendered_takes,
        "model": {"subjects": model.subjects, "exp_dim": model.exp_dim, "epoch": meta.get("epoch")},
    }
    if truth_index is not None:
        t_summary, t_reference = (summarise_truth(list(truth_rows.values()), fps) if truth_rows
                                  else ({}, {}))
        result["truth"] = {
            "folder": str(truth), "summary": t_summary, "reference": t_reference,
            "takes": {t: {k: v for k, v in r.items() if k != "_pool"}
                      for t, r in truth_rows.items()},
            "skipped": truth_skipped, "definitions": TRUTH_DEFINITIONS}
    result = _clean(result)
    save_json(out / "metrics.json", result)
    write_text(out / "table.md",
               table_markdown([result], title=f"{checkpoint.parent.name}: test split"))
    return result


def ablation_table(metrics_paths, out) -> str:
    """The variants' ``metrics.json`` -> one table (paper Table 1), rows in the paper's order."""
    results = []
    for p in metrics_paths:
        p = Path(p)
        if not p.is_file():
            raise StepError(f"metrics file not found: {p}")
        results.append(json.loads(p.read_text()))
    rank = {v: i for i, v in enumerate(VARIANTS)}
    results.sort(key=lambda r: (rank.get(r.get("variant"), len(rank)), r.get("audio") == "mix"))
    text = table_markdown(results, title="Ablation study (paper Table 1 layout), test split")
    write_text(out, text)
    return text


# ------------------------------------------------------------------------------------------- CLI
def main_evaluate(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="runs/<name>/model.pt")
    ap.add_argument("--shards", required=True, help="dataset/shards (folder or one .h5)")
    ap.add_argument("--out", required=True, help="output folder (metrics.json, table.md, *.png)")
    ap.add_argument("--seed", type=int, default=0,
                    help="blink-sampler seed of the first test take (+rank)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--syncnet-weights", default=None,
                    help="syncnet_v2.model, for AVC (with --rendered)")
    ap.add_argument("--rendered", default=None,
                    help="folder of rendered face videos <take>.mp4, for AVC")
    ap.add_argument("--tau", type=float, default=0.5,
                    help="s: closures this long are long closures, not blinks")
    ap.add_argument("--closed-threshold", type=float, default=0.5,
                    help="eye state at/above this is closed")
    ap.add_argument("--bfm-dir", default=None,
                    help="Basel Face Model folder (deep3d coefficients: LMD landmarks)")
    ap.add_argument("--figure-take", default=None,
                    help="test take drawn in pose.png / attention.png (default: the longest)")
    ap.add_argument("--render-metrics", nargs="*", default=None,
                    help="<take>.json files of musicface render (rendered-video metrics; their "
                    "folder's <take>.mp4 also serve AVC)")
    ap.add_argument("--truth", default=None,
                    help="folder of <take>.truth.npz files (the demo's, e.g. work/demo): also "
                    "score the test takes against this known truth")
    a = ap.parse_args(argv)
    try:
        r = evaluate(a.checkpoint, a.shards, a.out, seed=a.seed, device=a.device,
                     syncnet_weights=a.syncnet_weights, rendered=a.rendered, tau=a.tau,
                     closed_threshold=a.closed_threshold, figure_take=a.figure_take,
                     bfm_dir=a.bfm_dir, render_metrics=a.render_metrics, truth=a.truth)
    except StepError as e:
        print(f"musicface evaluate: {one_line(e)}", file=sys.stderr)
        return 1
    print(Path(a.out) / "table.md")
    print(json.dumps({k: v for k, v in r["summary"].items()}, indent=1))
    return 0


def main_ablation_table(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface ablation-table",
                                 description="gather the variants' metrics.json into one table "
                                             "(paper Table 1)")
    ap.add_argument("--out", required=True, help="table.md to write")
    ap.add_argument("metrics", nargs="+", help="runs/<name>-<variant>/eval/metrics.json")
    a = ap.parse_args(argv)
    try:
        print(ablation_table(a.metrics, a.out))
    except (StepError, json.JSONDecodeError) as e:
        print(f"musicface ablation-table: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


main = main_evaluate

if __name__ == "__main__":
    sys.exit(main_evaluate())
