"""preprocessing.qc on synthetic step outputs in docs/data.md's formats (and failure records).

``write_take`` (also used by test_split.py / test_shards.py) writes one take's intermediate
files."""
from __future__ import annotations

import json

import numpy as np

from preprocessing import qc
from preprocessing.common import read_failure, save_json, save_npz, write_failure

K = 478  # FaceMesh landmarks


def write_take(d, take, n=300, offset_s=1.25, confidence=10.0, valid=None, seed=0,
               blinks=((30, 36),), longs=((100, 130),), backend="builtin", audio_valid=None):
    """Write ingest/sync/mfcc/track/coeffs/au45/eyes of one synthetic take into folder ``d``.

    Known values: mfcc_*[r, 0] = r + 1000 * stream; pose[t] = 0.001 t (1..6); residual = low-rank
    random; landmarks2d random; eyes with the given blink / long-closure frame ranges; ``valid``
    the face's valid frames (track, coeffs, au45, eyes), ``audio_valid`` mfcc's (frames clear of
    song gaps; default all)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    m = -(-n * 100 // 30)
    valid = np.ones(n, np.uint8) if valid is None else np.asarray(valid, np.uint8)
    save_json(d / "ingest.json", {"take": take, "video": f"{take}.mp4", "n_frames": n, "fps": 30,
                                  "duration_s": n / 30, "width": 640, "height": 480,
                                  "source_fps": 30.0, "vfr": False, "has_audio": True,
                                  "audio_sr": 48000, "audio_channels": 1, "video_codec": "h264",
                                  "audio_codec": "aac"})
    save_json(d / "sync.json", {"take": take, "offset_s": offset_s, "confidence": confidence,
                                "method": "gcc-phat", "details": {}})
    mf = {}
    for j, k in enumerate(qc.MFCC_KEYS):
        a = rng.standard_normal((m, 26)).astype(np.float32)
        a[:, 0] = np.arange(m) + 1000 * j
        mf[k] = a
    audio_valid = np.ones(n, np.uint8) if audio_valid is None else np.asarray(audio_valid, np.uint8)
    save_npz(d / "mfcc.npz", offset_s=np.float64(offset_s), **mf, coverage=np.float32(1.0),
             valid=audio_valid)
    lm = rng.random((n, K, 3)).astype(np.float32)
    save_npz(d / "track.npz", landmarks=lm, valid=valid, interpolated=np.zeros(n, np.uint8),
             frame_size=np.tile(np.array([640, 480], np.int32), (n, 1)),
             bbox=np.tile(np.array([0.3, 0.2, 0.7, 0.8], np.float32), (n, 1)))
    t = np.arange(n, dtype=np.float32)
    pose = (t[:, None] * 0.001 * np.arange(1, 7)).astype(np.float32)
    coeffs = {"backend": np.array(backend), "pose": pose, "landmarks2d": lm[:, :, :2].copy(),
              "valid": valid, "take": np.array(take)}
    if backend == "builtin":
        latent = rng.standard_normal((n, 3))
        coeffs["residual"] = (latent @ rng.standard_normal((3, K * 3)) * 0.01).astype(np.float32)
    else:
        coeffs["exp"] = rng.standard_normal((n, 64)).astype(np.float32)
    save_npz(d / "coeffs.npz", **coeffs)
    au = rng.random(n).astype(np.float32) * 0.2
    blink = np.zeros(n, np.uint8)
    long_ = np.zeros(n, np.float32)
    for s, e in blinks:
        blink[s:e], au[s:e] = 1, 0.9
    for s, e in longs:
        long_[s:e], au[s:e] = 0.95, 0.95
    save_npz(d / "au45.npz", au45=au * 3, valid=valid, backend=np.array("builtin"))
    save_npz(d / "eyes.npz", au45=au, eye_long=long_, eye_blink=blink, valid=valid,
             events=np.zeros((0, 4), np.float32), stats_json=np.array("{}"))
    return {"pose": pose, "mfcc": mf, "valid": valid, "landmarks2d": lm[:, :, :2],
            "residual": coeffs.get("residual")}


def paths(d):
    return {k: d / f"{k}.{'json' if k in ('ingest', 'sync') else 'npz'}"
            for k in ("ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes")}


def run(d, **kw):
    kw = {"min_sync_confidence": 4.0, "min_valid_fraction": 0.8, "min_frames": 128, **kw}
    return qc.check_take("t1", "alice", "songA", paths(d), **kw)


def test_pass(tmp_path):
    write_take(tmp_path, "t1", n=300)
    r = run(tmp_path)
    assert r["status"] == "pass" and r["reasons"] == []
    assert (r["take"], r["subject"], r["song"], r["n_frames"]) == ("t1", "alice", "songA", 300)
    assert r["valid_fraction"] == 1.0 and r["sync_confidence"] == 10.0 and r["offset_s"] == 1.25
    assert r["duration_s"] == 10.0 and r["sync_method"] == "gcc-phat"


def test_all_reasons_at_once(tmp_path):
    v = np.zeros(100, np.uint8)
    v[:50] = 1
    write_take(tmp_path, "t1", n=100, confidence=2.5, valid=v)
    r = run(tmp_path, min_sync_confidence=4.0, min_valid_fraction=0.8, min_frames=128)
    assert r["status"] == "fail"
    assert r["reasons"] == ["too short: 100 frames < 128 (one training window)",
                            "low sync confidence: 2.50 < 4",
                            "too few valid frames: 50.0% < 80%"]
    assert r["valid_fraction"] == 0.5


def test_no_face(tmp_path):
    write_take(tmp_path, "t1", n=200, valid=np.zeros(200, np.uint8))
    assert run(tmp_path)["reasons"] == ["no face found in any frame"]


def test_failure_records_become_reasons(tmp_path):
    write_take(tmp_path, "t1")
    p = paths(tmp_path)
    # a corrupt video: ingest fails and every later step passes the same root cause on
    for k in ("ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes"):
        write_failure(p[k], "t1", "ingest",
                      "cannot open video: Invalid data found when processing input")
    r = run(tmp_path)
    assert r["status"] == "fail"
    assert r["reasons"] == ["ingest: cannot open video: Invalid data found when processing input"]
    assert r["n_frames"] is None


def test_separate_step_failure_and_unreadable(tmp_path):
    write_take(tmp_path, "t1")
    p = paths(tmp_path)
    write_failure(p["mfcc"], "t1", "separate", "song is silent")
    p["eyes"].write_bytes(b"garbage, not an npz")
    r = run(tmp_path)
    assert r["reasons"][0] == "separate: song is silent"
    assert r["reasons"][1].startswith("eyes: unreadable (")
    assert len(r["reasons"]) == 2


def test_length_mismatches(tmp_path):
    write_take(tmp_path, "t1", n=300)
    p = paths(tmp_path)
    z = dict(np.load(p["mfcc"]))
    z["mfcc_music"] = z["mfcc_music"][:-5]
    save_npz(p["mfcc"], **z)
    z = dict(np.load(p["coeffs"]))
    z["pose"] = z["pose"][:299]
    save_npz(p["coeffs"], **z)
    r = run(tmp_path)
    assert r["reasons"] == ["mfcc length mismatch: mfcc_music has shape (995, 26), expected (1000, "
                            "26) for 300 frames",
                            "coeffs length mismatch: pose has 299 frames, expected 300"]


def test_stale_mfcc_and_nan(tmp_path):
    write_take(tmp_path, "t1", n=300)
    p = paths(tmp_path)
    z = dict(np.load(p["mfcc"]))
    z["offset_s"] = np.float64(2.0)
    save_npz(p["mfcc"], **z)
    z = dict(np.load(p["coeffs"]))
    z["pose"][10, 2] = np.nan
    save_npz(p["coeffs"], **z)
    r = run(tmp_path)
    assert r["reasons"] == ["mfcc: computed with offset 2.000 s but sync says 1.250 s (stale file)",
                            "coeffs: non-finite values in pose on valid frames"]
    # NaN in an invalid frame is fine (the shards store 0 there)
    z["valid"][10] = 0
    save_npz(p["coeffs"], **z)
    z = dict(np.load(p["mfcc"]))
    z["offset_s"] = np.float64(1.25)
    save_npz(p["mfcc"], **z)
    assert run(tmp_path)["status"] == "pass"


def test_cli(tmp_path, run_cli):
    d = tmp_path / "take dir 'x'"
    write_take(d, "t1", n=90)
    out = d / "qc.json"
    args = ["preprocessing.qc", "--take", "t1", "--subject", "alice", "--song", "songA"]
    for k, v in paths(d).items():
        args += [f"--{k}", v]
    proc = run_cli(args + ["--min-sync-confidence", "4", "--min-valid-fraction", "0.8",
                           "--min-frames", "128", "--out", out])
    r = json.loads(out.read_text())
    assert read_failure(out) is None
    assert r["status"] == "fail" and r["reasons"] == ["too short: 90 frames < 128 (one training "
                                                      "window)"]
    assert r["thresholds"] == {"min_sync_confidence": 4.0, "min_valid_fraction": 0.8,
                               "min_frames": 128}
    assert "qc t1: fail: too short" in proc.stderr


def test_low_sync_confidence_says_why(tmp_path):
    """A repeated section (a clear match, but another offset fits as well) names both offsets; a
    take aligned by mouth movement says why its camera audio was not used; a wrong song says
    nothing more."""
    write_take(tmp_path, "t1", confidence=0.0)
    sync = json.loads((tmp_path / "sync.json").read_text())
    loop = [{"offset_s": 7.334, "lead": 0.0, "telling_s": 0.0},
            {"offset_s": -2.1, "lead": 40.0, "telling_s": 2.0}]
    cases = [
        ({"trimmed_psr": 60.0, "competitors": loop}, "gcc-phat",
         " (the take fits the song about as well at +1.250 s and +7.334 s: a repeated section)"),
        ({"trimmed_psr": 3.0, "competitors": loop[:1]}, "gcc-phat", ""),
        ({"why_not_camera": "no audio track"}, "mouth-envelope",
         " (aligned by mouth movement: no audio track)"),
    ]
    for details, method, why in cases:
        save_json(tmp_path / "sync.json", {**sync, "method": method, "details": details})
        reasons = run(tmp_path, min_sync_confidence=7.0)["reasons"]
        assert reasons == [f"low sync confidence: 0.00 < 7{why}"]


def test_frames_over_song_gaps_count_out(tmp_path):
    """mfcc.npz ``valid`` (frames whose audio window reads a stretch of the song that did not
    decode) is ANDed with the face's valid frames; the reason says how much the song's gaps took
    (only when they took some); a missing or short mask is a reason like any per-frame array's."""
    face = np.ones(200, np.uint8)
    face[:40] = 0                                   # frames 0-39: no face
    audio = np.ones(200, np.uint8)
    audio[20:70] = 0                                # frames 20-69: over a song gap
    write_take(tmp_path, "t1", n=200, valid=face, audio_valid=audio)
    r = run(tmp_path)
    assert r["valid_fraction"] == 130 / 200         # 70 frames lost, 20 of them both ways
    assert r["reasons"] == ["too few valid frames: 65.0% < 80% (25.0% over corrupt stretches of "
                            "the song)"]
    r = run(tmp_path, min_valid_fraction=0.6)
    assert r["status"] == "pass" and r["valid_fraction"] == 0.65
    write_take(tmp_path, "t1", n=200, valid=face)   # the song decodes whole: no word about it
    assert run(tmp_path, min_valid_fraction=0.9)["reasons"] == [
        "too few valid frames: 80.0% < 90%"]
    p = paths(tmp_path)
    z = dict(np.load(p["mfcc"]))
    z["valid"] = z["valid"][:199]
    save_npz(p["mfcc"], **z)
    assert run(tmp_path)["reasons"] == ["mfcc length mismatch: valid has 199 frames, expected 200"]
    del z["valid"]
    save_npz(p["mfcc"], **z)
    assert run(tmp_path)["reasons"] == ["mfcc: missing array 'valid'"]
