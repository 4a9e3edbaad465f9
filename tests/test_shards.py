"""preprocessing.shards: synthetic per-take files -> HDF5 shards (docs/data.md), deterministic,
atomic; the shard schema round trip (writer, manifest, reader)."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from musicface.data import open_shards
from preprocessing import shards as sh
from preprocessing.coeffs import expression_from_coeffs, fit_basis
from preprocessing.common import load_npz, save_npz, write_failure
from test_qc import write_take

TAKES = [("t_b", "bob", "song1", "train"), ("t_a", "ann", "song1", "train"),
         ("t_c", "ann", "song2", "test"), ("t_d", "cid", "song2", "train")]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    for i, (take, *_rest) in enumerate(TAKES):
        valid = np.ones(200 + 10 * i, np.uint8)
        if take == "t_a":
            valid[20:30] = 0
        write_take(root / "work" / "takes" / take, take, n=200 + 10 * i, offset_s=0.5 * i,
                   confidence=5.0 + i, valid=valid, seed=i)
    ds = root / "dataset"
    ds.mkdir()
    pd.DataFrame(TAKES, columns=["take", "subject", "song", "split"]).to_csv(ds / "split.tsv",
                                                                             sep="\t", index=False)
    fit_basis(ds / "split.tsv", [root / "work" / "takes" / t[0] / "coeffs.npz" for t in TAKES],
              ds / "exp_basis.npz", dim=6)
    return root


CONFIG = {"coeffs": {"exp_dim": 6, "backend": "builtin"}, "separate": {"backend": "builtin"},
          "qc": {"min_frames": 128}, "train": {"name": "x"}}


def build(root, out="dataset/shards", per_shard=2, config=CONFIG):
    return subprocess.run([sys.executable, "-m", "preprocessing.shards", "--split",
                           "dataset/split.tsv", "--basis", "dataset/exp_basis.npz", "--work",
                           "work/takes", "--takes-per-shard", str(per_shard), "--config-json",
                           json.dumps(config), "--out", out],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_layout_and_values(work):
    p = build(work)
    assert p.returncode == 0, p.stderr
    out = work / "dataset" / "shards"
    assert sorted(x.name for x in out.iterdir()) == ["manifest.json", "test-00000.h5",
                                                     "train-00000.h5", "train-00001.h5"]
    man = json.loads((out / "manifest.json").read_text())
    assert [(f["name"], f["takes"]) for f in man["files"]] == [
        ("train-00000.h5", ["t_a", "t_b"]), ("train-00001.h5", ["t_d"]), ("test-00000.h5", ["t_c"])]
    assert man["subjects"] == ["ann", "bob", "cid"] and man["n_takes"] == 4 and man["exp_dim"] == 6
    basis = load_npz(work / "dataset" / "exp_basis.npz")
    with h5py.File(out / "train-00000.h5") as f:
        a = f.attrs
        assert (a["schema_version"], a["fps"], a["mfcc_rate"], a["exp_dim"]) == (1, 30, 100, 6)
        assert list(a["subjects"].astype(str)) == ["ann", "bob", "cid"]
        assert a["config_sha"] == man["config_sha"] and len(a["config_sha"]) == 16
        assert sorted(f["takes"]) == ["t_a", "t_b"]
        g = f["takes/t_a"]
        ga = g.attrs
        assert (ga["subject"], ga["subject_index"], ga["song"], ga["split"], ga["n_frames"]) == \
            ("ann", 0, "song1", "train", 210)
        assert (ga["offset_s"], ga["sync_method"], ga["sync_confidence"]) == (0.5, "gcc-phat", 6.0)
        assert json.loads(ga["backends"]) == {"au45": "builtin", "coeffs": "builtin",
                                              "separate": "builtin", "sync": "gcc-phat",
                                              "track": "mediapipe-facemesh"}
        assert "numpy" in json.loads(ga["tool_versions"])
        n, m = 210, 700
        want = {"mfcc_vocals": ("<f4", (m, 26)), "mfcc_music": ("<f4", (m, 26)),
                "mfcc_mix": ("<f4", (m, 26)), "exp": ("<f4", (n, 6)), "pose": ("<f4", (n, 6)),
                "au45": ("<f4", (n,)), "eye_long": ("<f4", (n,)), "eye_blink": ("|u1", (n,)),
                "valid": ("|u1", (n,)), "landmarks": ("<f2", (n, 478, 2))}
        assert {k: (g[k].dtype.str, g[k].shape) for k in g} == want
        assert g["exp"].chunks == (n, 6) and g["mfcc_mix"].chunks == (m, 26)  # shorter than a chunk
        assert g["pose"].compression == "gzip" and g["pose"].shuffle
        # values: exactly the step outputs; invalid frames (20:30) hold zeros
        src = {k: load_npz(work / "work/takes/t_a" / f"{k}.npz")
               for k in ("mfcc", "coeffs", "eyes")}
        for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
            np.testing.assert_array_equal(g[k][()], src["mfcc"][k])
        v = g["valid"][()].astype(bool)
        assert v.sum() == 200 and not v[20:30].any()
        np.testing.assert_array_equal(g["pose"][()][v], src["coeffs"]["pose"][v])
        assert not g["pose"][()][~v].any() and not g["landmarks"][()][~v].any()
        exp = expression_from_coeffs(src["coeffs"], basis)
        np.testing.assert_allclose(g["exp"][()], exp, rtol=0, atol=0)
        assert np.abs(g["exp"][()][v]).max() > 1e-3  # a real projection, not zeros
        np.testing.assert_allclose(g["landmarks"][()][v],
                                   src["coeffs"]["landmarks2d"][v], atol=5e-4)
        np.testing.assert_array_equal(g["eye_blink"][()], src["eyes"]["eye_blink"])
        np.testing.assert_array_equal(g["eye_long"][()][v], src["eyes"]["eye_long"][v])
    # the reader sees the same
    s = open_shards(out)
    assert [(t.take, t.subject_index, t.split) for t in s.takes()] == [
        ("t_a", 0, "train"), ("t_b", 1, "train"), ("t_c", 0, "test"), ("t_d", 2, "train")]


def test_deterministic_bytes(work):
    assert build(work, out="dataset/s1").returncode == 0
    assert build(work, out="dataset/s2").returncode == 0
    for name in ("train-00000.h5", "train-00001.h5", "test-00000.h5", "manifest.json"):
        assert ((work / "dataset/s1" / name).read_bytes()
                == (work / "dataset/s2" / name).read_bytes()), name
    # the model/train config does not enter config_sha
    assert build(work, out="dataset/s3",
                 config={**CONFIG, "train": {"name": "other"}}).returncode == 0
    assert ((work / "dataset/s3/train-00000.h5").read_bytes()
            == (work / "dataset/s1/train-00000.h5").read_bytes())
    assert build(work, out="dataset/s4",
                 config={**CONFIG, "qc": {"min_frames": 64}}).returncode == 0
    m1 = json.loads((work / "dataset/s1/manifest.json").read_text())
    m4 = json.loads((work / "dataset/s4/manifest.json").read_text())
    assert m1["config_sha"] != m4["config_sha"]


def test_schema_round_trip(work, monkeypatch):
    """One schema for writer and reader: a take's attributes survive HDF5 and the manifest
    unchanged, the arrays have the schema's dtypes, the reader learns the set from the manifest."""
    import shutil

    import musicface.data
    from preprocessing import shard_schema as S

    meta = {"subject": "ann", "subject_index": 2, "song": "s", "split": "test", "offset_s": -0.25,
            "sync_method": "syncnet", "sync_confidence": 6.5, "n_frames": 210,
            "backends": {"sync": "syncnet", "au45": "builtin"}, "tool_versions": {"numpy": "2"}}
    stored = S.to_attrs(meta)
    assert list(stored) == list(S.TAKE_ATTRS)
    assert stored["backends"] == '{"au45": "builtin", "sync": "syncnet"}'
    assert S.from_attrs(stored) == meta and S.from_attrs(S.to_attrs(S.from_attrs(stored))) == meta

    assert build(work, out="dataset/rt").returncode == 0
    out = work / "dataset" / "rt"
    man = json.loads((out / "manifest.json").read_text())
    for f in sorted(out.glob("*.h5")):
        with h5py.File(f) as h:
            assert S.root_meta(h.attrs) == S.root_meta(man) and int(h.attrs["schema_version"]) == 1
            for take, g in h["takes"].items():
                assert S.from_attrs(g.attrs) == S.from_attrs(man["takes"][take])
                assert man["takes"][take]["file"] == f.name
                dtypes = {k: d for k, (d, _) in S.ARRAYS.items()}
                assert {k: g[k].dtype.str[1:] for k in g} == dtypes
    via_files = [t for f in ("train-00000.h5", "train-00001.h5", "test-00000.h5")
                 for t in open_shards(out / f).takes()]

    def no_hdf5(*a, **k):
        raise AssertionError("open_shards opened an HDF5 file")

    monkeypatch.setattr(musicface.data.h5py, "File", no_hdf5)
    s = open_shards(out)
    assert sorted(s.takes(), key=lambda t: t.take) == sorted(via_files, key=lambda t: t.take)
    assert [(t.offset_s, t.backends, t.tool_versions) for t in s.takes()] == \
        [(t.offset_s, t.backends, t.tool_versions) for t in sorted(via_files, key=lambda t: t.take)]
    assert (s.subjects, s.exp_dim, s.fps) == (["ann", "bob", "cid"], 6, 30)
    assert s.config_sha == man["config_sha"]
    monkeypatch.undo()
    # a manifest without the takes' attributes (written before they were added): read from the files
    old = work / "dataset" / "rt-old"
    shutil.copytree(out, old)
    man["takes"] = {t: {"file": v["file"], "split": v["split"]} for t, v in man["takes"].items()}
    (old / "manifest.json").write_text(json.dumps(man))
    assert [t.take for t in open_shards(old).takes()] == [t.take for t in s.takes()]


def test_atomic_replace_and_stale_temp(work, monkeypatch):
    out = work / "dataset" / "atomic"
    assert build(work, out="dataset/atomic").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    stale = work / "dataset" / ".atomic.tmp-killed"  # what a SIGKILLed run leaves
    stale.mkdir()
    (stale / "train-00000.h5").write_bytes(b"half")
    # a run that dies half-way leaves the previous set untouched and no temp folder
    calls = []

    def boom(path, takes, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, takes, *a, **k)

    real = sh.write_shard
    monkeypatch.setattr(sh, "write_shard", boom)
    with pytest.raises(KeyboardInterrupt):
        sh.build(work / "dataset/split.tsv", work / "dataset/exp_basis.npz", work / "work/takes",
                 out, 2, CONFIG)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the stale one was cleaned at start, ours on failure
    assert not list(out.parent.glob(".atomic.tmp-*"))
    monkeypatch.setattr(sh, "write_shard", real)
    sh.build(work / "dataset/split.tsv", work / "dataset/exp_basis.npz", work / "work/takes",
             out, 3, CONFIG)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test-00000.h5",
                                                     "train-00000.h5"]


def test_errors(work, tmp_path):
    # an empty split (every take failed QC): one clear line, exit 1
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset/split.tsv").write_text("take\tsubject\tsong\tsplit\n")
    save_npz(tmp_path / "dataset/exp_basis.npz", identity=np.array(True))
    p = build(tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == ("musicface: step 'shards': no take passed QC "
                                                 "(dataset/split.tsv is empty): see qc.tsv beside "
                                                 "it")
    assert not (tmp_path / "dataset/shards").exists()
    # a take of split.tsv whose file turned into a failure record
    bad = work / "bad"
    bad.mkdir()
    import shutil

    shutil.copytree(work / "work", bad / "work")
    shutil.copytree(work / "dataset", bad / "dataset",
                    ignore=shutil.ignore_patterns("s[0-9]", "shards", "atomic"))
    write_failure(bad / "work/takes/t_c/track.npz", "t_c", "track", "no face found in any frame")
    p = build(bad)
    assert p.returncode == 1
    assert ("musicface: step 'shards': take 't_c' passed QC but upstream step 'track' failed: "
            "no face found in any frame") in p.stderr


def test_deep3d_exp_as_is(tmp_path):
    d = tmp_path / "work/takes/x1"
    write_take(d, "x1", n=150, backend="deep3d")
    t = sh.assemble_take(d, {"identity": np.array(True)}, "x1", "s", "g", "train", "spleeter")
    np.testing.assert_array_equal(t.arrays["exp"], load_npz(d / "coeffs.npz")["exp"])
    assert t.backends["coeffs"] == "deep3d" and t.backends["separate"] == "spleeter"
    assert t.arrays["exp"].shape == (150, 64) and t.arrays["landmarks"].dtype == np.float16


def test_frames_over_song_gaps_are_invalid(tmp_path):
    """``valid`` = face (track AND coeffs AND eyes) AND audio (mfcc.npz ``valid``: the frame's
    MFCC window reads no stretch of the song that failed to decode); every per-frame array holds 0
    where it is 0, the MFCC rows are kept as they are. A take whose mfcc.npz has no mask (an older
    file) is refused by name."""
    from preprocessing.common import StepError

    d = tmp_path / "work/takes/x1"
    face = np.ones(150, np.uint8)
    face[10:20] = 0
    audio = np.ones(150, np.uint8)
    audio[15:60] = 0
    src = write_take(d, "x1", n=150, valid=face, audio_valid=audio, backend="deep3d")
    t = sh.assemble_take(d, {"identity": np.array(True)}, "x1", "s", "g", "train")
    v = t.arrays["valid"]
    assert v.dtype == np.uint8 and v.sum() == 150 - 50 and not v[10:60].any() and v[60:].all()
    for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "landmarks"):
        assert not t.arrays[k][10:60].any(), k
    np.testing.assert_array_equal(t.arrays["pose"][60:], src["pose"][60:])
    np.testing.assert_array_equal(t.arrays["mfcc_mix"], src["mfcc"]["mfcc_mix"])
    z = load_npz(d / "mfcc.npz")
    del z["valid"]
    save_npz(d / "mfcc.npz", **z)
    with pytest.raises(StepError, match=r"^take 'x1' passed QC but its mfcc\.npz has no 'valid' "
                                        r"array \(written by an older MusicFace: rerun the mfcc "
                                        r"step\)$"):
        sh.assemble_take(d, {"identity": np.array(True)}, "x1", "s", "g", "train")
