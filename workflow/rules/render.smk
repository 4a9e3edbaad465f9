# render: every test take rendered by its subject's renderer -> runs/<name>/render/<take>.mp4
# (generated parameters), <take>.recon.mp4 (ground-truth parameters), <take>.png (frame grid),
# <take>.json (rendered-video metrics, gathered by evaluate). The test takes are known once the
# split is made (checkpoint split), so only the test subjects' renderers are trained.


rule render_take:
    input:
        renderer=lambda wc: f"runs/{RUN}/render/{SAMPLES.loc[wc.take, 'subject']}.pt",
        model=f"runs/{RUN}/model.pt",
        shards=SHARDS,
        data="work/takes/{take}/render.h5",
        mix=take_song_file("mix.wav"),
    output:
        video=f"runs/{RUN}/render/{{take}}.mp4",
        recon=f"runs/{RUN}/render/{{take}}.recon.mp4",
        metrics=f"runs/{RUN}/render/{{take}}.json",
        figure=report(
            f"runs/{RUN}/render/{{take}}.png", caption="../report/render.rst", category="Renderer"
        ),
    params:
        out=lambda wc, output: os.path.dirname(output.video),
        seed=config["evaluate"]["seed"],
        device=config["evaluate"]["device"],
    wildcard_constraints:
        take=r"(?!.*\.recon$)[A-Za-z0-9][A-Za-z0-9._-]*",  # <take>.recon.mp4 is the recon output
    log:
        f"logs/render/{RUN}/{{take}}.log",
    benchmark:
        f"benchmarks/render/{RUN}/{{take}}.tsv"
    threads: workflow.resource_settings.cores or 1  # None without --cores (--unlock, --report)
    resources:
        mem_mb=4000,
    conda:
        "../../envs/musicface.yaml"
    shell:
        "OMP_WAIT_POLICY=PASSIVE python -m musicface.cli render --renderer {input.renderer:q}"
        " --checkpoint {input.model:q} --shards {input.shards:q} --data {input.data:q}"
        " --mix {input.mix:q} --take {wildcards.take} --out-dir {params.out:q}"
        " --seed {params.seed} --device {params.device} --threads {threads} > {log:q} 2>&1"


rule render:
    input:
        lambda wc: render_targets(),
