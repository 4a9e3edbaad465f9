"""Benchmark: end-to-end `snakemake dataset` time per minute of video; prints JSON.

    .venv/bin/python bench/dataset.py [--subjects 2] [--songs 2] [--seconds 30] [--cores 2]

Generates the demo recordings first (not timed), then runs the `dataset` target in a temporary
folder and reports: wall seconds per video minute (the whole DAG with --cores N), summed job seconds
per video minute (Snakemake's per-job benchmark files; they include each job's Python start-up and,
on a shared machine, time waiting for a CPU), CPU seconds per video minute of Snakemake and all its
jobs (getrusage of the children: exact, unlike the benchmark files' sampled cpu_time), the realtime
factors (video seconds / job seconds, / CPU seconds: the bar is >= 2 per core for the built-in
backends, docs/testing.md) and the per-rule breakdown with peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--songs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", default=None, help="run in this folder instead of a temporary one")
    a = ap.parse_args(argv)
    from preprocessing.demo import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        raw = root / "raw"
        generate(raw, subjects=a.subjects, songs=a.songs, seconds=a.seconds, seed=0)
        run = root / "run"
        run.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d",
               str(run), "--cores", str(a.cores), "--config", f"samples={raw / 'samples.tsv'}",
               "--", "dataset"]
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU of Snakemake and every job it ran (each level waits for its children, so all is
        # counted)
        total_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if p.returncode != 0:
            print(p.stderr[-4000:], file=sys.stderr)
            return 1
        from musicface.data import open_shards

        shards = open_shards(run / "dataset" / "shards")
        video_min = sum(t.n_frames for t in shards.takes()) / 30 / 60
        per_rule = defaultdict(lambda: {"jobs": 0, "s": 0.0, "max_rss_mb": 0.0})
        for f in sorted((run / "benchmarks").rglob("*.tsv")):
            rule = f.parent.name if f.parent != run / "benchmarks" else f.stem
            b = pd.read_csv(f, sep="\t")
            r = per_rule[rule]
            r["jobs"] += 1
            r["s"] += float(b["s"].iloc[0])
            r["max_rss_mb"] = max(r["max_rss_mb"], float(
                pd.to_numeric(b["max_rss"], errors="coerce").fillna(0).iloc[0]))
        job_s = sum(r["s"] for r in per_rule.values())
        out = {
            "takes": len(shards), "video_min": round(video_min, 3), "cores": a.cores,
            "wall_s": round(wall, 1), "wall_s_per_video_min": round(wall / video_min, 1),
            "job_s_per_video_min": round(job_s / video_min, 1),
            "cpu_s_per_video_min": round(total_cpu / video_min, 1),
            "realtime_factor_per_core": round(video_min * 60 / job_s, 2),
            "realtime_factor_per_cpu_s": round(video_min * 60 / total_cpu, 2),
            "per_rule": {k: {"jobs": v["jobs"], "s": round(v["s"], 1),
                             "max_rss_mb": round(v["max_rss_mb"], 1)}
                         for k, v in sorted(per_rule.items(), key=lambda kv: -kv[1]["s"])},
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
