# train: shards -> runs/<name>/model.pt (+ checkpoints, metrics.csv, config snapshot).
# ablation_train: the same for runs/<name>-<variant> (paper 4.3 variants).


# train.processes > 1: one DDP process per GPU through torchrun (musicface.train reads WORLD_SIZE/RANK)
NPROC = config["train"]["processes"]
LAUNCHER = (
    f"python -m torch.distributed.run --standalone --nproc_per_node {NPROC} -m musicface.cli"
    if NPROC > 1
    else "python -m musicface.cli"
)


TRAIN_CMD = (
    f"{LAUNCHER} train --shards {{input.shards:q}} --config-json {{params.cfg}}"
    " --out {params.out:q} --threads {params.threads} {params.resume} > {log:q} 2>&1"
)


rule train:
    input:
        shards=SHARDS,
    output:
        model=f"runs/{RUN}/model.pt",
        metrics=f"runs/{RUN}/metrics.csv",
    params:
        cfg=lambda wc: run_config(),
        out=lambda wc, output: os.path.dirname(output.model),
        resume="--resume",
        threads=threads_per_process,
    log:
        f"logs/train/{RUN}.log",
    benchmark:
        f"benchmarks/train/{RUN}.tsv"
    threads: workflow.resource_settings.cores or 1  # None without --cores (--unlock, --report)
    resources:
        mem_mb=8000,
        gpu=NPROC,
    conda:
        "../../envs/musicface.yaml"
    shell:
        TRAIN_CMD


rule ablation_train:
    input:
        shards=SHARDS,
    output:
        model=f"runs/{RUN}-{{variant}}/model.pt",
        metrics=f"runs/{RUN}-{{variant}}/metrics.csv",
    params:
        cfg=lambda wc: run_config(wc.variant),
        out=lambda wc, output: os.path.dirname(output.model),
        resume="--resume",
        threads=threads_per_process,
    log:
        f"logs/train/{RUN}-{{variant}}.log",
    benchmark:
        f"benchmarks/train/{RUN}-{{variant}}.tsv"
    threads: workflow.resource_settings.cores or 1  # None without --cores (--unlock, --report)
    resources:
        mem_mb=8000,
        gpu=NPROC,
    conda:
        "../../envs/musicface.yaml"
    shell:
        TRAIN_CMD
