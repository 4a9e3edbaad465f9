# Shared definitions: config validation, the sample sheet, paths, and the interpreter rules call.
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate



def _coerce(cfg, schema):
    """`--config key='{a: 1}'` gives nested values as strings (Snakemake parses them with YAML's
    BaseLoader): turn such strings into the number/boolean/null the schema asks for."""
    for key, sub in schema.get("properties", {}).items():
        if key not in cfg:
            continue
        value = cfg[key]
        if isinstance(value, dict):
            _coerce(value, sub)
        elif isinstance(value, str):
            types = sub.get("type", [])
            types = [types] if isinstance(types, str) else types
            if "string" in types or not types:
                if "null" in types and value in ("null", "~"):
                    cfg[key] = None
                continue
            import yaml

            parsed = yaml.safe_load(value)
            if not isinstance(parsed, str):
                cfg[key] = parsed


def validate_config(cfg, schema_file):
    """Validate with one line per problem naming the key, then fill the schema's defaults."""
    import jsonschema
    import yaml

    with open(schema_file) as fh:
        schema = yaml.safe_load(fh)
    _coerce(cfg, schema)
    problems = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path)):
        key = ".".join(str(p) for p in err.path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for name in extra:
                full = f"{key}.{name}" if key else name
                problems.append(f"config key '{full}': unknown key")
            continue
        problems.append(f"config key '{key}': {err.message}")
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))
    validate(cfg, schema_file)  # sets the defaults


validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

NAME_RE = "[A-Za-z0-9][A-Za-z0-9._-]*"


wildcard_constraints:
    take=NAME_RE,
    song=NAME_RE,
    variant="single_stream|two_stream|with_atm|full",


# Rules run `python -m preprocessing.<stage>` / `python -m musicface.cli <command>`. The interpreter
# that runs Snakemake (the project venv) goes first on PATH, so jobs use it without activating
# anything (local jobs and SLURM jobs inherit the environment); with --software-deployment-method
# conda the rule's env is activated on top and provides its own `python`. PYTHONPATH makes the
# repository's packages importable in any env and from any working directory.
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in [workflow.basedir, os.environ.get("PYTHONPATH", "")] if p),
)


def load_samples():
    """The sample sheet as a DataFrame with absolute video/song paths and a song id per row."""
    if config["samples"] == "demo":
        from preprocessing.demo import demo_rows

        d = config["demo"]
        root = Path("work/demo")  # relative: these files are outputs of rule demo
        df = pd.DataFrame(demo_rows(d["subjects"], d["songs"]))
    else:
        sheet = Path(config["samples"])
        if not sheet.exists():
            raise WorkflowError(f"config key 'samples': sample sheet not found: {sheet}")
        df = pd.read_csv(sheet, sep="\t", dtype=str, comment="#", keep_default_na=False)
        root = sheet.absolute().parent
    validate(df, workflow.source_path("../schemas/samples.schema.yaml"))
    if df["take"].duplicated().any():
        dups = sorted(set(df.loc[df["take"].duplicated(), "take"]))
        raise WorkflowError(f"sample sheet: duplicate take names: {', '.join(dups)}")
    df["video"] = [v if Path(v).is_absolute() else str(root / v) for v in df["video"]]
    df["song_path"] = [s if Path(s).is_absolute() else str(root / s) for s in df["song"]]
    # song id = file name without extension, made file-name safe ("My Song (live).mp3" -> My_Song_live)
    df["song"] = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s).stem).strip("_.") or "song" for s in df["song_path"]]
    clash = df.groupby("song")["song_path"].nunique()
    if (clash > 1).any():
        raise WorkflowError(
            "sample sheet: different song files share a name: " + ", ".join(clash[clash > 1].index)
        )
    return df.set_index("take", drop=False)


SAMPLES = load_samples()
TAKES = list(SAMPLES["take"])
SONGS = sorted(set(SAMPLES["song"]))
SONG_PATH = dict(zip(SAMPLES["song"], SAMPLES["song_path"]))
RUN = config["train"]["name"]
SHARDS = "dataset/shards"
DEMO_SHEET = "work/demo/samples.tsv"


def _existing(path):
    """Input list for a raw file: [] when the file is missing, so that the step itself reports
    "not found" for that take (a failure record -> QC) instead of Snakemake refusing the whole DAG."""
    return [path] if config["samples"] == "demo" or os.path.exists(path) else []


def take_video_path(wildcards):
    return SAMPLES.loc[wildcards.take, "video"]


def take_video(wildcards):
    return _existing(take_video_path(wildcards))


def take_song(take):
    return SAMPLES.loc[take, "song"]


def song_audio_path(wildcards):
    return SONG_PATH[wildcards.song]


def song_audio(wildcards):
    return _existing(song_audio_path(wildcards))


def take_file(name):
    """Input function: a per-take intermediate file."""
    return lambda wildcards: f"work/takes/{wildcards.take}/{name}"


def take_song_file(name):
    """Input function: a file of the song this take was sung to."""
    return lambda wildcards: f"work/songs/{take_song(wildcards.take)}/{name}"


def all_takes(name):
    return expand("work/takes/{take}/{name}", take=TAKES, name=name)


def raw_inputs(wildcards):
    """Demo recordings are generated by rule demo; a user's files are just there."""
    return [DEMO_SHEET] if config["samples"] == "demo" else []


def q(value):
    """Shell-quote a config value for a shell: command."""
    return shlex.quote(str(value))


# ---------------------------------------------------------------- helpers of individual rules
# train.smk


def run_config(variant=None):
    cfg = json.loads(json.dumps(config))
    cfg.pop("render", None)  # the renderer's settings never change the model (no retraining)
    if variant is not None:
        cfg["model"]["variant"] = variant
    return q(json.dumps(cfg, sort_keys=True))


def threads_per_process(wildcards, threads):
    return max(1, threads // NPROC)


# evaluate.smk


def eval_args():
    """config.yaml evaluate: (+ eyes: tau, closed_threshold; coeffs: deep3d.bfm_dir) -> musicface evaluate options."""
    ev, eyes = config.get("evaluate", {}), config.get("eyes", {})
    args = [
        f"--seed {q(ev.get('seed', 0))}",
        f"--device {q(ev.get('device', 'cpu'))}",
        f"--tau {q(eyes.get('tau', 0.5))}",
        f"--closed-threshold {q(eyes.get('closed_threshold', 0.5))}",
    ]
    for key, opt in (("syncnet_weights", "--syncnet-weights"), ("rendered", "--rendered"),
                     ("figure_take", "--figure-take")):
        if ev.get(key):
            args.append(f"{opt} {q(ev[key])}")
    bfm_dir = config.get("coeffs", {}).get("deep3d", {}).get("bfm_dir")
    if bfm_dir:  # deep3d coefficients: the BFM gives LMD its landmarks
        args.append(f"--bfm-dir {q(bfm_dir)}")
    return " ".join(args)


def eval_outputs(run):
    """The evaluation files of runs/<run>/eval, figures with their report captions."""
    d = f"runs/{run}/eval"
    cat = "Evaluation" if run == RUN else "Ablation"
    sub = run
    return dict(
        metrics=report(f"{d}/metrics.json", caption="../report/metrics.rst", category=cat, subcategory=sub),
        table=report(f"{d}/table.md", caption="../report/table.rst", category=cat, subcategory=sub),
        pose=report(f"{d}/pose.png", caption="../report/pose.rst", category=cat, subcategory=sub),
        attention=report(f"{d}/attention.png", caption="../report/attention.rst", category=cat, subcategory=sub),
        eye_durations=report(f"{d}/eye_durations.png", caption="../report/eye_durations.rst", category=cat,
                             subcategory=sub),
        training=report(f"{d}/training.png", caption="../report/training.rst", category=cat, subcategory=sub),
    )


# coeffs.smk


def coeffs_deep3d_args(wildcards, threads):
    """CLI options of the deep3d backend (none for builtin)."""
    if not COEFFS_DEEP3D:
        return ""
    d = config["coeffs"]["deep3d"]
    return (
        f"--checkpoint {q(d['checkpoint'])} --batch-size {d['batch_size']}"
        f" --device {q(d['device'])} --threads {threads}"
    )


# render_data.smk, render_train.smk, render.smk (the renderer)


def render_bfm_arg(wildcards):
    """deep3d coefficients: the Basel Face Model folder gives the renderer's mesh."""
    bfm_dir = config["coeffs"]["deep3d"]["bfm_dir"]
    return f"--bfm-dir {q(bfm_dir)}" if config["coeffs"]["backend"] == "deep3d" and bfm_dir else ""


def subject_render_data(wildcards):
    """The render data of every take of the subject (the step keeps the training takes)."""
    takes = SAMPLES.loc[SAMPLES["subject"] == wildcards.subject, "take"]
    if not len(takes):
        raise WorkflowError(f"render_train: no take of subject '{wildcards.subject}' in the sample sheet")
    return expand("work/takes/{take}/render.h5", take=takes)


def test_takes():
    """Test takes of dataset/split.tsv (a checkpoint: the DAG is re-evaluated once it exists)."""
    split = pd.read_csv(checkpoints.split.get().output.split, sep="\t", dtype=str, keep_default_na=False)
    return sorted(split.loc[split["split"] == "test", "take"])


def render_outputs(kind="video"):
    """render_take's outputs for every test take (``kind``: video, recon, metrics, figure)."""
    ext = {"video": ".mp4", "recon": ".recon.mp4", "metrics": ".json", "figure": ".png"}[kind]
    return [f"runs/{RUN}/render/{take}{ext}" for take in test_takes()]


def render_metrics(wildcards):
    """evaluate's input: the rendered-video metrics of the test takes, when render.enabled."""
    return render_outputs("metrics") if config["render"]["enabled"] else []


def render_targets():
    """What `snakemake render` makes: every test take's videos and frame grid."""
    return render_outputs("video") + render_outputs("recon") + render_outputs("figure")

