"""The dataset DAG on a real (local, one-node) SLURM cluster, through profiles/slurm.

Starts munge + slurmctld + slurmd on localhost (tests/slurm_cluster.py), runs the `dataset` target
of a tiny demo with `snakemake --workflow-profile profiles/slurm`, checks the jobs went through
SLURM and that the shards equal those of a local run, and stops every daemon it started. Every wait
is bounded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from shardbytes import shard_array_bytes
from slurm_cluster import LocalSlurm, missing_binaries

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# the tiny demo both runs use: 2 singers x 2 songs x 8 s
DEMO = ["demo=" + json.dumps({"subjects": 2, "songs": 2, "seconds": 8, "seed": 3})]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _need_cluster():
    missing = missing_binaries()
    if os.geteuid() != 0 or missing:
        why = "needs root" if os.geteuid() != 0 else f"missing {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"local SLURM test cannot run in CI: {why} (.ci/run installs slurm-wlm "
                        f"munge)")
        pytest.skip(f"local SLURM: {why} (apt-get install slurm-wlm munge)")


def _snakemake(args, cwd, env, timeout):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(cwd), "--config", *DEMO, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_dataset_on_local_slurm_matches_local_run(tmp_path):
    _need_cluster()
    local, cluster_dir = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster_dir.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    _snakemake(["--cores", "2", "dataset"], local, env, timeout=1500)

    with LocalSlurm(tmp_path / "cluster") as slurm:
        t0 = time.monotonic()
        proc = _snakemake(
            ["--workflow-profile", str(REPO / "profiles" / "slurm"),
             # a cluster without an accounting database: poll squeue, no account (README)
             "--slurm-status-command", "squeue", "--slurm-no-account",
             "--slurm-init-seconds-before-status-checks", "2",
             "--slurm-keep-successful-logs", "dataset"],
            cluster_dir, {**env, **{"SLURM_CONF": slurm.env["SLURM_CONF"]}}, timeout=1500)
        wall = time.monotonic() - t0
        jobs = subprocess.run(["scontrol", "show", "job", "-o"], env=slurm.env, capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()
    names = [j for j in jobs if "JobState=COMPLETED" in j]
    print(f"SLURM jobs completed: {len(names)} in {wall:.0f} s")
    assert len(names) >= 3, f"expected the DAG's jobs in SLURM, got:\n{chr(10).join(jobs)}"
    assert not [j for j in jobs if "JobState=FAILED" in j]
    logs = list((cluster_dir / ".snakemake" / "slurm_logs").rglob("*.log"))
    # one SLURM log per job the plugin submitted
    assert len(logs) == len(names), (len(logs), len(names))
    assert "job submitted" in (proc.stdout + proc.stderr).lower() or "slurm" in proc.stderr.lower()

    a, b = (shard_array_bytes(local / "dataset" / "shards"),
            shard_array_bytes(cluster_dir / "dataset" / "shards"))
    assert a.keys() == b.keys() and a, "the SLURM run produced other shards than the local run"
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"arrays differ between local and SLURM runs: {different[:5]}"
    assert ((local / "dataset" / "qc.tsv").read_text()
            == (cluster_dir / "dataset" / "qc.tsv").read_text())
    shutil.rmtree(tmp_path / "cluster", ignore_errors=True)
