# coeffs: per-frame head pose (6-D) + expression [builtin: landmarks | deep3d: Deep3DFaceRecon]
# exp_basis: the builtin expression PCA basis, fitted on the training takes only (gathering rule)


rule coeffs:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
        track=take_file("track.npz"),
    output:
        "work/takes/{take}/coeffs.npz",
    params:
        backend=config["coeffs"]["backend"],
        checkpoint=q(config["coeffs"]["deep3d"]["checkpoint"]),
        bfm_dir=q(config["coeffs"]["deep3d"]["bfm_dir"]),
        batch=config["coeffs"]["deep3d"]["batch_size"],
        device=config["coeffs"]["deep3d"]["device"],
        smooth="--smooth" if config["coeffs"]["smooth"] else "",
    log:
        "logs/coeffs/{take}.log",
    benchmark:
        "benchmarks/coeffs/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=lambda wc: 6000 if config["coeffs"]["backend"] == "deep3d" else 2000,
    shell:
        "{PY} -m preprocessing.coeffs extract --take {wildcards.take} --video {input.video:q}"
        " --ingest {input.ingest:q} --track {input.track:q} --backend {params.backend}"
        " --checkpoint {params.checkpoint} --bfm-dir {params.bfm_dir} --batch-size {params.batch}"
        " --device {params.device} {params.smooth} --out {output:q} > {log:q} 2>&1"


rule exp_basis:
    input:
        split="dataset/split.tsv",
        coeffs=all_takes("coeffs.npz"),
    output:
        "dataset/exp_basis.npz",
    params:
        backend=config["coeffs"]["backend"],
        dim=config["coeffs"]["exp_dim"],
    log:
        "logs/exp_basis.log",
    benchmark:
        "benchmarks/exp_basis.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{PY} -m preprocessing.coeffs fit-basis --split {input.split:q} --backend {params.backend}"
        " --dim {params.dim} --out {output:q} {input.coeffs:q} > {log:q} 2>&1"
