# evaluate: trained model on the test split -> metrics.json, table.md (paper Table 1 layout), figures
#           (pose.png Fig. 5b, attention.png Fig. 6, eye_durations.png Fig. 9, training.png).
# ablation: train + evaluate the four variants -> runs/<name>-ablation/table.md


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


EVAL_CMD = (
    "python -m musicface.cli evaluate --checkpoint {input.model:q} --shards {input.shards:q}"
    " --basis {input.basis:q} --out {params.out:q} {params.args} > {log:q} 2>&1"
)


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


rule evaluate:
    input:
        model=rules.train.output.model,
        shards=SHARDS,
        basis="dataset/exp_basis.npz",
    output:
        **eval_outputs(RUN),
    params:
        out=f"runs/{RUN}/eval",
        args=eval_args(),
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
        basis="dataset/exp_basis.npz",
    output:
        **eval_outputs(f"{RUN}-{{variant}}"),
    params:
        out=lambda wc: f"runs/{RUN}-{wc.variant}/eval",
        args=eval_args(),
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
        table=report(f"runs/{RUN}-ablation/table.md", caption="../report/ablation.rst", category="Ablation"),
    log:
        f"logs/evaluate/{RUN}-ablation.log",
    threads: 1
    shell:
        "python -m musicface.cli ablation-table --out {output.table:q} {input.metrics:q} > {log:q} 2>&1"
