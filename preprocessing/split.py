"""Split: every take's qc.json -> dataset/qc.tsv (all takes) + dataset/split.tsv (passing takes).

    python -m preprocessing.split --by take --test-fraction 0.1 --seed 0 \
        --out-split dataset/split.tsv --out-qc dataset/qc.tsv work/takes/*/qc.json

``qc.tsv``: take, subject, song, status (pass/fail), reason (all reasons joined by "; "), one row
per take, sorted by take; one line per failed take goes to stderr. ``split.tsv``: take, subject,
song, split (train/test), the passing takes only.

How the split is drawn (``--by take``: the units are takes; ``--by song``: the units are songs, and
every take of a song goes where its song goes, so a song never straddles train and test):

* every unit gets the key ``sha256(f"{seed}:{unit}")``; the ``k`` units with the smallest keys are
  the test units, ``k = round(test_fraction * n_units)``, at least 1 when there are 2 or more units
  and ``test_fraction > 0``, at most ``n_units - 1`` (a single unit, or test_fraction 0, is all
  train);
* so the split depends on the unit names and the seed only, not on the order or the machine, and
  adding one unit moves at most one existing unit across the split.
With ``--by song`` and a single song every take is train (no take can be tested without its song
also being in train).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pandas as pd

from preprocessing.common import atomic_path, one_line, read_failure

QC_COLUMNS = ["take", "subject", "song", "status", "reason"]
SPLIT_COLUMNS = ["take", "subject", "song", "split"]


def read_qc(paths) -> pd.DataFrame:
    """qc.json files -> the qc.tsv table. A qc.json that is itself a failure record (qc crashed)
    or unreadable still gives a failed row, named after its folder (work/takes/<take>/qc.json)."""
    import json

    rows = []
    for p in map(Path, paths):
        take = p.parent.name
        try:
            rec = read_failure(p)
            if rec is not None:
                rows.append({"take": rec.get("unit", take), "subject": "", "song": "",
                             "status": "fail",
                             "reason": one_line(f"{rec['step']}: {rec['reason']}")})
                continue
            q = json.loads(p.read_text())
            rows.append({"take": q["take"], "subject": q["subject"], "song": q["song"],
                         "status": q["status"],
                         # one line, no tabs: TSV-safe
                         "reason": one_line("; ".join(q["reasons"]))})
        except Exception as e:  # noqa: BLE001 - one broken file must not hide the other takes
            rows.append({"take": take, "subject": "", "song": "", "status": "fail",
                         "reason": f"qc: unreadable qc.json "
                                   f"({one_line(f'{type(e).__name__}: {e}')})"})
    df = (pd.DataFrame(rows, columns=QC_COLUMNS).sort_values("take", kind="stable")
          .reset_index(drop=True))
    if df["take"].duplicated().any():
        raise ValueError(f"duplicate takes in QC: "
                         f"{', '.join(sorted(set(df.take[df.take.duplicated()])))}")
    return df


def unit_key(seed: int, unit: str) -> str:
    return hashlib.sha256(f"{seed}:{unit}".encode()).hexdigest()


def pick_test_units(units, test_fraction: float, seed: int) -> set[str]:
    """The units that go to the test split (see the module docstring)."""
    units = sorted(set(units))
    n = len(units)
    if n < 2 or test_fraction <= 0:
        return set()
    k = min(n - 1, max(1, round(test_fraction * n)))
    return set(sorted(units, key=lambda u: unit_key(seed, u))[:k])


def make_split(qc: pd.DataFrame, by: str = "take", test_fraction: float = 0.1,
               seed: int = 0) -> pd.DataFrame:
    """Passing takes of the qc table -> split table (take, subject, song, split), sorted by take."""
    if by not in ("take", "song"):
        raise ValueError(f"split by must be 'take' or 'song', not {by!r}")
    ok = qc[qc["status"] == "pass"][["take", "subject", "song"]].reset_index(drop=True)
    test = pick_test_units(ok[by], test_fraction, seed)
    ok["split"] = ["test" if u in test else "train" for u in ok[by]]
    return ok[SPLIT_COLUMNS]


def write_tsv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, lineterminator="\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.split",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--by", choices=["take", "song"], default="take")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-split", required=True)
    ap.add_argument("--out-qc", required=True)
    ap.add_argument("qc", nargs="+", help="every take's qc.json")
    a = ap.parse_args(argv)
    qc = read_qc(a.qc)
    split = make_split(qc, a.by, a.test_fraction, a.seed)
    write_tsv(qc, a.out_qc)
    write_tsv(split, a.out_split)
    for r in qc[qc["status"] != "pass"].itertuples():
        print(f"musicface: take '{r.take}' failed QC: {r.reason}", file=sys.stderr)
    n_test = int((split["split"] == "test").sum())
    print(f"split: {len(qc)} takes, {len(split)} passed QC ({len(split) - n_test} train, {n_test} "
          f"test, by {a.by}), {len(qc) - len(split)} failed (see {a.out_qc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
