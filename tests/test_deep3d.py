"""coeffs backend deep3d (Deep3DFaceRecon_pytorch): loading, alignment, batching, slicing, units,
BFM.

No trained weights exist here: the checkpoint is built in a fixture in the tool's own format
(``{'net_recon': state_dict}``, ``backbone.*`` = torchvision resnet50 keys without fc,
``final_layers.0..6`` 1x1 convs) with randomised heads (the tool zero-initialises them). The tests
prove the plumbing, not accuracy.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# after the importorskip lines (E402): without torch/torchvision the module is skipped, not an error
from preprocessing import coeffs as C  # noqa: E402
from preprocessing import deep3d as D  # noqa: E402
from preprocessing import landmarks as fm  # noqa: E402
from preprocessing.common import StepError, read_failure, save_json, save_npz  # noqa: E402

HEAD_SIZES = [80, 64, 80, 3, 27, 2, 1]  # id, exp, tex, angle, gamma, txy, tz (networks.py)


def real_format_state_dict(seed=0) -> dict:
    """Deep3DFaceRecon's net_recon state dict, written from the tool's layout (not from our
    module)."""
    torch.manual_seed(seed)
    sd = {f"backbone.{k}": v
          for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
          if not k.startswith("fc.")}
    for i, n in enumerate(HEAD_SIZES):
        sd[f"final_layers.{i}.weight"] = torch.randn(n, 2048, 1, 1) * 0.02
        sd[f"final_layers.{i}.bias"] = torch.randn(n) * 0.1
    return sd


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("d3") / "epoch_20.pth"
    sd = real_format_state_dict()
    torch.save({"net_recon": sd,
                "opt_00": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}}, path)
    return path


@pytest.fixture(scope="module")
def net(checkpoint):
    return D.load_net(checkpoint)


def face_landmarks(points5: np.ndarray, size) -> np.ndarray:
    """FaceMesh-shaped normalised landmarks (478, 3) whose five alignment points are ``points5``
    (px)."""
    w, h = size
    lm = np.full((478, 3), 0.5)
    lm[:, 0] = points5[:, 0].mean() / w
    lm[:, 1] = points5[:, 1].mean() / h
    for idx, p in zip([[fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER],
                       [fm.LEFT_EYE_INNER, fm.LEFT_EYE_OUTER], [fm.NOSE_TIP], [fm.MOUTH_LEFT],
                       [fm.MOUTH_RIGHT]], points5):
        lm[idx, 0], lm[idx, 1] = p[0] / w, p[1] / h
    lm[:, 2] = 0
    return lm


def template_points(a: float, cx: float, cy: float) -> np.ndarray:
    """The 5 standard 3D points seen frontally at ``a`` px per BFM unit, centred at (cx, cy), y
    down."""
    std = D.standard_points()
    return np.stack([cx + a * std[:, 0], cy - a * std[:, 1]], 1)


# ------------------------------------------------------------------------------------ checkpoint
def test_real_format_keys_load_strictly(checkpoint, net):
    sd = torch.load(checkpoint, weights_only=True)["net_recon"]
    assert sd["backbone.conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["backbone.layer4.2.bn3.running_var"].shape == (2048,)
    assert sd["backbone.layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert (sd["final_layers.1.weight"].shape == (64, 2048, 1, 1)
            and sd["final_layers.6.bias"].shape == (1,))
    assert not any(k.startswith("backbone.fc") for k in sd)
    assert set(net.state_dict()) == set(sd)  # strict=True passed: exactly the same keys
    for k in ("backbone.layer3.5.conv2.weight", "final_layers.3.weight"):
        assert torch.equal(net.state_dict()[k], sd[k])
    assert not net.training


def test_checkpoint_problems_are_clear(tmp_path, checkpoint, run_cli):
    with pytest.raises(D.MissingModelFiles, match="epoch_20.pth"):
        D.load_net(tmp_path / "nope.pth")
    sd = real_format_state_dict()
    del sd["final_layers.2.bias"]
    torch.save({"net_recon": sd}, tmp_path / "missing.pth")
    with pytest.raises(StepError, match="does not match Deep3DFaceRecon's resnet50 network: "
                                        "missing keys final_layers.2.bias; unexpected keys none"):
        D.load_net(tmp_path / "missing.pth")
    sd = real_format_state_dict()
    sd["backbone.fc.weight"] = torch.zeros(257, 2048)  # a use_last_fc model is another network
    torch.save({"net_recon": sd}, tmp_path / "extra.pth")
    with pytest.raises(StepError, match="missing keys none; unexpected keys backbone.fc.weight"):
        D.load_net(tmp_path / "extra.pth")
    sd = real_format_state_dict()
    sd["final_layers.1.weight"] = torch.zeros(79, 2048, 1, 1)
    torch.save({"net_recon": sd}, tmp_path / "shape.pth")
    with pytest.raises(StepError, match="size mismatch for final_layers.1.weight"):
        D.load_net(tmp_path / "shape.pth")
    torch.save({"net_recon": {f"module.{k}": v for k, v in real_format_state_dict().items()}},
               tmp_path / "dp.pth")  # saved from DataParallel
    assert isinstance(D.load_net(tmp_path / "dp.pth"), torch.nn.Module)
    # the CLI stops at once (exit 2, no failure record) when the checkpoint is not there
    out = tmp_path / "coeffs.npz"
    proc = run_cli(["preprocessing.coeffs", "extract", "--take", "t", "--track", tmp_path / "x.npz",
                    "--ingest", tmp_path / "x.json", "--backend", "deep3d", "--out", out],
                   check=False)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "musicface: take 't' step 'coeffs': backend deep3d needs a checkpoint: "
        "Deep3DFaceRecon_pytorch's")


# ------------------------------------------------------------------------------------ alignment
def test_pos_fit_recovers_scale_and_translation():
    std = D.standard_points()
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, t = rng.uniform(50, 400), rng.uniform(0, 1000, 2)
        t_fit, s = D.pos_fit(a * std[:, :2] + t, std)
        assert s == pytest.approx(a, rel=1e-9)
        np.testing.assert_allclose(t_fit, t, atol=1e-7)


@pytest.mark.parametrize("a,cx,cy,size", [(150.0, 400.0, 300.0, (800, 600)),
                                          (420.0, 640.0, 360.0, (1280, 720)),
                                          # face at the frame's corner
                                          (120.0, 60.0, 70.0, (320, 240))])
def test_crop_puts_the_five_points_on_the_template(a, cx, cy, size):
    """Coloured dots at the five points land where the tool's template expects them in the 224 crop:
    ``(112 + 102 X, 112 - 102 Y)``, whatever the face size and position."""
    w, h = size
    pts = template_points(a, cx, cy)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                        [255, 0, 255]], np.uint8)
    frame = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    radius = 0.04 * a
    for p, c in zip(pts, colours):
        frame[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 <= radius ** 2] = c
    crop, params = D.align_crop(frame, face_landmarks(pts, size)[:, :2] * [w, h])
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(params[:2], [w, h])
    assert params[2] == pytest.approx(D.RESCALE / a, rel=1e-9)  # crop px per frame px
    std = D.standard_points()
    expected = np.stack([112 + 102 * std[:, 0], 112 - 102 * std[:, 1]], 1)
    cyy, cxx = np.mgrid[0:224, 0:224]
    for c, e in zip(colours, expected):
        hit = np.abs(crop.astype(int) - c).sum(-1) < 60
        assert hit.sum() > 3
        centre = np.array([cxx[hit].mean(), cyy[hit].mean()])
        # 1.5 px: the tool flips y with H - 1 but crops with H (rows land ~scale px high), plus
        # pixel centres (half a pixel) and the dots' rasterisation
        assert np.abs(centre - e).max() < 1.5, (centre, e)
    if cx < 112 / params[2]:  # the crop reaches past the frame's left edge: black there
        assert (crop[:, :5] == 0).all()


# ------------------------------------------------------------------------------------ inference
@pytest.fixture(scope="module")
def clip():
    """4 frames 320 x 240 (a random texture moving with the face), landmarks, frame 2 untracked."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (240, 320, 3), np.uint8)
    frames, lms = [], []
    for i in range(4):
        frames.append(np.roll(base, 4 * i, axis=1))
        lms.append(face_landmarks(template_points(90 + 3 * i, 150 + 4 * i, 120), (320, 240)))
    valid = np.ones(4, np.uint8)
    valid[2] = 0
    lms = np.array(lms, np.float32)
    lms[2] = np.nan
    return frames, lms, valid


def test_batching_slicing_and_units(net, clip):
    frames, lms, valid = clip
    one = D.deep3d_coeffs(list(enumerate(frames)), lms, valid, net, batch_size=1, progress=False)
    # bare frames
    many = D.deep3d_coeffs(iter(frames), lms, valid, net, batch_size=4, progress=False)
    for k in ("id", "exp", "tex", "gamma", "pose", "coeffs", "trans_params"):
        np.testing.assert_allclose(one[k], many[k], rtol=1e-4, atol=1e-4 * np.abs(one[k]).max())
    assert (one["valid"] == valid).all()
    # slicing: straight from the network on the same crops
    crops = [D.align_crop(frames[i], lms[i, :, :2] * [320, 240])[0] for i in (0, 3)]
    raw = D.run_net(net, crops)
    assert raw.shape == (2, 257)
    got = {k: one[k][[0, 3]] for k in one}
    np.testing.assert_allclose(got["id"], raw[:, 0:80], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["exp"], raw[:, 80:144], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["tex"], raw[:, 144:224], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["gamma"], raw[:, 227:254], rtol=1e-4, atol=1e-5)
    # units: angles are the network's radians as they come (no degrees); its BFM-unit translation is
    # turned into the dataset's units (test_pose_convention_is_the_builtin_backends)
    np.testing.assert_allclose(got["pose"][:, :3], raw[:, 224:227], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["coeffs"][:, 254:257], raw[:, 254:257], rtol=1e-4, atol=1e-5)
    want = D.dataset_pose(raw[:, 224:227], raw[:, 254:257], got["trans_params"])
    np.testing.assert_allclose(got["pose"], want, rtol=1e-4, atol=1e-5)
    assert (one["exp"].shape == (4, 64) and one["pose"].shape == (4, 6)
            and one["exp"].dtype == np.float32)
    assert not one["coeffs"][2].any() and np.isfinite(one["coeffs"]).all()
    assert np.abs(got["exp"]).max() > 0  # random heads: not a zero stub


def _builtin_face(scale, tx, ty, size=(640, 480), yaw=0.0):
    """The builtin reference face placed in a frame: s R F + t (image heights) -> normalised."""
    ref = C.load_reference()["shape"]
    R = C.matrix_from_euler(np.array([0.0, yaw, 0.0]))
    return C.from_camera(scale * ref @ R.T + [tx, ty, 0.0], size)


def test_pose_convention_is_the_builtin_backends():
    """One face, both backends: the builtin fit of the placed reference face gives its placement
    exactly; Deep3DFaceRecon's translation (here 0: the face at the crop's centre and nominal
    distance, which the 5-point alignment puts it at) turned into the dataset's units gives the same
    tz (face scale) within 0.1 %, and tx, ty that follow the face exactly, 0.53 reference units
    (0.04 image heights here) below the builtin's (the BFM face's origin lies under the nose bridge,
    the builtin's origin)."""
    size = (640, 480)
    cases = [(0.08, 0.0, 0.0), (0.08, 0.3, -0.1), (0.12, -0.2, 0.15), (0.05, 0.1, 0.05)]
    b, d = [], []
    for scale, tx, ty in cases:
        lm = _builtin_face(scale, tx, ty, size)
        out = C.builtin_coeffs(lm[None], np.ones(1, np.uint8), np.array([size]))
        b.append(out["pose"][0].astype(np.float64))
        params = np.array([[*size, *D.crop_params(lm[:, :2] * size, size[1])]])
        d.append(D.dataset_pose(np.zeros((1, 3)), np.zeros((1, 3)), params)[0])
    b, d = np.array(b), np.array(d)
    np.testing.assert_allclose(b[:, 3:], np.array(cases)[:, [1, 2, 0]] * [1, 1, 0] + [0, 0, 1] *
                               np.log(np.array(cases)[:, :1]), atol=1e-4)         # builtin: exact
    np.testing.assert_allclose(d[:, 5], b[:, 5], atol=0.002)   # same face scale (measured 0.0009)
    offset = d[:, 3:5] - b[:, 3:5]       # a fixed point of the face: the same at the same scale,
    np.testing.assert_allclose(offset[1], offset[0], atol=1e-6)  # proportional to it (to a pixel)
    scales = np.array(cases)[:, :1]
    np.testing.assert_allclose(offset, scales * offset[0] / cases[0][0], atol=2 / 480)
    assert np.abs(offset).max() < 0.07 and abs(offset[0, 0]) < 1e-3   # measured (0.0005, -0.043)
    # the tool's own translation moves the face: +X to the image right, +Y up, +Z closer (bigger)
    params = np.array([[*size, *D.crop_params(_builtin_face(0.08, 0, 0, size)[:, :2] * size, 480)]])
    base = D.dataset_pose(np.zeros((1, 3)), np.zeros((1, 3)), params)[0]
    for k, col in ((0, 3), (1, 4)):
        moved = D.dataset_pose(np.zeros((1, 3)), np.eye(3)[k][None] * 0.5, params)[0]
        per_unit = np.exp(base[5]) / D.face_unit()              # image heights per BFM unit
        assert moved[col] - base[col] == pytest.approx(0.5 * per_unit, rel=1e-6)
    closer = D.dataset_pose(np.zeros((1, 3)), np.array([[0, 0, 1.0]]), params)[0]
    assert closer[5] - base[5] == pytest.approx(np.log(10 / 9))


def test_short_video_and_no_face(net, clip):
    frames, lms, valid = clip
    # 2 frames missing
    res = D.deep3d_coeffs(frames[:2], lms, np.ones(4), net, batch_size=2, progress=False)
    assert list(res["valid"]) == [1, 1, 0, 0]
    res = D.deep3d_coeffs(frames[:1] + [frames[1][:200, :300]], lms, np.array([0, 1, 0, 0]), net,
                          progress=False)  # the frame size changes: landmarks scale with each frame
    assert res["trans_params"][1, 0] == 300 and res["trans_params"][1, 1] == 200
    with pytest.raises(StepError, match="no usable face in any frame"):
        D.deep3d_coeffs(frames, lms, np.zeros(4), net, progress=False)


def test_cli_extract_deep3d_on_a_video(tmp_path, checkpoint, clip, run_cli):
    from preprocessing.media import write_video

    frames, lms, valid = clip
    video = tmp_path / "take one.mp4"
    write_video(video, frames)
    n = len(frames)
    save_npz(tmp_path / "track.npz", landmarks=lms, valid=valid, interpolated=np.zeros(n, np.uint8),
             frame_size=np.tile([320, 240], (n, 1)).astype(np.int32),
             bbox=np.zeros((n, 4), np.float32))
    save_json(tmp_path / "ingest.json",
              {"take": "t", "n_frames": n, "width": 320, "height": 240, "fps": 30})
    out = tmp_path / "coeffs.npz"
    run_cli(["preprocessing.coeffs", "extract", "--take", "t", "--video", video, "--track",
             tmp_path / "track.npz", "--ingest", tmp_path / "ingest.json", "--backend", "deep3d",
             "--checkpoint", checkpoint, "--batch-size", "4", "--threads", "1", "--out", out])
    assert read_failure(out) is None
    with np.load(out) as z:
        assert str(z["backend"]) == "deep3d"
        assert z["exp"].shape == (n, 64) and z["id"].shape == (n, 80) and z["tex"].shape == (n, 80)
        assert z["gamma"].shape == (n, 27) and z["pose"].shape == (n, 6)
        assert list(z["valid"]) == list(valid)
        np.testing.assert_allclose(z["landmarks2d"][valid.astype(bool)],
                                   lms[valid.astype(bool), :, :2])
        assert not z["landmarks2d"][2].any()
        basis = {"identity": np.array(True)}
        np.testing.assert_array_equal(
            C.expression_from_coeffs({k: z[k] for k in z.files}, basis), z["exp"])


# ------------------------------------------------------------------------------------ face model
def test_missing_bfm_names_the_files(tmp_path):
    with pytest.raises(D.MissingModelFiles, match="bfm_dir is not set"):
        D.load_bfm(None)
    with pytest.raises(D.MissingModelFiles) as e:
        D.landmarks_from_coeffs(np.zeros((1, 64)), np.zeros((1, 6)), bfm_dir=tmp_path)
    for name in ("BFM_model_front.mat", "01_MorphableModel.mat", "Exp_Pca.bin",
                 "faces.dmi.unibas.ch"):
        assert name in str(e.value)


@pytest.fixture(scope="module")
def bfm_front(tmp_path_factory):
    """A BFM_model_front.mat in the tool's format (35709 vertices): the 68 keypoints sit at the
    standard landmarks of similarity_Lm3D_all.mat, other vertices at the origin, sparse random
    bases."""
    from scipy.io import loadmat, savemat

    d = tmp_path_factory.mktemp("bfm")
    v = 35709
    kp = np.loadtxt(D.DATA / "bfm_keypoints.txt", dtype=np.int64)  # 1-based
    lm68 = loadmat(D.DATA / "similarity_Lm3D_all.mat")["lm"]
    mean = np.zeros((v, 3), np.float32)
    mean[kp - 1] = lm68
    rng = np.random.default_rng(0)
    id_base = np.zeros((3 * v, 80), np.float32)
    exp_base = np.zeros((3 * v, 64), np.float32)
    rows = (3 * (kp[:, None] - 1) + np.arange(3)).ravel()
    id_base[rows] = rng.normal(0, 0.01, (len(rows), 80))
    exp_base[rows] = rng.normal(0, 0.01, (len(rows), 64))
    savemat(d / "BFM_model_front.mat", {"meanshape": mean.reshape(1, -1), "idBase": id_base,
                                        "exBase": exp_base,
                                        "keypoints": kp[None].astype(np.float64)},
            do_compression=True)
    return d, mean, id_base, exp_base, kp - 1


def test_bfm_landmarks_projection(bfm_front):
    d, mean, id_base, exp_base, kp = bfm_front
    rng = np.random.default_rng(1)
    n = 4
    exp = rng.normal(0, 1, (n, 64))
    idc = rng.normal(0, 1, 80)
    pose = np.c_[rng.uniform(-0.3, 0.3, (n, 3)), rng.normal(0, 0.1, (n, 2)),
                 rng.normal(-2.5, 0.1, n)]
    got = D.landmarks_from_coeffs(exp, pose, id_coeffs=idc, bfm_dir=d, frame_size=(640, 480))
    assert got.shape == (n, 68, 2) and got.dtype == np.float32
    # independent computation: s R shape + t in image heights (y up, from the centre), orthographic
    centre = mean.astype(np.float64).mean(0)
    shape = (mean.reshape(-1).astype(np.float64) + id_base @ idc
             + exp @ exp_base.T.astype(np.float64))
    shape = shape.reshape(n, -1, 3)[:, kp] - centre
    s = np.exp(pose[:, 5]) / D.face_unit()
    v = np.einsum("nij,nkj->nki", C.matrix_from_euler(pose[:, :3]), shape) * s[:, None, None]
    x = (v[..., 0] + pose[:, None, 3]) * 480 + 320
    y = 240 - (v[..., 1] + pose[:, None, 4]) * 480
    np.testing.assert_allclose(got * [640, 480], np.stack([x, y], -1), atol=1e-3)
    # the round trip through the alignment: a face whose five points sit at the template, pose from
    # the tool's translation 0 -> the mean face's five landmarks land back on those points (px)
    size = (640, 480)
    p5 = template_points(60, 250, 300)
    lm = face_landmarks(p5, size)
    params = np.array([[*size, *D.crop_params(lm[:, :2] * size, 480)]])
    pose0 = D.dataset_pose(np.zeros((1, 3)), np.zeros((1, 3)), params)
    front = D.landmarks_from_coeffs(np.zeros((1, 64)), pose0, bfm_dir=d, frame_size=size)[0] * size
    five = np.stack([front[[36, 39]].mean(0), front[[42, 45]].mean(0), front[30],
                     front[48], front[54]])
    np.testing.assert_allclose(five, p5, atol=1.0)
    # +yaw turns the face to the image right: the nose tip moves right
    yawed = D.landmarks_from_coeffs(np.zeros((1, 64)), pose0 + [0, 0.3, 0, 0, 0, 0], bfm_dir=d,
                                    frame_size=size)[0] * size
    assert yawed[30, 0] > front[30, 0] + 5


def test_bfm09_transfer_matches_the_recipe(tmp_path):
    """01_MorphableModel.mat + Exp_Pca.bin (reduced PC counts, real vertex counts) -> our front
    model."""
    from scipy.io import loadmat, savemat

    rng = np.random.default_rng(2)
    n_vert, n_exp_vert = 53490, 53215
    shape_mu = rng.normal(0, 1e4, (3 * n_vert, 1)).astype(np.float32)
    shape_pc = rng.normal(0, 1, (3 * n_vert, 80)).astype(np.float32)
    shape_ev = rng.uniform(1e3, 1e4, (80, 1)).astype(np.float32)
    savemat(tmp_path / "01_MorphableModel.mat",
            {"shapeMU": shape_mu, "shapePC": shape_pc, "shapeEV": shape_ev})
    exp_pc = rng.normal(0, 1, (64, 3 * n_exp_vert)).astype(np.float32)
    with open(tmp_path / "Exp_Pca.bin", "wb") as fh:
        np.array([64], "<i4").tofile(fh)
        rng.normal(0, 1, 3 * n_exp_vert).astype("<f4").tofile(fh)
        exp_pc.astype("<f4").tofile(fh)
    model = D.load_bfm(tmp_path)
    front = loadmat(D.DATA / "BFM_front_idx.mat")["idx"].ravel().astype(int) - 1
    trim = loadmat(D.DATA / "BFM_exp_idx.mat")["trimIndex"].ravel().astype(int) - 1
    std_exp = np.loadtxt(D.DATA / "std_exp.txt")
    assert model["mean_shape"].shape == (35709, 3) and model["id_base"].shape == (3 * 35709, 80)
    assert model["exp_base"].shape == (3 * 35709, 64) and len(model["keypoints"]) == 68
    for vtx in (0, 1234, 35708):
        src = trim[front[vtx]]
        np.testing.assert_allclose(model["id_base"][3 * vtx + 1],
                                   shape_pc[3 * src + 1] * shape_ev[:, 0] / 1e5, rtol=1e-5)
        np.testing.assert_allclose(model["exp_base"][3 * vtx + 2],
                                   exp_pc[:, 3 * front[vtx] + 2] * std_exp[:64] / 1e5, rtol=1e-5)
    mean = shape_mu.reshape(-1, 3)[trim[front]] / 1e5
    np.testing.assert_allclose(model["mean_shape"], mean - mean.mean(0), rtol=1e-5, atol=1e-6)
