# qc: pass/fail per take with every reason gathered from the steps -> qc.json


rule qc:
    input:
        ingest=take_file("ingest.json"),
        sync=take_file("sync.json"),
        mfcc=take_file("mfcc.npz"),
        track=take_file("track.npz"),
        coeffs=take_file("coeffs.npz"),
        au45=take_file("au45.npz"),
        eyes=take_file("eyes.npz"),
    output:
        "work/takes/{take}/qc.json",
    params:
        subject=lambda wc: SAMPLES.loc[wc.take, "subject"],
        song=lambda wc: take_song(wc.take),
        min_conf=config["sync"]["min_confidence"],
        min_valid=config["qc"]["min_valid_fraction"],
        min_frames=config["qc"]["min_frames"],
    log:
        "logs/qc/{take}.log",
    benchmark:
        "benchmarks/qc/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.qc --take {wildcards.take} --subject {params.subject:q}"
        " --song {params.song:q} --ingest {input.ingest:q} --sync {input.sync:q}"
        " --mfcc {input.mfcc:q} --track {input.track:q} --coeffs {input.coeffs:q}"
        " --au45 {input.au45:q} --eyes {input.eyes:q}"
        " --min-sync-confidence {params.min_conf} --min-valid-fraction {params.min_valid}"
        " --min-frames {params.min_frames} --out {output:q} > {log:q} 2>&1"
