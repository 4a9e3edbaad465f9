"""musicface generate on the real 6 s MUSDB18 clip shipped with stempeg, and the preview drawing."""
from __future__ import annotations

import importlib.util
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from musicface import generate as G
from musicface import preview as P

CLIP = (Path(importlib.util.find_spec("stempeg").origin).parent / "data"
        / "The Easton Ellises - Falcon 69.stem.mp4")
E = 8
SUBJECTS = ["alice", "bob"]


def clip_duration_s() -> float:
    """Length of the clip's mixture (stream 0), counted from its decoded samples (independent of our
    code)."""
    with av.open(str(CLIP)) as c:
        st = c.streams.audio[0]
        return sum(f.samples for f in c.decode(st)) / st.rate


def jaw_basis(dim=E, seed=0):
    """An expression basis (PCA of residuals) whose first component opens the mouth."""
    from preprocessing import landmarks as L
    from preprocessing.coeffs import fit_pca

    rng = np.random.default_rng(seed)
    jaw = np.zeros((478, 3))
    jaw[L.LIPS_INNER_LOWER[1:-1] + L.LIPS_OUTER_LOWER[1:-1] + [152], 1] = -0.25
    a = rng.uniform(0, 1, 400)
    rows = a[:, None] * jaw.reshape(1, -1) + rng.normal(0, 0.003, (400, 478 * 3))
    return fit_pca([rows], dim)


def make_checkpoint(path, variant="full", seed=0, basis=True):
    """A small MusicFace (random weights, real normalisation of the clip's features) in model.pt
    format, with the jaw basis embedded (``basis=False``: none, as model files before it was)."""
    from musicface.config import ModelConfig
    from musicface.model import MusicFace, export
    from preprocessing.mfcc import mfcc

    torch.manual_seed(seed)
    cfg = ModelConfig(variant=variant, enc_channels=[16, 32], feat_dim=16, unet_channels=[16, 32],
                      hidden=32, lstm_hidden=32, disc_channels=16)
    model = MusicFace(cfg, SUBJECTS, E)
    from preprocessing.media import decode_audio

    # vocals, ~music, mix
    feats = np.stack([mfcc(decode_audio(CLIP, 16000, stream=s)[0]) for s in (4, 1, 0)])
    model.set_normalisation({
        "mfcc_mean": feats.mean(1), "mfcc_std": feats.std(1) + 1e-3,
        "exp_mean": np.zeros(E), "exp_std": np.full(E, 0.1),
        "pose_mean": np.array([0, 0, 0, 0, 0, math.log(0.12)]),
        "pose_std": np.array([0.1, 0.1, 0.05, 0.01, 0.01, 0.01]),
        "subject_pose": np.array([[0.05, 0, 0, 0, 0, math.log(0.12)],
                                  [-0.05, 0.1, 0, 0, 0, math.log(0.12)]]),
        "vel_std": np.array([0.01, 0.01, 0.005, 0.001, 0.001, 0.001]),
    })
    if basis:
        model.set_exp_basis(jaw_basis(), "0" * 64)
    torch.save(export(model, epoch=0), path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    return {"full": make_checkpoint(d / "full.pt"),
            "single": make_checkpoint(d / "single.pt", "single_stream"), "dir": d}


def test_generate_clip_params_and_playable_preview(assets, tmp_path, run_cli):
    out = tmp_path / "out dir"  # a space in the path
    proc = run_cli(["musicface.cli", "generate", CLIP, "--checkpoint", assets["full"], "--subject",
                    "bob", "--out", out, "--seed", "3"])
    duration = clip_duration_s()
    # frames i with i / 30 < duration: 6.0836 s -> 183 (round(6.08 * 30) = 182)
    n = math.ceil(duration * 30)
    assert abs(duration - 6.08) < 0.01 and n == 183
    assert f"{n} frames" in proc.stdout
    with np.load(out / "params.npz") as z:
        p = {k: z[k] for k in z.files}
    assert p["exp"].shape == (n, E) and p["exp"].dtype == np.float32
    assert p["pose"].shape == (n, 6) and p["speed"].shape == (n, 6) and not p["speed_from_pose"]
    assert p["eye"].shape == p["e_long"].shape == p["e_blink"].shape == (n,)
    for k in ("att_exp", "att_pose", "att_eye"):
        # 2 streams x feat_dim 16
        assert p[k].shape == (n, 32) and 0 <= p[k].min() and p[k].max() <= 1
    assert int(p["fps"]) == 30 and str(p["subject"]) == "bob" and str(p["variant"]) == "full"
    assert int(p["seed"]) == 3 and float(p["duration_s"]) == pytest.approx(duration, abs=1e-3)
    # the PGN starts at bob's mean pose and integrates its speeds: p_t - p_(t-1) = +-speed
    np.testing.assert_allclose(p["pose"][0], [-0.05, 0.1, 0, 0, 0, math.log(0.12)], atol=1e-5)
    assert np.all(np.abs(np.diff(p["pose"], axis=0)) <= p["speed"][1:] + 1e-5)
    # the blink sampler follows the paper: blinks of 0.10-0.45 s
    e = np.concatenate([[0], p["e_blink"], [0]]).astype(int)
    lengths = np.flatnonzero(np.diff(e) == -1) - np.flatnonzero(np.diff(e) == 1)
    assert len(lengths) >= 2 and lengths.min() >= 3 and lengths.max() <= 14

    # the preview: H.264 + AAC, one video frame per parameter frame, the song as audio
    with av.open(str(out / "preview.mp4")) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "h264" and aus.codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
        assert vs.average_rate == Fraction(30)
    assert len(frames) == n and frames[0].shape == (480, 480, 3)
    assert (frames[0].max(axis=2) > 150).sum() > 2000  # the face's lines are drawn
    from preprocessing.media import decode_audio

    audio, _ = decode_audio(out / "preview.mp4", 16000)
    song, _ = decode_audio(CLIP, 16000)
    assert 0 <= len(audio) - len(song) <= 1024  # the encoder pads the last AAC frame (1024 samples)
    k = min(len(audio), len(song))
    assert np.corrcoef(audio[:k], song[:k])[0, 1] > 0.95  # the song itself, in place


def test_generate_is_seeded(assets, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        G.generate(CLIP, assets["full"], "alice", tmp_path / name, seed=seed, preview=False,
                   progress=False)
        with np.load(tmp_path / name / "params.npz") as z:
            runs[name] = {k: z[k] for k in z.files}
    for k in ("exp", "pose", "eye", "e_blink", "att_exp"):
        np.testing.assert_array_equal(runs["a"][k], runs["b"][k])
    assert not np.array_equal(runs["a"]["e_blink"], runs["c"]["e_blink"])  # another blink draw
    # the rest does not depend on it
    np.testing.assert_array_equal(runs["a"]["exp"], runs["c"]["exp"])


def test_single_stream_needs_no_separation(assets, tmp_path, monkeypatch):
    from preprocessing import separate

    def boom(*a, **k):
        raise AssertionError("single_stream must not separate")

    monkeypatch.setattr(separate, "separate_builtin", boom)
    r = G.generate(CLIP, assets["single"], "alice", tmp_path, preview=False, progress=False)
    with np.load(tmp_path / "params.npz") as z:
        assert str(z["variant"]) == "single_stream" and bool(z["speed_from_pose"])
        np.testing.assert_allclose(z["speed"][1:], np.abs(np.diff(z["pose"], axis=0)), atol=1e-6)
        assert not any(k.startswith("att_") for k in z.files)  # no ATM, no attention maps
    assert r["n_frames"] == 183


def test_generate_features_equal_the_dataset_rows(assets, tmp_path, run_cli, monkeypatch):
    """A take that starts with the song (sync offset 0) and lasts as long as it: the dataset's
    steps, run as the DAG runs them (song -> separate -> mfcc CLIs), give the (M, 26) rows of
    mfcc.npz; `musicface generate` on the same song file must hand the model rows and a
    ``mfcc_index`` whose per-frame windows (``rows[i_t : i_t + 39]``, cut by the model) are exactly
    those rows' windows (the reader's windowing, ``mfcc_windows``), each stream in its own argument:
    vocals and music for a two-stream model, the mix for single_stream. Swapped streams or rows
    shifted by one (10 ms) fail here."""
    import inspect

    from musicface.model import MusicFace
    from preprocessing.common import save_json
    from preprocessing.mfcc import mfcc_windows

    d = tmp_path / "work"
    n = math.ceil(clip_duration_s() * 30)
    run_cli(["preprocessing.song", "--song", "falcon", "--audio", CLIP, "--out-wav", d / "mix.wav",
             "--out-json", d / "song.json"])
    run_cli(["preprocessing.separate", "--song", "falcon", "--mix", d / "mix.wav", "--audio", CLIP,
             "--backend", "builtin", "--out-vocals", d / "vocals.wav",
             "--out-music", d / "music.wav"])
    save_json(d / "ingest.json", {"take": "t", "n_frames": n, "fps": 30})
    save_json(d / "sync.json", {"take": "t", "offset_s": 0.0, "drift_ppm": 0.0, "confidence": 50.0,
                                "method": "gcc-phat", "details": {}})
    run_cli(["preprocessing.mfcc", "--take", "t", "--ingest", d / "ingest.json",
             "--sync", d / "sync.json", "--vocals", d / "vocals.wav", "--music", d / "music.wav",
             "--mix", d / "mix.wav", "--out", d / "mfcc.npz"])
    with np.load(d / "mfcc.npz") as z:
        rows = {k: z[k] for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
    assert all(r.shape == (math.ceil(n * 100 / 30), 26) for r in rows.values())

    seen = {}
    original = MusicFace.generate
    params = inspect.signature(original)

    def spy(self, *args, **kwargs):
        bound = params.bind(self, *args, **kwargs)
        seen.update({k: bound.arguments.get(k) for k in (*rows, "mfcc_index")})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MusicFace, "generate", spy)
    for ckpt, given in (("full", ("mfcc_vocals", "mfcc_music")), ("single", ("mfcc_mix",))):
        seen.clear()
        assert G.main([str(CLIP), "--checkpoint", str(assets[ckpt]), "--subject", "alice",
                       "--out", str(tmp_path / ckpt), "--no-preview"]) == 0
        for key in rows:
            if key not in given:
                assert seen[key] is None, (ckpt, key)
                continue
            want = mfcc_windows(rows[key], n, fps=30, width=39)
            index = np.asarray(seen["mfcc_index"])
            assert index.shape == (n,)
            got = np.asarray(seen[key])[index[:, None] + np.arange(39)]  # the model's cut
            assert got.shape == want.shape == (n, 39, 26), (ckpt, key, got.shape)
            np.testing.assert_array_equal(got, want, err_msg=f"{ckpt}: {key}")
            # the check has teeth: the neighbouring rows, or another stream, differ clearly
            r = rows[key]
            for shifted in (r[1:], np.concatenate([r[:1], r[:-1]])):      # one row later / earlier
                assert np.abs(got - mfcc_windows(shifted, n)).max() > 1.0
            for k2 in rows:
                assert k2 == key or np.abs(got - mfcc_windows(rows[k2], n)).max() > 1.0


def test_generate_errors(assets, tmp_path, run_cli, capsys):
    def err(*args):
        """One line on stderr and exit status 1 (in-process: the same main() the console script
        runs)."""
        capsys.readouterr()
        assert G.main([str(a) for a in args]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    proc = run_cli(["musicface.cli", "generate", CLIP, "--checkpoint", assets["full"], "--subject",
                    "zed", "--out", tmp_path / "o"], check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == \
        "musicface generate: unknown subject 'zed'; known subjects: alice, bob"

    base = ["--out", tmp_path / "o"]
    assert err(CLIP, "--checkpoint", tmp_path / "none.pt", "--subject", "alice", *base) == \
        f"musicface generate: checkpoint not found: {tmp_path / 'none.pt'}"
    assert err(CLIP, "--checkpoint", assets["full"], "--subject", "carol", *base) == \
        "musicface generate: unknown subject 'carol'; known subjects: alice, bob"
    bad = tmp_path / "song.mp3"
    bad.write_text("this is not audio")
    line = err(bad, "--checkpoint", assets["full"], "--subject", "alice", *base)
    assert line.startswith(f"musicface generate: cannot read audio from '{bad}'")
    assert err(tmp_path / "missing.wav", "--checkpoint", assets["full"], "--subject", "alice",
               *base) == f"musicface generate: song not found: {tmp_path / 'missing.wav'}"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert err(CLIP, "--checkpoint", junk, "--subject", "alice", *base).startswith(
        f"musicface generate: cannot load checkpoint {junk}:")
    old = make_checkpoint(tmp_path / "old.pt", basis=False)  # a model file without a basis
    assert err(CLIP, "--checkpoint", old, "--subject", "alice", *base) == (
        f"musicface generate: {old} carries no expression basis for the preview (written before "
        "model files embedded it, or trained without --basis): retrain it, or pass --no-preview")
    assert not (tmp_path / "o" / "params.npz").exists()
    assert G.main([str(CLIP), "--checkpoint", str(old), "--subject", "alice", *map(str, base),
                   "--no-preview"]) == 0  # its parameters still generate
    from musicface.config import ModelConfig
    from musicface.model import MusicFace

    with pytest.raises(ValueError, match="basis has 4 components but the model predicts 8"):
        MusicFace(ModelConfig(), SUBJECTS, E).set_exp_basis(jaw_basis(dim=4), "0" * 64)


def test_generate_from_an_empty_folder_with_only_the_model_file(assets, tmp_path, run_cli):
    """The model file is self-contained: no dataset/, no exp_basis.npz anywhere, another folder."""
    import hashlib
    import shutil

    from musicface.model import export, load_checkpoint
    from preprocessing.common import save_npz, sha256_file

    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(assets["full"], work / "model.pt")
    run_cli(["musicface.cli", "generate", CLIP, "--checkpoint", "model.pt", "--subject", "alice",
             "--out", "out"], cwd=work)
    assert sorted(p.name for p in work.iterdir()) == ["model.pt", "out"]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["generate.json", "params.npz",
                                                               "preview.mp4"]
    # the embedded basis round-trips exactly (arrays, dtypes, strings), with the sha256 it was given
    model, meta = load_checkpoint(work / "model.pt")
    want = jaw_basis()
    assert sorted(model.exp_basis) == sorted(want) and meta["exp_basis_sha256"] == "0" * 64
    for k, v in want.items():
        assert model.exp_basis[k].dtype == v.dtype
        np.testing.assert_array_equal(model.exp_basis[k], v)
    save_npz(tmp_path / "b.npz", **want)
    strings = {"version": np.array("builtin-pca-1"), "train_takes": np.array(["a", "b"])}
    model.set_exp_basis({**want, **strings}, sha256_file(tmp_path / "b.npz"))
    torch.save(export(model), tmp_path / "m2.pt")
    again, meta2 = load_checkpoint(tmp_path / "m2.pt")
    assert str(again.exp_basis["version"]) == "builtin-pca-1"
    assert again.exp_basis["train_takes"].tolist() == ["a", "b"]
    want_sha = hashlib.sha256((tmp_path / "b.npz").read_bytes()).hexdigest()
    assert meta2["exp_basis_sha256"] == want_sha


# --------------------------------------------------------------------------------------- preview
def _face_landmarks(opening, basis):
    from preprocessing.coeffs import landmarks_from_coeffs

    exp = np.zeros((len(opening), E), np.float32)
    exp[:, 0] = opening
    pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, math.log(0.12)], (len(opening), 1))
    return landmarks_from_coeffs(exp, pose, basis, frame_size=(1, 1))


def _colour_height(frame, colour, tol=40):
    """Vertical extent (px) of the pixels of one drawing colour."""
    mask = (np.abs(frame.astype(int) - np.array(colour)) < tol).all(axis=2)
    ys = np.flatnonzero(mask.any(axis=1))
    return (ys.max() - ys.min()) if len(ys) else 0


def test_preview_draws_mouth_and_eyes(tmp_path):
    """Decoded preview frames: the drawn lips open with the expression, the drawn eyes close with
    the eye state."""
    from musicface.metrics import mouth_opening

    basis = jaw_basis()
    n = 60
    t = np.arange(n)
    pc1 = np.asarray(basis["components"][0]).reshape(478, 3)
    sign = 1.0 if pc1[14, 1] < 0 else -1.0  # +1 coefficient moves the lower lip down
    coef = sign * 0.9 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 20))
    lm = _face_landmarks(coef, basis)
    eye = ((t >= 40) & (t < 50)).astype(np.float32)
    P.write_preview(tmp_path / "p.mp4", lm, eye, None, fps=30, size=320, progress=False)
    with av.open(str(tmp_path / "p.mp4")) as c:
        assert len(c.streams.audio) == 0
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == n and frames[0].shape == (320, 320, 3)
    lips = np.array([_colour_height(f, P.LIPS) for f in frames])
    assert np.corrcoef(lips, mouth_opening(lm))[0, 1] > 0.9
    eyes = np.array([_colour_height(f, P.EYES) for f in frames])
    assert eyes[40:50].max() < 0.6 * eyes[:40].min()  # closed lids: a much flatter eye outline
    with pytest.raises(ValueError, match="cannot draw a landmark layout with 10 points"):
        P.layout(10)


def test_close_eyes_moves_upper_lids_onto_lower():
    from preprocessing import landmarks as L

    px = np.random.default_rng(0).uniform(0, 100, (3, 478, 2))
    out = P.close_eyes(px, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(out[0], px[0])
    np.testing.assert_allclose(out[2][L.RIGHT_UPPER_LID], px[2][L.RIGHT_LOWER_LID])
    np.testing.assert_allclose(out[1][L.LEFT_UPPER_LID],
                               0.5 * (px[1][L.LEFT_UPPER_LID] + px[1][L.LEFT_LOWER_LID]))
    np.testing.assert_array_equal(out[:, L.LIPS], px[:, L.LIPS])
