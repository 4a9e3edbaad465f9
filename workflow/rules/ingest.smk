# ingest: probe the take's video (30 fps constant-frame-rate timeline, audio track) -> ingest.json


rule ingest:
    input:
        video=take_video,
    output:
        "work/takes/{take}/ingest.json",
    params:
        video=take_video_path,
    log:
        "logs/ingest/{take}.log",
    benchmark:
        "benchmarks/ingest/{take}.tsv"
    conda:
        "../../envs/musicface.yaml"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "python -m preprocessing.ingest --take {wildcards.take} --video {params.video:q}"
        " --out {output:q} > {log:q} 2>&1"
