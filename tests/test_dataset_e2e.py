"""End to end: `snakemake --cores 2 dataset` on the tiny demo plus one corrupt take (slow).

Checks against the demo's ground truth, QC of the corrupt take, the shard schema, kill-and-rerun
identity of the shards job (SIGKILL of Snakemake and all its children), and that touching one input
makes exactly the dependent jobs out of date.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import psutil
import pytest

from musicface.data import open_shards, take_arrays

sys.path.insert(0, str(Path(__file__).parent))
from shardbytes import shard_array_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
BROKEN = "singer1_broken"
FRAME_KEYS = {"exp": "<f4", "pose": "<f4", "au45": "<f4", "eye_long": "<f4", "eye_blink": "|u1",
              "valid": "|u1", "landmarks": "<f2"}


def snakemake(run_dir: Path, sheet: Path, *args, timeout=1500, check=True):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(run_dir), "--config",
           f"samples={sheet}", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_dir):
    """The demo copied under a path with a space, one truncated mp4 added, the dataset target run
    once."""
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw data"
    shutil.copytree(demo_dir, raw)
    sheet = pd.read_csv(raw / "samples.tsv", sep="\t", dtype=str)
    good = (raw / "singer1" / "singer1_song1.mp4").read_bytes()
    (raw / "broken 'clip'.mp4").write_bytes(good[: len(good) // 3])  # truncated mid-file
    sheet.loc[len(sheet)] = {"take": BROKEN, "subject": "singer1", "video": "broken 'clip'.mp4",
                             "song": "songs/song1.wav"}
    sheet_path = raw / "samples.tsv"
    sheet.to_csv(sheet_path, sep="\t", index=False)
    run = root / "run"
    run.mkdir()
    t0 = time.monotonic()
    p = snakemake(run, sheet_path, "--cores", "2", "dataset")
    return {"root": root, "raw": raw, "run": run, "sheet": sheet_path, "proc": p,
            "wall_s": time.monotonic() - t0, "takes": list(sheet["take"])}


def test_qc_lists_the_corrupt_take(project):
    run = project["run"]
    qc = pd.read_csv(run / "dataset/qc.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(qc["take"]) == sorted(project["takes"])  # every take, failed ones included
    bad = qc[qc["take"] == BROKEN].iloc[0]
    assert bad["status"] == "fail" and bad["reason"].startswith("ingest: "), bad["reason"]
    assert (qc[qc["take"] != BROKEN]["status"] == "pass").all(), qc
    # the user sees one line for it on the terminal, the log names take and step
    assert f"musicface: take '{BROKEN}' failed QC: ingest: " in project["proc"].stderr
    assert (f"musicface: take '{BROKEN}' step 'ingest': "
            in (run / f"logs/ingest/{BROKEN}.log").read_text())
    split = pd.read_csv(run / "dataset/split.tsv", sep="\t", dtype=str)
    assert (BROKEN not in set(split["take"]) and len(split) == 4
            and (split["split"] == "test").sum() == 1)
    p = subprocess.run([str(Path(sys.executable).parent / "musicface"), "inspect",
                        str(run / "dataset/shards")],
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode == 0 and "qc failures 1" in p.stdout
            and f"  {BROKEN} (singer1, song1): ingest: " in p.stdout)


def test_shard_schema(project):
    out = project["run"] / "dataset/shards"
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(man["takes"]) == sorted(t for t in project["takes"] if t != BROKEN)
    s = open_shards(out)
    assert s.subjects == ["singer1", "singer2"] and s.exp_dim == 64 and s.fps == 30
    for info in s.takes():
        truth = np.load(project["raw"] / info.subject / f"{info.take}.truth.npz")
        n = len(truth["pose"])
        m = -(-n * 100 // 30)
        assert info.n_frames == n and info.subject_index == s.subjects.index(info.subject)
        with h5py.File(info.shard) as f:
            g = f["takes"][info.take]
            for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix"):
                assert (g[k].dtype.str, g[k].shape) == ("<f4", (m, 26))
            shapes = {"exp": (n, 64), "pose": (n, 6), "landmarks": (n, 478, 2)}
            for k, dt in FRAME_KEYS.items():
                assert (g[k].dtype.str, g[k].shape) == (dt, shapes.get(k, (n,))), k
                assert np.isfinite(g[k][()]).all(), k
            assert json.loads(g.attrs["backends"])["coeffs"] == "builtin"


def test_truth_matches_shards(project):
    s = open_shards(project["run"] / "dataset/shards")
    for info in s.takes():
        truth = np.load(project["raw"] / info.subject / f"{info.take}.truth.npz")
        assert abs(info.offset_s - float(truth["offset_s"])) < 1e-3, info.take  # sync within 1 ms
        a = take_arrays(s, info.take)
        v = a["valid"].numpy() > 0
        assert v.mean() > 0.95
        # pose: the demo's truth has the shards' convention (preprocessing.coeffs), no sign flips
        r = {k: np.corrcoef(a["pose"].numpy()[v, i], truth["pose"][v, i])[0, 1]
             for i, k in ((1, "yaw"), (2, "roll"))}
        assert r["roll"] > 0.95 and r["yaw"] > 0.9, (info.take, r)
        # blink events: every true blink found within 2 frames, no extra ones
        ev = truth["events"]
        true_starts = ev[ev[:, 3] == 0, 0].astype(int)
        d = np.diff(np.concatenate([[0], (a["eye_blink"].numpy() > 0).astype(int), [0]]))
        starts = np.flatnonzero(d == 1)
        assert len(starts) == len(true_starts), (info.take, starts, true_starts)
        assert np.abs(starts - true_starts).max() <= 2
        d = np.diff(np.concatenate([[0], (a["eye_long"].numpy() > 0).astype(int), [0]]))
        assert (d == 1).sum() == (ev[:, 3] == 1).sum()


def test_config_edits_rerun_only_what_they_change(project):
    """Each rule depends on the config keys its step uses (docs/dag.md): loss / train / evaluate
    edits plan nothing for `dataset`; a coeffs edit plans the basis and the shards again."""
    run, sheet = project["run"], project["sheet"]
    p = snakemake(run, sheet, "loss={w1: 6.0}", "train={lr: 0.001}", "evaluate={seed: 3}", "-n",
                  "dataset")
    assert "Nothing to be done" in p.stdout + p.stderr, p.stdout
    p = snakemake(run, sheet, "coeffs={exp_dim: 32}", "-n", "dataset")
    assert _jobs(p.stdout) == {"exp_basis": 1, "shards": 1, "dataset": 1}


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL Snakemake and every process under it (the jobs), children first seen, all at once."""
    try:
        parent = psutil.Process(proc.pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


def test_kill_during_shards_then_rerun_is_identical(project):
    run, sheet = project["run"], project["sheet"]
    out = run / "dataset/shards"
    before = shard_array_bytes(out)
    files_before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert before
    killed = False
    for _attempt in range(3):
        cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(run), "--config",
               f"samples={sheet}", "--cores", "2", "--forcerun", "shards", "--", "dataset"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if list((run / "dataset").glob(".shards.tmp-*")):  # the shards job is writing
                _kill_tree(proc)
                killed = True
                break
            time.sleep(0.01)
        else:
            proc.wait(timeout=60)
        if killed:
            break
    assert killed, "the shards job finished before it could be killed three times"
    # nothing that looks done: no manifest in the target, only a hidden temp folder at most
    assert not (out / "manifest.json").exists()
    # a SIGKILLed Snakemake leaves its lock (--cores: train.smk's `threads: workflow.cores` needs
    # it)
    snakemake(run, sheet, "--cores", "1", "--unlock")
    # the killed job is marked incomplete; profiles/local (make dataset) reruns such jobs itself
    p = snakemake(run, sheet, "--cores", "2", "--rerun-incomplete", "dataset")
    assert "shards" in p.stderr
    assert not list((run / "dataset").glob(".shards.tmp-*"))
    assert shard_array_bytes(out) == before
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files_before  # byte-identical files


def _jobs(dry_run_stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run -> {rule: count}."""
    table = dry_run_stdout.split("Job stats:")[1].split("\n\n")[0]
    rows = [ln.split() for ln in table.strip().splitlines()[2:]]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[0] != "total"}


def _change(path: Path) -> bytes:
    """Append a byte and move the mtime ahead: Snakemake 9 reruns on a newer input only when its
    content changed (it keeps checksums of small inputs, so a bare `touch` is not enough)."""
    original = path.read_bytes()
    path.write_bytes(original + b"\0")
    t = time.time() + 5
    os.utime(path, (t, t))
    return original


def test_changed_input_reruns_its_dependents(project):
    run, sheet, raw = project["run"], project["sheet"], project["raw"]
    dry = ("--rerun-triggers", "mtime", "-n", "dataset")
    p = snakemake(run, sheet, *dry)
    assert "Nothing to be done" in p.stdout + p.stderr
    video = raw / "singer2" / "singer2_song2.mp4"
    original = _change(video)
    p = snakemake(run, sheet, *dry)
    per_take = ["ingest", "track", "sync", "mfcc", "coeffs", "au45", "eyes", "qc"]
    assert _jobs(p.stdout) == {**{r: 1 for r in per_take}, "split": 1, "exp_basis": 1, "shards": 1,
                               "dataset": 1}
    assert set(re.findall(r"wildcards: take=(\S+)", p.stdout)) == {"singer2_song2"}
    video.write_bytes(original)  # same content again: up to date again
    assert "Nothing to be done" in (lambda q: q.stdout + q.stderr)(snakemake(run, sheet, *dry))
    song = raw / "songs" / "song1.wav"
    before = song.stat()
    original = _change(song)
    p = snakemake(run, sheet, *dry)
    jobs = _jobs(p.stdout)
    # the song's own jobs, then the takes sung to it (the broken take's records are redone too)
    assert jobs["song"] == 1 and jobs["separate"] == 1 and jobs["shards"] == 1
    assert jobs["sync"] == 3 and jobs["mfcc"] == 3 and jobs["qc"] == 3 and "ingest" not in jobs
    assert set(re.findall(r"wildcards: song=(\S+)", p.stdout)) == {"song1"}
    # restored as it was, mtime included (the song is too large for Snakemake's checksums): the
    # dataset is up to date again for the tests that follow
    song.write_bytes(original)
    os.utime(song, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "Nothing to be done" in (lambda q: q.stdout + q.stderr)(snakemake(run, sheet, *dry))


TINY_RUN = ("train={name: ddp, processes: 2, epochs: 1, samples_per_epoch: 8, batch_size: 4,"
            " val_samples: 0}",
            "model={enc_channels: [8, 16], feat_dim: 8, unet_channels: [8, 16], hidden: 16,"
            " lstm_hidden: 16, disc_channels: 8}",
            "render={enabled: false}")  # the renderer has its own end-to-end test (test_render.py)


def test_train_rule_with_two_processes_then_evaluate_and_report(project):
    """`train.processes: 2` on the dataset just built: the train rule launches torchrun, 2 gloo
    processes on CPU (a tiny model, one epoch of 2 steps); evaluate follows, and
    `snakemake --report` collects the evaluation figures with their captions into one HTML file.
    ~45 s alone."""
    import base64

    run, sheet = project["run"], project["sheet"]
    p = snakemake(run, sheet, *TINY_RUN, "--cores", "2", "-n", "all")
    assert _jobs(p.stdout) == {"train_run": 1, "evaluate_run": 1, "all": 1}  # dataset up to date
    snakemake(run, sheet, *TINY_RUN, "--cores", "2", "all")
    log = (run / "logs/train/ddp.log").read_text()
    assert "musicface train: DDP: 2 processes, backend gloo" in log
    meta = torch_load(run / "runs/ddp/model.pt")["meta"]
    assert meta["world_size"] == 2 and meta["train_config"]["processes"] == 2
    assert meta["train_config"]["lr"] == 5.0e-4      # config.yaml's, kept by the partial override
    metrics = json.loads((run / "runs/ddp/eval/metrics.json").read_text())
    assert metrics and (run / "runs/ddp/eval/pose.png").stat().st_size > 10_000

    p = snakemake(run, sheet, *TINY_RUN, "--report", "report.html")
    html = (run / "report.html").read_text()
    assert len(html) > 100_000
    for name in ("pose.png", "attention.png", "eye_durations.png", "training.png", "table.md",
                 "metrics.json"):
        assert name in html, name
    assert "Evaluation" in html and "paper Fig. 5b" in html               # category and a caption
    png = base64.b64encode((run / "runs/ddp/eval/pose.png").read_bytes()[:300]).decode()[:200]
    assert png in html                                      # the figure itself is embedded


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)
