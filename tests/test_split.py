"""preprocessing.split: qc.tsv lists every take, split.tsv the passing ones, 90/10 by take or
song."""
from __future__ import annotations

import pandas as pd

from preprocessing import split as sp
from preprocessing.common import save_json, write_failure


def qc_table(n_subjects=3, n_songs=10, fail=()):
    rows = []
    for i in range(n_subjects):
        for j in range(n_songs):
            take = f"s{i}_g{j}"
            rows.append({"take": take, "subject": f"s{i}", "song": f"g{j}",
                         "status": "fail" if take in fail else "pass",
                         "reason": "x" if take in fail else ""})
    return pd.DataFrame(rows, columns=sp.QC_COLUMNS)


def test_fraction_by_take():
    s = sp.make_split(qc_table(4, 10), "take", 0.1, seed=0)
    assert len(s) == 40 and list(s.columns) == ["take", "subject", "song", "split"]
    assert (s.split == "test").sum() == 4
    s2 = sp.make_split(qc_table(4, 10), "take", 0.25, seed=0)
    assert (s2.split == "test").sum() == 10


def test_by_song_never_straddles():
    q = qc_table(3, 20)
    s = sp.make_split(q, "song", 0.1, seed=3)
    sides = s.groupby("song")["split"].nunique()
    assert (sides == 1).all()
    test_songs = set(s.song[s.split == "test"])
    assert len(test_songs) == 2  # 10 % of 20 songs
    assert (s.split == "test").sum() == 6  # every singer's take of those songs
    # by take, the same table does straddle some songs
    assert (sp.make_split(q, "take", 0.1, seed=3).groupby("song")["split"].nunique() > 1).any()


def test_seeded_and_order_free():
    q = qc_table(3, 10)
    a = sp.make_split(q, "take", 0.1, seed=0)
    b = sp.make_split(q.sample(frac=1, random_state=1).sort_values("take"), "take", 0.1, seed=0)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    c = sp.make_split(q, "take", 0.1, seed=1)
    assert set(a["take"][a.split == "test"]) != set(c["take"][c.split == "test"])


def test_stable_when_adding_takes():
    """Adding takes moves at most one existing take across the split per added take."""
    q = qc_table(3, 10)
    base = sp.make_split(q, "take", 0.1, seed=0).set_index("take")["split"]
    more = pd.concat([q, qc_table(1, 3).assign(take=lambda d: "new_" + d["take"])],
                     ignore_index=True)
    after = sp.make_split(more, "take", 0.1, seed=0).set_index("take")["split"]
    moved = (after[base.index] != base).sum()
    assert moved <= 3
    one = pd.concat([q, qc_table(1, 1).assign(take="zz_new")], ignore_index=True)
    after1 = sp.make_split(one, "take", 0.1, seed=0).set_index("take")["split"]
    assert (after1[base.index] != base).sum() <= 1


def test_small_sets():
    assert (sp.make_split(qc_table(1, 1), "take", 0.1, 0).split == "train").all()  # one take: train
    s = sp.make_split(qc_table(1, 2), "take", 0.1, 0)
    assert sorted(s.split) == ["test", "train"]  # >= 2 takes: at least one test take
    s = sp.make_split(qc_table(2, 2), "take", 0.9, 0)
    assert (s.split == "train").sum() == 1  # never everything in test
    assert (sp.make_split(qc_table(2, 2), "take", 0.0, 0).split == "train").all()
    s = sp.make_split(qc_table(3, 1), "song", 0.5, 0)
    assert (s.split == "train").all()  # a single song cannot be both
    s = sp.make_split(qc_table(2, 2), "song", 0.1, 0)
    assert (s.split == "test").sum() == 2 and s[s.split == "test"].song.nunique() == 1


def test_failed_takes_excluded_from_split():
    q = qc_table(2, 5, fail={"s0_g1", "s1_g4"})
    s = sp.make_split(q, "take", 0.1, 0)
    assert len(s) == 8 and not {"s0_g1", "s1_g4"} & set(s["take"])


def test_cli(tmp_path, run_cli):
    files = []
    for i, (take, status, reasons) in enumerate([("b_take", "pass", []),
                                                 ("a_take", "fail",
                                                  ["too short: 10 frames < 128 (one training "
                                                   "window)", "low sync confidence: 1.00 < 4"]),
                                                 ("c_take", "pass", []), ("d_take", "pass", [])]):
        p = tmp_path / "work" / take / "qc.json"
        save_json(p, {"take": take, "subject": f"subj{i % 2}", "song": f"song{i}", "status": status,
                      "reasons": reasons})
        files.append(p)
    crashed = tmp_path / "work" / "e_take" / "qc.json"
    crashed.parent.mkdir()
    write_failure(crashed, "e_take", "qc", "MemoryError: out of memory")
    files.append(crashed)
    out_split, out_qc = tmp_path / "dataset" / "split.tsv", tmp_path / "dataset" / "qc.tsv"
    proc = run_cli(["preprocessing.split", "--by", "take", "--test-fraction", "0.1", "--seed", "0",
                    "--out-split", out_split, "--out-qc", out_qc, *files])
    qc = pd.read_csv(out_qc, sep="\t", dtype=str, keep_default_na=False)
    assert qc.to_dict("records") == [
        {"take": "a_take", "subject": "subj1", "song": "song1", "status": "fail",
         "reason": "too short: 10 frames < 128 (one training window); low sync confidence: "
                   "1.00 < 4"},
        {"take": "b_take", "subject": "subj0", "song": "song0", "status": "pass", "reason": ""},
        {"take": "c_take", "subject": "subj0", "song": "song2", "status": "pass", "reason": ""},
        {"take": "d_take", "subject": "subj1", "song": "song3", "status": "pass", "reason": ""},
        {"take": "e_take", "subject": "", "song": "", "status": "fail",
         "reason": "qc: MemoryError: out of memory"},
    ]
    s = pd.read_csv(out_split, sep="\t", dtype=str)
    assert list(s["take"]) == ["b_take", "c_take", "d_take"] and (s.split == "test").sum() == 1
    lines = [ln for ln in proc.stderr.splitlines() if "failed QC" in ln]
    assert lines == ["musicface: take 'a_take' failed QC: too short: 10 frames < 128 (one training "
                     "window); low sync confidence: 1.00 < 4",
                     "musicface: take 'e_take' failed QC: qc: MemoryError: out of memory"]
    assert "5 takes, 3 passed QC (2 train, 1 test, by take), 2 failed" in proc.stderr
