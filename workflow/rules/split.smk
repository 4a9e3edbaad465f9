# split: gather every take's QC -> dataset/qc.tsv (all takes, status, reason) and
# dataset/split.tsv (passing takes, 90/10 seeded, by take or by song). One line per failed take goes
# to the terminal (and the log): failed takes never stop the DAG, but the user should see them.


checkpoint split:
    input:
        qc=all_takes("qc.json"),
    output:
        split="dataset/split.tsv",
        qc="dataset/qc.tsv",
    params:
        by=config["split"]["by"],
        frac=config["split"]["test_fraction"],
        seed=config["split"]["seed"],
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.split --by {params.by} --test-fraction {params.frac}"
        " --seed {params.seed}"
        " --out-split {output.split:q} --out-qc {output.qc:q} {input.qc:q} 2>&1 | tee {log:q} >&2"
