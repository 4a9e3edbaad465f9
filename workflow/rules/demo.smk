# Demo recordings: synthetic singers with ground truth, in exactly the form of a user's raw data.


rule demo:
    output:
        sheet=DEMO_SHEET,
        videos=[v for v in SAMPLES["video"]] if config["samples"] == "demo" else [],
        songs=[SONG_PATH[s] for s in SONGS] if config["samples"] == "demo" else [],
    params:
        subjects=config["demo"]["subjects"],
        songs=config["demo"]["songs"],
        seconds=config["demo"]["seconds"],
        seed=config["demo"]["seed"],
    log:
        "logs/demo.log",
    benchmark:
        "benchmarks/demo.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.demo --out work/demo --subjects {params.subjects}"
        " --songs {params.songs} --seconds {params.seconds} --seed {params.seed} > {log:q} 2>&1"
