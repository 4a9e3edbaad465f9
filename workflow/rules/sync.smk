# sync: where in the song does the take start? GCC-PHAT of the camera audio over the whole song
# (mouth opening vs vocal energy when the video has no audio) [+ SyncNet refinement] -> sync.json
# SyncNet selected without its weights stops the run at start (common.smk, backend_problems).


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
        video=take_video_path,
        backend=config["sync"]["backend"],
        weights=opt("--syncnet-weights", config["sync"]["syncnet"]["weights"]),
        device=config["sync"]["syncnet"]["device"],
        search=config["sync"]["syncnet"]["search_frames"],
    log:
        "logs/sync/{take}.log",
    benchmark:
        "benchmarks/sync/{take}.tsv"
    conda:
        "../../envs/syncnet.yaml"
    group:
        "take_{take}"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m preprocessing.sync --take {wildcards.take} --video {params.video:q}"
        " --ingest {input.ingest:q} --track {input.track:q} --mix {input.mix:q}"
        " --vocals {input.vocals:q}"
        " --backend {params.backend} {params.weights} --device {params.device}"
        " --search-frames {params.search} --out {output:q} > {log:q} 2>&1"
