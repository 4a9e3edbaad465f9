# MusicFace: raw singing takes -> training set (HDF5 shards) -> trained model -> evaluation.
#
#   snakemake --cores 16 train                          # config.yaml (demo by default)
#   snakemake --workflow-profile profiles/slurm train   # the same DAG on a SLURM cluster
#
# Targets: dataset, train, evaluate, render (the test takes rendered), all (= evaluate + render),
# ablation (the paper's four variants), fidelity (the variants and the mixed wave scored against the
# demo truth; make fidelity, docs/fidelity.md).
# docs/dag.md draws the DAG and says which config sections each rule depends on.
# Every stage is one file in workflow/rules/ calling `python -m preprocessing.<stage>` (or `musicface`).
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/song.smk"
include: "workflow/rules/sync.smk"
include: "workflow/rules/separate.smk"
include: "workflow/rules/mfcc.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/coeffs.smk"
include: "workflow/rules/au45.smk"
include: "workflow/rules/eyes.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/render_data.smk"
include: "workflow/rules/render_train.smk"
include: "workflow/rules/render.smk"


rule all:
    default_target: True
    input:
        rules.evaluate.input,
        lambda wc: render_targets() if config["render"]["enabled"] else [],


rule dataset:
    input:
        SHARDS,
        "dataset/qc.tsv",
