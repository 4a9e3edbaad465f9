# separate: song -> vocals.wav + music.wav (16 kHz mono) [builtin DSP separator | Spleeter 2stems]


rule separate:
    input:
        mix="work/songs/{song}/mix.wav",
        audio=song_audio,
    output:
        vocals="work/songs/{song}/vocals.wav",
        music="work/songs/{song}/music.wav",
    params:
        backend=config["separate"]["backend"],
        python=q(config["separate"]["spleeter"]["python"]),
        model_dir=q(config["separate"]["spleeter"]["model_dir"]),
    log:
        "logs/separate/{song}.log",
    benchmark:
        "benchmarks/separate/{song}.tsv"
    conda:
        "../../envs/spleeter.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc: 8000 if config["separate"]["backend"] == "spleeter" else 2000,
    shell:
        "{PY} -m preprocessing.separate --song {wildcards.song} --mix {input.mix:q} --audio {input.audio:q}"
        " --backend {params.backend} --spleeter-python {params.python} --model-dir {params.model_dir}"
        " --out-vocals {output.vocals:q} --out-music {output.music:q} > {log:q} 2>&1"
