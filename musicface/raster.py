"""Condition images of the renderer (paper Fig. 2: "other parameters provide a 3D model guidance ...
eye state parameters are encoded into eye attention maps"): the face mesh of (exp, pose) rasterised
with a z-buffer into a PNCC-style map, plus an eye attention channel filled with the eye state.

    geo = Geometry(identity, frame_size=(640, 480), box=(x0, y0, side))  # the reference module
    cond = conditions(exp, pose, eye, geo, basis, size=128)   # uint8 (N, 4, 128, 128)
    stack = temporal_stack(cond, t, context=2)                # (4 * 5, 128, 128): frames t-2 .. t+2

Channels of one condition frame (:data:`CHANNELS`): ``pncc_x, pncc_y, pncc_z`` = the reference-face
coordinates of the visible surface point, each normalised to [0, 1] over the mesh (0 = no face), and
``eye`` = the eye attention map: inside both eye openings ``EYE_OPEN + (1 - EYE_OPEN) e`` for the
eye state e (0 open .. 1 closed, eq. 9), so the openings are marked even when the eyes are open (the
renderer's loss weights them, :mod:`musicface.renderer`), 0 elsewhere. Stored and fed as uint8
(x 255).

Mesh (builtin coefficients): the 468 FaceMesh vertices of ``s R (identity + residual(exp)) + t``
(:mod:`preprocessing.coeffs`: the expression basis and the pose convention), seen orthographically
as the landmark model does, and MediaPipe's tesselation of them: 852 triangles, parsed from the
*source text* of ``mediapipe/python/solutions/face_mesh_connections.py`` (``FACEMESH_TESSELATION``
is written there as 2,556 edges that are 852 consecutive closed triples; the frozenset object has
lost that order, and 3-cliques of the edge set give 854 "triangles", 6 of them wrong). The mesh has
holes at the eyes and the mouth: the mouth opening shows as a hole, the eyes are drawn by the eye
channel. So that blinks and long closures come from the eye network and never from the expression,
the expression residual is set to 0 on the eye contours and the vertices next to them
(:func:`eye_region`): the lids stay where the take's identity shape has them, open.

Mesh (Deep3DFaceRecon coefficients, with the user's Basel Face Model): the 35,709 BFM vertices of
``mean + id_base id + exp_base exp`` placed by the dataset's pose as Deep3DFaceRecon's landmark
model places them, the 70,789 triangles of ``facemodel_info.mat`` (``tri``; shipped as
``bfm_tri.npz``), PNCC from the mean shape.
BFM eyes are closed surfaces: the eye channel is drawn over them at the eye keypoints.

The rasteriser is a small numba z-buffer (:func:`rasterize`): written here because nothing that
installs from the registries draws triangles headless, offline and without a GPU (pytorch3d and
nvdiffrast cannot be installed; moderngl needs system GL packages); it draws the 852 triangles at
256 px in well under a millisecond (``bench/render.py``).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from preprocessing import landmarks as fm

CHANNELS = ("pncc_x", "pncc_y", "pncc_z", "eye")
EYE_OPEN = 0.2  # the eye channel of an open eye (1.0 = closed)
N_MESH = 468  # FaceMesh vertices covered by the tesselation (the 10 iris points are not)
N_TRIANGLES = 852
BFM_TRI = (
    Path(__file__).resolve().parent.parent
    / "preprocessing"
    / "data"
    / "deep3dfacerecon"
    / "bfm_tri.npz"
)


# ------------------------------------------------------------------------------------ topology
@functools.lru_cache(maxsize=None)
def facemesh_triangles() -> np.ndarray:
    """FaceMesh's 852 triangles ``(852, 3)`` int32, parsed from mediapipe's source text.

    Every triangle keeps the source's winding (counter-clockwise seen from the front in the camera
    frame with y up). Raises RuntimeError when the installed mediapipe writes the tesselation
    differently (a different version): that is a bug to fix here, not bad input.
    """
    import importlib.util

    # the file is read, not imported: importing mediapipe takes about 2 s
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mediapipe is not installed (requirements.txt pins 0.10.14)")
    path = (
        Path(spec.submodule_search_locations[0])
        / "python"
        / "solutions"
        / "face_mesh_connections.py"
    )
    src = path.read_text()
    edges = None
    for node in ast.parse(src).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and getattr(node.targets[0], "id", None) == "FACEMESH_TESSELATION"
        ):
            call = node.value  # frozenset([(a, b), ...])
            edges = [tuple(ast.literal_eval(e)) for e in call.args[0].elts]
    if edges is None:
        raise RuntimeError(f"FACEMESH_TESSELATION not found in {path}")
    e = np.asarray(edges, np.int32)
    if e.shape != (3 * N_TRIANGLES, 2):
        raise RuntimeError(f"FACEMESH_TESSELATION has {len(e)} edges, expected {3 * N_TRIANGLES}")
    e = e.reshape(N_TRIANGLES, 3, 2)
    closed = (e[:, 0, 1] == e[:, 1, 0]) & (e[:, 1, 1] == e[:, 2, 0]) & (e[:, 2, 1] == e[:, 0, 0])
    if not closed.all():
        raise RuntimeError(
            f"FACEMESH_TESSELATION: {int((~closed).sum())} edge triples are not closed triangles"
        )
    return np.ascontiguousarray(e[:, :, 0])


@functools.lru_cache(maxsize=None)
def _neighbours(ring: tuple) -> np.ndarray:
    """The vertices of ``ring`` and every vertex sharing a triangle with one of them."""
    tri = facemesh_triangles()
    hit = np.isin(tri, ring).any(axis=1)
    return np.unique(np.concatenate([np.asarray(ring), tri[hit].ravel()]))


EYE_RINGS = (tuple(fm.RIGHT_EYE), tuple(fm.LEFT_EYE))  # closed contours, 16 points each


def eye_region() -> np.ndarray:
    """Vertices whose expression residual is zeroed: both eye contours and their neighbours."""
    return np.union1d(_neighbours(EYE_RINGS[0]), _neighbours(EYE_RINGS[1]))


def bfm_triangles(path=None) -> np.ndarray:
    """BFM front-face triangles ``(70789, 3)`` int32, 0-based (``facemodel_info.mat`` ``tri``)."""
    with np.load(BFM_TRI if path is None else path) as z:
        return z["tri"].astype(np.int32)


# ------------------------------------------------------------------------------------ rasteriser
@numba.njit(cache=True, nogil=True)
def _raster(xy, z, tri, attr, out, zbuf):  # pragma: no cover - compiled
    h, w = zbuf.shape
    c = attr.shape[1]
    for k in range(tri.shape[0]):
        a, b, d = tri[k, 0], tri[k, 1], tri[k, 2]
        x0, y0, x1, y1, x2, y2 = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[d, 0], xy[d, 1]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if abs(area) < 1e-12:
            continue
        inv = 1.0 / area
        ia = max(int(np.floor(min(x0, x1, x2))), 0)
        ib = min(int(np.ceil(max(x0, x1, x2))), w - 1)
        ja = max(int(np.floor(min(y0, y1, y2))), 0)
        jb = min(int(np.ceil(max(y0, y1, y2))), h - 1)
        for j in range(ja, jb + 1):
            py = j + 0.5
            for i in range(ia, ib + 1):
                px = i + 0.5
                # barycentric weights (the sign of area makes both windings work)
                w0 = ((x1 - px) * (y2 - py) - (y1 - py) * (x2 - px)) * inv
                w1 = ((x2 - px) * (y0 - py) - (y2 - py) * (x0 - px)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                depth = w0 * z[a] + w1 * z[b] + w2 * z[d]
                if depth <= zbuf[j, i]:
                    continue
                zbuf[j, i] = depth
                for ch in range(c):
                    out[ch, j, i] = w0 * attr[a, ch] + w1 * attr[b, ch] + w2 * attr[d, ch]


def rasterize(
    xy: np.ndarray,
    z: np.ndarray,
    triangles: np.ndarray,
    attrs: np.ndarray,
    size: int | tuple[int, int],
) -> np.ndarray:
    """Draw triangles with a z-buffer: float32 ``(C, H, W)`` of the per-vertex ``attrs``
    interpolated (barycentric, in screen space) at each pixel centre, from the nearest triangle; 0
    where none.

    ``xy (V, 2)`` pixel coordinates (x right, y down; pixel (i, j) covers [i, i+1) x [j, j+1), its
    centre is sampled), ``z (V,)`` depth, larger = nearer the camera; ``triangles (T, 3)`` vertex
    indices (either winding); ``attrs (V, C)``; ``size`` = side or (H, W).
    """
    h, w = (size, size) if np.isscalar(size) else size
    attrs = np.ascontiguousarray(attrs, np.float32)
    out = np.zeros((attrs.shape[1], h, w), np.float32)
    zbuf = np.full((h, w), -np.inf, np.float32)
    _raster(
        np.ascontiguousarray(xy, np.float32),
        np.ascontiguousarray(z, np.float32),
        np.ascontiguousarray(triangles, np.int32),
        attrs,
        out,
        zbuf,
    )
    return out


# ------------------------------------------------------------------------------------ geometry
@dataclass
class Geometry:
    """What stays fixed for a take (the paper's reference module): the face's identity shape, the
    camera frame size and the take's square face crop.

    ``identity`` (478, 3) face-frame shape (builtin, coeffs.npz ``identity``) or the BFM identity
    coefficients (80,) (deep3d); ``frame_size`` = (width, height) of the video; ``box`` = (x0, y0,
    side) of the crop in frame pixels.
    """

    identity: np.ndarray
    frame_size: tuple[int, int]
    box: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {
            "identity": np.asarray(self.identity, np.float32),
            "frame_size": np.asarray(self.frame_size, np.int64),
            "box": np.asarray(self.box, np.float64),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        def arr(v):
            return v.numpy() if hasattr(v, "numpy") else np.asarray(v)

        return cls(
            identity=arr(d["identity"]).astype(np.float64),
            frame_size=tuple(int(v) for v in arr(d["frame_size"])),
            box=tuple(float(v) for v in arr(d["box"])),
        )

    def to_crop(self, x_norm: np.ndarray, y_norm: np.ndarray, size: int):
        """Image-normalised x, y -> pixel coordinates in the ``size`` x ``size`` crop."""
        w, h = self.frame_size
        x0, y0, side = self.box
        k = size / side
        return (x_norm * w - x0) * k, (y_norm * h - y0) * k


@functools.lru_cache(maxsize=None)
def _pncc_facemesh() -> np.ndarray:
    from preprocessing.landmarks import load_reference

    ref = load_reference()["shape"][:N_MESH]
    lo, hi = ref.min(0), ref.max(0)
    return ((ref - lo) / (hi - lo)).astype(np.float32)


def facemesh_points(exp, pose, identity, basis: dict) -> np.ndarray:
    """Camera-frame points ``(N, 478, 3)`` (image heights, y up, z toward the camera) of the builtin
    landmark model, with the eye region's expression residual set to 0 (module docstring)."""
    from preprocessing.coeffs import reconstruct_residual
    from preprocessing.geometry import matrix_from_euler

    res = reconstruct_residual(np.atleast_2d(exp), basis)
    res[:, eye_region()] = 0.0
    shape = np.asarray(identity, np.float64).reshape(-1, 3)[None] + res
    pose = np.atleast_2d(np.asarray(pose, np.float64))
    R = matrix_from_euler(pose[:, :3])
    t = np.concatenate([pose[:, 3:5], np.zeros((len(pose), 1))], axis=1)
    return np.exp(pose[:, 5])[:, None, None] * np.einsum("nij,nkj->nki", R, shape) + t[:, None]


def _eye_fans(px: np.ndarray, z: np.ndarray, rings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle fans over the eye contours (centroid + ring) as extra vertices: xy, z, triangles."""
    xy, zz, tris = [], [], []
    base = 0
    for ring in rings:
        ring = list(ring)
        c = px[ring].mean(0)
        xy += [px[ring], c[None]]
        zz += [z[ring], [z[ring].max()]]
        m = len(ring)
        tris += [(base + i, base + (i + 1) % m, base + m) for i in range(m)]
        base += m + 1
    return np.concatenate(xy), np.concatenate(zz), np.asarray(tris, np.int32)


def condition_frame(
    xy: np.ndarray,
    z: np.ndarray,
    triangles: np.ndarray,
    pncc: np.ndarray,
    rings,
    eye: float,
    size: int,
) -> np.ndarray:
    """One condition frame float32 ``(4, size, size)`` from mesh vertices already in crop pixels."""
    exy, ez, etri = _eye_fans(xy, z, rings)
    v = len(pncc)
    allxy = np.concatenate([xy[:v], exy])
    allz = np.concatenate([z[:v], ez])
    attrs = np.zeros((len(allxy), 4), np.float32)
    attrs[:v, :3] = pncc
    attrs[v:, 3] = EYE_OPEN + (1.0 - EYE_OPEN) * float(np.clip(eye, 0.0, 1.0))
    tris = np.concatenate([triangles, etri + v])
    return rasterize(allxy, allz, tris, attrs, size)


def conditions(
    exp,
    pose,
    eye,
    geometry: Geometry,
    basis: dict,
    size: int,
    valid=None,
    bfm: dict | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Condition frames uint8 ``(N, 4, size, size)`` of a sequence of parameters (module docstring).

    ``exp (N, E)``, ``pose (N, 6)``, ``eye (N,)`` in [0, 1]; ``basis`` = exp_basis.npz (builtin) or
    the deep3d identity basis, then ``bfm`` (:func:`preprocessing.deep3d.load_bfm` + ``tri``) is
    needed. Frames where ``valid`` is 0 are all zeros (no face).
    """
    from tqdm import tqdm

    from preprocessing.coeffs import _is_identity_basis

    exp, pose = np.atleast_2d(exp), np.atleast_2d(pose)
    eye = np.asarray(eye, np.float64).reshape(-1)
    n = len(exp)
    ok = np.ones(n, bool) if valid is None else np.asarray(valid).astype(bool)
    out = np.zeros((n, 4, size, size), np.uint8)
    deep3d = _is_identity_basis(basis)
    for a in tqdm(
        range(0, n, 256), desc="conditions", unit="block", disable=not progress, leave=False
    ):
        rows = np.arange(a, min(a + 256, n))
        rows = rows[ok[rows]]
        if not len(rows):
            continue
        if deep3d:
            xy, z = bfm_points(exp[rows], pose[rows], geometry, bfm, size)
            tri, pncc, rings = bfm["tri"], _pncc_bfm(bfm), bfm_eye_rings(bfm)
        else:
            from preprocessing.geometry import from_camera

            P = facemesh_points(exp[rows], pose[rows], geometry.identity, basis)
            nrm = from_camera(P, geometry.frame_size)  # image-normalised x, y
            xs, ys = geometry.to_crop(nrm[..., 0], nrm[..., 1], size)
            xy, z = np.stack([xs, ys], -1), P[..., 2]
            tri, pncc, rings = facemesh_triangles(), _pncc_facemesh(), EYE_RINGS
        for k, r in enumerate(rows):
            f = condition_frame(xy[k], z[k], tri, pncc, rings, eye[r], size)
            out[r] = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------ deep3d (BFM)
def _pncc_bfm(bfm: dict) -> np.ndarray:
    if "_pncc" not in bfm:
        m = bfm["mean_shape"]
        bfm["_pncc"] = ((m - m.min(0)) / np.maximum(m.max(0) - m.min(0), 1e-12)).astype(np.float32)
    return bfm["_pncc"]


def bfm_eye_rings(bfm: dict):
    """Eye contours as BFM vertex rings: the 68-point eye keypoints 36-41 and 42-47."""
    k = bfm["keypoints"]
    return (tuple(int(v) for v in k[36:42]), tuple(int(v) for v in k[42:48]))


def bfm_points(exp, pose, geometry: Geometry, bfm: dict, size: int):
    """BFM vertices in crop pixels ``(N, V, 2)`` and depth ``(N, V)`` (larger = nearer), placed as
    :func:`preprocessing.deep3d.landmarks_from_coeffs` places its landmarks (the dataset's pose:
    ``exp(tz) R shape / face_unit + (tx, ty)`` in image heights, orthographic), then
    :meth:`Geometry.to_crop`."""
    from preprocessing import deep3d
    from preprocessing.geometry import from_camera, matrix_from_euler

    exp, pose = np.asarray(exp, np.float64), np.asarray(pose, np.float64)
    idc = np.asarray(geometry.identity, np.float64).reshape(-1)
    shape = bfm["mean_shape"][None] + (idc @ bfm["id_base"].T + exp @ bfm["exp_base"].T).reshape(
        len(exp), -1, 3
    )
    t = np.c_[pose[:, 3:5], np.zeros(len(pose))]
    v = (np.exp(pose[:, 5]) / deep3d.face_unit())[:, None, None] * np.einsum(
        "nij,nkj->nki", matrix_from_euler(pose[:, :3]), shape
    ) + t[:, None]
    nrm = from_camera(v, geometry.frame_size)
    xs, ys = geometry.to_crop(nrm[..., 0], nrm[..., 1], size)
    return np.stack([xs, ys], -1), v[..., 2]


# ------------------------------------------------------------------------------------ stacks
def temporal_stack(cond: np.ndarray, t, context: int) -> np.ndarray:
    """Condition frames ``t - context .. t + context`` (clamped to the sequence) stacked on the
    channel axis: ``cond (N, 4, H, W)`` -> ``(4 (2 context + 1), H, W)``; ``t`` may be an array of
    frame indices, then ``(len(t), 4 (2 context + 1), H, W)``."""
    t = np.asarray(t)
    idx = np.clip(t[..., None] + np.arange(-context, context + 1), 0, len(cond) - 1)
    s = cond[idx]  # (..., 2c+1, 4, H, W)
    return s.reshape(*s.shape[:-4], -1, *s.shape[-2:])
