# mfcc: vocals / music / mix -> 100 Hz MFCC + delta (26-D), row 0 = time of the take's video frame 0
# (valid = 0 on the frames over stretches of the song that did not decode: song.json gaps_s)


rule mfcc:
    input:
        ingest=take_file("ingest.json"),
        sync=take_file("sync.json"),
        vocals=take_song_file("vocals.wav"),
        music=take_song_file("music.wav"),
        mix=take_song_file("mix.wav"),
        song=take_song_file("song.json"),
    output:
        "work/takes/{take}/mfcc.npz",
    log:
        "logs/mfcc/{take}.log",
    benchmark:
        "benchmarks/mfcc/{take}.tsv"
    conda:
        "../../envs/musicface.yaml"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "python -m preprocessing.mfcc --take {wildcards.take} --ingest {input.ingest:q}"
        " --sync {input.sync:q}"
        " --vocals {input.vocals:q} --music {input.music:q} --mix {input.mix:q}"
        " --song-info {input.song:q} --out {output:q}"
        " > {log:q} 2>&1"
