"""musicface evaluate / ablation-table on a small shard set built from real music with known ground
truth.

The shard set: the 6 s MUSDB18 clip shipped with stempeg (real vocal and accompaniment stems), cut
into 12 s takes of two synthetic singers whose mouth opens with the real vocal energy, whose head
moves at a speed following the music, and who blink at known times. A tiny model is trained on it
for a few epochs (seconds), and an "oracle" model that returns the ground truth checks the wiring
exactly.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from musicface import evaluate as EV
from musicface import metrics as M

SR, FPS, E = 16000, 30, 8
CLIP = (Path(importlib.util.find_spec("stempeg").origin).parent / "data"
        / "The Easton Ellises - Falcon 69.stem.mp4")
TINY = {
    "model": {"variant": "full", "enc_channels": [16, 32], "feat_dim": 16,
              "unet_channels": [16, 32], "hidden": 32, "lstm_hidden": 32, "disc_channels": 16},
    "train": {"epochs": 2, "batch_size": 8, "window": 32, "samples_per_epoch": 16, "val_samples": 8,
              "device": "cpu", "seed": 0},
}


# ------------------------------------------------------------------------------- the shard set
def _stems():
    from preprocessing.media import decode_audio

    mix = decode_audio(CLIP, SR, stream=0)[0]
    vocals = decode_audio(CLIP, SR, stream=4)[0]
    music = sum(decode_audio(CLIP, SR, stream=k)[0] for k in (1, 2, 3))
    return mix, vocals, music


def _features(wav, m):
    """The mfcc step's features of a take starting at song time 0: (M, 26) float32."""
    from preprocessing.mfcc import features_at

    return features_at(np.asarray(wav, np.float32), 0, m, SR)


def _frame_db(wav, n):
    """RMS level (dB) of the 1/30 s around each frame time."""
    hop = SR // FPS
    pad = np.pad(wav, (hop, hop))
    rms = np.array([np.sqrt(np.mean(pad[i * hop + hop // 2: i * hop + hop // 2 + hop] ** 2) + 1e-10)
                    for i in range(n)])
    return 20 * np.log10(rms)


def _jaw_displacement():
    """Residual (478, 3) that opens the mouth: lower lip and chin move down (reference-face
    units)."""
    from preprocessing import landmarks as L
    from preprocessing.coeffs import load_reference

    ref = load_reference()["shape"]
    d = np.zeros_like(ref)
    lower = set(L.LIPS_INNER_LOWER[1:-1] + L.LIPS_OUTER_LOWER[1:-1] + [152, 148, 176, 377, 400])
    for i in lower:
        d[i, 1] = -0.25  # y points up in the reference frame: down = negative
    return d


def _take(name, subject, split, shift_s, rng, jaw, basis=None):
    from preprocessing.eyes import split_eye_states
    from preprocessing.media import n_frames_cfr
    from preprocessing.shards import n_mfcc_rows

    mix, vocals, music = (np.roll(np.tile(a, 2), int(shift_s * SR)) for a in _stems())
    n = n_frames_cfr(len(mix) / SR)
    m = n_mfcc_rows(n)
    t = np.arange(n) / FPS
    # mouth opening follows the real vocal level
    db = _frame_db(vocals, n)
    mouth = np.clip((db - (db.max() - 30)) / 30, 0, 1)
    residual = mouth[:, None, None] * jaw[None] + rng.normal(0, 0.004, (n, 478, 3))
    residual[:, :, 0] += 0.02 * np.sin(2 * np.pi * t / 3.0 + rng.uniform(0, 6))[:, None]
    # head speed follows the music level, direction flips every 1.5 s
    level = _frame_db(music, n)
    speed = 0.002 + 0.01 * np.clip((level - level.max() + 25) / 25, 0, 1)
    sign = np.where((t // 1.5) % 2 == 0, 1.0, -1.0)
    pose = np.zeros((n, 6))
    pose[:, 0] = np.cumsum(speed * sign) * 0.7
    pose[:, 1] = np.cumsum(speed * np.roll(sign, 20))
    pose[:, 2] = 0.3 * np.cumsum(speed * np.roll(sign, 33))
    pose[:, 3:5] = 0.01 * np.sin(t[:, None] * [0.7, 1.1])
    pose[:, 5] = math.log(0.12)
    # eyes: blinks of 4-8 frames every ~2.5 s, one long closure of 0.8 s
    au45 = np.full(n, 0.08)
    start = 20
    while start < n - 10:
        au45[start:start + rng.integers(4, 9)] = 0.95
        start += int(rng.integers(60, 90))
    au45[150:174] = 0.85
    valid = np.ones(n, bool)
    if split == "test" and name.endswith("4"):
        valid[200:206] = False
    eye_long, eye_blink, _ = split_eye_states(au45, fps=FPS, tau=0.5, closed_threshold=0.5,
                                              valid=valid)
    arrays = {"mfcc_vocals": _features(vocals, m), "mfcc_music": _features(music, m),
              "mfcc_mix": _features(mix, m), "pose": pose.astype(np.float32),
              "au45": au45.astype(np.float32), "eye_long": eye_long, "eye_blink": eye_blink,
              "valid": valid.astype(np.uint8)}
    return name, subject, split, residual.reshape(n, -1), arrays


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """dataset/{shards/, exp_basis.npz} of 8 takes (6 train, 2 test), built from the real clip."""
    from preprocessing.coeffs import fit_pca, landmarks_from_coeffs, project_expression
    from preprocessing.common import save_npz
    from preprocessing.shards import TakeData, write_shard_set

    root = tmp_path_factory.mktemp("eval") / "dataset"
    rng = np.random.default_rng(0)
    jaw = _jaw_displacement()
    plan = [(f"{s}_{k}", s, "test" if k == 4 else "train", 1.5 * k + (0.7 if s == "bob" else 0.0))
            for s in ("alice", "bob") for k in (1, 2, 3, 4)]
    raw = [_take(name, s, split, shift, rng, jaw) for name, s, split, shift in plan]
    basis = fit_pca((r[3] for r in raw if r[2] == "train"), E)
    save_npz(root / "exp_basis.npz", **basis)
    takes = []
    for name, subject, split, residual, arrays in raw:
        arrays["exp"] = project_expression(residual, basis)
        arrays["landmarks"] = landmarks_from_coeffs(arrays["exp"], arrays["pose"], basis,
                                                    frame_size=(1, 1)).astype(np.float16)
        v = arrays["valid"].astype(bool)
        for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "landmarks"):
            arrays[k][~v] = 0
        takes.append(TakeData(take=name, subject=subject, song="falcon69", split=split,
                              offset_s=0.0, sync_method="gcc-phat", sync_confidence=20.0,
                              arrays=arrays, backends={"coeffs": "builtin"}))
    write_shard_set(root / "shards", takes, takes_per_shard=4, cfg_sha="test")
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A tiny model trained for 2 epochs on the shard set: runs/tiny-<variant>/model.pt."""
    from musicface.train import train

    runs = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in ("full", "single_stream"):
        cfg = json.loads(json.dumps(TINY))
        cfg["model"]["variant"] = variant
        out[variant] = Path(train(dataset / "shards", cfg, runs / f"tiny-{variant}", progress=False,
                                  basis=dataset / "exp_basis.npz"))
    return out


# ------------------------------------------------------------------------------------ the oracle
class Oracle:
    """A stand-in model whose generate() returns each test take's ground truth (recognised by its
    MFCC)."""

    def __init__(self, shards, variant="with_atm", basis=None):
        from types import SimpleNamespace

        from musicface.data import open_shards, take_arrays
        from preprocessing.common import load_npz, sha256_file

        s = open_shards(shards)
        self.cfg = SimpleNamespace(variant=variant, two_streams=True)
        self.subjects, self.exp_dim = s.subjects, s.exp_dim
        basis = basis or Path(shards).parent / "exp_basis.npz"  # as a trained model.pt carries it
        self.exp_basis, self.exp_basis_sha256 = load_npz(basis), sha256_file(basis)
        self.truth = {}
        for info in s.takes("test"):
            a = {k: v.numpy() for k, v in take_arrays(s, info.take).items()}
            self.truth[a["mfcc_vocals"].tobytes()] = a
        self.calls = []

    def generate(self, mfcc_vocals, mfcc_music, mfcc_mix, subject, pose0=None, seed=0,
                 mfcc_index=None):
        a = self.truth[np.asarray(mfcc_vocals).tobytes()]
        self.calls.append((subject, np.asarray(pose0), seed))
        n = len(a["exp"])
        att = {k: np.tile(np.linspace(0, 1, 16), (n, 1)) for k in ("exp", "pose", "eye")}
        return {"exp": a["exp"], "pose": a["pose"], "speed": None, "e_long": a["eye_long"],
                "e_blink": a["eye_blink"], "eye": a["au45"], "att": att}


def test_oracle_scores_perfectly(dataset, tmp_path, monkeypatch):
    """Generation = ground truth: LMD 0, CCAs 1, the ground truth's own roughness and blink
    statistics."""
    import musicface.model

    oracle = Oracle(dataset / "shards")
    monkeypatch.setattr(musicface.model, "load_checkpoint", lambda path, device="cpu": (oracle, {}))
    ckpt = tmp_path / "run" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"oracle")
    r = EV.evaluate(ckpt, dataset / "shards", tmp_path / "eval", seed=5, progress=False)
    s, gt = r["summary"], r["ground_truth"]
    assert r["basis_sha256"] == hashlib.sha256((dataset / "exp_basis.npz").read_bytes()).hexdigest()
    assert sorted(r["takes"]) == ["alice_4", "bob_4"] and r["skipped"] == {}
    assert s["lmd_mouth"] == 0.0 and s["lmd_face"] == 0.0
    assert s["cca_pose_speed"] == pytest.approx(1.0, abs=1e-9)
    assert (s["cca_eye"] == pytest.approx(1.0, abs=1e-9)
            and s["cca_eye_combined"] == pytest.approx(1.0, abs=1e-9))
    assert s["lip_energy_corr"] == pytest.approx(gt["lip_energy_corr"], abs=1e-12)
    assert s["silent_open_ratio"] == pytest.approx(gt["silent_open_ratio"], abs=1e-12)
    assert gt["lip_energy_corr"] > 0.5  # the synthetic singers' mouths follow the real vocals
    # seeds: seed + rank; initial pose: the take's first valid pose
    assert ([c[2] for c in oracle.calls] == [5, 6]
            and [c[0] for c in oracle.calls] == ["alice", "bob"])
    # ground-truth reference values against independent computations on the shards
    from musicface.data import open_shards, take_arrays

    shards = open_shards(dataset / "shards")
    roughs, blinks, secs, durs = [], 0, 0.0, []
    for take in ("alice_4", "bob_4"):
        a = {k: v.numpy() for k, v in take_arrays(shards, take).items()}
        v = a["valid"].astype(bool)
        deg = np.degrees(a["pose"][:, :3].astype(np.float64))
        d2 = ((deg[2:] - 2 * deg[1:-1] + deg[:-2]) ** 2).sum(1)[v[2:] & v[1:-1] & v[:-2]]
        roughs.append((d2.mean(), v.sum()))
        closed = np.concatenate([[0], (a["au45"] >= 0.5) & v, [0]]).astype(int)
        starts, ends = np.flatnonzero(np.diff(closed) == 1), np.flatnonzero(np.diff(closed) == -1)
        short = (ends - starts) < 15
        blinks += short.sum()
        durs += list((ends - starts)[short] / 30)
        secs += v.sum() / 30
    assert gt["rough"] == pytest.approx(sum(x * w for x, w in roughs) / sum(w for _, w in roughs),
                                        rel=1e-6)
    assert (gt["blinks_per_s"] == pytest.approx(blinks / secs)
            and s["blinks_per_s"] == pytest.approx(gt["blinks_per_s"], rel=0.05))
    assert gt["blink_duration_s"] == pytest.approx(np.mean(durs), rel=1e-5)
    assert s["avc"]["value"] is None and "renderer" in s["avc"]["reason"]
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "| With-ATM | — | 0.00 | 0.00 |" in table and "| Ground truth |" in table


def test_missing_landmark_model_keeps_other_metrics(dataset, tmp_path, monkeypatch):
    """deep3d coefficients without the Basel Face Model: LMD and the lip proxy are null with the
    reason, every take is still scored for pose and eyes."""
    import musicface.model
    from preprocessing.common import save_npz

    save_npz(tmp_path / "identity.npz", identity=np.array(True))
    oracle = Oracle(dataset / "shards", basis=tmp_path / "identity.npz")
    monkeypatch.setattr(musicface.model, "load_checkpoint", lambda path, device="cpu": (oracle, {}))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"oracle")
    r = EV.evaluate(ckpt, dataset / "shards", tmp_path / "eval", progress=False)
    assert sorted(r["takes"]) == ["alice_4", "bob_4"]
    assert (r["summary"]["lmd_mouth"] is None
            and r["summary"]["cca_pose_speed"] == pytest.approx(1.0))
    assert r["notes"]["lmd_mouth"].startswith("landmark model failed:")
    # a model file without an embedded basis (written before it was embedded): the reason says so
    oracle.exp_basis = oracle.exp_basis_sha256 = None
    r = EV.evaluate(ckpt, dataset / "shards", tmp_path / "eval2", progress=False)
    assert r["summary"]["lmd_mouth"] is None and r["basis_sha256"] is None
    assert r["notes"]["lmd_mouth"].startswith("model.pt carries no expression basis")


@pytest.mark.slow  # trains two tiny models / runs SyncNet on CPU: ~1 min
def test_evaluate_cli_writes_metrics_table_and_figures(dataset, trained, tmp_path, run_cli):
    from PIL import Image

    out = tmp_path / "eval"
    proc = run_cli(["musicface.cli", "evaluate", "--checkpoint", trained["full"], "--shards",
                    dataset / "shards", "--out", out, "--seed", "0"])
    assert str(out / "table.md") in proc.stdout
    r = json.loads((out / "metrics.json").read_text())
    assert r["variant"] == "full" and sorted(r["takes"]) == ["alice_4", "bob_4"]
    s = r["summary"]
    for key in ("lmd_mouth", "lmd_face", "cca_pose_speed", "rough", "lip_energy_corr",
                "blinks_per_s"):
        assert isinstance(s[key], float) and math.isfinite(s[key]), key
    assert 0 <= s["cca_pose_speed"] <= 1 and s["lmd_mouth"] > 0 and s["rough"] >= 0
    assert (s["avc"] == {"value": None, "reason": s["avc"]["reason"]}
            and "--rendered" in s["avc"]["reason"])
    # pooled blink rate = all blinks / all seconds of the per-take statistics
    takes = r["takes"].values()
    assert s["blinks_per_s"] == pytest.approx(sum(t["blinks"]["n_blinks"] for t in takes)
                                              / sum(t["blinks"]["seconds"] for t in takes))
    # the test take with a tracking gap: 6 invalid frames
    assert r["takes"]["alice_4"]["valid_frames"] == r["takes"]["alice_4"]["n_frames"] - 6
    table = (out / "table.md").read_text()
    assert ("| Ours (full) |" in table and "Pose realism: CCA ↑" in table
            and "| Paper ground truth |" in table)
    for name, min_w in (("pose.png", 500), ("attention.png", 500), ("eye_durations.png", 500),
                        ("training.png", 300)):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= min_w, name


@pytest.mark.slow  # trains two tiny models / runs SyncNet on CPU: ~1 min
def test_ablation_table_orders_variants(dataset, trained, tmp_path, run_cli):
    paths = []
    for variant in ("single_stream", "full"):
        out = tmp_path / variant
        EV.evaluate(trained[variant], dataset / "shards", out, progress=False)
        paths.append(out / "metrics.json")
    single = json.loads(paths[0].read_text())
    assert single["variant"] == "single_stream"
    with __import__("PIL").Image.open(tmp_path / "single_stream" / "attention.png") as im:
        assert im.size[1] < 400  # a note ("no ATM"), not three maps
    table = tmp_path / "table.md"
    run_cli(["musicface.cli", "ablation-table", "--out", table, paths[1], paths[0]])
    rows = [ln for ln in table.read_text().splitlines() if ln.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["Single-Stream", "Ours (full)",
                                                          "Ground truth", "Paper ground truth"]
    assert "| 0.35 | 0.23 |" in rows[-1]


def test_evaluate_errors(dataset, tmp_path, run_cli):
    proc = run_cli(["musicface.cli", "evaluate", "--checkpoint", tmp_path / "nope.pt", "--shards",
                    dataset / "shards", "--out", tmp_path / "e"], check=False)
    assert proc.returncode == 1
    assert (proc.stderr.strip().splitlines()[-1]
            == f"musicface evaluate: checkpoint not found: {tmp_path / 'nope.pt'}")
    proc = run_cli(["musicface.cli", "ablation-table", "--out", tmp_path / "t.md",
                    tmp_path / "missing.json"], check=False)
    assert proc.returncode == 1 and "metrics file not found" in proc.stderr


def test_table_markdown_layout():
    r = {"variant": "two_stream", "takes": {"a": {}},
         "summary": {"avc": {"value": None, "reason": "no renderer"}, "lmd_mouth": 1.234,
                     "lmd_face": 0.5, "lip_energy_corr": 0.41, "silent_open_ratio": None,
                     "cca_pose_speed": 0.25, "rough": 0.0123, "cca_eye": 0.07,
                     "blinks_per_s": 0.38, "blink_duration_s": 0.26},
         "ground_truth": {"rough": 0.02, "blinks_per_s": 0.35, "blink_duration_s": 0.23}}
    text = EV.table_markdown([r])
    row = next(ln for ln in text.splitlines() if ln.startswith("| Two-Stream"))
    assert row == "| Two-Stream | — | 1.23 | 0.50 | 0.41 | — | 0.25 | 0.012 | 0.07 | 0.38 | 0.26 |"
    assert "AVC (two_stream): unavailable: no renderer" in text


@pytest.mark.slow  # trains two tiny models / runs SyncNet on CPU: ~1 min
def test_avc_on_a_rendered_video_with_syncnet_weights(tmp_path):
    """AVC plumbing on a real talking face (OpenCV's Megamind clip standing in for a renderer's
    output): 25 fps face crops + the video's own audio through SyncNet (random weights in its own
    format)."""
    import mediapipe as mp
    import torch
    from syncnet_python.SyncNetModel import S

    from preprocessing.media import decode_audio, iter_frames, write_video

    src = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
    if not src.exists():
        pytest.skip("Debian opencv-doc (Megamind.avi) is not installed")
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    frames = [rgb for i, rgb in iter_frames(src, fps=25, n_frames=75)]
    audio = decode_audio(src, 16000)[0][: 3 * 16000]
    write_video(rendered / "alice_4.mp4", frames, fps=25, audio=audio, sr=16000)

    crops = EV.face_crops(rendered / "alice_4.mp4")
    assert crops.shape == (75, 224, 224, 3) and crops.dtype == np.uint8
    with mp.solutions.face_detection.FaceDetection(model_selection=1) as det:
        found = det.process(crops[30]).detections
    box = found[0].location_data.relative_bounding_box
    # a centred face fills the crop
    assert 0.3 < box.width < 0.95 and 0.2 < box.xmin + box.width / 2 < 0.8

    torch.manual_seed(0)
    weights = tmp_path / "syncnet_v2.model"
    torch.save(S(num_layers_in_fc_layers=1024).state_dict(), weights)
    avc = EV.avc_value(weights, rendered, ["alice_4", "bob_4"])
    assert math.isfinite(avc["value"]) and avc["value"] >= 0
    assert avc["missing"] == ["bob_4"] and list(avc["per_take"]) == ["alice_4"]
    direct = M.syncnet_confidence(crops, decode_audio(rendered / "alice_4.mp4", 16000)[0],
                                  weights=weights)
    assert avc["value"] == pytest.approx(direct["confidence"], rel=1e-6)
    assert "SyncNet weights not configured" in EV.avc_value(None, rendered, ["alice_4"])["reason"]
    assert "not found" in EV.avc_value(tmp_path / "none.model", rendered, ["alice_4"])["reason"]
    assert "no rendered video" in EV.avc_value(weights, rendered, ["carol_1"])["reason"]


# --------------------------------------------------------------------------- against known truth
def _truth_case(n=900, fps=30):
    """A take's truth (the demo's per-frame layout) and a tracked take that equals it: a head moved
    by a beat-like speed, a mouth that opens on sung frames, one blink and one long closure."""
    t = np.arange(n) / fps
    rng = np.random.default_rng(0)
    speed = 0.2 + 0.15 * (np.sin(2 * np.pi * 2.0 * t) > 0.6)  # rad/s, pulses twice a second
    direction = np.stack([np.sin(0.7 * t), np.cos(0.5 * t), 0.3 * np.sin(0.3 * t)], 1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    steps = direction * (speed / fps)[:, None]
    angles = np.cumsum(steps, axis=0)
    pose = np.concatenate([angles, 0.01 * rng.standard_normal((n, 3)).cumsum(0)], 1)
    head_speed = (np.linalg.norm(np.diff(angles, axis=0, prepend=angles[:1] - steps[:1]), axis=1)
                  * fps)
    vocal = ((t % 4) < 2.5).astype(np.uint8)  # 2.5 s sung, 1.5 s rest
    mouth = vocal * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 3 * t)))
    eye = np.zeros(n)
    eye[60:66] = 1.0     # a 0.2 s blink
    eye[300:345] = 1.0   # a 1.5 s long closure
    events = np.array([[60, 66, 0.2, 0], [300, 345, 1.5, 1]], np.float32)
    truth = {"pose": pose.astype(np.float32), "head_speed": head_speed.astype(np.float32),
             "mouth_open": mouth.astype(np.float32), "vocal_activity": vocal, "events": events,
             "eye_closure": eye.astype(np.float32), "fps": fps, "offset_s": 0.0, "n_frames": n,
             "in_song": np.ones(n, bool)}
    gt = {"valid": np.ones(n, np.uint8), "pose": pose.copy(), "au45": eye.copy()}
    return truth, gt, mouth


def test_truth_scores_the_truth_as_perfect_and_a_wrong_generation_as_wrong():
    truth, gt, mouth = _truth_case()
    n, f = len(mouth), 8
    att = np.zeros((n, 2 * f))
    att[:, :f] = truth["vocal_activity"][:, None]   # vocal channels on exactly when sung
    att[:, f:] = 0.5
    gen = {"pose": truth["pose"].copy(), "eye": truth["eye_closure"].copy(), "att": {"exp": att}}
    pool = {"mouth": (mouth.copy(), mouth.copy())}
    row = EV.score_truth(gen, gt, truth, pool)
    assert row["head_speed_r"] == pytest.approx(1.0, abs=1e-9)
    assert row["head_speed_r"] == pytest.approx(row["head_speed_r_true"], abs=1e-12)
    assert row["cca_pose_speed_truth"] == pytest.approx(1.0, abs=1e-6)
    assert row["rough"] == pytest.approx(row["rough_true"], rel=1e-12)
    assert row["mouth_r"] == pytest.approx(1.0, abs=1e-9)
    assert row["silent_open_truth"] == 0.0
    assert (row["long_precision"], row["long_recall"]) == (1.0, 1.0)
    assert row["blinks_per_s"] == row["blinks_per_s_true"] == pytest.approx(1 / 30)
    a = row["attention"]["exp"]
    assert a["vocal_diff"] == pytest.approx(1.0) and a["off_fraction"] == 0.0
    summary, ref = EV.summarise_truth([row])
    assert summary["blink_duration_s"] == pytest.approx(0.2) == ref["blink_duration_s_true"]
    assert summary["att_vocal_diff_exp"] == pytest.approx(1.0) and summary["n_long"] == 1
    assert ref["head_speed_r_tracked"] == pytest.approx(1.0, abs=1e-9)

    # a generation that ignores the song: a still head, the mouth open in the rests, a long closure
    # where the truth has none and no blink; the attention constant and half of it shut off
    still = (np.tile(truth["pose"][:1], (n, 1))
             + 1e-3 * np.random.default_rng(1).standard_normal((n, 6)))
    eye = np.zeros(n)
    eye[600:660] = 1.0
    att = np.full((n, 2 * f), 0.05)
    att[:, f:] = 0.9
    bad = {"pose": still, "eye": eye, "att": {"exp": att}}
    row = EV.score_truth(bad, gt, truth, {"mouth": (1.0 - mouth, mouth.copy())})
    assert abs(row["head_speed_r"]) < 0.1
    assert row["mouth_r"] == pytest.approx(-1.0, abs=1e-9)
    assert row["silent_open_truth"] == 1.0
    assert (row["long_precision"], row["long_recall"], row["blinks_per_s"]) == (0.0, 0.0, 0.0)
    a = row["attention"]["exp"]
    assert a["vocal_diff"] == pytest.approx(0.0) and a["off_fraction"] == 0.5


def test_truth_files_and_their_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "a" / "t1.truth.npz", n_frames=10, fps=30, offset_s=-1.0)
    np.savez(tmp_path / "a" / "s1.truth.npz", seconds=0.2)
    files = EV.truth_files(tmp_path)
    assert sorted(files) == ["s1", "t1"]
    tr = EV.load_truth(files, "t1", "s1", 10)
    # frame i is at song time i/30 - 1: none of the 10 frames reaches the song's start
    assert not tr["in_song"].any()
    with pytest.raises(EV.StepError, match="the truth has 10 frames, the take 11"):
        EV.load_truth(files, "t1", "s1", 11)
    with pytest.raises(EV.StepError, match="no truth file t2.truth.npz"):
        EV.load_truth(files, "t2", "s1", 10)
    np.savez(tmp_path / "b" / "t1.truth.npz", n_frames=10)
    with pytest.raises(EV.StepError, match="two truth files for 't1'"):
        EV.truth_files(tmp_path)
    with pytest.raises(EV.StepError, match="truth folder not found"):
        EV.truth_files(tmp_path / "missing")
