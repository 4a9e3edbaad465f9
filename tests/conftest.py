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
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}"
                             f"\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(["preprocessing.sync", "--take", ...]) -> CompletedProcess (asserts exit 0)."""
    return _run
