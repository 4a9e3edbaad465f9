# sync: where in the song does the take start? GCC-PHAT of the camera audio over the whole song
# (mouth opening vs vocal energy when the video has no audio) [+ SyncNet refinement] -> sync.json


rule sync:
    input:
        video=take_video,
        ingest=take_file("ingest.json"),
        track=take_file("track.npz"),
        mix=take_song_file("mix.wav"),
        vocals=take_song_file("vocals.wav"),
    output:
        "work/takes/{take}/sync.json",
    params:
        backend=config["sync"]["backend"],
        weights=q(config["sync"]["syncnet"]["weights"]),
        device=config["sync"]["syncnet"]["device"],
        search=config["sync"]["syncnet"]["search_frames"],
    log:
        "logs/sync/{take}.log",
    benchmark:
        "benchmarks/sync/{take}.tsv"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{PY} -m preprocessing.sync --take {wildcards.take} --video {input.video:q}"
        " --ingest {input.ingest:q} --track {input.track:q} --mix {input.mix:q} --vocals {input.vocals:q}"
        " --backend {params.backend} --syncnet-weights {params.weights} --device {params.device}"
        " --search-frames {params.search} --out {output:q} > {log:q} 2>&1"
