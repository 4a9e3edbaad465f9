"""musicface.data: the shard reader (open_shards, WindowDataset, take_arrays, inspect) on synthetic
shards whose every number is known."""
from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from musicface import data
from musicface.data import (
    ShardError,
    WindowDataset,
    mfcc_centres,
    mfcc_span,
    open_shards,
    padded_rows,
    take_arrays,
)
from preprocessing.mfcc import mfcc_windows
from preprocessing.shard_schema import SCHEMA_VERSION
from preprocessing.shards import TakeData, n_mfcc_rows, write_shard_set

E = 8  # exp_dim of the synthetic takes


def make_take(name, subject, split, n, seed, gaps=(), blinks=(), longs=()):
    """A take whose arrays encode their own indices: mfcc row r of stream j holds r + 1000 j in
    column 0, exp[t, 0] = t, pose[t] = t * 0.01 * (1..6); invalid frames (gaps) hold zeros."""
    rng = np.random.default_rng(seed)
    m = n_mfcc_rows(n)
    arrays = {}
    for j, k in enumerate(data.MFCC_KEYS):
        a = rng.standard_normal((m, 26)).astype(np.float32)
        a[:, 0] = np.arange(m) + 1000 * j
        arrays[k] = a
    t = np.arange(n, dtype=np.float32)
    valid = np.ones(n, np.uint8)
    for s, e in gaps:
        valid[s:e] = 0
    exp = rng.standard_normal((n, E)).astype(np.float32)
    exp[:, 0] = t
    pose = (t[:, None] * 0.01 * np.arange(1, 7, dtype=np.float32)).astype(np.float32)
    eye_blink = np.zeros(n, np.uint8)
    eye_long = np.zeros(n, np.float32)
    for s, e in blinks:
        eye_blink[s:e] = 1
    for s, e in longs:
        eye_long[s:e] = 0.8
    arrays.update(exp=exp, pose=pose, au45=rng.random(n).astype(np.float32), eye_long=eye_long,
                  eye_blink=eye_blink, valid=valid,
                  landmarks=rng.random((n, 5, 2)).astype(np.float32))
    for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "landmarks"):
        arrays[k][valid == 0] = 0
    return TakeData(take=name, subject=subject, song=f"song_{name}", split=split, offset_s=1.5,
                    sync_method="gcc-phat", sync_confidence=12.0, arrays=arrays,
                    backends={"coeffs": "builtin"}, tool_versions={"numpy": np.__version__})


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "shards"
    takes = [
        make_take("a1", "zoe", "train", 400, 1, blinks=[(10, 14), (100, 103), (200, 206)],
                  longs=[(300, 330)]),
        make_take("a2", "zoe", "train", 300, 2, gaps=[(50, 60), (200, 300)]),
        make_take("b1", "adam", "train", 500, 3, blinks=[(40, 45)]),
        make_take("b2", "adam", "test", 260, 4),
        make_take("c1", "mia", "train", 100, 5),  # shorter than a window: never sampled
    ]
    write_shard_set(out, takes, takes_per_shard=2, cfg_sha="cafe")
    return out


def test_open_shards_metadata(shard_dir):
    s = open_shards(shard_dir)
    assert s.subjects == ["adam", "mia", "zoe"]  # sorted: the model's one-hot order
    assert (s.exp_dim, s.fps, s.mfcc_rate, s.config_sha) == (E, 30, 100, "cafe")
    assert [t.take for t in s.takes()] == ["a1", "a2", "b1", "b2", "c1"]
    assert [t.take for t in s.takes("test")] == ["b2"]
    assert [t.take for t in s.takes("train")] == ["a1", "a2", "b1", "c1"]
    a2 = s.take("a2")
    assert (a2.subject, a2.subject_index, a2.song, a2.split, a2.n_frames) == ("zoe", 2, "song_a2",
                                                                              "train", 300)
    assert (a2.offset_s, a2.sync_method, a2.sync_confidence) == (1.5, "gcc-phat", 12.0)
    assert a2.backends == {"coeffs": "builtin"} and a2.tool_versions == {"numpy": np.__version__}
    assert a2.shard.endswith("train-00000.h5") and s.take("c1").shard.endswith("train-00001.h5")
    assert len(s.files) == 3  # 4 train takes / 2 per shard + 1 test file
    # one file opens on its own too
    one = open_shards(s.take("b2").shard)
    assert [t.take for t in one.takes()] == ["b2"] and one.subjects == s.subjects


def test_unknown_schema_version_refused(shard_dir, tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes((shard_dir / "test-00000.h5").read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(ShardError) as e:
        open_shards(bad)
    assert str(e.value).startswith(f"{bad}: shard schema_version 2 is not supported by this reader "
                                   f"(schema_version {SCHEMA_VERSION})")
    with h5py.File(bad, "r+") as f:
        del f.attrs["schema_version"]
    with pytest.raises(ShardError, match="not a MusicFace shard"):
        open_shards(bad)


def test_missing_file_and_empty_split(shard_dir, tmp_path):
    with pytest.raises(ShardError, match="no such shard folder or file"):
        open_shards(tmp_path / "nope")
    broken = tmp_path / "shards"
    broken.mkdir()
    man = json.loads((shard_dir / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ShardError, match="missing: train-00000.h5, train-00001.h5"):
        open_shards(broken)
    with pytest.raises(ShardError, match="no 'valid' takes"):
        WindowDataset(shard_dir, split="valid")


def test_mfcc_window_contract():
    """window t is centred on row round(t * 100 / 30); rows outside replicate the edge rows."""
    n = 50
    m = n_mfcc_rows(n)
    assert m == 167
    feats = np.arange(m, dtype=np.float32)[:, None].repeat(26, 1)
    w = mfcc_windows(feats, n)
    assert w.shape == (n, 39, 26) and w.dtype == np.float32
    for t in (0, 1, 2, 3, 10, 25, 49):
        centre = int(np.round(t * 100 / 30))
        want = np.clip(np.arange(centre - 19, centre + 20), 0, m - 1)
        np.testing.assert_array_equal(w[t, :, 0], want)
    assert w[0, 0, 0] == 0 and w[0, 19, 0] == 0 and w[1, 19, 0] == 3 and w[2, 19, 0] == 7
    assert w[49, 38, 0] == m - 1  # row 163 + 19 is past the end: replicated
    # the item contract: windows cut from padded rows at the centre rows are those windows
    rng = np.random.default_rng(0)
    f = rng.standard_normal((m, 26)).astype(np.float32)
    np.testing.assert_array_equal(cut(padded_rows(f), mfcc_centres(0, n, m)), mfcc_windows(f, n))
    np.testing.assert_array_equal(mfcc_centres([0, 7], 20, [m, 30])[1],
                                  np.minimum(mfcc_centres(7, 20, m), 29))
    # R: the rows any W consecutive frames' windows cover (30 fps, 100 Hz: 3.33 rows per frame)
    assert [mfcc_span(w) for w in (1, 2, 3, 64, 128)] == [39, 43, 46, 249, 463]
    for w in (5, 64, 128):
        spans = [c[-1] - c[0] + 39 for c in (mfcc_centres(s, w, 10**6) for s in range(90))]
        assert max(spans) == mfcc_span(w) and min(spans) >= mfcc_span(w) - 1


def cut(rows, index, width=39):
    """Frame t's window = rows[index[t] : index[t] + width] (numpy, the item contract)."""
    return np.asarray(rows)[np.asarray(index)[..., None] + np.arange(width)]


def test_mix64_vectorised_equals_scalar():
    idx = np.arange(0, 10**6, 997, dtype=np.int64)
    for seed, epoch in ((0, 0), (7, 3), (-1, 2**40)):
        want = [data._mix64(seed, epoch, int(i)) for i in idx]
        assert data._mix64_array(seed, epoch, idx).tolist() == want


def test_item_shapes_dtypes_and_values(shard_dir):
    s = open_shards(shard_dir)
    ds = WindowDataset(s, split="train", window=128, samples_per_epoch=64, seed=3)
    assert len(ds) == 64
    assert ds.mfcc_rows == 463
    want = {"mfcc_vocals": ((463, 26), torch.float32), "mfcc_music": ((463, 26), torch.float32),
            "mfcc_mix": ((463, 26), torch.float32), "mfcc_index": ((128,), torch.int64),
            "exp": ((128, E), torch.float32),
            "pose": ((128, 6), torch.float32), "pose_vel": ((128, 6), torch.float32),
            "au45": ((128,), torch.float32), "eye_long": ((128,), torch.float32),
            "eye_blink": ((128,), torch.float32), "valid": ((128,), torch.float32),
            "subject": ((), torch.int64), "start": ((), torch.int64)}
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert {k: (tuple(v.shape), v.dtype) for k, v in item.items()} == want
        info, st = ds.take_of(i), int(item["start"])
        seen.add(info.take)
        assert item["subject"].item() == s.subjects.index(info.subject)
        assert 0 <= st <= info.n_frames - 128
        # exp[:, 0] encodes the frame index (0 in invalid frames)
        t = np.arange(st, st + 128)
        v = item["valid"].numpy()
        np.testing.assert_array_equal(item["exp"][:, 0].numpy(), np.where(v > 0, t, 0))
        # the MFCC window of frame t is centred on row round(t*100/30) (column 0 holds the row
        # index)
        vocals, mix = (cut(item[k], item["mfcc_index"]) for k in ("mfcc_vocals", "mfcc_mix"))
        np.testing.assert_array_equal(vocals[:, 19, 0], np.round(t * 100 / 30))
        np.testing.assert_array_equal(mix[:, 19, 0], np.round(t * 100 / 30) + 2000)
        np.testing.assert_array_equal(vocals[:, 0, 0], np.maximum(np.round(t * 100 / 30) - 19, 0))
        assert item["mfcc_index"][0] == 0 and item["mfcc_index"][-1] <= 463 - 39
        assert v.mean() >= 0.9
    assert seen == {"a1", "a2", "b1"}  # c1 (100 frames) can hold no 128-frame window


def test_item_equals_take_arrays_slice(shard_dir):
    s = open_shards(shard_dir)
    ds = WindowDataset(s, window=64, samples_per_epoch=40, seed=1, min_valid_fraction=0.5)
    for i in range(40):
        item, take = ds[i], ds.take_of(i).take
        whole = take_arrays(s, take)
        st = int(item["start"])
        for k in data.ITEM_KEYS:
            if k in ("subject", "start", "mfcc_index"):
                continue
            if k in data.MFCC_KEYS:  # the same windows, cut from the item's rows and the take's
                a = cut(item[k], item["mfcc_index"])
                b = cut(whole[k], whole["mfcc_index"][st:st + 64])
                np.testing.assert_array_equal(a, b, err_msg=f"{take} {k} @ {st}")
                continue
            torch.testing.assert_close(item[k], whole[k][st:st + 64], rtol=0, atol=0,
                                       msg=f"{take} {k} @ {st}")
        assert item["subject"] == whole["subject"]
    whole = take_arrays(s, "b2")
    m = n_mfcc_rows(260)
    assert whole["mfcc_music"].shape == (m + 38, 26) and whole["landmarks"].shape == (260, 5, 2)
    np.testing.assert_array_equal(whole["mfcc_index"].numpy(), mfcc_centres(0, 260, m))
    with h5py.File(s.take("b2").shard) as f:
        music = f["takes"]["b2"]["mfcc_music"][()]
    np.testing.assert_array_equal(cut(whole["mfcc_music"], whole["mfcc_index"]),
                                  mfcc_windows(music, 260))
    assert whole["landmarks"].dtype == torch.float32 and whole["start"].item() == 0


def test_pose_velocity(shard_dir):
    whole = take_arrays(shard_dir, "a2")  # pose[t] = 0.01 t (1..6), gaps at 50:60 and 200:300
    vel = whole["pose_vel"].numpy()
    step = (0.01 * np.arange(1, 7)).astype(np.float32)
    assert np.all(vel[0] == 0)  # take start
    np.testing.assert_allclose(vel[1:50], np.tile(step, (49, 1)), atol=1e-5)
    assert np.all(vel[50:61] == 0)  # invalid frames and the first frame after the gap
    np.testing.assert_allclose(vel[61:200], np.tile(step, (139, 1)), atol=1e-5)
    assert np.all(vel[200:] == 0)


def test_windows_respect_valid_fraction(shard_dir):
    ds = WindowDataset(shard_dir, window=128, seed=0, min_valid_fraction=0.9)
    # brute force: eligible starts of each take
    s = open_shards(shard_dir)
    for info, starts in zip(ds.infos, ds.starts):
        v = take_arrays(s, info.take)["valid"].numpy()
        brute = [st for st in range(info.n_frames - 127)
                 if v[st:st + 128].sum() >= np.ceil(0.9 * 128)]
        np.testing.assert_array_equal(starts, brute)
    a2 = next(st for info, st in zip(ds.infos, ds.starts) if info.take == "a2")
    np.testing.assert_array_equal(a2, np.arange(85))  # up to 12 invalid frames: starts 0..84
    assert ds.n_windows == (400 - 127) + len(a2) + (500 - 127)
    strict = WindowDataset(shard_dir, window=128, min_valid_fraction=1.0)
    a2 = next(st for info, st in zip(strict.infos, strict.starts) if info.take == "a2")
    np.testing.assert_array_equal(a2, np.arange(60, 73))  # fully valid only between the gaps


def test_sampling_uniform_over_windows(shard_dir):
    ds = WindowDataset(shard_dir, window=128, samples_per_epoch=20000, seed=7)
    counts = {}
    for i in range(len(ds)):
        k, _ = ds.locate(i)
        counts[ds.infos[k].take] = counts.get(ds.infos[k].take, 0) + 1
    for info, starts in zip(ds.infos, ds.starts):
        expected = 20000 * len(starts) / ds.n_windows
        assert abs(counts[info.take] - expected) < 4 * np.sqrt(expected), (info.take,
                                                                           counts, expected)


def test_deterministic_and_epochs(shard_dir):
    a = WindowDataset(shard_dir, samples_per_epoch=50, seed=0)
    b = WindowDataset(shard_dir, samples_per_epoch=50, seed=0)
    starts0 = [(a.take_of(i).take, int(a[i]["start"])) for i in range(50)]
    assert starts0 == [(b.take_of(i).take, int(b[i]["start"])) for i in reversed(range(50))][::-1]
    a.set_epoch(1)
    starts1 = [(a.take_of(i).take, int(a[i]["start"])) for i in range(50)]
    assert sum(x != y for x, y in zip(starts0, starts1)) >= 45
    c = WindowDataset(shard_dir, samples_per_epoch=50, seed=1)
    assert sum(x != y for x, y in zip(starts0, [(c.take_of(i).take, int(c[i]["start"]))
                                                for i in range(50)])) >= 45
    with pytest.raises(IndexError):
        a[50]


def test_dataloader_workers_match_single_process(shard_dir):
    ds = WindowDataset(shard_dir, samples_per_epoch=24, seed=5, cache_mb=0.05)  # tiny cache: evicts
    ds[0]  # the parent has an open handle and a cache: workers must not inherit them
    assert ds._files and pickle.loads(pickle.dumps(ds))._files == {}
    ds.set_epoch(2)
    single = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    by_item = [torch.utils.data.default_collate([ds[i] for i in range(b, b + 8)])
               for b in (0, 8, 16)]
    for loader in (torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2),
                   torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0,
                                               collate_fn=data.collate),
                   torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2,
                                               collate_fn=data.collate)):
        batches = list(loader)
        assert len(single) == len(batches) == 3
        for x, y, z in zip(single, batches, by_item):
            assert x.keys() == y.keys() == z.keys()
            for k in x:
                assert torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]), k
    assert single[0]["mfcc_mix"].shape == (8, 463, 26) and single[0]["subject"].shape == (8,)
    assert single[0]["mfcc_index"].shape == (8, 128)


def test_reader_options(shard_dir):
    """Only the MFCC streams asked for (a model reads two, or the mix); pin_memory without CUDA
    changes nothing."""
    ds = WindowDataset(shard_dir, samples_per_epoch=8, seed=2,
                       mfcc_keys=("mfcc_music", "mfcc_vocals"))
    full = WindowDataset(shard_dir, samples_per_epoch=8, seed=2, pin_memory=True)
    a, b = data.collate(ds.__getitems__(range(8))), data.collate(full.__getitems__(range(8)))
    assert set(a) == set(data.ITEM_KEYS) - {"mfcc_mix"} and set(b) == set(data.ITEM_KEYS)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="mfcc_keys must be a non-empty subset"):
        WindowDataset(shard_dir, mfcc_keys=("mfcc_drums",))


def test_inspect(shard_dir, capsys):
    (shard_dir.parent / "qc.tsv").write_text("take\tsubject\tsong\tstatus\treason\n"
                                             "a1\tzoe\tsong_a1\tpass\t\n"
                                             "x9\tbob\tsong9\tfail\tingest: no video stream\n")
    assert data.main([str(shard_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["takes"], s["train_takes"], s["test_takes"], s["files"]) == (5, 4, 1, 3)
    assert s["frames"] == 400 + 300 + 500 + 260 + 100
    assert s["hours"] == pytest.approx(1560 / 30 / 3600)
    assert s["valid_fraction"] == pytest.approx((1560 - 110) / 1560)
    assert s["n_blinks"] == 4 and s["n_long"] == 1
    assert s["blinks_per_s"] == pytest.approx(4 / ((1560 - 110) / 30))
    assert s["blink_duration_s"] == pytest.approx((4 + 3 + 6 + 5) / 4 / 30)
    assert s["long_duration_s"] == pytest.approx(1.0)
    assert s["per_subject"]["zoe"] == {"takes": 2, "hours": pytest.approx(700 / 30 / 3600)}
    assert s["qc_failures"] == [{"take": "x9", "subject": "bob", "song": "song9", "status": "fail",
                                 "reason": "ingest: no video stream"}]
    assert data.main([str(shard_dir)]) == 0
    text = capsys.readouterr().out
    assert "takes       5 (4 train, 1 test)" in text and "qc failures 1" in text
    assert "  x9 (bob, song9): ingest: no video stream" in text
    assert "[0] adam: 2 takes" in text
    assert data.main([str(shard_dir / "nope")]) == 1
    assert "no such shard folder or file" in capsys.readouterr().err


def test_cli_dispatch(shard_dir, run_cli):
    p = run_cli(["musicface.cli", "inspect", shard_dir, "--json"])
    assert json.loads(p.stdout)["takes"] == 5
