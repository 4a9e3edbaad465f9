# coeffs: per-frame head pose (6-D) + expression [builtin: landmarks | deep3d: Deep3DFaceRecon]
# exp_basis: the builtin expression PCA basis, fitted on the training takes only (gathering rule)
# With backend deep3d a missing checkpoint stops the run here, before any job starts (it is a
# configuration error, not bad input of one take).

COEFFS_DEEP3D = config["coeffs"]["backend"] == "deep3d"

if COEFFS_DEEP3D:
    _ckpt = config["coeffs"]["deep3d"]["checkpoint"]
    if not _ckpt or not Path(_ckpt).is_file():
        raise WorkflowError(
            f"config key 'coeffs.deep3d.checkpoint': Deep3DFaceRecon checkpoint not found: {_ckpt} "
            "(epoch_20.pth of Deep3DFaceRecon_pytorch; see README, section Coefficients)"
        )


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
        deep3d=coeffs_deep3d_args,
        smooth="--smooth" if config["coeffs"]["smooth"] else "",
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
        " {params.deep3d} {params.smooth} --out {output:q} > {log:q} 2>&1"


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
        "python -m preprocessing.coeffs fit-basis --split {input.split:q} --backend {params.backend}"
        " --dim {params.dim} --out {output:q} {input.coeffs:q} > {log:q} 2>&1"
