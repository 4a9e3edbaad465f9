# render_data: one take -> the renderer's training data: the take's frames in one fixed face crop
# (JPEG in HDF5) + per-frame condition images from the shards' exp, pose and eye state.
# Only the takes of subjects that get a renderer are ever asked for (render_train's inputs).


rule render_data:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
        track=take_file("track.npz"),
        coeffs=take_file("coeffs.npz"),
        qc=take_file("qc.json"),
        shards=SHARDS,
        basis="dataset/exp_basis.npz",
    output:
        "work/takes/{take}/render.h5",
    params:
        video=take_video_path,
        size=config["render"]["size"],
        bfm=render_bfm_arg,
    log:
        "logs/render_data/{take}.log",
    benchmark:
        "benchmarks/render_data/{take}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m musicface.cli render-data --take {wildcards.take} --video {params.video:q}"
        " --ingest {input.ingest:q} --track {input.track:q} --coeffs {input.coeffs:q}"
        " --qc {input.qc:q}"
        " --shards {input.shards:q} --basis {input.basis:q} --size {params.size} {params.bfm}"
        " --out {output:q} > {log:q} 2>&1"
