# evaluate: trained model on the test split -> metrics.json, table.md (paper Table 1 layout), figures
#           (pose.png Fig. 5b, attention.png Fig. 6, eye_durations.png Fig. 9, training.png).
# ablation: train + evaluate the four variants -> runs/<name>-ablation/table.md


EVAL_CMD = (
    "python -m musicface.cli evaluate --checkpoint {input.model:q} --shards {input.shards:q}"
    " --basis {input.basis:q} --out {params.out:q} {params.args} > {log:q} 2>&1"
)
# the main run also gathers the rendered-video metrics (render.smk) when render.enabled
EVAL_RENDER_CMD = (
    "python -m musicface.cli evaluate --checkpoint {input.model:q} --shards {input.shards:q}"
    " --basis {input.basis:q} --out {params.out:q} {params.args} --render-metrics {input.render:q}"
    " > {log:q} 2>&1"
)


rule evaluate:
    input:
        model=rules.train.output.model,
        shards=SHARDS,
        basis="dataset/exp_basis.npz",
        render=lambda wc: render_metrics(wc),
    output:
        **eval_outputs(RUN),
    params:
        out=lambda wc, output: os.path.dirname(output.metrics),
        args=eval_args(),
    log:
        f"logs/evaluate/{RUN}.log",
    benchmark:
        f"benchmarks/evaluate/{RUN}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        EVAL_RENDER_CMD


rule ablation_evaluate:
    input:
        model=f"runs/{RUN}-{{variant}}/model.pt",
        shards=SHARDS,
        basis="dataset/exp_basis.npz",
    output:
        **eval_outputs(f"{RUN}-{{variant}}"),
    params:
        out=lambda wc, output: os.path.dirname(output.metrics),
        args=eval_args(),
    log:
        f"logs/evaluate/{RUN}-{{variant}}.log",
    benchmark:
        f"benchmarks/evaluate/{RUN}-{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/musicface.yaml"
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
        table=report(f"runs/{RUN}-ablation/table.md", caption="../report/ablation.rst", category="Ablation"),
    log:
        f"logs/evaluate/{RUN}-ablation.log",
    threads: 1
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m musicface.cli ablation-table --out {output.table:q} {input.metrics:q} > {log:q} 2>&1"
