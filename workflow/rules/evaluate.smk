# evaluate: a trained run on the test split -> metrics.json, table.md (paper Table 1 layout),
#           figures (pose.png Fig. 5b, attention.png Fig. 6, eye_durations.png Fig. 9,
#           training.png); one rule for every run (train.smk). Target `evaluate`: the configured
#           run.
# ablation: the four variants' evaluations -> runs/<name>-ablation/table.md
# fidelity: the four variants and the mixed-wave run, scored against the demo truth too ->
#           runs/<name>-fidelity/table.md (make fidelity: with fidelity.yaml; docs/fidelity.md)


rule evaluate:
    input:
        f"runs/{RUN}/eval/metrics.json",


rule evaluate_run:
    input:
        model="runs/{run}/model.pt",
        shards=SHARDS,
        truth=[DEMO_SHEET] if TRUTH == "work/demo" else [],  # the demo's truth files come with it
        # the configured run also gathers the rendered-video metrics (render.smk, render.enabled)
        render=lambda wc: render_metrics(wc) if wc.run == RUN else [],
    output:
        metrics=report(
            "runs/{run}/eval/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
        table=report(
            "runs/{run}/eval/table.md",
            caption="../report/table.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
        pose=report(
            "runs/{run}/eval/pose.png",
            caption="../report/pose.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
        attention=report(
            "runs/{run}/eval/attention.png",
            caption="../report/attention.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
        eye_durations=report(
            "runs/{run}/eval/eye_durations.png",
            caption="../report/eye_durations.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
        training=report(
            "runs/{run}/eval/training.png",
            caption="../report/training.rst",
            category="Evaluation",
            subcategory="{run}",
        ),
    params:
        out=lambda wc, output: os.path.dirname(output.metrics),
        # evaluate: (+ eyes: tau, closed_threshold; coeffs: deep3d.bfm_dir, the BFM for LMD)
        seed=config["evaluate"]["seed"],
        device=q(config["evaluate"]["device"]),
        tau=config["eyes"]["tau"],
        closed=config["eyes"]["closed_threshold"],
        optional=" ".join(
            [
                opt("--syncnet-weights", config["evaluate"]["syncnet_weights"]),
                opt("--rendered", config["evaluate"]["rendered"]),
                opt("--figure-take", config["evaluate"]["figure_take"]),
                opt("--bfm-dir", config["coeffs"]["deep3d"]["bfm_dir"]),
                opt("--truth", TRUTH),
            ]
        ),
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m musicface.cli evaluate --checkpoint {input.model:q} --shards {input.shards:q}"
        " --out {params.out:q} --seed {params.seed} --device {params.device} --tau {params.tau}"
        " --closed-threshold {params.closed} {params.optional}"
        " --render-metrics {input.render:q} > {log:q} 2>&1"


rule ablation:
    input:
        metrics=expand("runs/{run}-{variant}/eval/metrics.json", run=RUN, variant=VARIANTS),
    output:
        table=report(
            f"runs/{RUN}-ablation/table.md", caption="../report/ablation.rst", category="Ablation"
        ),
    log:
        f"logs/evaluate/{RUN}-ablation.log",
    threads: 1
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m musicface.cli ablation-table --out {output.table:q} {input.metrics:q} > {log:q} 2>&1"


rule fidelity:
    input:
        metrics=expand("runs/{run}/eval/metrics.json", run=FIDELITY_RUNS),
    output:
        table=report(
            f"runs/{RUN}-fidelity/table.md", caption="../report/fidelity.rst", category="Fidelity"
        ),
    log:
        f"logs/evaluate/{RUN}-fidelity.log",
    threads: 1
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m musicface.cli ablation-table --out {output.table:q} {input.metrics:q} > {log:q} 2>&1"
