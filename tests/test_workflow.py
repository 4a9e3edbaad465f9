"""The Snakemake workflow itself: config validation, sample sheets, the planned DAG, lint."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = ["demo", "ingest", "song", "sync", "separate", "mfcc", "track", "coeffs", "au45", "eyes", "qc",
          "split", "exp_basis", "shards", "train_run", "evaluate_run"]


def snakemake(*args, cwd=None):
    """Run snakemake; .stdout holds stdout and stderr together (Snakemake logs errors to either)."""
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd or REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_plans_every_stage(tmp_path):
    proc = snakemake("-n", "--cores", "2", "-d", str(tmp_path), "all")
    assert proc.returncode == 0, proc.stdout
    counts = job_counts(proc.stdout)
    assert set(STAGES) <= set(counts), set(STAGES) - set(counts)
    takes = 2 * 3  # default demo: 2 singers x 3 songs
    for stage in ["ingest", "sync", "mfcc", "track", "coeffs", "au45", "eyes", "qc"]:
        assert counts[stage] == takes, (stage, counts)
    assert counts["song"] == counts["separate"] == 3
    for stage in ["demo", "split", "exp_basis", "shards", "train_run", "evaluate_run"]:
        assert counts[stage] == 1


def test_ablation_plans_four_variants(tmp_path):
    """One train rule and one evaluate rule for every run: the four variants of the ablation, each
    trained with its own variant (and nothing else changed) in the config it is given."""
    from musicface.config import VARIANTS

    proc = snakemake("-n", "-p", "--cores", "2", "-d", str(tmp_path), "ablation")
    assert proc.returncode == 0, proc.stdout
    counts = job_counts(proc.stdout)
    assert counts["train_run"] == counts["evaluate_run"] == 4 and "train" not in counts
    for variant in VARIANTS:
        assert f"runs/demo-{variant}/model.pt" in proc.stdout
        cmd = rf'--config-json .*"variant": "{variant}".* --out runs/demo-{variant} '
        assert re.search(cmd, proc.stdout), variant
    # the variant list has one home (musicface.config); the schema's enum must agree with it
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["model"]["properties"]["variant"]["enum"]) == VARIANTS


@pytest.mark.parametrize("override, message", [
    (["split={'by': 'subject'}"], "config key 'split.by': 'subject' is not one of ['take', 'song']"),
    (['eyes={"tau": -1}'], "config key 'eyes.tau': -1 is less than or equal to the minimum of 0"),
    (["colour=blue"], "config key 'colour': unknown key"),
    (["sync={'backend': 'syncnet2'}"], "config key 'sync.backend': 'syncnet2' is not one of"),
    (['demo={"subjects": 0}'], "config key 'demo.subjects': 0 is less than the minimum of 1"),
])
def test_bad_config_value_names_the_key(tmp_path, override, message):
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "--config", *override)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout


def _sheet(tmp_path, rows):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("take\tsubject\tvideo\tsong\n" + "".join("\t".join(r) + "\n" for r in rows))
    return sheet


def test_user_sheet_paths_relative_to_sheet_and_song_ids(tmp_path):
    (tmp_path / "raw dir").mkdir()
    sheet = _sheet(tmp_path / "raw dir", [
        ("t1", "ann", "videos/it's take 1.mp4", "songs/Song A.mp3"),
        ("t2", "bob", "/abs/t2.mov", "songs/Song A.mp3"),
        ("t3", "bob", "t3.mkv", "other.wav"),
    ])
    for rel in ["videos/it's take 1.mp4", "songs/Song A.mp3", "t3.mkv", "other.wav"]:
        (tmp_path / "raw dir" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw dir" / rel).write_bytes(b"")
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "dataset", "--config", f"samples={sheet}")
    assert proc.returncode == 0, proc.stdout
    assert "demo" not in job_counts(proc.stdout)
    assert job_counts(proc.stdout)["song"] == 2  # "Song A" and "other"
    assert "work/songs/Song_A/mix.wav" in proc.stdout


@pytest.mark.parametrize("rows, message", [
    ([("t1", "a", "v.mp4", "s.wav"), ("t1", "b", "w.mp4", "s.wav")], "duplicate take names: t1"),
    ([("bad take", "a", "v.mp4", "s.wav")], "does not match"),
    ([("t1", "a", "v.mp4", "x/s.wav"), ("t2", "a", "w.mp4", "y/s.wav")], "different song files share a name: s"),
])
def test_bad_sample_sheet(tmp_path, rows, message):
    sheet = _sheet(tmp_path, rows)
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "dataset", "--config", f"samples={sheet}")
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout


def test_missing_sheet(tmp_path):
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "--config", "samples=nope.tsv")
    assert "config key 'samples': sample sheet not found: nope.tsv" in proc.stdout


def test_lint_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout, proc.stdout


def test_conda_env_pins_match_requirements():
    """envs/musicface.yaml repeats requirements.txt (conda cannot include it): keep them in step."""
    import yaml

    req = {line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()}
    req.discard("")
    env = yaml.safe_load((REPO / "envs" / "musicface.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == req, {"only in requirements.txt": req - set(pip), "only in the env": set(pip) - req}
