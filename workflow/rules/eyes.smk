# eyes: AU45 -> per-video min-max -> tau split -> au45, eye_long, eye_blink, closure events


rule eyes:
    input:
        au45=take_file("au45.npz"),
    output:
        "work/takes/{take}/eyes.npz",
    params:
        tau=config["eyes"]["tau"],
        closed=config["eyes"]["closed_threshold"],
    log:
        "logs/eyes/{take}.log",
    benchmark:
        "benchmarks/eyes/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "python -m preprocessing.eyes --take {wildcards.take} --au45 {input.au45:q}"
        " --tau {params.tau} --closed-threshold {params.closed} --out {output:q} > {log:q} 2>&1"
