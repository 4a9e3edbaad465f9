"""Shared fixtures: a tiny demo dataset generated once per session, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """2 singers x 2 songs x 12 s of demo recordings with ground truth (seed 0)."""
    from preprocessing.demo import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, subjects=2, songs=2, seconds=12, seed=0)
    return out


def _run(args, cwd=None, check=True, env=None, timeout=1800):
    """Run ``python -m <module> args...`` (or any argv) with the test interpreter."""
    argv = [str(a) for a in args]
    if argv and not argv[0].startswith("/") and not argv[0].endswith("python"):
        argv = [sys.executable, "-m", *argv]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited "
                             f"{proc.returncode}\nstdout:\n{proc.stdout[-4000:]}"
                             f"\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(["preprocessing.sync", "--take", ...]) -> CompletedProcess (asserts exit 0)."""
    return _run


# the renderer's tests share one DAG run: the tiny demo through `snakemake all` (dataset, a tiny
# model, the test subject's renderer at 128 px for a short schedule, the rendered test take,
# evaluation)
RENDER_TEST_CONFIG = {
    "model": {"variant": "full", "enc_channels": [16, 32], "feat_dim": 16,
              "unet_channels": [16, 32], "hidden": 32, "lstm_hidden": 32, "disc_channels": 16},
    "train": {"epochs": 1, "batch_size": 8, "window": 32, "samples_per_epoch": 16, "val_samples": 8,
              "device": "cpu"},
    "render": {"size": 128, "channels": 16, "disc_channels": 16, "steps": 300, "batch_size": 4,
               "save_every": 100, "device": "cpu"},
}


@pytest.fixture(scope="session")
def render_project(tmp_path_factory, demo_dir):
    """``snakemake --cores 2 all`` on the tiny demo (2 singers x 2 songs x 12 s) with
    :data:`RENDER_TEST_CONFIG`: returns the run folder, the config file and the test take."""
    import time

    import pandas as pd
    import yaml

    run = tmp_path_factory.mktemp("render_run")
    cfg = {"samples": str(demo_dir / "samples.tsv"), **RENDER_TEST_CONFIG}
    cfg_file = run / "config.test.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    proc = _run([str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
                 "-d", str(run), "--configfile", str(cfg_file), "--cores", "2", "all"], check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    split = pd.read_csv(run / "dataset/split.tsv", sep="\t", dtype=str)
    test = split[split["split"] == "test"].iloc[0]
    return {"run": run, "config": cfg_file, "take": test["take"], "subject": test["subject"],
            "song": test["song"], "wall_s": time.monotonic() - t0,
            "subjects": sorted(split["subject"].unique()), "demo": demo_dir}
