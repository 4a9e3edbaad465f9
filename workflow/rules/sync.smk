# sync: where in the song does the take start? GCC-PHAT of the camera audio over the whole song
# (mouth opening vs vocal energy when the video has no audio) [+ SyncNet refinement] -> sync.json

# SyncNet selected without its weights: stop before anything runs, with the file and how to get it
# (the step itself would otherwise fail every take one by one with the same message).
if config["sync"]["backend"] == "syncnet":
    _syncnet_weights = config["sync"]["syncnet"]["weights"]
    if not _syncnet_weights or not Path(_syncnet_weights).is_file():
        raise WorkflowError(
            f"config sync.backend is 'syncnet' but sync.syncnet.weights ({_syncnet_weights}) is not a file: "
            "get syncnet_v2.model with the download script of https://github.com/joonson/syncnet_python "
            "(download_model.sh) and set sync.syncnet.weights to its path"
        )


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
        weights=q(config["sync"]["syncnet"]["weights"]),
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
        " --ingest {input.ingest:q} --track {input.track:q} --mix {input.mix:q} --vocals {input.vocals:q}"
        " --backend {params.backend} --syncnet-weights {params.weights} --device {params.device}"
        " --search-frames {params.search} --out {output:q} > {log:q} 2>&1"
