"""The Snakemake workflow itself: config validation, sample sheets, the planned DAG, lint."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = ["demo", "ingest", "song", "sync", "separate", "mfcc", "track", "coeffs", "au45", "eyes",
          "qc", "split", "exp_basis", "shards", "train_run", "evaluate_run"]


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


def test_fidelity_plans_the_variants_and_the_mixed_wave_scored_against_the_truth(tmp_path):
    """make fidelity: fidelity.yaml read on top of config.yaml (its demo, split by song, run name),
    the four variants and the mixed wave (the full model on the mix in both streams) trained and
    evaluated against the demo's truth, one table."""
    import yaml

    fid = yaml.safe_load((REPO / "fidelity.yaml").read_text())
    proc = snakemake("-n", "-p", "--cores", "2", "--configfile", str(REPO / "fidelity.yaml"),
                     "-d", str(tmp_path), "fidelity")
    assert proc.returncode == 0, proc.stdout
    counts = job_counts(proc.stdout)
    takes = fid["demo"]["subjects"] * fid["demo"]["songs"]
    assert counts["ingest"] == counts["qc"] == takes and counts["separate"] == fid["demo"]["songs"]
    assert counts["train_run"] == counts["evaluate_run"] == 5 and counts["fidelity"] == 1
    assert "render_train" not in counts and "render_take" not in counts
    name = fid["train"]["name"]
    assert f"runs/{name}-fidelity/table.md" in proc.stdout
    assert re.search(r'--config-json .*"audio": "mix", .*"variant": "full".* --out runs/'
                     + name + "-mixed ", proc.stdout)
    assert proc.stdout.count("--truth work/demo") == 5
    assert "preprocessing.split --by song --test-fraction 0.25" in proc.stdout  # unheard test songs


@pytest.mark.parametrize("override, message", [
    (["split={'by': 'subject'}"],
     "config key 'split.by': 'subject' is not one of ['take', 'song']"),
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
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "dataset", "--config",
                     f"samples={sheet}")
    assert proc.returncode == 0, proc.stdout
    assert "demo" not in job_counts(proc.stdout)
    assert job_counts(proc.stdout)["song"] == 2  # "Song A" and "other"
    assert "work/songs/Song_A/mix.wav" in proc.stdout


@pytest.mark.parametrize("rows, message", [
    ([("t1", "a", "v.mp4", "s.wav"), ("t1", "b", "w.mp4", "s.wav")], "duplicate take names: t1"),
    ([("bad take", "a", "v.mp4", "s.wav")], "does not match"),
    ([("t1", "a", "v.mp4", "x/s.wav"), ("t2", "a", "w.mp4", "y/s.wav")],
     "different song files share a name: s"),
])
def test_bad_sample_sheet(tmp_path, rows, message):
    sheet = _sheet(tmp_path, rows)
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "dataset", "--config",
                     f"samples={sheet}")
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

    req = {line.split("#")[0].strip()
           for line in (REPO / "requirements.txt").read_text().splitlines()}
    req.discard("")
    env = yaml.safe_load((REPO / "envs" / "musicface.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == req, {"only in requirements.txt": req - set(pip),
                             "only in the env": set(pip) - req}


def _train_config(proc) -> dict:
    """The whole config the train rule hands `musicface train` (--config-json), from `-n -p`."""
    import json
    import shlex

    cmd = next(ln for ln in proc.stdout.splitlines() if "musicface.cli train" in ln)
    argv = shlex.split(cmd.split("Shell command:", 1)[-1])
    return json.loads(argv[argv.index("--config-json") + 1])


def test_partial_nested_override_keeps_the_sections_other_keys(tmp_path):
    """`--config train='{epochs: 3, processes: 2}'` changes those two keys and keeps every other key
    of the section as config.yaml sets it (lr 5e-4, not the schema default 1e-4), other sections
    alone; processes 2 launches torchrun. Lists inside the override are typed too (not strings)."""
    import yaml

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    proc = snakemake("-n", "-p", "--cores", "2", "-d", str(tmp_path), "train",
                     "--config", "train={epochs: 3, processes: 2}",
                     "model={hidden: 32, enc_channels: [8, 16], blink_interval: [1, 2.5]}")
    assert proc.returncode == 0, proc.stdout
    cfg = _train_config(proc)
    assert cfg["train"] == {**base["train"], "epochs": 3, "processes": 2}
    assert cfg["train"]["lr"] == 5.0e-4 and cfg["train"]["samples_per_epoch"] == 480
    assert cfg["model"] == {**base["model"], "hidden": 32, "enc_channels": [8, 16],
                            "blink_interval": [1, 2.5]}
    assert cfg["loss"] == base["loss"]  # other sections alone (and training sees only its own)
    assert set(cfg) == {"model", "train", "loss"}
    launcher = "python -m torch.distributed.run --standalone --nproc_per_node 2 -m musicface.cli"
    assert f"{launcher} train" in proc.stdout


def test_several_config_errors_are_reported_together(tmp_path):
    proc = snakemake("-n", "--cores", "1", "-d", str(tmp_path), "--config",
                     "split={'by': 'subject'}", 'eyes={"tau": -1}', "colour=blue",
                     "train={batch_size: 0, epochs: many}")
    assert proc.returncode != 0
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("config key")]
    assert lines == ["config key 'colour': unknown key",
                     "config key 'eyes.tau': -1 is less than or equal to the minimum of 0",
                     "config key 'split.by': 'subject' is not one of ['take', 'song']",
                     "config key 'train.batch_size': 0 is less than the minimum of 1",
                     "config key 'train.epochs': 'many' is not of type 'integer'"], proc.stdout


# --------------------------------------------------------------------------------- strict mode
def test_strict_mode_step_cli_exits_non_zero(tmp_path, run_cli):
    """A bad take: the step prints its one line and writes failure records either way; it exits 0
    (the DAG goes on) by default, 1 with MUSICFACE_STRICT=1."""
    video = tmp_path / "empty.mp4"
    video.write_bytes(b"")
    args = ["preprocessing.ingest", "--take", "bad", "--video", video,
            "--out", tmp_path / "ingest.json"]
    line = f"musicface: take 'bad' step 'ingest': empty file (0 bytes): {video}"
    for strict, code in (("0", 0), ("1", 1)):
        proc = run_cli(args, check=False, env={"MUSICFACE_STRICT": strict})
        assert proc.returncode == code, (strict, proc.stderr)
        assert proc.stderr.strip() == line
        assert (tmp_path / "ingest.json").read_bytes().startswith(b"MUSICFACE-FAILED")


def test_strict_mode_stops_the_dag_at_the_first_failure(tmp_path):
    """MUSICFACE_STRICT=1: the first failing job stops the run (Snakemake exits non-zero, starts no
    further job). Two takes with an empty video, their song a real file: `song` and `separate` may
    run, the first `ingest` fails, and nothing after it (the other ingest, sync, track, qc, ...)
    is started."""
    import os
    import shutil

    from preprocessing.demo import render_song, write_wav

    song = render_song(0, 1, 4.0)
    write_wav(tmp_path / "song.wav", song.mix, song.sr)
    (tmp_path / "bad.mp4").write_bytes(b"")
    sheet = _sheet(tmp_path, [("bad", "s1", "bad.mp4", "song.wav"),
                              ("bad2", "s1", "bad.mp4", "song.wav")])
    run = tmp_path / "run"
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(run), "--cores", "1", "dataset",
           "--config", f"samples={sheet}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, env={**os.environ, "MUSICFACE_STRICT": "1"})
    assert proc.returncode != 0, proc.stdout
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.M))
    # Snakemake may schedule the song's own jobs first; nothing that needs a take's ingest runs,
    # and no job starts after the failure
    assert "ingest" in ran and ran <= {"ingest", "song", "separate"}, proc.stdout
    assert not re.search(r"^(?:local)?rule \w+:", proc.stdout.split("Error in rule")[1], re.M)
    failed = re.findall(r"Error in rule (\w+):", proc.stdout)
    assert failed == ["ingest"], proc.stdout
    error = proc.stdout.split("Error in rule")[1]
    take = re.search(r"output: work/takes/(\w+)/ingest.json", error).group(1)
    log = (run / "logs" / "ingest" / f"{take}.log").read_text()
    bad = tmp_path / "bad.mp4"
    assert log.strip() == f"musicface: take '{take}' step 'ingest': empty file (0 bytes): {bad}"
    assert not (run / "work" / "takes" / take / "ingest.json").exists()   # Snakemake removed it
    assert not (run / "dataset").exists()
    shutil.rmtree(run)
