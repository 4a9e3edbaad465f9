"""Deep3DFaceRecon_pytorch backend of the ``coeffs`` step (the paper's 3D face reconstruction).

What the real tool does, re-implemented here (our code; the tool's repository is not needed):

* network (``models/networks.py``, ``ReconNetWrapper`` with ``net_recon='resnet50'``): a ResNet-50
  without its fc layer (``backbone.*``, the key names of torchvision's ``resnet50``) followed by
  seven 1x1 convolutions on the pooled 2048-D feature (``final_layers.0..6``: 80 id, 64 exp, 80 tex,
  3 angle, 27 gamma, 2 txy, 1 tz), concatenated to 257 coefficients;
* checkpoint: ``epoch_20.pth`` = ``{'net_recon': state_dict, ...}`` (optimiser entries are ignored);
  loaded with ``torch.load(weights_only=True)`` and ``load_state_dict(strict=True)``;
* input (``util/preprocess.py`` ``align_img``): five points (eye centres, nose tip, mouth corners;
  y flipped: ``y' = H - 1 - y``) are fitted to the 5 standard 3D points of
  ``similarity_Lm3D_all.mat`` by a least-squares affine projection (``POS``); ``scale = 102 / s``
  and the crop is the 224 x 224 window of the frame resized by ``scale`` centred on the fitted
  translation; RGB in [0, 1], no mean/std. Our five points come from the tracked FaceMesh landmarks:
  eye centre = mean of the eye's
  two corners (as the standard points are built from the 68-point eye corners), nose tip = FaceMesh
  1, mouth corners = 61 / 291. The crop is done with PIL's bicubic ``resize(box=...)`` on the needed
  region only (identical to resizing the whole frame then cropping, without the cost);
* output slices: id 0:80, exp 80:144, tex 144:224, angle 224:227 (pitch, yaw, roll in radians, the
  convention of :mod:`preprocessing.coeffs`), gamma 227:254, trans 254:257 (BFM units in the crop's
  camera: focal 1015 px, the face ~10 units away; trans z > 0 = toward the camera).

Pose: the dataset's convention, as the builtin backend's (:mod:`preprocessing.coeffs`): the tool's
angles as they come, and its translation turned into the frame's units by :func:`dataset_pose`:
tx, ty = where the BFM face's origin appears, in image heights from the image centre, y up (the
crop's camera projection, mapped back through the crop's place and scale in the frame,
``trans_params``); tz = ln(face scale), the face's image heights per unit of the builtin reference
face (:func:`face_unit`), so the same face gets about the same tz from both backends.

The Basel Face Model is needed only to turn coefficients into vertices / the 68 landmarks
(:func:`landmarks_from_coeffs`, for LMD): ``bfm_dir`` holds ``BFM_model_front.mat`` (made by
Deep3DFaceRecon from the two files below, or by us from them when it is absent) or
``01_MorphableModel.mat`` (Basel Face Model 2009, free after registration at
https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads) + ``Exp_Pca.bin`` (Guo et al.'s
expression basis, "Exp_Pca.bin" in CoarseData of https://github.com/Juyong/3DFace, linked from
Deep3DFaceRecon_pytorch's README).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from preprocessing import landmarks as fm
from preprocessing.common import StepError
from preprocessing.geometry import from_camera, matrix_from_euler, smooth_runs
from preprocessing.landmarks import load_reference
from preprocessing.timebase import FPS

DATA = Path(__file__).resolve().parent / "data" / "deep3dfacerecon"
HEADS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("txy", 2), ("tz", 1))
SLICES = {"id": slice(0, 80), "exp": slice(80, 144), "tex": slice(144, 224),
          "angle": slice(224, 227), "gamma": slice(227, 254), "trans": slice(254, 257)}
N_COEFFS = 257
CROP = 224
RESCALE = 102.0  # align_img's rescale_factor
FOCAL, CENTER, CAMERA_D = 1015.0, 112.0, 10.0  # ParametricFaceModel's camera

CHECKPOINT_HELP = ("Deep3DFaceRecon_pytorch's trained model epoch_20.pth (the "
                   "'face_recon_feat0.2_augment' release linked from "
                   "https://github.com/sicxu/Deep3DFaceRecon_pytorch#prepare-prerequisite-"
                   "models), set config key coeffs.deep3d.checkpoint to its path")
BFM_HELP = ("the Basel Face Model: put BFM_model_front.mat, or 01_MorphableModel.mat (Basel Face "
            "Model 2009, https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads) + "
            "Exp_Pca.bin (CoarseData of https://github.com/Juyong/3DFace), in the folder set by "
            "coeffs.deep3d.bfm_dir")


class MissingModelFiles(FileNotFoundError):
    """A file of the real tool is not there; the message names it and says where to get it."""


# ------------------------------------------------------------------------------------ network
def build_net():
    """Deep3DFaceRecon's ``ReconNetWrapper('resnet50')`` with our code: same modules, same key
    names."""
    import torch
    import torchvision
    from torch import nn

    class ReconNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet50(weights=None)
            self.backbone.fc = nn.Identity()  # the tool's ResNet stops after global average pooling
            self.final_layers = nn.ModuleList([nn.Conv2d(2048, n, kernel_size=1, bias=True)
                                               for _, n in HEADS])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.backbone(x)[:, :, None, None]  # (B, 2048, 1, 1) like the tool's pooled map
            return torch.cat([layer(f) for layer in self.final_layers], dim=1).flatten(1)

    return ReconNet()


def checkpoint_problem(path) -> str | None:
    """A one-line reason why ``path`` cannot be the checkpoint (None when it is a readable file)."""
    if not path:
        return f"backend deep3d needs a checkpoint: {CHECKPOINT_HELP}"
    if not Path(path).is_file():
        return f"Deep3DFaceRecon checkpoint not found: {path} ({CHECKPOINT_HELP})"
    return None


def load_net(path, device: str = "cpu"):
    """Load ``epoch_20.pth`` into :func:`build_net` (strict key match), eval mode, on ``device``."""
    import torch

    problem = checkpoint_problem(path)
    if problem:
        raise MissingModelFiles(problem)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling problem means "not a checkpoint we can use"
        raise StepError(f"cannot read Deep3DFaceRecon checkpoint {path}: "
                        f"{type(e).__name__}: {e}") from e
    state = ckpt.get("net_recon", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise StepError(f"{path} is not a Deep3DFaceRecon checkpoint (no 'net_recon' state dict)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = build_net()
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise StepError(f"{path} does not match Deep3DFaceRecon's resnet50 network: "
                        f"missing keys {_few(missing)}; unexpected keys {_few(unexpected)}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # same keys, other shapes
        detail = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise StepError(f"{path} does not match Deep3DFaceRecon's resnet50 network: "
                        f"{detail[0] if detail else e}") from e
    return net.eval().to(device)


def _few(keys: list[str], k: int = 3) -> str:
    return "none" if not keys else ", ".join(keys[:k]) + (f" (+{len(keys) - k} more)"
                                                          if len(keys) > k else "")


# ------------------------------------------------------------------------------------ alignment
def standard_points() -> np.ndarray:
    """The 5 standard 3D points ``(5, 3)`` (eye, eye, nose, mouth, mouth; image-left first)."""
    from scipy.io import loadmat

    # (68, 3), 0-based rows below
    lm = loadmat(DATA / "similarity_Lm3D_all.mat")["lm"].astype(np.float64)
    return np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])


def five_points(px: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners ``(5, 2)`` from FaceMesh pixel landmarks
    ``(478, >=2)``."""
    px = np.asarray(px, np.float64)[:, :2]
    return np.stack([px[[fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER]].mean(0),  # image-left eye
                     px[[fm.LEFT_EYE_INNER, fm.LEFT_EYE_OUTER]].mean(0),
                     px[fm.NOSE_TIP], px[fm.MOUTH_LEFT], px[fm.MOUTH_RIGHT]])


def pos_fit(points2d: np.ndarray, points3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine camera ``p = A @ X + t`` (A 2 x 3); returns (t (2,), s = mean row norm
    of A)."""
    n = len(points2d)
    X = np.concatenate([points3d, np.ones((n, 1))], axis=1)  # (n, 4)
    k, *_ = np.linalg.lstsq(X, points2d, rcond=None)  # (4, 2): each column = one row of [A | t]
    s = 0.5 * (np.linalg.norm(k[:3, 0]) + np.linalg.norm(k[:3, 1]))
    return k[3].copy(), float(s)


def crop_params(px: np.ndarray, height: int,
                lm3d: np.ndarray | None = None) -> tuple[float, float, float]:
    """(scale, tx, ty) of align_img for one frame: ``scale`` = crop pixels per frame pixel, (tx, ty)
    the fitted face position in y-flipped pixel coordinates (``ty = H - 1 - y``)."""
    p5 = five_points(px)
    p5[:, 1] = height - 1 - p5[:, 1]
    t, s = pos_fit(p5, standard_points() if lm3d is None else lm3d)
    return RESCALE / s, float(t[0]), float(t[1])


def crop_box(scale: float, tx: float, ty: float, height: int) -> tuple[float, float, float, float]:
    """The frame region (PIL continuous coordinates x0, y0, x1, y1) that becomes the 224 x 224 crop.

    align_img resizes the frame by ``scale`` and crops from
    ``left = W*scale/2 - 112 + (tx - W/2)*scale = tx*scale - 112`` and
    ``up = (H - ty)*scale - 112``; in frame coordinates that is the box below.
    """
    half = CROP / 2 / scale
    cx, cy = tx, height - ty
    return cx - half, cy - half, cx + half, cy + half


def align_crop(frame: np.ndarray, px: np.ndarray, lm3d: np.ndarray | None = None):
    """One frame ``(H, W, 3)`` uint8 + its FaceMesh pixel landmarks -> (crop (224, 224, 3) uint8,
    trans_params (W, H, scale, tx, ty) as Deep3DFaceRecon's align_img returns them)."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale, tx, ty = crop_params(px, h, lm3d)
    x0, y0, x1, y1 = crop_box(scale, tx, ty, h)
    # cut the region (plus the bicubic filter's reach when downscaling) out of the frame, padding
    # with black where it leaves the frame, as PIL's crop of the resized frame would
    margin = int(np.ceil(2.0 / min(scale, 1.0))) + 2
    ix0, iy0 = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    ix1, iy1 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin
    region = np.zeros((iy1 - iy0, ix1 - ix0, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - iy0:sy1 - iy0, sx0 - ix0:sx1 - ix0] = frame[sy0:sy1, sx0:sx1]
    img = Image.fromarray(region).resize((CROP, CROP), Image.Resampling.BICUBIC,
                                         box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    return np.asarray(img), np.array([w, h, scale, tx, ty])


# ------------------------------------------------------------------------------------ pose units
def face_unit() -> float:
    """BFM units per unit of the builtin reference face (``preprocessing.coeffs.load_reference``):
    the RMS radius about their centroid of the five alignment points (frontal x, y) of
    similarity_Lm3D_all.mat over that of the same five points on the reference face."""
    def rms(p):
        return float(np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean()))

    return rms(standard_points()[:, :2]) / rms(five_points(load_reference()["shape"]))


def dataset_pose(angle: np.ndarray, trans: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """The tool's angles (N, 3) + translation (N, 3) + ``trans_params`` (N, 5) = (W, H, scale, tx,
    ty) of each frame's crop -> pose (N, 6) float64 in the dataset's convention (module docstring).

    The face origin appears in the crop at ``u = f X / d + 112``, ``y_up = f Y / d + 112``
    (d = 10 - Z, f = 1015; crop row ``223 - y_up``), i.e. in the frame at
    ``x = tx + f X / (d scale)``, ``y = H - ty - (f Y / d + 1) / scale`` (pixels, y down;
    :func:`crop_box`); one BFM unit there spans ``f / (d scale)`` pixels, so
    ``tz = ln(f face_unit() / (d scale H))``.
    """
    angle, trans, p = (np.asarray(a, np.float64) for a in (angle, trans, trans_params))
    w, h, scale, cx, cy = p.T
    d = CAMERA_D - trans[:, 2]
    x = cx + FOCAL * trans[:, 0] / (d * scale)
    y = (h - cy) - (FOCAL * trans[:, 1] / d + 1.0) / scale
    tz = np.log(FOCAL * face_unit() / (d * scale * h))
    return np.c_[angle, (x - w / 2) / h, (h / 2 - y) / h, tz]


# ------------------------------------------------------------------------------------ inference
def run_net(net, crops: list[np.ndarray], device: str = "cpu") -> np.ndarray:
    """224 x 224 uint8 RGB crops -> ``(B, 257)`` float32 coefficients (input RGB / 255, no
    mean/std)."""
    import torch

    x = torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        return net(x).float().cpu().numpy()


def deep3d_coeffs(frames, landmarks: np.ndarray, valid: np.ndarray, net, batch_size: int = 25,
                  device: str = "cpu", progress: bool = True) -> dict:
    """Coefficients of every tracked frame, streaming ``frames`` (iterable of ``(i, rgb)`` or of
    rgb).

    landmarks ``(N, 478, >=2)`` normalised (scaled by each decoded frame's own size, so a size
    change mid-take is harmless), valid ``(N,)``. Crops are batched ``batch_size`` at a time; only
    one batch of crops and one frame are held in memory. Returns float32
    ``id, exp, tex, gamma (N, .)``, ``pose (N, 6)`` = angles (radians) + tx, ty, tz in the dataset's
    units (:func:`dataset_pose`), ``coeffs (N, 257)`` as the network gives them,
    ``trans_params (N, 5)``, ``valid`` uint8 (frames not tracked, or missing from the video, are
    zeros with valid 0).
    """
    lm = np.asarray(landmarks, np.float64)
    n = len(lm)
    want = np.asarray(valid).astype(bool) & np.isfinite(lm[:, :, :2]).all(axis=(1, 2))
    coeffs = np.zeros((n, N_COEFFS), np.float32)
    params = np.zeros((n, 5), np.float32)
    done = np.zeros(n, bool)
    lm3d = standard_points()
    batch, idx = [], []

    def flush():
        if batch:
            coeffs[idx] = run_net(net, batch, device)
            done[idx] = True
            batch.clear()
            idx.clear()

    for k, item in enumerate(tqdm(frames, total=n, desc="deep3d", unit="frame",
                                  disable=not progress, mininterval=5)):
        i, rgb = item if isinstance(item, tuple) else (k, item)
        if i >= n:
            break
        if not want[i]:
            continue
        h, w = rgb.shape[:2]
        crop, params[i] = align_crop(rgb, lm[i, :, :2] * [w, h], lm3d)
        batch.append(crop)
        idx.append(i)
        if len(batch) >= batch_size:
            flush()
    flush()
    if not done.any():
        raise StepError("no usable face in any frame (no tracked frame could be cropped)")
    out = {name: coeffs[:, sl].copy() for name, sl in SLICES.items()
           if name not in ("angle", "trans")}
    pose = np.zeros((n, 6), np.float32)
    pose[done] = dataset_pose(coeffs[done, SLICES["angle"]], coeffs[done, SLICES["trans"]],
                              params[done])
    out.update(pose=pose, coeffs=coeffs, trans_params=params, valid=done.astype(np.uint8))
    return out


def extract_deep3d(video, landmarks, valid, checkpoint, batch_size: int = 25, device: str = "cpu",
                   smooth_sigma: float = 0.0, frames=None) -> dict:
    """The deep3d ``coeffs`` step: decode ``video`` at 30 fps (``media.iter_frames``), crop, infer.

    ``frames`` (optional) replaces the decoding with any iterable of ``(i, rgb)``. ``landmarks2d`` =
    the tracked FaceMesh x, y (the landmark set used for LMD, as for builtin).
    """
    net = load_net(checkpoint, device)
    n = len(landmarks)
    if frames is None:
        from preprocessing.media import iter_frames

        if video is None:
            raise StepError("backend deep3d needs the take's video (--video)")
        frames = iter_frames(video, fps=FPS, n_frames=n)
    res = deep3d_coeffs(frames, landmarks, valid, net, batch_size=batch_size, device=device)
    ok = res["valid"].astype(bool)
    if smooth_sigma > 0:
        for key in ("exp", "pose", "id", "tex", "gamma"):
            smooth_runs(res[key], ok, smooth_sigma)  # in place, inside tracked runs only
    lm = np.asarray(landmarks, np.float32)[:, :, :2]
    res["landmarks2d"] = np.where(ok[:, None, None], lm, 0).astype(np.float32)
    del res["coeffs"]  # the slices above hold all of it
    return res


# ------------------------------------------------------------------------------------ face model
def _bfm_missing(bfm_dir) -> str:
    return (f"BFM files not found in {bfm_dir!s}: need BFM_model_front.mat, or "
            f"01_MorphableModel.mat + Exp_Pca.bin to build it; get {BFM_HELP}")


def transfer_bfm09(bfm_dir) -> dict:
    """Build the shape part of ``BFM_model_front.mat`` from ``01_MorphableModel.mat`` +
    ``Exp_Pca.bin``.

    Same recipe as the tool's ``transferBFM09`` (our code): identity basis = shapePC x shapeEV / 1e5
    (first 80), expression basis = Exp_Pca's PCs x std_exp / 1e5 (first 64), mean shape / 1e5, all
    restricted to the 35709 front-face vertices (BFM_front_idx, BFM_exp_idx); 68 keypoints from
    facemodel_info. Texture is not needed for landmarks and is left out.
    """
    from scipy.io import loadmat

    d = Path(bfm_dir)
    bfm = loadmat(d / "01_MorphableModel.mat", variable_names=["shapeMU", "shapePC", "shapeEV"])
    with open(d / "Exp_Pca.bin", "rb") as fh:
        exp_dim = int(np.fromfile(fh, dtype="<i4", count=1)[0])
        # the vertex count of Guo et al.'s expression basis (fixed by the format)
        n_exp_vert = 53215
        np.fromfile(fh, dtype="<f4", count=3 * n_exp_vert)  # expMU: unused by the tool's face model
        exp_pc = np.fromfile(fh, dtype="<f4", count=3 * n_exp_vert * exp_dim)
    if exp_pc.size != 3 * n_exp_vert * exp_dim:
        raise StepError(f"{d / 'Exp_Pca.bin'} is truncated ({exp_pc.size} of "
                        f"{3 * n_exp_vert * exp_dim} values)")
    exp_pc = exp_pc.reshape(exp_dim, -1).T  # (3V', exp_dim)
    exp_ev = np.loadtxt(DATA / "std_exp.txt")[:exp_dim]
    id_base = (bfm["shapePC"][:, :80] * bfm["shapeEV"].ravel()[:80]) / 1e5
    exp_base = (exp_pc[:, :64] * exp_ev[:64]) / 1e5
    # into the 53215
    front = loadmat(DATA / "BFM_front_idx.mat")["idx"].ravel().astype(np.int64) - 1
    # 53215 -> 53490
    trim = loadmat(DATA / "BFM_exp_idx.mat")["trimIndex"].ravel().astype(np.int64) - 1
    shape_idx = trim[front]
    mean = bfm["shapeMU"].reshape(-1, 3)[shape_idx] / 1e5
    id_base = id_base.reshape(-1, 3, id_base.shape[1])[shape_idx].reshape(-1, id_base.shape[1])
    exp_base = exp_base.reshape(-1, 3, exp_base.shape[1])[front].reshape(-1, exp_base.shape[1])
    keypoints = np.loadtxt(DATA / "bfm_keypoints.txt", dtype=np.int64) - 1
    return {"mean_shape": mean, "id_base": id_base, "exp_base": exp_base, "keypoints": keypoints}


def load_bfm(bfm_dir) -> dict:
    """Shape model for landmarks: mean_shape ``(V, 3)`` (re-centred like the tool), id_base
    ``(3V, 80)``, exp_base ``(3V, 64)``, keypoints ``(68,)`` 0-based. Raises
    :class:`MissingModelFiles` naming them."""
    from scipy.io import loadmat

    if not bfm_dir:
        raise MissingModelFiles(f"coeffs.deep3d.bfm_dir is not set: {BFM_HELP}")
    d = Path(bfm_dir)
    if (d / "BFM_model_front.mat").is_file():
        m = loadmat(d / "BFM_model_front.mat",
                    variable_names=["meanshape", "idBase", "exBase", "keypoints"])
        model = {"mean_shape": m["meanshape"].reshape(-1, 3), "id_base": m["idBase"],
                 "exp_base": m["exBase"], "keypoints": m["keypoints"].ravel().astype(np.int64) - 1}
    elif (d / "01_MorphableModel.mat").is_file() and (d / "Exp_Pca.bin").is_file():
        model = transfer_bfm09(d)
    else:
        raise MissingModelFiles(_bfm_missing(bfm_dir))
    model = {k: np.asarray(v, np.float64 if k != "keypoints" else np.int64)
             for k, v in model.items()}
    # the tool's recenter=True
    model["mean_shape"] = model["mean_shape"] - model["mean_shape"].mean(0)
    return model


def landmarks_from_coeffs(exp, pose, id_coeffs=None, bfm_dir=None, model: dict | None = None,
                          frame_size=(1, 1)) -> np.ndarray:
    """BFM 68 landmarks ``(N, 68, 2)``, image-normalised (x / width, y / height of ``frame_size``).

    shape = mean + id_base @ id + exp_base @ exp (``id_coeffs`` (80,) or (N, 80), default 0 = mean
    face), in reference-face units (/ :func:`face_unit`), placed as the builtin landmark model
    places its face: ``exp(tz) R shape + (tx, ty)`` in image heights (R = Rz Ry Rx of the pose
    angles; the pose in the dataset's units, :func:`dataset_pose`), projected orthographically.
    """
    m = load_bfm(bfm_dir) if model is None else model
    exp = np.asarray(exp, np.float64)
    pose = np.asarray(pose, np.float64)
    n = len(exp)
    idc = np.zeros((n, m["id_base"].shape[1])) if id_coeffs is None else np.broadcast_to(
        np.asarray(id_coeffs, np.float64), (n, m["id_base"].shape[1]))
    k = m["keypoints"]
    rows = (3 * k[:, None] + np.arange(3)).ravel()  # only the 68 keypoints' rows of the bases
    shape = (m["mean_shape"][k][None] + (idc @ m["id_base"][rows].T + exp @ m["exp_base"][rows].T)
             .reshape(n, len(k), 3))
    t = np.c_[pose[:, 3:5], np.zeros(n)]
    v = (np.exp(pose[:, 5]) / face_unit())[:, None, None] * np.einsum(
        "nij,nkj->nki", matrix_from_euler(pose[:, :3]), shape) + t[:, None]
    return from_camera(v, frame_size)[..., :2].astype(np.float32)
