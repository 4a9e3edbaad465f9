# evaluate: trained model on the test split -> metrics.json, table.md (paper Table 1 layout), figures.
# ablation: train + evaluate the four variants -> runs/<name>-ablation/table.md


EVAL_CMD = (
    "{PY} -m musicface.cli evaluate --checkpoint {input.model:q} --shards {input.shards:q}"
    " --out {params.out:q} > {log:q} 2>&1"
)


rule evaluate:
    input:
        model=rules.train.output.model,
        shards=SHARDS,
    output:
        metrics=report(f"runs/{RUN}/eval/metrics.json", category="Evaluation"),
        table=report(f"runs/{RUN}/eval/table.md", category="Evaluation"),
    params:
        out=f"runs/{RUN}/eval",
    log:
        f"logs/evaluate/{RUN}.log",
    benchmark:
        f"benchmarks/evaluate/{RUN}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        EVAL_CMD


rule ablation_evaluate:
    input:
        model=f"runs/{RUN}-{{variant}}/model.pt",
        shards=SHARDS,
    output:
        metrics=f"runs/{RUN}-{{variant}}/eval/metrics.json",
        table=f"runs/{RUN}-{{variant}}/eval/table.md",
    params:
        out=lambda wc: f"runs/{RUN}-{wc.variant}/eval",
    log:
        f"logs/evaluate/{RUN}-{{variant}}.log",
    benchmark:
        f"benchmarks/evaluate/{RUN}-{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        EVAL_CMD


rule ablation:
    input:
        metrics=expand(
            "runs/{run}-{variant}/eval/metrics.json",
            run=RUN,
            variant=["single_stream", "two_stream", "with_atm", "full"],
        ),
    output:
        table=report(f"runs/{RUN}-ablation/table.md", category="Ablation"),
    log:
        f"logs/evaluate/{RUN}-ablation.log",
    threads: 1
    shell:
        "{PY} -m musicface.cli ablation-table --out {output.table:q} {input.metrics:q} > {log:q} 2>&1"
