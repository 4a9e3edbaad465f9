# render_train: one subject's renderer (conditional GAN) from the render data of its training takes
# -> runs/<name>/render/<subject>.pt (self-contained, names its subject). Resumes from
# runs/<name>/render/<subject>.state.pt like train; a GPU through the SLURM profile.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while waiting made a CPU step ~6x slower when
# other processes share the cores (measured: 2 threads, machine load 10: 7.2 s vs 1.2 s per step).


rule render_train:
    input:
        data=subject_render_data,
        split="dataset/split.tsv",
    output:
        model=f"runs/{RUN}/render/{{subject}}.pt",
    params:
        # the render section but `enabled`: switching the renderer off and on never retrains it
        cfg=lambda wc: q(
            json.dumps(
                {k: v for k, v in config["render"].items() if k != "enabled"}, sort_keys=True
            )
        ),
        threads=lambda wc, threads: threads,
    log:
        f"logs/render_train/{RUN}/{{subject}}.log",
    benchmark:
        f"benchmarks/render_train/{RUN}/{{subject}}.tsv"
    threads: workflow.resource_settings.cores or 1  # None without --cores (--unlock, --report)
    resources:
        mem_mb=6000,
        gpu=1,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "OMP_WAIT_POLICY=PASSIVE python -m musicface.cli render-train --subject {wildcards.subject}"
        " --config-json {params.cfg}"
        " --threads {params.threads} --resume --out {output.model:q} {input.data:q} > {log:q} 2>&1"
