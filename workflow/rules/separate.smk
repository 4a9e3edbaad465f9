# separate: song -> vocals.wav + music.wav (16 kHz mono) [builtin DSP separator | Spleeter 2stems]
# The rule runs MusicFace's own module (envs/musicface.yaml); with backend spleeter that module
# calls the Spleeter interpreter (separate.spleeter.python, built by `make spleeter-env` or from
# envs/spleeter.yaml); a missing model stops the run at start (common.smk), a missing interpreter
# stops it at the first song.

SEPARATE_WITH_SPLEETER = config["separate"]["backend"] == "spleeter"


rule separate:
    input:
        mix="work/songs/{song}/mix.wav",
        audio=song_audio,
    output:
        vocals="work/songs/{song}/vocals.wav",
        music="work/songs/{song}/music.wav",
    params:
        audio=song_audio_path,
        backend=config["separate"]["backend"],
        python=q(config["separate"]["spleeter"]["python"]),
        model_dir=opt("--model-dir", config["separate"]["spleeter"]["model_dir"]),
        chunk_s=config["separate"]["spleeter"]["chunk_s"],
    log:
        "logs/separate/{song}.log",
    benchmark:
        "benchmarks/separate/{song}.tsv"
    conda:
        "../../envs/musicface.yaml"
    threads: 4 if SEPARATE_WITH_SPLEETER else 1
    resources:
        mem_mb=8000 if SEPARATE_WITH_SPLEETER else 2000,
    shell:
        "python -m preprocessing.separate --song {wildcards.song} --mix {input.mix:q}"
        " --audio {params.audio:q}"
        " --backend {params.backend} --spleeter-python {params.python} {params.model_dir}"
        " --chunk-s {params.chunk_s} --threads {threads}"
        " --out-vocals {output.vocals:q} --out-music {output.music:q} > {log:q} 2>&1"
