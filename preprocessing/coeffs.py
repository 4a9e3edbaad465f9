"""Per-frame head pose (6-D) and expression coefficients: ``coeffs`` and the ``exp_basis`` gather.

Two backends behind one CLI (``python -m preprocessing.coeffs extract|fit-basis``):

* ``builtin`` (default, offline): rigid similarity alignment of the tracked FaceMesh landmarks to a
  reference face gives the pose; the non-rigid residual after alignment, minus the take's identity
  shape, is the expression. ``fit-basis`` fits a PCA of the residuals of the training takes; the
  shard writer projects each take's residual on it (:func:`project_expression`).
* ``deep3d``: Deep3DFaceRecon_pytorch (the paper's tool), see :mod:`preprocessing.deep3d`.

Camera frame and pose convention (both backends; it is Deep3DFaceRecon's)
---------------------------------------------------------------------------
Landmarks of ``track.npz`` are normalised (x / width, y / height, z in MediaPipe's unit, which has
x's scale, smaller = closer). They are turned into an isotropic *camera frame* measured in image
heights, origin at the image centre, x to the image right, y UP, z TOWARD the camera
(right-handed)::

    X = (x - 0.5) * W / H        Y = 0.5 - y        Z = -z * W / H

so a non-square frame (W != H) is handled exactly. A frame is fitted as ``P = s * R @ F + t`` where
F is the face in its own frame (reference units: the stable points of the reference face have RMS
radius 1 about their centroid, the origin). ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` with the usual
right-handed axis rotations (Deep3DFaceRecon's ``compute_rotation``), angles in radians, 0 =
frontal:

* pitch (about x): positive = chin down (the face looks down),
* yaw (about y): positive = the face turns toward the image right (the subject's left),
* roll (about z, in the image plane): positive = counter-clockwise in the image as the viewer sees
  it (the top of the head moves toward the image left, i.e. the head tilts to the subject's right).

Translation: ``tx, ty`` = position of the face origin (centroid of the stable points, roughly the
nose bridge) in image heights from the image centre, y up; ``tz = ln(s)``, s = face size in image
heights relative to the reference (larger tz = bigger face = closer to the camera; under a pinhole
camera a small move toward the camera by dZ changes tz by dZ / Z). Pose columns: pitch, yaw, roll,
tx, ty, tz. Euler angles are unique for |yaw| < pi/2; at |yaw| = pi/2 (gimbal lock) they stay
finite.

(``preprocessing.demo``'s truth uses this same convention; its translation units differ, see its
docstring.)

"Frontal" is defined by the reference face: its mirror plane is x = 0 and the best-fit plane of its
face outline (FaceMesh face oval) is parallel to the image plane. The reference is MediaPipe
FaceMesh on ``skimage.data.astronaut()`` made exactly mirror-symmetric (``make-reference``;
mediapipe 0.10.14 does not ship its canonical_face_model.obj, so we build our own) and is stored in
``preprocessing/data/reference_face.npz``.

Expression (builtin)
--------------------
``aligned_t = R^T (P_t - t) / s`` is the frame's face in reference units; the take's identity shape
is its per-coordinate median over tracked (non-interpolated) frames ("mean neutral"); ``residual_t =
aligned_t - identity`` (478 x 3, flattened to 1434, in reference units) is what coeffs.npz stores.
The alignment is done twice: to the reference, then to the take's identity (so identity differences
do not leak into the pose) with a robust (Cauchy-weighted) fit on *stable* points only (upper face
outline, forehead, nose bridge, eye corners: not the mouth, jaw, eyelids or brows). ``fit-basis``
turns the residuals of the training takes into ``exp`` = PCA coefficients
(:func:`project_expression`); :func:`landmarks_from_coeffs` goes back to image landmarks (the LMD
landmark model).

coeffs.npz (builtin): ``backend``, ``take``, ``pose`` f4 (N, 6), ``residual`` f4 (N, 1434),
``landmarks2d`` f4 (N, 478, 2) = the tracked x, y, ``valid`` u1 (N,), ``identity`` f4 (478, 3),
``scale`` f4 (N,) (= exp(tz)), ``reference_version``. Frames without a face: zeros, valid 0.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from preprocessing import deep3d
from preprocessing import landmarks as fm
from preprocessing.common import (
    StepError,
    check_upstream,
    load_json,
    load_npz,
    read_failure,
    run_step,
    save_npz,
)
from preprocessing.geometry import (
    euler_from_matrix,
    from_camera,
    matrix_from_euler,
    smooth_pose,
    smooth_runs,
    to_camera,
)
from preprocessing.landmarks import REFERENCE_PATH, load_reference

N_POINTS = fm.N_LANDMARKS  # 478
BASIS_VERSION = "builtin-pca-1"

# Points that move with the skull, not with the expression (FaceMesh indices, mirror-symmetric set).
# top -> image right, down to nose level
UPPER_FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323,
                   109, 67, 103, 54, 21, 162, 127, 234, 93]  # top -> image left
FOREHEAD = [151, 9, 108, 337]
NOSE_BRIDGE = [168, 6, 197, 195, 5, 4, 1]  # between the eyes -> nose tip
EYE_CORNERS = [fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER, fm.LEFT_EYE_INNER, fm.LEFT_EYE_OUTER]
STABLE = np.array(sorted(set(UPPER_FACE_OVAL + FOREHEAD + NOSE_BRIDGE + EYE_CORNERS)))


# ------------------------------------------------------------------------------------ alignment
def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Weighted least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991), batched over
    frames.

    src ``(K, 3)`` (or ``(N, K, 3)``), dst ``(N, K, 3)``, weights ``(N, K)`` (None: uniform).
    Returns s ``(N,)``, R ``(N, 3, 3)`` (a proper rotation), t ``(N, 3)``. Written here because it
    must run vectorised over all frames of a take (skimage's SimilarityTransform fits one at a
    time).
    """
    dst = np.asarray(dst, dtype=np.float64)
    src = np.broadcast_to(np.asarray(src, dtype=np.float64), dst.shape)
    w = np.ones(dst.shape[:2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum(axis=1, keepdims=True)
    mu_s = np.einsum("nk,nkd->nd", w, src)
    mu_d = np.einsum("nk,nkd->nd", w, dst)
    cs, cd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("nk,nki,nkj->nij", w, cd, cs)  # sum_k w_k dst_k src_k^T
    U, D, Vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(U @ Vt))
    sign[sign == 0] = 1.0
    S = np.ones_like(D)
    S[:, 2] = sign
    R = U @ (S[:, :, None] * Vt)
    var_s = np.einsum("nk,nkd->n", w, cs ** 2)
    s = (D * S).sum(axis=1) / np.maximum(var_s, 1e-300)
    t = mu_d - s[:, None] * np.einsum("nij,nj->ni", R, mu_s)
    return s, R, t


def robust_fit(src: np.ndarray, dst: np.ndarray, iterations: int = 3):
    """:func:`fit_similarity` re-weighted with Cauchy weights ``1 / (1 + (r / c)^2)``, c = 2 x
    median r.

    Down-weights stable points that moved anyway (a frowning forehead, a tracker glitch on the
    outline).
    """
    w = None
    for _ in range(iterations):
        s, R, t = fit_similarity(src, dst, w)
        pred = (s[:, None, None] * np.einsum("nij,nkj->nki", R, np.broadcast_to(src, dst.shape))
                + t[:, None])
        r = np.linalg.norm(dst - pred, axis=-1)
        c = 2.0 * np.median(r, axis=1, keepdims=True) + 1e-12
        w = 1.0 / (1.0 + (r / c) ** 2)
    return s, R, t


def to_face_frame(P: np.ndarray, s: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Undo the similarity: ``R^T (P - t) / s`` for every point, ``(N, K, 3)`` in reference
    units."""
    return np.einsum("nji,nkj->nki", R, P - t[:, None]) / s[:, None, None]


# ----------------------------------------------------------------------------------- reference face
def build_reference_face(landmarks: np.ndarray, frame_size) -> tuple[np.ndarray, np.ndarray]:
    """A frontal, exactly mirror-symmetric reference face from one frontal-ish FaceMesh result.

    Returns (reference ``(478, 3)`` in the face frame, mirror ``(478,)``: index of each point's
    mirror image; midline points map to themselves). Steps: (1) the mirror pairing is the optimal
    assignment between the points and their reflection (scipy ``linear_sum_assignment``), alternated
    with (2) the mirror plane = the plane through the pair midpoints normal to the pair differences;
    (3) the shape is averaged with its mirror image; (4) pitch zero: the face-oval plane is turned
    parallel to the image plane; (5) centred on the stable points' centroid and scaled to RMS radius
    1 there.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    P = to_camera(np.asarray(landmarks)[None], np.asarray(frame_size)[None])[0]
    flip = np.array([-1.0, 1.0, 1.0])

    def frame_from(x_axis, pts):  # rows: x, y (forehead - chin, made orthogonal), z = x cross y
        x = x_axis / np.linalg.norm(x_axis)
        y = pts[fm.FOREHEAD] - pts[fm.CHIN]
        y = y - x * (y @ x)
        y /= np.linalg.norm(y)
        return np.stack([x, y, np.cross(x, y)])

    Q = (P - P.mean(0)) @ frame_from(P[fm.LEFT_EYE_OUTER] - P[fm.RIGHT_EYE_OUTER], P).T
    mirror = np.arange(N_POINTS)
    for _ in range(5):
        _, mirror = linear_sum_assignment(cdist(Q * flip, Q))
        diff = Q - Q[mirror]
        normal = np.linalg.svd(diff, full_matrices=False)[2][0]
        normal *= np.sign(normal[0])
        Q = (Q - 0.5 * (Q + Q[mirror]).mean(0)) @ frame_from(normal, Q).T
    Q = 0.5 * (Q + Q[mirror] * flip)
    # pitch: rotate about x (keeps the symmetry) so that the face-oval plane's normal points along
    # +z
    oval = Q[fm.FACE_OVAL] - Q[fm.FACE_OVAL].mean(0)
    n = np.linalg.svd(oval, full_matrices=False)[2][2]
    n *= np.sign(n[2])
    a = np.arctan2(n[1], n[2])
    c, s_ = np.cos(a), np.sin(a)
    Q = Q @ np.array([[1, 0, 0], [0, c, s_], [0, -s_, c]])  # rows q -> Rx(-a) q: n -> (0, 0, 1)
    Q -= Q[STABLE].mean(0)
    Q /= np.sqrt((Q[STABLE] ** 2).sum(1).mean())
    return Q, mirror


def make_reference(out: Path = REFERENCE_PATH) -> dict:
    """Rebuild ``reference_face.npz``: MediaPipe FaceMesh (refine_landmarks) on skimage's
    astronaut."""
    import mediapipe as mp
    from skimage import data

    img = data.astronaut()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        res = mesh.process(img)
    lm = np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark])
    shape, mirror = build_reference_face(lm, (img.shape[1], img.shape[0]))
    version = "astronaut-facemesh-0.10.14-sym-1"
    save_npz(out, shape=shape.astype(np.float32), mirror=mirror.astype(np.int16),
             stable=STABLE.astype(np.int16), version=np.array(version))
    return {"shape": shape, "mirror": mirror, "version": version}


# ---------------------------------------------------------------------------------- builtin backend
IDENTITY_SAMPLE = 1500  # frames (evenly spaced) from which the identity shape's median is taken
CHUNK = 2048  # frames per block when the full 478-point shapes are needed (bounds memory)


def builtin_coeffs(landmarks: np.ndarray, valid: np.ndarray, frame_size, interpolated=None,
                   reference: np.ndarray | None = None, smooth_sigma: float = 0.0) -> dict:
    """Pose + non-rigid residual of one take from its FaceMesh landmarks.

    landmarks ``(N, 478, 3)`` normalised (track.npz), valid ``(N,)``, frame_size ``(N, 2)`` or one
    (width, height) pair, interpolated ``(N,)`` (frames bridged by the tracker: used for the output
    but not for the identity shape). Returns float32 arrays ``pose (N, 6)``, ``residual (N, 1434)``,
    ``landmarks2d (N, 478, 2)`` (the tracked x, y), ``identity (478, 3)``, ``scale (N,)`` and
    ``valid`` uint8; frames without a usable face are zeros with valid = 0. Raises StepError when no
    frame is usable.

    Memory: the fits use the 34 stable points only; full shapes are made in blocks of ``CHUNK``
    frames and the identity median over at most ``IDENTITY_SAMPLE`` evenly spaced frames, so beyond
    the input and output arrays memory does not grow with the take's length.
    """
    lm = np.asarray(landmarks)
    n = lm.shape[0]
    if lm.ndim != 3 or lm.shape[1:] != (N_POINTS, 3):
        raise StepError(f"landmarks have shape {lm.shape}, expected (N, {N_POINTS}, 3)")
    fs = np.broadcast_to(np.asarray(frame_size, dtype=np.float64), (n, 2))
    ok = np.asarray(valid).astype(bool).reshape(n).copy()
    ok &= np.isfinite(lm).all(axis=(1, 2)) & (fs > 0).all(axis=1)
    spread = np.ptp(np.nan_to_num(lm[:, STABLE, :2].astype(np.float64)), axis=1).min(axis=1)
    ok &= spread > 1e-6  # not collapsed to a point
    if not ok.any():
        raise StepError("no usable face in any frame (track.npz has no valid landmarks)")
    frames = np.flatnonzero(ok)
    interp = np.zeros(n, bool) if interpolated is None else np.asarray(interpolated).astype(bool)
    ident = np.flatnonzero(~interp[frames])
    ident = ident if len(ident) else np.arange(len(frames))
    ident = ident[np.unique(
        np.linspace(0, len(ident) - 1, min(len(ident), IDENTITY_SAMPLE)).astype(int))]

    def shapes(rows, s, R, t):  # full 478-point shapes of frames[rows] in the face frame
        P = to_camera(lm[frames[rows]], fs[frames[rows]])
        return to_face_frame(P, s[rows], R[rows], t[rows])

    stable = to_camera(lm[:, STABLE][frames], fs[frames])
    target = load_reference()["shape"] if reference is None else np.asarray(reference, np.float64)
    for _ in range(2):  # 1: to the reference face; 2: to this take's own identity shape
        s, R, t = robust_fit(target[STABLE], stable)
        target = np.median(shapes(ident, s, R, t), axis=0)
    identity = target

    pose = np.zeros((n, 6))
    pose[frames] = np.concatenate([euler_from_matrix(R), t[:, :2], np.log(s)[:, None]], axis=1)
    residual = np.zeros((n, N_POINTS * 3), np.float32)
    for a in range(0, len(frames), CHUNK):
        rows = np.arange(a, min(a + CHUNK, len(frames)))
        residual[frames[rows]] = (shapes(rows, s, R, t) - identity).reshape(len(rows), -1)
    scale = np.zeros(n)
    scale[frames] = s
    smooth_pose(pose, ok, smooth_sigma)
    smooth_runs(residual, ok, smooth_sigma)
    lm2d = np.zeros((n, N_POINTS, 2), np.float32)
    lm2d[frames] = lm[frames, :, :2]
    return {"pose": pose.astype(np.float32), "residual": residual, "landmarks2d": lm2d,
            "identity": identity.astype(np.float32), "scale": scale.astype(np.float32),
            "valid": ok.astype(np.uint8)}


# --------------------------------------------------------------------------------- expression basis
def _is_identity_basis(basis: dict) -> bool:
    return bool(np.asarray(basis.get("identity", False)).item()) if "identity" in basis else False


def fit_pca(rows_iter, dim: int) -> dict:
    """PCA with ``dim`` components from an iterable of ``(n_i, D)`` arrays, in constant memory.

    Streams the sums ``sum x`` and ``sum x x^T`` (float64), so a dataset of hours never sits in
    memory; eigen-decomposes the covariance (``numpy.linalg.eigh``). When the data has rank r < dim
    (few frames) the components r..dim-1 are zero vectors with zero variance, so projections on them
    are 0. Each component's sign is fixed (largest-magnitude entry positive) so the basis is
    reproducible.
    """
    from scipy.linalg import eigh

    total, sx, sxx = 0, None, None
    for x in rows_iter:
        x = np.asarray(x, dtype=np.float64)
        if not len(x):
            continue
        if sx is None:
            sx, sxx = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        total += len(x)
        sx += x.sum(0)
        sxx += x.T @ x
    if total < 2:
        raise StepError(f"expression basis needs at least 2 valid training frames, got {total}")
    mean = sx / total
    cov = (sxx - total * np.outer(mean, mean)) / (total - 1)
    # only the top-k eigenpairs are computed (LAPACK evr: ~3x faster than all)
    k = min(dim, len(mean))
    evals, evecs = eigh(cov, subset_by_index=[len(mean) - k, len(mean) - 1], driver="evr")
    evals, evecs = evals[::-1], evecs[:, ::-1].T
    rank = int((evals > max(evals[0], 0) * 1e-9).sum()) if evals[0] > 0 else 0
    rank = min(rank, dim, total - 1)
    comps = np.zeros((dim, len(mean)))
    var = np.zeros(dim)
    # dim > D (never with 1434-D data): zero rows
    comps[:rank], var[:rank] = evecs[:rank], evals[:rank]
    big = np.argmax(np.abs(comps[:rank]), axis=1)
    comps[:rank] *= np.sign(comps[np.arange(rank), big])[:, None]
    return {"mean": mean.astype(np.float32), "components": comps.astype(np.float32),
            "explained_variance": var.astype(np.float32), "rank": np.int64(rank),
            "n_frames": np.int64(total)}


def project_expression(residual: np.ndarray, basis: dict) -> np.ndarray:
    """Expression coefficients ``(N, E)`` float32 = ``(residual - mean) @ components.T``.

    With the deep3d backend's identity basis the input already is the expression (``exp`` (N, 64))
    and is returned as float32.
    """
    x = np.asarray(residual, dtype=np.float64)
    if _is_identity_basis(basis):
        return x.astype(np.float32)
    comps = np.asarray(basis["components"], dtype=np.float64)
    return ((x - np.asarray(basis["mean"], np.float64)) @ comps.T).astype(np.float32)


def expression_from_coeffs(coeffs: dict, basis: dict) -> np.ndarray:
    """``exp (N, E)`` of a loaded coeffs.npz, whichever backend wrote it (invalid frames -> 0)."""
    backend = str(np.asarray(coeffs["backend"]).item())
    exp = project_expression(coeffs["exp"] if backend == "deep3d" else coeffs["residual"], basis)
    exp[~np.asarray(coeffs["valid"]).astype(bool)] = 0
    return exp


def reconstruct_residual(exp: np.ndarray, basis: dict) -> np.ndarray:
    """Back from expression coefficients to the residual shape ``(N, 478, 3)`` (reference units)."""
    x = np.asarray(basis["mean"], np.float64) + np.asarray(exp, np.float64) @ np.asarray(
        basis["components"], np.float64)
    return x.reshape(len(x), N_POINTS, 3)


def landmarks_from_coeffs(exp: np.ndarray, pose: np.ndarray, basis: dict, reference=None,
                          frame_size=(1, 1), bfm_dir=None) -> np.ndarray:
    """The backend's landmark model: expression + pose -> image-normalised 2-D landmarks.

    builtin basis: ``(N, 478, 2)`` = orthographic projection of ``s R (reference + residual) + t``
    (``reference``: the take's ``identity`` (478, 3) from coeffs.npz; default the shipped reference
    face), mapped to x / width, y / height of ``frame_size`` = (width, height).
    deep3d (identity) basis: ``(N, 68, 2)`` BFM landmarks placed the same way (``reference`` =
    identity coefficients (80,), ``bfm_dir`` = Basel Face Model folder); see
    :func:`preprocessing.deep3d.landmarks_from_coeffs`.
    """
    if _is_identity_basis(basis):
        return deep3d.landmarks_from_coeffs(exp, pose, id_coeffs=reference, bfm_dir=bfm_dir,
                                            frame_size=frame_size)
    ref = load_reference()["shape"] if reference is None else np.asarray(reference, np.float64)
    shape = ref.reshape(N_POINTS, 3) + reconstruct_residual(exp, basis)
    pose = np.asarray(pose, np.float64)
    R = matrix_from_euler(pose[:, :3])
    t = np.concatenate([pose[:, 3:5], np.zeros((len(pose), 1))], axis=1)
    P = np.exp(pose[:, 5])[:, None, None] * np.einsum("nij,nkj->nki", R, shape) + t[:, None]
    return from_camera(P, frame_size)[..., :2].astype(np.float32)


# ----------------------------------------------------------------------------------- step functions
def extract(take: str, track_path, ingest_path, out, backend: str = "builtin", video=None,
            checkpoint=None, batch_size: int = 25, device: str = "cpu",
            smooth_sigma: float = 0.0, pose_sigma: float = 0.0) -> dict:
    """The ``coeffs`` step for one take: track.npz (+ the video for deep3d) -> coeffs.npz.

    ``smooth_sigma``: Gaussian smoothing (frames) of pose and expression; ``pose_sigma``: then of
    the pose alone (the head moves slowly, a per-frame tracker jitters: docs/fidelity.md), either
    backend, inside tracked runs; ``pose_raw`` keeps the pose before it (the renderer's)."""
    ingest = load_json(ingest_path)
    track = load_npz(track_path)
    n = int(ingest["n_frames"])
    for key in ("landmarks", "valid"):
        if key not in track:
            raise StepError(f"track.npz has no '{key}' array")
    if len(track["landmarks"]) != n or len(track["valid"]) != n:
        raise StepError(f"track.npz has {len(track['landmarks'])} frames, ingest.json says {n}")
    fs = track.get("frame_size")
    if fs is None:
        fs = np.tile([ingest["width"], ingest["height"]], (n, 1))
    fs = np.asarray(fs, dtype=np.float64).reshape(n, 2)
    bad = ~(fs > 0).all(axis=1)  # no size recorded for this frame: use the video's
    fs[bad] = [ingest["width"], ingest["height"]]
    if backend == "builtin":
        res = builtin_coeffs(track["landmarks"], track["valid"], fs, track.get("interpolated"),
                             smooth_sigma=smooth_sigma)
        res["reference_version"] = np.array(load_reference()["version"])
    elif backend == "deep3d":
        res = deep3d.extract_deep3d(video, track["landmarks"], track["valid"], checkpoint,
                                    batch_size=batch_size, device=device, smooth_sigma=smooth_sigma)
    else:
        raise ValueError(f"unknown coeffs backend {backend!r}")
    # pose_raw: the per-frame fit, where the face is in each frame (the renderer's conditions);
    # pose: smoothed for the motion model (docs/pose.md)
    res["pose_raw"] = res["pose"].copy()
    smooth_pose(res["pose"], res["valid"].astype(bool), pose_sigma)
    res["backend"] = np.array(backend)
    res["take"] = np.array(take)
    save_npz(out, **res)
    return res


def _take_of(path: Path, data: dict) -> str:
    return str(np.asarray(data["take"]).item()) if "take" in data else Path(path).parent.name


def fit_basis(split_tsv, coeff_paths, out, backend: str = "builtin", dim: int = 64) -> dict:
    """The ``exp_basis`` gather: PCA of the training takes' valid residual frames -> exp_basis.npz.

    Takes not in split.tsv's ``train`` rows, and coeffs files that are failure records, are skipped.
    deep3d: Deep3DFaceRecon's expression is already a basis, the file says ``identity=True``.
    """
    import pandas as pd

    if backend == "deep3d":
        res = {"identity": np.array(True), "version": np.array("deep3d-identity-1"),
               "backend": np.array("deep3d")}
        save_npz(out, **res)
        return res
    check_upstream(split_tsv)
    split = pd.read_csv(split_tsv, sep="\t", dtype=str, keep_default_na=False)
    for col in ("take", "split"):
        if col not in split.columns:
            raise StepError(f"{split_tsv} has no '{col}' column")
    train = set(split.loc[split["split"] == "train", "take"])
    used: list[str] = []

    def rows():
        for p in coeff_paths:
            if read_failure(p) is not None:
                print(f"exp_basis: skipping {p} (failure record)", file=sys.stderr)
                continue
            c = load_npz(p)
            take = _take_of(p, c)
            if take not in train:
                continue
            b = str(np.asarray(c["backend"]).item())
            if b != "builtin":
                raise StepError(f"{p} was made by backend '{b}', the basis is for 'builtin'")
            used.append(take)
            yield c["residual"][np.asarray(c["valid"]).astype(bool)]

    res = fit_pca(rows(), dim)
    if not used:
        raise StepError("no training take has coefficients (split.tsv train rows vs coeffs files)")
    res.update(version=np.array(f"{BASIS_VERSION} ref={load_reference()['version']}"),
               train_takes=np.array(sorted(used)), backend=np.array("builtin"))
    save_npz(out, **res)
    return res


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.coeffs",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="one take: track.npz (+ video) -> coeffs.npz")
    ex.add_argument("--take", required=True)
    ex.add_argument("--track", required=True)
    ex.add_argument("--ingest", required=True)
    ex.add_argument("--video", help="the take's video (deep3d backend)")
    ex.add_argument("--backend", choices=["builtin", "deep3d"], default="builtin")
    ex.add_argument("--checkpoint", help="Deep3DFaceRecon_pytorch epoch_20.pth (deep3d)")
    ex.add_argument("--batch-size", type=int, default=25)
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ex.add_argument("--smooth", action="store_true",
                    help="temporal Gaussian smoothing of the outputs")
    ex.add_argument("--smooth-sigma", type=float, default=1.0, help="smoothing sigma in frames")
    ex.add_argument("--pose-sigma", type=float, default=0.0,
                    help="Gaussian smoothing of the pose alone, sigma in frames (0: off)")
    ex.add_argument("--out", required=True)
    fb = sub.add_parser("fit-basis", help="training takes' residuals -> dataset/exp_basis.npz")
    fb.add_argument("--split", required=True)
    fb.add_argument("--backend", choices=["builtin", "deep3d"], default="builtin")
    fb.add_argument("--dim", type=int, default=64)
    fb.add_argument("--out", required=True)
    fb.add_argument("coeffs", nargs="*")
    sub.add_parser("make-reference", help=f"rebuild {REFERENCE_PATH.name} (maintainers)")
    args = ap.parse_args(argv)

    if args.cmd == "make-reference":
        print(make_reference()["version"])
        return 0
    if args.cmd == "fit-basis":
        return run_step("exp_basis", "dataset", [args.out],
                        lambda: fit_basis(args.split, args.coeffs, args.out,
                                          args.backend, args.dim))
    checkpoint = args.checkpoint
    if args.backend == "deep3d":
        # a missing model is a configuration error, not bad input: stop now, write no failure record
        problem = deep3d.checkpoint_problem(checkpoint)
        if problem:
            print(f"musicface: take '{args.take}' step 'coeffs': {problem}", file=sys.stderr)
            return 2
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
    sigma = args.smooth_sigma if args.smooth else 0.0
    return run_step("coeffs", args.take, [args.out], lambda: extract(
        args.take, args.track, args.ingest, args.out, args.backend, video=args.video,
        checkpoint=checkpoint, batch_size=args.batch_size,
        device=args.device, smooth_sigma=sigma, pose_sigma=args.pose_sigma))


if __name__ == "__main__":
    sys.exit(main())
