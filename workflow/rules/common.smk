# Shared definitions (laid out as snakemake-workflows/rna-seq-star-deseq2's common.smk): config
# validation, the sample sheet, wildcard constraints, input functions and command-line helpers, and
# the one parse-time check of the real tools' files. A helper used by one rule lives in its file.
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from musicface.config import VARIANTS
from preprocessing.shard_schema import DATASET_CONFIG_KEYS


# ---------------------------------------------------------------------------------- validation
def _coerce(cfg, schema):
    """`--config key='{a: 1, b: [2, 3]}'` gives nested values as strings (Snakemake parses them
    with YAML's BaseLoader): turn such strings, in dicts and lists, into the number/boolean/null
    the schema asks for."""
    for key, sub in schema.get("properties", {}).items():
        if key in cfg:
            cfg[key] = _coerce_value(cfg[key], sub)


def _coerce_value(value, sub):
    if isinstance(value, dict):
        _coerce(value, sub)
    elif isinstance(value, list):
        return [_coerce_value(v, sub.get("items", {})) for v in value]
    elif isinstance(value, str):
        types = sub.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "string" in types or not types:
            return None if "null" in types and value in ("null", "~") else value
        import yaml

        parsed = yaml.safe_load(value)
        return value if isinstance(parsed, str) else parsed
    return value


def validate_config(cfg, schema_file):
    """Validate with one line per problem naming the key, then fill the schema's defaults."""
    import jsonschema
    import yaml

    with open(schema_file) as fh:
        schema = yaml.safe_load(fh)
    _coerce(cfg, schema)
    problems = []
    errors = jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    for err in sorted(errors, key=lambda e: list(e.path)):
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


def backend_problems(cfg) -> list[str]:
    """The files a selected real tool needs, checked once when the workflow starts: a missing one
    is a setup error for every take, so the run stops before any job instead of each step failing
    every take with the same message. Interpreters and binaries (Spleeter's Python, OpenFace) are
    checked by their steps, which stop the run at once: on a cluster they may exist only on the
    compute nodes."""
    problems = []
    if cfg["sync"]["backend"] == "syncnet":
        weights = cfg["sync"]["syncnet"]["weights"]
        if not weights or not Path(weights).is_file():
            from preprocessing.sync import SYNCNET_URL

            problems.append(
                f"config key 'sync.syncnet.weights': SyncNet weights not found: "
                f"{weights} (get syncnet_v2.model with the download script of "
                f"{SYNCNET_URL})"
            )
    if cfg["coeffs"]["backend"] == "deep3d":
        from preprocessing.deep3d import checkpoint_problem

        problem = checkpoint_problem(cfg["coeffs"]["deep3d"]["checkpoint"])
        if problem:
            problems.append(f"config key 'coeffs.deep3d.checkpoint': {problem}")
    if cfg["separate"]["backend"] == "spleeter":
        from preprocessing.common import StepError
        from preprocessing.separate import check_spleeter_model

        try:
            check_spleeter_model(cfg["separate"]["spleeter"]["model_dir"])
        except StepError as e:
            problems.append(f"config key 'separate.spleeter.model_dir': {e}")
    return problems


_problems = backend_problems(config)
if _problems:
    raise WorkflowError("the selected backends miss files:\n  " + "\n  ".join(_problems))


# ---------------------------------------------------------------------------------- sample sheet
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
    df["song"] = [
        re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s).stem).strip("_.") or "song"
        for s in df["song_path"]
    ]
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
SHARDS = "dataset/shards"
DEMO_SHEET = "work/demo/samples.tsv"
RUN = config["train"]["name"]
# training runs and what each sets in the model section: the configured run (as configured), one
# per paper variant (ablation: runs/<name>-<variant>) and the full model hearing the unseparated mix
# in both streams (fidelity: runs/<name>-mixed, the paper's Table 2 "mixed wave")
RUN_MODEL = {
    RUN: {},
    **{f"{RUN}-{v}": {"variant": v, "audio": "separated"} for v in VARIANTS},
    f"{RUN}-mixed": {"variant": "full", "audio": "mix"},
}
FIDELITY_RUNS = [f"{RUN}-{v}" for v in VARIANTS] + [f"{RUN}-mixed"]
# known truth to score the test takes against: the configured folder, else the demo's own
TRUTH = config["evaluate"]["truth"] or ("work/demo" if config["samples"] == "demo" else None)

NAME_RE = "[A-Za-z0-9][A-Za-z0-9._-]*"


wildcard_constraints:
    take=NAME_RE,
    song=NAME_RE,
    run="|".join(re.escape(r) for r in RUN_MODEL),


# Rules run `python -m preprocessing.<stage>` / `python -m musicface.cli <command>`. The interpreter
# that runs Snakemake (the project venv) goes first on PATH, so jobs use it without activating
# anything (local jobs and SLURM jobs inherit the environment); with --software-deployment-method
# conda the rule's env is activated on top and provides its own `python`. PYTHONPATH makes the
# repository's packages importable in any env and from any working directory.
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(
        p for p in [workflow.basedir, os.environ.get("PYTHONPATH", "")] if p
    ),
)


# ------------------------------------------------------------------------------ input functions
def _existing(path):
    """Input list for a raw file: [] when the file is missing, so that the step itself reports
    "not found" for that take (a failure record -> QC) instead of Snakemake refusing the whole
    DAG."""
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


# --------------------------------------------------------------------------- command-line helpers
def q(value):
    """Shell-quote a config value for a shell: command."""
    return shlex.quote(str(value))


def opt(flag, value):
    """``flag 'value'``, or nothing when the config value is null: a CLI's absent option is None."""
    return "" if value is None else f"{flag} {q(value)}"


def config_json(sections, **replace):
    """The config sections a step uses, as one quoted JSON argument (``replace``: section -> keys
    to set in it). A rule passes only those, so that editing another section does not change its
    params (Snakemake reruns a job whose params changed)."""
    cfg = {
        k: {**config[k], **replace.get(k, {})} if isinstance(config[k], dict) else config[k]
        for k in sections
        if k in config
    }
    return q(json.dumps(cfg, sort_keys=True))


# render_data.smk, render_train.smk, render.smk (the renderer)


def render_bfm_arg(wildcards):
    """deep3d coefficients: the Basel Face Model folder gives the renderer's mesh."""
    bfm_dir = config["coeffs"]["deep3d"]["bfm_dir"]
    return f"--bfm-dir {q(bfm_dir)}" if config["coeffs"]["backend"] == "deep3d" and bfm_dir else ""


def subject_render_data(wildcards):
    """The render data of every take of the subject (the step keeps the training takes)."""
    takes = SAMPLES.loc[SAMPLES["subject"] == wildcards.subject, "take"]
    if not len(takes):
        raise WorkflowError(
            f"render_train: no take of subject '{wildcards.subject}' in the sample sheet"
        )
    return expand("work/takes/{take}/render.h5", take=takes)


def test_takes():
    """Test takes of dataset/split.tsv (a checkpoint: the DAG is re-evaluated once it exists)."""
    split = pd.read_csv(
        checkpoints.split.get().output.split, sep="\t", dtype=str, keep_default_na=False
    )
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
