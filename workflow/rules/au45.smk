# au45: raw eye-closure intensity per frame [builtin: eyelid aspect ratio | openface: AU45_r]
# No `container:` directive: the step itself is our Python; only OpenFace's FeatureExtraction runs
# in the image (apptainer/singularity exec), and only when the binary is not installed on the host.


rule au45:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
        track=take_file("track.npz"),
    output:
        "work/takes/{take}/au45.npz",
    params:
        video=take_video_path,
        backend=config["au45"]["backend"],
        binary=q(config["au45"]["openface"]["binary"]),
        container=q(config["au45"]["openface"]["container"]),
    log:
        "logs/au45/{take}.log",
    benchmark:
        "benchmarks/au45/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.au45 --take {wildcards.take} --video {params.video:q}"
        " --ingest {input.ingest:q}"
        " --track {input.track:q} --backend {params.backend} --openface-binary {params.binary}"
        " --openface-container {params.container}"
        " --out {output:q} > {log:q} 2>&1"
