# train: shards -> runs/<run>/model.pt (+ checkpoints, metrics.csv, config snapshot), one rule for
# every run: runs/<name> (config model.variant), runs/<name>-<variant> (paper 4.3 ablation) and
# runs/<name>-mixed (the full model on the unseparated mix, paper Table 2; fidelity).
# Target `train`: the configured run.


# train.processes > 1: one DDP process per GPU through torchrun (musicface.train reads WORLD_SIZE/RANK)
NPROC = config["train"]["processes"]
LAUNCHER = (
    f"python -m torch.distributed.run --standalone --nproc_per_node {NPROC} -m musicface.cli"
    if NPROC > 1
    else "python -m musicface.cli"
)


rule train:
    input:
        f"runs/{RUN}/model.pt",


rule train_run:
    input:
        shards=SHARDS,
        basis="dataset/exp_basis.npz",
    output:
        model="runs/{run}/model.pt",
        metrics="runs/{run}/metrics.csv",
    params:
        # the sections training uses, with the run's model settings: other edits never retrain
        cfg=lambda wc: config_json(("model", "train", "loss"), model=RUN_MODEL[wc.run]),
        out=lambda wc, output: os.path.dirname(output.model),
        threads=lambda wc, threads: max(1, threads // NPROC),
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    threads: workflow.resource_settings.cores or 1  # None without --cores (--unlock, --report)
    resources:
        mem_mb=8000,
        gpu=NPROC,
    conda:
        "../../envs/musicface.yaml"
    shell:
        f"{LAUNCHER} train --shards {{input.shards:q}} --basis {{input.basis:q}}"
        " --config-json {params.cfg} --out {params.out:q} --threads {params.threads} --resume"
        " > {log:q} 2>&1"
