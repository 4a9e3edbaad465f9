# coeffs: per-frame head pose (6-D) + expression [builtin: landmarks | deep3d: Deep3DFaceRecon]
# exp_basis: the builtin expression PCA basis, fitted on the training takes only (gathering rule)
# With backend deep3d a missing checkpoint stops the run before any job starts (common.smk,
# backend_problems: a configuration error, not bad input of one take).

COEFFS_DEEP3D = config["coeffs"]["backend"] == "deep3d"
DEEP3D = config["coeffs"]["deep3d"]


rule coeffs:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
        track=take_file("track.npz"),
    output:
        "work/takes/{take}/coeffs.npz",
    params:
        video=take_video_path,
        backend=config["coeffs"]["backend"],
        deep3d=lambda wc, threads: (  # the deep3d backend's options (none for builtin)
            f"--checkpoint {q(DEEP3D['checkpoint'])} --batch-size {DEEP3D['batch_size']}"
            f" --device {q(DEEP3D['device'])} --threads {threads}"
            if COEFFS_DEEP3D
            else ""
        ),
        smooth="--smooth" if config["coeffs"]["smooth"] else "",
        pose_sigma=config["coeffs"]["pose_sigma"],
    log:
        "logs/coeffs/{take}.log",
    benchmark:
        "benchmarks/coeffs/{take}.tsv"
    group:
        "take_{take}"
    conda:
        "../../envs/deep3d.yaml"
    threads: 2 if COEFFS_DEEP3D else 1
    resources:
        mem_mb=6000 if COEFFS_DEEP3D else 2000,
    shell:
        "python -m preprocessing.coeffs extract --take {wildcards.take} --video {params.video:q}"
        " --ingest {input.ingest:q} --track {input.track:q} --backend {params.backend}"
        " {params.deep3d} {params.smooth} --pose-sigma {params.pose_sigma} --out {output:q} > {log:q} 2>&1"


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
    conda:
        "../../envs/deep3d.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "python -m preprocessing.coeffs fit-basis --split {input.split:q}"
        " --backend {params.backend}"
        " --dim {params.dim} --out {output:q} {input.coeffs:q} > {log:q} 2>&1"
