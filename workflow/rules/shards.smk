# shards: passing takes -> dataset/shards/{train,test}-NNNNN.h5 (schema version 1) + manifest.json.
# The folder is built beside the target and renamed into place, so a killed job never leaves a set
# that looks done (Snakemake also marks the job incomplete and reruns it).


rule shards:
    input:
        split="dataset/split.tsv",
        basis="dataset/exp_basis.npz",
        ingest=all_takes("ingest.json"),
        sync=all_takes("sync.json"),
        mfcc=all_takes("mfcc.npz"),
        track=all_takes("track.npz"),
        coeffs=all_takes("coeffs.npz"),
        au45=all_takes("au45.npz"),
        eyes=all_takes("eyes.npz"),
        qc=all_takes("qc.json"),
    output:
        directory(SHARDS),
    params:
        per_shard=config["shards"]["takes_per_shard"],
        # only the sections that shape the data (their hash is the shards' config_sha): editing
        # model / train / loss / evaluate keys never rebuilds the shards
        config_json=config_json(DATASET_CONFIG_KEYS),
    log:
        "logs/shards.log",
    benchmark:
        "benchmarks/shards.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.shards --split {input.split:q} --basis {input.basis:q}"
        " --work work/takes"
        " --takes-per-shard {params.per_shard} --config-json {params.config_json} --out {output:q}"
        " > {log:q} 2>&1"
