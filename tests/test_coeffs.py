"""coeffs (builtin backend) + exp_basis: pose and expression against known truth.

Truth comes from (a) exact projections of the reference face under known poses and a known mouth
deformation, (b) MediaPipe FaceMesh run on a real face photo (skimage's astronaut) rotated, scaled,
moved and with its mouth opened by a known amount, (c) the demo recordings once preprocessing.demo
can generate them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from preprocessing import coeffs as C
from preprocessing import landmarks as fm
from preprocessing.common import FAILED_MAGIC, read_failure, save_json, save_npz, write_failure
from preprocessing.geometry import mouth_opening

FACEMESH_MIDLINE = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152,
                    164, 168, 175, 195, 197, 199, 200]


# ------------------------------------------------------------------------------------ helpers
def synthetic_take(n=120, size=(1280, 720), seed=0, noise=0.0, max_angle=0.5, angles=None):
    """Reference face under random known poses (or the given ``angles`` (n, 3), at a fixed scale
    and place) + a known jaw opening, projected to normalised coords."""
    rng = np.random.default_rng(seed)
    ref = C.load_reference()["shape"]
    ang = rng.uniform(-max_angle, max_angle, (n, 3))
    scale = np.exp(rng.uniform(-2.6, -1.6, n))
    t = np.c_[rng.uniform(-0.3, 0.3, (n, 2)), np.zeros(n)]
    if angles is not None:
        ang, scale, t = np.asarray(angles, np.float64), np.full(n, np.exp(-2.0)), np.zeros((n, 3))
    mouth = rng.uniform(0, 0.3, n)
    lip_y = 0.5 * (ref[13, 1] + ref[14, 1])
    below = np.clip((lip_y - ref[:, 1]) / 0.3, 0, 1)  # 0 above the lips -> 1 at the chin
    shape = np.repeat(ref[None], n, 0)
    shape[:, :, 1] -= mouth[:, None] * below[None]
    P = (scale[:, None, None] * np.einsum("nij,nkj->nki", C.matrix_from_euler(ang), shape)
         + t[:, None])
    lm = C.from_camera(P, size) + rng.normal(0, noise, (n, C.N_POINTS, 3))
    return {"landmarks": lm.astype(np.float32), "angles": ang, "scale": scale, "t": t,
            "mouth": mouth, "size": size}


def write_track(d: Path, lm, valid, size, interpolated=None):
    n = len(lm)
    lm = np.asarray(lm, np.float32).copy()
    lm[~np.asarray(valid).astype(bool)] = np.nan  # track.npz holds NaN where nothing was tracked
    save_npz(d / "track.npz", landmarks=lm, valid=np.asarray(valid, np.uint8),
             interpolated=np.zeros(n, np.uint8) if interpolated is None else interpolated,
             frame_size=np.tile(np.asarray(size, np.int32), (n, 1)),
             bbox=np.zeros((n, 4), np.float32))
    save_json(d / "ingest.json", {"take": d.name, "n_frames": n, "width": size[0],
                                  "height": size[1], "fps": 30})
    return d / "track.npz", d / "ingest.json"


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------------- real-face frames
def _mesh():
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                           max_num_faces=1)


def _detect(mesh, rgb):
    res = mesh.process(np.ascontiguousarray(rgb))
    if not res.multi_face_landmarks:
        return None
    return np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark])


def open_mouth(img: np.ndarray, px: np.ndarray, d: float) -> np.ndarray:
    """Open the mouth by ``d`` pixels: everything below the inner-lip line slides down (most in the
    middle, tapering to 0 at the corners and far below the chin); the gap is painted mouth-dark."""
    from scipy.ndimage import map_coordinates

    h, w = img.shape[:2]
    up, lo = px[fm.LIPS_INNER_UPPER], px[fm.LIPS_INNER_LOWER]
    order = np.argsort(up[:, 0])
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    line = np.interp(xx, up[order, 0], (0.5 * (up[:, 1] + lo[:, 1]))[order])
    x0, x1 = px[fm.MOUTH_LEFT, 0], px[fm.MOUTH_RIGHT, 0]
    u = (xx - 0.5 * (x0 + x1)) / (0.5 * (x1 - x0))
    chin = px[fm.CHIN, 1]
    a = np.clip((yy - line) / (chin - line), 0, 1)
    disp = d * ((1 - a) * np.clip(1 - u ** 2, 0, 1) + a * np.exp(-0.5 * (u / 1.6) ** 2))
    disp *= np.clip(1 - (yy - chin) / (0.6 * (chin - line)), 0, 1) * (yy > line)
    src = yy - disp
    out = np.stack([map_coordinates(img[..., c].astype(float), [src, xx], order=1, mode="nearest")
                    for c in range(3)], -1)
    out[(yy > line) & (src < line)] = [70, 25, 30]
    return out.astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut_take():
    """~36 frames of the astronaut in a 640 x 400 frame: known roll, scale, position and mouth
    opening.

    FaceMesh runs on a square crop around the (known) face position, as the tracker does, and its
    landmarks are mapped back to the full frame (normalised x / W, y / H, z / W).
    """
    from skimage import data
    from skimage.transform import SimilarityTransform, warp

    src = data.astronaut()
    mesh = _mesh()
    px0 = _detect(mesh, src) * [512, 512, 512]
    face_c = px0[fm.NOSE_TIP, :2]
    W, H = 640, 400
    n = 36
    k = np.arange(n)
    roll = np.deg2rad(25) * np.sin(2 * np.pi * k / 18)  # counter-clockwise in the image = positive
    scale = 1.1 + 0.25 * np.sin(2 * np.pi * k / 13)
    shift = np.stack([40 * np.sin(2 * np.pi * k / 11), 25 * np.cos(2 * np.pi * k / 7)], 1)
    mouth = 16.0 * (0.5 + 0.5 * np.sin(2 * np.pi * k / 9 + 1.0))
    lms, valid = [], []
    for i in range(n):
        img = open_mouth(src, px0, mouth[i])
        # image coords (y down): a CCW turn on screen by theta is the matrix [[c, s], [-s, c]]
        c, s = np.cos(roll[i]), np.sin(roll[i])
        A = scale[i] * np.array([[c, s], [-s, c]])
        centre = np.array([W / 2, H / 2]) + shift[i]
        M = np.eye(3)
        M[:2, :2], M[:2, 2] = A, centre - A @ face_c
        frame = (warp(img, SimilarityTransform(matrix=M).inverse, output_shape=(H, W))
                 * 255).astype(np.uint8)
        side = int(2.4 * 130 * scale[i])
        x0, y0 = int(centre[0] - side / 2), int(centre[1] - side / 2)
        crop = np.zeros((side, side, 3), np.uint8)
        ys, xs = slice(max(y0, 0), min(y0 + side, H)), slice(max(x0, 0), min(x0 + side, W))
        crop[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = frame[ys, xs]
        lm = _detect(mesh, crop)
        valid.append(lm is not None)
        if lm is None:
            lms.append(np.full((478, 3), np.nan))
            continue
        lm = lm * side
        lms.append(np.stack([(lm[:, 0] + x0) / W, (lm[:, 1] + y0) / H, lm[:, 2] / W], 1))
    mesh.close()
    return {"landmarks": np.array(lms, np.float32), "valid": np.array(valid, np.uint8),
            "roll": roll, "scale": scale, "shift": shift, "mouth": mouth, "size": (W, H)}


# ----------------------------------------------------------------------------------- reference face
def test_reference_face_is_frontal_symmetric_and_normalised():
    ref = C.load_reference()
    S, mirror = ref["shape"], ref["mirror"]
    assert S.shape == (478, 3)
    assert (mirror[mirror] == np.arange(478)).all()
    assert sorted(np.flatnonzero(mirror == np.arange(478))) == FACEMESH_MIDLINE
    assert mirror[468] == 473 and mirror[fm.RIGHT_EYE_OUTER] == fm.LEFT_EYE_OUTER
    np.testing.assert_allclose(S, S[mirror] * [-1, 1, 1], atol=1e-6)
    assert np.sqrt((S[C.STABLE] ** 2).sum(1).mean()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(S[C.STABLE].mean(0), 0, atol=1e-5)
    assert S[fm.FOREHEAD, 1] > S[fm.NOSE_TIP, 1] > S[fm.CHIN, 1]  # y up
    assert S[fm.NOSE_TIP, 2] > S[fm.RIGHT_EYE_OUTER, 2] + 0.3  # z toward the camera
    assert S[fm.LEFT_EYE_OUTER, 0] > 0  # the subject's left eye is on the image right
    oval = S[fm.FACE_OVAL] - S[fm.FACE_OVAL].mean(0)
    normal = np.linalg.svd(oval)[2][2]
    assert abs(normal[1]) < 1e-6 and abs(normal[0]) < 1e-6  # outline plane parallel to the image


def test_reference_face_rebuilds_from_mediapipe():
    from skimage import data

    mesh = _mesh()
    lm = _detect(mesh, data.astronaut())
    mesh.close()
    S, mirror = C.build_reference_face(lm, (512, 512))
    ref = C.load_reference()
    assert (mirror == ref["mirror"]).all()
    np.testing.assert_allclose(S, ref["shape"], atol=2e-3)


# ------------------------------------------------------------------------------------ conventions
def test_euler_matrix_convention_and_round_trip():
    rng = np.random.default_rng(1)
    a = rng.uniform([-3, -1.5, -3], [3, 1.5, 3], (500, 3))
    R = C.matrix_from_euler(a)
    p, y, r = a[7]
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    np.testing.assert_allclose(R[7], Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(C.euler_from_matrix(R), a, atol=1e-9)
    gimbal = C.euler_from_matrix(C.matrix_from_euler(np.array([[0.3, np.pi / 2, 0.2]])))
    assert np.isfinite(gimbal).all() and gimbal[0, 1] == pytest.approx(np.pi / 2)


@pytest.mark.parametrize("axis,sign_check", [
    (0, lambda d: d[fm.NOSE_TIP, 1] > 0),  # +pitch: chin down, the nose tip moves DOWN in the image
    (1, lambda d: d[fm.NOSE_TIP, 0] > 0),  # +yaw: face turns to the image right
    # +roll: CCW on screen
    (2, lambda d: d[fm.LEFT_EYE_OUTER, 1] < 0 and d[fm.RIGHT_EYE_OUTER, 1] > 0),
])
def test_pose_sign_conventions(axis, sign_check):
    ref = C.load_reference()["shape"]
    angles = np.zeros((2, 3))
    angles[1, axis] = 0.2
    P = 0.15 * np.einsum("nij,kj->nki", C.matrix_from_euler(angles), ref)
    lm = C.from_camera(P, (640, 480))
    assert sign_check(lm[1] - lm[0])  # normalised image coordinates (y down)
    out = C.builtin_coeffs(np.repeat(lm, [1, 1], 0), np.ones(2), (640, 480))
    assert out["pose"][1, axis] == pytest.approx(0.2, abs=1e-4)
    np.testing.assert_allclose(np.delete(out["pose"][1, :3], axis), 0, atol=1e-4)


def test_camera_frame_round_trip_non_square():
    lm = np.random.default_rng(2).uniform(0, 1, (4, 478, 3))
    sizes = np.array([[1920, 1080], [720, 1280], [640, 480], [100, 100]])
    P = C.to_camera(lm, sizes)
    np.testing.assert_allclose(C.from_camera(P, sizes), lm, atol=1e-12)
    # isotropic: one pixel is the same distance along x and y
    d = C.to_camera(np.array([[[0.5 + 1 / 1920, 0.5, 0], [0.5, 0.5 + 1 / 1080, 0]]]), [1920, 1080])
    assert np.linalg.norm(d[0, 0]) == pytest.approx(np.linalg.norm(d[0, 1]))


# --------------------------------------------------------------------------------- builtin accuracy
def test_builtin_recovers_known_pose_and_mouth():
    take = synthetic_take(n=150, noise=3e-4)  # ~0.3 px noise at 720p
    valid = np.ones(150, np.uint8)
    valid[:10] = 0
    out = C.builtin_coeffs(take["landmarks"], valid, take["size"])
    ok = out["valid"].astype(bool)
    assert (ok == valid.astype(bool)).all()
    assert out["pose"].dtype == np.float32 and out["pose"].shape == (150, 6)
    assert out["residual"].shape == (150, 1434) and out["residual"].dtype == np.float32
    assert out["landmarks2d"].shape == (150, 478, 2)
    err = out["pose"][ok, :3] - take["angles"][ok]
    assert np.abs(err).max() < 0.01, np.abs(err).max(0)
    np.testing.assert_allclose(out["pose"][ok, 3:5], take["t"][ok, :2], atol=1e-3)
    # tz = ln(scale) up to the constant size ratio between this take's identity and the reference
    dz = out["pose"][ok, 5] - np.log(take["scale"][ok])
    assert np.ptp(dz) < 0.01
    # invalid frames: exact zeros, no NaN
    assert (not out["pose"][~ok].any() and not out["residual"][~ok].any()
            and not out["landmarks2d"][~ok].any())
    shapes = out["residual"][ok].reshape(-1, 478, 3) + out["identity"]
    assert corr(mouth_opening(shapes), take["mouth"][ok]) > 0.99
    # the stable points do not move with the expression: their residual is noise-sized (~0.004 here)
    res = out["residual"][ok].reshape(-1, 478, 3)
    assert np.sqrt((res[:, C.STABLE] ** 2).mean()) < 0.006
    assert np.abs(res[:, fm.CHIN, 1]).max() > 0.1  # while the chin moves with the jaw


def test_builtin_on_real_face_roll_scale_and_mouth(astronaut_take):
    t = astronaut_take
    ok0 = t["valid"].astype(bool)
    assert ok0.mean() > 0.9
    out = C.builtin_coeffs(t["landmarks"], t["valid"], t["size"])
    ok = out["valid"].astype(bool)
    pitch, yaw, roll = out["pose"][ok, :3].T
    truth = t["roll"][ok]
    slope = np.polyfit(truth, roll, 1)[0]
    assert corr(roll, truth) > 0.995 and abs(slope - 1) < 0.05, (corr(roll, truth), slope)
    assert np.std(roll - truth) < 0.02  # rad, after the photo's own (constant) roll
    assert np.std(pitch) < 0.05 and np.std(yaw) < 0.05  # no out-of-plane motion was made
    assert corr(out["pose"][ok, 5], np.log(t["scale"][ok])) > 0.99
    # tx, ty, tz put the face where it was: the pose-only model's nose tip vs the known nose
    # position
    W, H = t["size"]
    basis0 = {"mean": np.zeros(1434), "components": np.zeros((1, 1434))}
    lm = C.landmarks_from_coeffs(np.zeros((ok.sum(), 1)), out["pose"][ok], basis0,
                                 reference=out["identity"], frame_size=t["size"])
    nose = lm[:, fm.NOSE_TIP] * [W, H]
    assert np.abs(nose - (np.array([W / 2, H / 2]) + t["shift"][ok])).max() < 3.0  # px
    # mouth opening recovered from the expression: reconstructed inner-lip gap of the PCA
    # coefficients
    basis = C.fit_pca([out["residual"][ok]], dim=8)
    exp = C.project_expression(out["residual"][ok], basis)
    gap = mouth_opening(C.reconstruct_residual(exp, basis) + out["identity"])
    assert corr(gap, t["mouth"][ok]) > 0.9, corr(gap, t["mouth"][ok])
    assert max(abs(corr(exp[:, 0], t["mouth"][ok])), abs(corr(exp[:, 1], t["mouth"][ok]))) > 0.8


def test_builtin_smoothing_is_optional_and_local():
    take = synthetic_take(n=90, noise=2e-3, max_angle=0.0)  # static head, noisy tracker
    valid = np.ones(90, np.uint8)
    valid[40:45] = 0
    raw = C.builtin_coeffs(take["landmarks"], valid, take["size"])
    smooth = C.builtin_coeffs(take["landmarks"], valid, take["size"], smooth_sigma=2.0)
    ok = raw["valid"].astype(bool)

    def jitter(p):
        return np.abs(np.diff(p[ok][:30, :3], axis=0)).mean()

    assert jitter(smooth["pose"]) < 0.5 * jitter(raw["pose"])
    assert not smooth["pose"][40:45].any() and not smooth["residual"][40:45].any()
    assert not np.allclose(raw["pose"], smooth["pose"])  # off by default means raw values stored


def test_pose_sigma_smooths_the_pose_alone(tmp_path, run_cli):
    """coeffs.pose_sigma: the stored pose is smoothed (a slowly turning head seen by a jittering
    tracker comes out far smoother and nearer the true path), the expression residual is stored
    raw, and frames outside the tracked runs stay 0."""
    from musicface.metrics import roughness

    t = np.arange(120) / 30
    angles = 0.3 * np.stack([np.sin(1.1 * t), np.sin(0.7 * t + 1), 0.3 * np.sin(0.5 * t)], 1)
    take = synthetic_take(n=120, noise=2e-3, angles=angles)
    valid = np.ones(120, np.uint8)
    valid[60:64] = 0
    d = tmp_path / "a"
    d.mkdir()
    track, ingest = write_track(d, take["landmarks"], valid, take["size"])
    raw = C.extract("a", track, ingest, d / "raw.npz")
    proc = run_cli(["preprocessing.coeffs", "extract", "--take", "a", "--track", track,
                    "--ingest", ingest, "--pose-sigma", "2", "--out", d / "coeffs.npz"])
    assert proc.returncode == 0, proc.stderr
    out = np.load(d / "coeffs.npz")
    ok = raw["valid"].astype(bool)
    assert np.array_equal(out["residual"], raw["residual"])
    assert np.array_equal(out["pose_raw"], raw["pose"])  # the per-frame fit kept (the renderer's)
    assert not out["pose"][60:64].any()
    assert roughness(out["pose"], valid=ok) < roughness(raw["pose"], valid=ok) / 200  # 630x

    def err(pose):
        return np.abs(pose[ok, :3] - angles[ok]).mean()

    assert err(out["pose"]) < 0.6 * err(raw["pose"]), (err(out["pose"]), err(raw["pose"]))  # 0.44


def test_landmarks_from_coeffs_reproduces_tracked_landmarks():
    take = synthetic_take(n=80, size=(720, 1280))  # portrait frame
    out = C.builtin_coeffs(take["landmarks"], np.ones(80), take["size"])
    basis = C.fit_pca([out["residual"]], dim=16)
    # one deformation (the jaw) + nothing else: rank 1, the rest zero-padded
    assert int(basis["rank"]) == 1
    assert not basis["components"][1:].any() and not basis["explained_variance"][1:].any()
    exp = C.project_expression(out["residual"], basis)
    assert exp.shape == (80, 16) and exp.dtype == np.float32
    lm2d = C.landmarks_from_coeffs(exp, out["pose"], basis, reference=out["identity"],
                                   frame_size=take["size"])
    assert lm2d.shape == (80, 478, 2) and lm2d.dtype == np.float32
    np.testing.assert_allclose(lm2d, take["landmarks"][:, :, :2], atol=2e-5)
    # the reconstructed inner-lip gap follows the truth
    gap = mouth_opening(C.reconstruct_residual(exp, basis) + out["identity"])
    assert corr(gap, take["mouth"]) > 0.999


# ------------------------------------------------------------------------------------ bad input
def test_profile_views_and_part_time_face_stay_finite():
    take = synthetic_take(n=60, max_angle=0.3)
    lm = take["landmarks"].copy()
    ang = take["angles"].copy()
    # up to full profile (gimbal lock at 90 degrees)
    ang[20:30, 1] = np.linspace(1.2, np.pi / 2, 10)
    P = take["scale"][20:30, None, None] * np.einsum(
        "nij,kj->nki", C.matrix_from_euler(ang[20:30]), C.load_reference()["shape"]
    ) + take["t"][20:30, None]
    lm[20:30] = C.from_camera(P, take["size"])
    valid = np.zeros(60, np.uint8)
    valid[15:45] = 1  # face in the middle of the take only
    out = C.builtin_coeffs(lm, valid, take["size"])
    assert np.isfinite(out["pose"]).all() and np.isfinite(out["residual"]).all()
    assert (out["valid"] == valid).all()
    np.testing.assert_allclose(out["pose"][20:29, 1], ang[20:29, 1], atol=0.02)
    assert not out["pose"][:15].any() and not out["pose"][45:].any()


def test_nan_or_degenerate_landmarks_in_valid_frames_become_invalid():
    take = synthetic_take(n=20)
    lm = take["landmarks"].copy()
    lm[3, 100] = np.nan
    lm[5] = 0.5  # collapsed to one point
    out = C.builtin_coeffs(lm, np.ones(20), take["size"])
    assert out["valid"][3] == 0 and out["valid"][5] == 0 and out["valid"].sum() == 18
    assert np.isfinite(out["pose"]).all()


def test_frame_size_change_keeps_pose():
    """The same face in a frame that changes size (per-frame frame_size) has the same angles."""
    take = synthetic_take(n=40, size=(1280, 720))
    fs = np.tile([1280, 720], (40, 1))
    lm = take["landmarks"].copy()
    # frames 20..39 come from a 640 x 480 stream: same camera-frame points, other normalisation
    P = C.to_camera(lm[20:], (1280, 720))
    lm[20:] = C.from_camera(P, (640, 480))
    fs[20:] = [640, 480]
    out = C.builtin_coeffs(lm, np.ones(40), fs)
    np.testing.assert_allclose(out["pose"][:, :3], take["angles"], atol=2e-3)


def test_no_valid_frame_is_a_one_line_step_error(tmp_path, run_cli):
    take = synthetic_take(n=10)
    track, ingest = write_track(tmp_path, take["landmarks"], np.zeros(10), take["size"])
    out = tmp_path / "coeffs.npz"
    proc = run_cli(["preprocessing.coeffs", "extract", "--take", "t1", "--track", track, "--ingest",
                    ingest, "--backend", "builtin", "--out", out])
    assert proc.stderr.strip().splitlines()[-1] == (
        "musicface: take 't1' step 'coeffs': no usable face in any frame (track.npz has no valid "
        "landmarks)")
    assert read_failure(out)["step"] == "coeffs"


def test_frame_count_mismatch_and_upstream_failure(tmp_path, run_cli):
    take = synthetic_take(n=10)
    track, ingest = write_track(tmp_path, take["landmarks"], np.ones(10), take["size"])
    save_json(ingest, {"take": "t", "n_frames": 12, "width": 1280, "height": 720, "fps": 30})
    out = tmp_path / "coeffs.npz"
    args = ["preprocessing.coeffs", "extract", "--take", "t", "--track", track, "--ingest", ingest,
            "--out", out]
    proc = run_cli(args)
    assert "track.npz has 10 frames, ingest.json says 12" in proc.stderr
    write_failure(track, "t", "track", "no face found in any frame")
    proc = run_cli(args)
    assert proc.stderr.strip().splitlines()[-1] == (
        "musicface: take 't' step 'coeffs': skipped, upstream step 'track' failed: no face found "
        "in any frame")
    assert read_failure(out) == {"unit": "t", "step": "track",
                                 "reason": "no face found in any frame"}


# ------------------------------------------------------------------------------------ CLI + basis
def test_cli_extract_and_fit_basis(tmp_path, run_cli):
    takes = {"a": 0, "b": 1, "c": 2}
    paths = []
    for name, seed in takes.items():
        d = tmp_path / "work" / name
        d.mkdir(parents=True)
        take = synthetic_take(n=50, seed=seed, noise=2e-4)
        valid = np.ones(50, np.uint8)
        valid[-5:] = 0
        track, ingest = write_track(d, take["landmarks"], valid, take["size"])
        if name == "a":  # the CLI as the rule calls it (a null config option is left out)
            run_cli(["preprocessing.coeffs", "extract", "--take", name, "--track", track,
                     "--ingest", ingest, "--backend", "builtin", "--out", d / "coeffs.npz"])
        else:
            C.extract(name, track, ingest, d / "coeffs.npz")
        paths.append(d / "coeffs.npz")
    with np.load(paths[0]) as z:
        assert str(z["backend"]) == "builtin" and str(z["take"]) == "a"
        assert z["pose"].shape == (50, 6) and z["residual"].shape == (50, 1434)
        assert z["landmarks2d"].shape == (50, 478, 2) and z["valid"].dtype == np.uint8
        assert z["valid"].sum() == 45 and np.isfinite(z["residual"]).all()
    bad = tmp_path / "work" / "d" / "coeffs.npz"
    write_failure(bad, "d", "track", "no face found in any frame")
    split = tmp_path / "split.tsv"
    split.write_text("take\tsubject\tsong\tsplit\na\ts1\tx\ttrain\nb\ts1\ty\ttrain\n"
                     "c\ts2\tx\ttest\nd\ts2\ty\ttrain\n")
    basis_path = tmp_path / "exp_basis.npz"
    proc = run_cli(["preprocessing.coeffs", "fit-basis", "--split", split, "--backend", "builtin",
                    "--dim", "6", "--out", basis_path, *paths, bad])
    assert "skipping" in proc.stderr and read_failure(basis_path) is None
    with np.load(basis_path) as z:
        basis = {k: z[k] for k in z.files}
    assert list(basis["train_takes"]) == ["a", "b"]
    assert basis["components"].shape == (6, 1434) and basis["mean"].shape == (1434,)
    assert str(basis["version"]).startswith(C.BASIS_VERSION)
    assert int(basis["n_frames"]) == 90
    comps = basis["components"].astype(np.float64)[: int(basis["rank"])]
    np.testing.assert_allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-5)
    assert (np.diff(basis["explained_variance"]) <= 0).all()
    # the test take does not influence the basis
    expected = C.fit_pca([np.load(p)["residual"][np.load(p)["valid"].astype(bool)]
                          for p in paths[:2]], 6)
    np.testing.assert_allclose(basis["components"], expected["components"], atol=1e-6)
    # shard writer's path: expression of a stored take
    exp = C.expression_from_coeffs(dict(np.load(paths[2])), basis)
    assert exp.shape == (50, 6) and not exp[-5:].any()
    # deep3d: the identity basis
    C.fit_basis(split, paths, tmp_path / "d3.npz", backend="deep3d", dim=64)
    with np.load(tmp_path / "d3.npz") as z:
        assert bool(z["identity"]) and "deep3d" in str(z["version"])


def test_fit_basis_without_training_takes_fails_cleanly(tmp_path, run_cli):
    split = tmp_path / "split.tsv"
    split.write_text("take\tsubject\tsong\tsplit\na\ts1\tx\ttest\n")
    take = synthetic_take(n=10)
    d = tmp_path / "a"
    d.mkdir()
    track, ingest = write_track(d, take["landmarks"], np.ones(10), take["size"])
    C.extract("a", track, ingest, d / "coeffs.npz")
    out = tmp_path / "basis.npz"
    proc = run_cli(["preprocessing.coeffs", "fit-basis", "--split", split, "--out", out,
                    d / "coeffs.npz"])
    assert proc.stderr.strip().splitlines()[-1].startswith("musicface: take 'dataset' step "
                                                           "'exp_basis': ")
    assert out.read_bytes().startswith(FAILED_MAGIC)


# ------------------------------------------------------------------------------------ demo truth
def test_demo_truth_pose_and_mouth(demo_dir):
    """Acceptance on a demo take: track (preprocessing.track) -> builtin coeffs vs the take's
    truth.npz.

    The demo truth has our pose convention (preprocessing/demo.py), so every column correlates
    positively, no sign flips; translation units differ (the demo docstring's mapping is checked).
    """
    from preprocessing.media import probe
    from preprocessing.track import track_video

    video = Path(demo_dir) / "singer1" / "singer1_song1.mp4"
    truth = dict(np.load(video.with_suffix(".truth.npz")))
    n = probe(video)["n_frames"]
    tr = track_video(str(video), n, progress=False)
    out = C.builtin_coeffs(tr["landmarks"], tr["valid"], tr["frame_size"], tr["interpolated"])
    ok = out["valid"].astype(bool)
    assert ok.mean() > 0.95
    names = ["pitch", "yaw", "roll", "tx", "ty", "tz"]
    est, t = out["pose"][ok].astype(np.float64), truth["pose"][:n][ok].astype(np.float64)
    r = {name: corr(est[:, i], t[:, i]) for i, name in enumerate(names)}
    print(json.dumps({"demo_pose_correlation": r}))
    # README: roll r = 0.996, yaw 0.99, pitch 0.75; measured (seed 0, singer1_song1): pitch 0.749,
    # yaw 0.989, roll 0.9956, tx 0.714, ty 0.901, tz 0.794
    least = {"pitch": 0.70, "yaw": 0.985, "roll": 0.993, "tx": 0.66, "ty": 0.86, "tz": 0.75}
    assert all(r[k] >= v for k, v in least.items()), (r, least)
    # translation: the demo docstring's mapping to image heights (f / H = 700 / 480) and ln(scale)
    # predicts our tx, ty, tz up to a constant; slopes measured 1.27, 0.94, 1.12 (our tx also
    # follows roll and yaw: our face origin is the upper-face centroid, not the demo's rotation
    # centre; our tz also dips by ~0.02 when the eyes close)
    f_h = 700 / 480
    pred = np.c_[f_h * t[:, 3] / (1 - t[:, 5]), f_h * (t[:, 4] - 48 / 700) / (1 - t[:, 5]),
                 -np.log(1 - t[:, 5])]
    slopes = [np.polyfit(pred[:, j], est[:, 3 + j], 1)[0] for j in range(3)]
    print(json.dumps({"demo_translation_slopes": slopes}))
    assert all(0.7 < k < 1.4 for k in slopes), slopes
    basis = C.fit_pca([out["residual"][ok]], dim=16)
    exp = C.project_expression(out["residual"][ok], basis)
    gap = mouth_opening(C.reconstruct_residual(exp, basis) + out["identity"])
    r_mouth = corr(gap, truth["mouth_open"][:n][ok])
    print(json.dumps({"demo_mouth_correlation": r_mouth}))
    assert r_mouth >= 0.99                 # README: mouth opening r = 0.994; measured 0.9937
