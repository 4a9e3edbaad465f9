# track: MediaPipe FaceMesh (478 landmarks), detector-first crop, one face followed -> track.npz


rule track:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
    output:
        "work/takes/{take}/track.npz",
    params:
        video=take_video_path,
        max_gap=config["track"]["max_gap"],
    log:
        "logs/track/{take}.log",
    benchmark:
        "benchmarks/track/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.track --take {wildcards.take} --video {params.video:q}"
        " --ingest {input.ingest:q} --max-gap {params.max_gap} --out {output:q} > {log:q} 2>&1"
