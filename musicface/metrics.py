"""Evaluation metrics of the paper (sections 4.3-4.4), each a small function with its definition.

Conventions (the shard contract, docs/data.md): sequences are per video frame at ``fps`` (30),
pose = ``pitch, yaw, roll`` (radians) ``, tx, ty, tz``; eye state in [0, 1] (1 = closed);
landmarks image-normalised ``(T, K, 2)``.

    cca                 first canonical correlation of two multivariate sequences
    pose_speed          |p_t - p_{t-1}|, the head-pose speed the paper correlates
    cca_pose_speed      CCA of head-pose speed (Table 1 "Pose realism CCA")
    cca_eye             CCA of eye state (Table 1 "Eye realism CCA")
    roughness           mean(R''(t)^2) of the Euler angles (Eq. 14), degrees per frame^2
    closure_events      closed-eye runs split into blinks / long closures (tau)
    blink_stats         blinks/s and mean blink duration (Table 2; ground truth 0.35 /s, 0.23 s) of
                        closure events (pool takes by concatenating their events);
                        ``preprocessing.eyes.blink_stats``, the dataset's own definition
    lmd                 landmark distance, % of the inter-ocular distance (mouth region / whole
                        face)
    mouth_opening       inner-lip gap / inter-ocular distance (``preprocessing.geometry``)
    lipsync_proxy       corr(mouth opening, vocal energy) and mouth-open ratio where nobody sings
    syncnet_confidence  AVC: SyncNet confidence (LSE-C) of face crops vs audio, with the user's
                        weights
    unavailable         the JSON value of a metric that cannot be computed:
                        {"value": None, "reason": ...}

Against known truth (the demo recordings' ``*.truth.npz``; ``musicface evaluate --truth``):

    pearson             Pearson correlation (NaN for a constant sequence)
    angular_speed       ||d(pitch, yaw, roll)/dt||, rad/s, aligned with the truth's ``head_speed``
    overlapping         how many events of one set overlap some event of another (long closures)
    silent_frames       frames at least ``margin`` frames away from any sung frame
    attention_stats     does an ATM follow the song: vocal-channel attention sung - instrumental,
                        the fraction of channels shut off for the whole take, temporal std

A metric that is undefined on its input (a constant sequence, no silent frame, ...) returns NaN;
``evaluate`` writes it as null. Nothing here is ever faked: AVC without SyncNet weights and rendered
face frames is reported unavailable with its reason.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from preprocessing.eyes import blink_stats, split_eye_states
from preprocessing.geometry import interocular, landmark_sets, mouth_opening
from preprocessing.timebase import FPS

__all__ = ["blink_stats", "interocular", "landmark_sets", "mouth_opening"]  # re-exported metrics


# -------------------------------------------------------------------------------------------- CCA
def _as2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x.reshape(len(x), -1)


def _column_basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis (T, r) of the centred columns of x; rank-deficient directions dropped."""
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] <= 0:
        return u[:, :0]
    keep = s > s[0] * max(x.shape) * np.finfo(np.float64).eps * 16
    return u[:, keep]


def cca(x, y) -> float:
    """First canonical correlation of two sequences ``x (T, p)`` and ``y (T, q)`` (1-D allowed).

    rho_1 = max over a, b of corr(x a, y b). Computed exactly (Bjorck-Golub): with Qx, Qy
    orthonormal bases of the centred columns, rho_1 is the largest singular value of Qx^T Qy.
    sklearn's CCA finds the same number iteratively (NIPALS); the direct SVD is exact, fast and
    tolerates constant or collinear columns, which pose speeds often have. For 1-D inputs
    rho_1 = |Pearson correlation|.
    NaN when either sequence is constant (the correlation is undefined).
    """
    x, y = _as2d(x), _as2d(y)
    if len(x) != len(y):
        raise ValueError(f"cca: sequences differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3:
        raise ValueError(f"cca: need at least 3 time steps, got {len(x)}")
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    qx, qy = _column_basis(x[ok]), _column_basis(y[ok])
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return float("nan")
    s = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(min(s[0], 1.0))


def pose_speed(pose) -> np.ndarray:
    """Head-pose speed ``|p_t - p_{t-1}|`` per parameter: (T, D) -> (T-1, D), units per frame."""
    pose = np.asarray(pose, dtype=np.float64)
    return np.abs(np.diff(pose, axis=0))


def speed_valid(valid) -> np.ndarray:
    """Rows of :func:`pose_speed` whose two frames are both valid: (T,) -> (T-1,) bool."""
    v = np.asarray(valid).astype(bool)
    return v[1:] & v[:-1]


def cca_pose_speed(pose_gen, pose_gt, dims=slice(0, 6), valid=None) -> float:
    """CCA of head-pose speed (paper 4.3): ``cca(|diff(pose_gen)|, |diff(pose_gt)|)``.

    The paper correlates the *speed* rather than the pose itself because the same singer moves
    differently on every take but with a similar rhythm. ``dims`` selects the pose parameters
    (default all six: 3 Euler angles + 3 translations; CCA is invariant to their scales).
    ``valid (T,)``: ground-truth frames with a tracked face; speeds touching another frame are left
    out.
    """
    sg, sr = pose_speed(np.asarray(pose_gen)[:, dims]), pose_speed(np.asarray(pose_gt)[:, dims])
    if valid is not None:
        keep = speed_valid(valid)
        sg, sr = sg[keep], sr[keep]
    return cca(sg, sr)


def cca_eye(eye_gen, eye_gt) -> float:
    """CCA of eye-state sequences (paper 4.3); for 1-D states this is |Pearson correlation|."""
    return cca(eye_gen, eye_gt)


# -------------------------------------------------------------------------------------- roughness
def roughness(euler, *, degrees: bool = True, valid=None) -> float:
    """Roughness of head rotation, paper Eq. 14: ``Rough(R) = 1/T' sum_t ||R''(t)||^2``.

    ``euler (T, 3)``: pitch, yaw, roll in radians (or ``(T, >=3)`` pose: the first three columns).
    Units/scaling (the paper leaves them open; ours): angles converted to degrees, R''(t) the
    central second difference ``R(t+1) - 2 R(t) + R(t-1)`` in degrees per frame^2 (no division by
    dt^2), ``||.||^2`` the squared norm over the three angles, averaged over the T' = T - 2 interior
    frames (with ``valid (T,)``: over the frames whose three frames t-1, t, t+1 are all valid; NaN
    if none).
    """
    r = np.asarray(euler, dtype=np.float64)[:, :3]
    if len(r) < 3:
        raise ValueError(f"roughness: need at least 3 frames, got {len(r)}")
    if degrees:
        r = np.degrees(r)
    d2 = np.sum((r[2:] - 2.0 * r[1:-1] + r[:-2]) ** 2, axis=1)
    if valid is not None:
        v = np.asarray(valid).astype(bool)
        d2 = d2[v[2:] & v[1:-1] & v[:-2]]
    return float(np.mean(d2)) if d2.size else float("nan")


# ---------------------------------------------------------------------------------------- eyes
def closure_events(eye, *, fps: float = FPS, tau: float = 0.5, closed_threshold: float = 0.5,
                   valid=None) -> np.ndarray:
    """Closed-eye runs of an eye-state sequence: float array (K, 4) = start frame, end frame
    (exclusive), duration s, kind (0 blink: shorter than ``tau`` s, 1 long closure).

    "Closed" means ``eye >= closed_threshold``; frames where ``valid`` is 0 never count as closed
    (``preprocessing.eyes.split_eye_states``: ground truth and generated sequences are split exactly
    like the dataset). Pass the result to :func:`blink_stats`.
    """
    eye = np.nan_to_num(np.asarray(eye, dtype=np.float64).reshape(-1), nan=0.0)
    _, _, events = split_eye_states(eye, fps=fps, tau=tau, closed_threshold=closed_threshold,
                                    valid=valid)
    return np.asarray(events, dtype=np.float64).reshape(-1, 4)


# ---------------------------------------------------------------------------------- landmarks
def lmd(landmarks_gen, landmarks_gt, *, region: str = "mouth") -> float:
    """Landmark distance (LMD, Chen et al.), in percent of the ground-truth inter-ocular distance.

    ``LMD = 100 / (T K) sum_t sum_k ||g_tk - r_tk|| / d_t`` with ``d_t`` the ground truth's
    inter-ocular distance (:func:`interocular`) in frame t, over the landmarks of ``region``
    ("mouth": the lips, 40 FaceMesh / 20 iBUG points; "face": all).
    The normalisation makes LMD independent of image and face size; a face 256 px wide has
    d ~ 100 px, so 1 % ~ 1 px there. ``evaluate`` builds both sets from coefficients with the
    *ground-truth pose*, so LMD measures the expression (lip sync), not the freely generated head
    motion.
    """
    g = np.asarray(landmarks_gen, dtype=np.float64)[..., :2]
    r = np.asarray(landmarks_gt, dtype=np.float64)[..., :2]
    if g.shape != r.shape:
        raise ValueError(f"lmd: landmark shapes differ {g.shape} vs {r.shape}")
    if region == "mouth":
        idx = landmark_sets(g.shape[1])["mouth"]
    elif region == "face":
        idx = np.arange(g.shape[1])
    else:
        raise ValueError(f"lmd: unknown region {region!r} (mouth or face)")
    d = interocular(r)
    dist = np.linalg.norm(g[:, idx] - r[:, idx], axis=-1) / d[:, None]
    return float(100.0 * dist.mean())


# ------------------------------------------------------------------------------ lip-sync proxy
def silence_mask(energy_db, *, min_gap_db: float = 10.0) -> np.ndarray:
    """Frames where nobody sings, from the vocal energy envelope in dB: (T,) bool.

    Silent = below Otsu's threshold of the take's vocal energy (the valley between the singing and
    the pause modes) AND at least ``min_gap_db`` below the 95th percentile (so a take sung all
    through, with a unimodal energy, has no silent frames instead of an arbitrary half).
    """
    from skimage.filters import threshold_otsu

    e = np.asarray(energy_db, dtype=np.float64)
    if e.size < 2 or np.ptp(e) == 0:
        return np.zeros(e.shape, dtype=bool)
    thr = min(threshold_otsu(e), np.percentile(e, 95) - min_gap_db)
    return e < thr


def lipsync_proxy(opening_gen, energy_db, *, opening_gt=None, silent=None,
                  open_fraction: float = 0.3) -> dict:
    """A lip-sync measure that needs no renderer (ours; AVC needs rendered faces).

    ``energy_corr`` = Pearson correlation of the generated mouth opening with the vocal energy
    envelope (dB) over the take (higher = mouth follows the voice). ``silent_open_ratio`` =
    fraction of silent frames (:func:`silence_mask`) where the mouth is open (lower is better; the
    paper's Fig. 5a failure: single-stream keeps the mouth open in silence). "Open" means opening
    above ``p5 + open_fraction * (p95 - p5)`` of the *ground-truth* opening of the take (of the
    generated one when no ground truth is given). NaN where undefined (constant input, no silence).
    """
    o = np.asarray(opening_gen, dtype=np.float64)
    e = np.asarray(energy_db, dtype=np.float64)
    if o.shape != e.shape:
        raise ValueError(f"lipsync_proxy: opening {o.shape} and energy {e.shape} differ")
    corr = float(np.corrcoef(o, e)[0, 1]) if np.std(o) > 0 and np.std(e) > 0 else float("nan")
    ref = o if opening_gt is None else np.asarray(opening_gt, dtype=np.float64)
    lo, hi = np.percentile(ref, [5, 95])
    threshold = lo + open_fraction * (hi - lo)
    silent = silence_mask(e) if silent is None else np.asarray(silent, dtype=bool)
    ratio = float(np.mean(o[silent] > threshold)) if silent.any() else float("nan")
    return {"energy_corr": corr, "silent_open_ratio": ratio, "silent_frames": int(silent.sum()),
            "open_threshold": float(threshold)}


# ------------------------------------------------------------------------------------------- AVC
def unavailable(reason: str) -> dict:
    """JSON value of a metric that cannot be computed here (never a made-up number)."""
    return {"value": None, "reason": reason}


def syncnet_confidence(crops, audio, *, sr: int = 16000, weights: str | Path, device: str = "cpu",
                       vshift: int = 15, batch: int = 20) -> dict:
    """AVC: SyncNet audio-visual confidence (Chung & Zisserman; LSE-C) of face crops vs audio.

    ``crops (T, 224, 224, 3)`` uint8 RGB face crops at 25 fps (SyncNet's rate: resample first),
    ``audio`` mono at ``sr`` = 16 kHz covering the same time. For every 5-frame video window the
    network embeds lips and the 20 matching MFCC rows (100 Hz); ``mdist[s]`` is the mean embedding
    distance at audio shift s in [-vshift, vshift] frames; ``offset = vshift - argmin(mdist)``,
    ``confidence = median(mdist) - min(mdist)``, ``min_dist`` = min(mdist) (LSE-D).
    The network and its weights are the user's (``syncnet_v2.model``, a plain state dict); this is
    our own driver around them, fed our crops instead of running S3FD face detection.
    """
    import python_speech_features
    import torch
    from syncnet_python.SyncNetModel import S

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"SyncNet weights not found: {weights} (syncnet_v2.model from the "
                                "syncnet_python download script)")
    if sr != 16000:  # SyncNet's own audio rate (its MFCC front end), not a choice of ours
        raise ValueError(f"syncnet_confidence: audio must be 16 kHz, got {sr}")
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3):
        raise ValueError(f"syncnet_confidence: crops must be (T, 224, 224, 3), got {crops.shape}")
    net = S(num_layers_in_fc_layers=1024)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k.removeprefix("__S__."): v for k, v in state.items()})
    net.to(device).eval()

    # SyncNet was trained on BGR frames read by OpenCV, 0..255 floats; MFCC: 13 coefficients at
    # 100 Hz. video: (3, T, H, W)
    video = torch.from_numpy(crops[..., ::-1].astype(np.float32)).permute(3, 0, 1, 2)
    mfcc = python_speech_features.mfcc(np.asarray(audio, dtype=np.float64), sr).T.astype(np.float32)
    # windows of 5 frames (200 ms) and the 20 MFCC rows of the same time; 640 samples per 25 fps
    # frame
    n = min(len(crops), len(audio) // 640) - 5
    if n < 2 * vshift + 1:
        raise ValueError(f"syncnet_confidence: {len(crops)} frames are too few for shifts of "
                         f"+-{vshift}")
    lip, aud = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            js = range(i, min(n, i + batch))
            v = torch.stack([video[:, j:j + 5] for j in js]).to(device)
            a = torch.stack([torch.from_numpy(mfcc[None, :, 4 * j:4 * j + 20])
                             for j in js]).to(device)
            lip.append(net.forward_lip(v).cpu())
            aud.append(net.forward_aud(a).cpu())
    lip, aud = torch.cat(lip), torch.cat(aud)
    aud_pad = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    shifts = torch.arange(2 * vshift + 1)
    dists = torch.stack([torch.linalg.vector_norm(lip - aud_pad[s:s + n], dim=1)
                         for s in shifts], dim=1)
    mdist = dists.mean(dim=0)
    best = int(torch.argmin(mdist))
    return {"offset": vshift - best, "confidence": float(torch.median(mdist) - mdist[best]),
            "min_dist": float(mdist[best])}


# ------------------------------------------------------------------------- against known truth
def pearson(x, y) -> float:
    """Pearson correlation of two 1-D sequences over the frames where both are finite; NaN when
    either is constant there (or fewer than 3 frames are left)."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"pearson: sequences differ in length ({len(x)} vs {len(y)})")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def angular_speed(pose, fps: float = FPS) -> np.ndarray:
    """Head angular speed ``||R(t) - R(t-1)|| * fps`` (rad/s) of the Euler angles (pitch, yaw,
    roll), (T, >=3) -> (T,): frame 0 gets frame 1's value. Frame t holds the step that ends at t, as
    the demo's ``head_speed[t]`` drives the step from t-1 to t (``preprocessing.demo``)."""
    r = np.asarray(pose, np.float64)[:, :3]
    if len(r) < 2:
        raise ValueError(f"angular_speed: need at least 2 frames, got {len(r)}")
    step = np.linalg.norm(np.diff(r, axis=0), axis=1) * fps
    return np.concatenate([step[:1], step])


def overlapping(events, others) -> int:
    """How many of ``events`` (K, >=2: start frame, end frame exclusive) share at least one frame
    with some event of ``others`` (same layout): the hits of a precision or recall count."""
    a, b = np.asarray(events, np.float64), np.asarray(others, np.float64)
    if not a.size or not b.size:
        return 0
    hit = (a[:, None, 0] < b[None, :, 1]) & (b[None, :, 0] < a[:, None, 1])
    return int(hit.any(axis=1).sum())


def silent_frames(active, margin: int = 3) -> np.ndarray:
    """Frames where nobody sings: ``active`` (T,) is 0 on the frame and on the ``margin`` frames
    each side of it (a mouth cannot shut within a frame of a syllable's end; 3 frames = 0.1 s)."""
    from scipy.ndimage import binary_dilation

    act = np.asarray(active).astype(bool)
    if margin > 0 and act.any():
        act = binary_dilation(act, iterations=margin)
    return ~act


def attention_stats(att, sung, instrumental, n_vocal: int, off: float = 0.1) -> dict:
    """Does an ATM's attention ``att`` (T, C) follow the song (paper Fig. 6)?

    ``vocal_diff``: mean attention over the vocal-stream channels (the first ``n_vocal``: f_v comes
    first in f_v ++ f_b) on ``sung`` frames minus that on ``instrumental`` frames (boolean (T,)
    masks; NaN if either is empty). ``off_fraction``: the fraction of all C channels whose
    attention stays below ``off`` on every frame (shut off for the whole take). ``temporal_std``:
    the mean over channels of each channel's standard deviation over time. ``mean``: the mean
    attention. All on the sigmoid's 0-1 scale."""
    a = np.asarray(att, np.float64)
    sung, instrumental = np.asarray(sung, bool), np.asarray(instrumental, bool)
    voc = a[:, :n_vocal].mean(axis=1)
    diff = (float(voc[sung].mean() - voc[instrumental].mean())
            if sung.any() and instrumental.any() else float("nan"))
    return {"vocal_diff": diff, "off_fraction": float(np.mean(a.max(axis=0) < off)),
            "temporal_std": float(a.std(axis=0).mean()), "mean": float(a.mean())}


def finite_or_none(x):
    """JSON-friendly number: NaN / inf -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------ rendered video
# (the rendered mouth's correlation with the driving one is :func:`pearson` above)
def image_similarity(image, reference) -> tuple[float, float]:
    """(SSIM, PSNR in dB) of two uint8 RGB images (scikit-image, data range 255, SSIM over the
    colour channels with its default 7 x 7 window)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = np.asarray(image), np.asarray(reference)
    ssim = structural_similarity(a, b, channel_axis=2, data_range=255)
    psnr = peak_signal_noise_ratio(b, a, data_range=255)
    return float(ssim), float(min(psnr, 100.0))


def cpbd_sharpness(image) -> float:
    """CPBD sharpness (Narvekar & Karam; paper Table 2) of an RGB or gray uint8 image, via the
    ``cpbd`` module of cpbd-py312, which expects 2-D grayscale on a 0-255 scale."""
    import cpbd
    from skimage.color import rgb2gray

    img = np.asarray(image)
    gray = rgb2gray(img) * 255.0 if img.ndim == 3 else img.astype(np.float64)
    return float(cpbd.compute(gray))
