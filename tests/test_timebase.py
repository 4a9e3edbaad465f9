"""preprocessing.timebase: the frame rate, sample rate, MFCC rate and the row counts."""
from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np

from preprocessing import timebase as T


def test_constants_agree_with_each_other():
    assert (T.FPS, T.SR, T.MFCC_RATE, T.MFCC_DIM, T.MFCC_WIDTH) == (30, 16000, 100, 26, 39)
    assert T.MFCC_HOP * T.MFCC_RATE == T.SR and T.CENTRE_ROW == 19
    assert T.MFCC_KEYS == ("mfcc_vocals", "mfcc_music", "mfcc_mix")


def test_n_mfcc_rows_is_the_exact_ceiling():
    for n in range(0, 2000):
        assert T.n_mfcc_rows(n) == math.ceil(Fraction(n * 100, 30)), n
    assert [T.n_mfcc_rows(n) for n in (1, 3, 183, 18000)] == [4, 10, 610, 60000]
    # a float rate (never in the shards: qc refuses it) rounds the same way, no float fuzz
    assert T.n_mfcc_rows(300, 30.0) == 1000 and T.n_mfcc_rows(2997, 29.97) == 10000


def test_centre_rows_round_half_up():
    t = np.arange(3000)
    want = [math.floor(Fraction(int(i) * 100, 30) + Fraction(1, 2)) for i in t]
    np.testing.assert_array_equal(T.centre_rows(t), want)
    np.testing.assert_array_equal(T.centre_rows(t, 30.0), want)  # the float path agrees
    assert T.centre_rows([1, 2, 3]).tolist() == [3, 7, 10]
    assert T.centre_rows([1], 25, rate=100).tolist() == [4]  # another rate: 1 / 25 s = row 4


def test_no_module_restates_the_time_base(repo):
    """The rates have one home: no module (outside timebase) defines them again."""
    names = "FPS|SR|MFCC_RATE|MFCC_KEYS|MFCC_WIDTH|CENTRE_ROW|SCHEMA_VERSION"
    pattern = re.compile(rf"^({names})\s*=", re.M)
    found = [f"{p.relative_to(repo)}: {m.group(0)}" for d in ("preprocessing", "musicface")
             for p in (repo / d).rglob("*.py") if p.name not in ("timebase.py", "shard_schema.py")
             for m in pattern.finditer(p.read_text())]
    assert found == []
