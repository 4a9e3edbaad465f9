# song: decode the song that was played -> 16 kHz mono mix.wav + song.json (probe)


rule song:
    input:
        audio=song_audio,
    output:
        mix="work/songs/{song}/mix.wav",
        info="work/songs/{song}/song.json",
    params:
        audio=song_audio_path,
    log:
        "logs/song/{song}.log",
    benchmark:
        "benchmarks/song/{song}.tsv"
    conda:
        "../../envs/musicface.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "python -m preprocessing.song --song {wildcards.song} --audio {params.audio:q}"
        " --out-wav {output.mix:q} --out-json {output.info:q} > {log:q} 2>&1"
