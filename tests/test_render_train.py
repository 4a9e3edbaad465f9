"""The renderer network, its checkpoint, its training (resume) and what it learns on a demo
subject."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicface.renderer import (
    Generator,
    MultiScaleDiscriminator,
    RendererConfig,
    RendererError,
    VGGLoss,
    discriminator_loss,
    generator_losses,
    load_renderer,
    save_renderer,
)


def test_generator_and_discriminator_shapes():
    cfg = RendererConfig(size=64, context=1, channels=8, disc_channels=8)
    assert cfg.levels == 4 and cfg.cond_channels == 12
    G, D = Generator(cfg), MultiScaleDiscriminator(cfg)
    cond, ref = torch.rand(2, 12, 64, 64), torch.rand(2, 3, 64, 64) * 2 - 1
    fake = G(cond, ref)
    assert fake.shape == (2, 3, 64, 64) and fake.abs().max() <= 1
    outs = D(cond[:, 4:8], fake)
    assert (
        len(outs) == 2
        and outs[0][-1].shape[1] == 1
        and outs[1][-1].shape[-1] < outs[0][-1].shape[-1]
    )
    terms = generator_losses(D, cond, fake, fake.detach(), cfg)
    assert terms["l1"].item() == 0 and terms["fm"].item() == 0  # real == fake: nothing to match
    assert discriminator_loss(D, cond, fake, fake, cfg).item() > 0
    with pytest.raises(ValueError, match="power of two"):
        RendererConfig(size=96).check()


def test_vgg_loss_from_a_torchvision_state_dict(tmp_path):
    import torchvision

    feats = torchvision.models.vgg.make_layers(
        torchvision.models.vgg.cfgs["A"]
    )  # vgg11, random weights
    path = tmp_path / "vgg11.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    vgg = VGGLoss(path, "vgg11")
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert vgg(a, a).item() == 0 and vgg(a, b).item() > 0
    with pytest.raises(FileNotFoundError, match="VGG weights not found"):
        VGGLoss(tmp_path / "none.pth", "vgg11")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision vgg11 state_dict"):
        VGGLoss(tmp_path / "bad.pth", "vgg11")


def _tiny_renderer(path, subject="anna", size=32):
    cfg = RendererConfig(size=size, context=1, channels=4, max_channels=8, disc_channels=4)
    torch.manual_seed(0)
    save_renderer(
        path,
        subject=subject,
        cfg=cfg,
        generator=Generator(cfg),
        reference=torch.full((3, size, size), 128, dtype=torch.uint8),
        geometry={
            "identity": np.zeros((478, 3)),
            "frame_size": np.array([64, 64]),
            "box": np.array([0.0, 0.0, 64.0]),
        },
        basis={"mean": np.zeros(1434, np.float32), "components": np.zeros((4, 1434), np.float32)},
        info={"steps": 0},
    )
    return cfg


def test_checkpoint_is_self_contained_and_errors_are_one_line(tmp_path):
    path = tmp_path / "anna.pt"
    _tiny_renderer(path)
    raw = torch.load(path, weights_only=True)  # plain tensors and types only
    assert raw["subject"] == "anna" and raw["format"] == "musicface-renderer"
    r = load_renderer(path, subject="anna")
    assert r.cfg.size == 32 and r.basis["components"].shape == (4, 1434)
    cases = {
        "other": (
            lambda: load_renderer(path, subject="ben"),
            f"renderer {path} is for subject 'anna', not 'ben'",
        ),
        "missing": (
            lambda: load_renderer(tmp_path / "none.pt"),
            f"renderer not found: {tmp_path / 'none.pt'}",
        ),
    }
    (tmp_path / "corrupt.pt").write_bytes(path.read_bytes()[:2000])
    torch.save({"state_dict": {}}, tmp_path / "model.pt")
    for fn, msg in cases.values():
        with pytest.raises(RendererError) as e:
            fn()
        assert str(e.value) == msg
    with pytest.raises(RendererError, match=r"^cannot load renderer .*corrupt\.pt: ") as e:
        load_renderer(tmp_path / "corrupt.pt")
    assert "\n" not in str(e.value)
    with pytest.raises(RendererError, match="is not a MusicFace renderer file"):
        load_renderer(tmp_path / "model.pt")


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_training_resumes_to_the_same_weights(render_project, tmp_path):
    """2 steps + resume 2 steps == 4 steps straight (batches are a function of (seed, step))."""
    from musicface.render_data import build
    from musicface.render_train import train

    run = render_project["run"]
    split = {
        t: s
        for t, s in (
            line.split("\t")[0::3]
            for line in (run / "dataset/split.tsv").read_text().splitlines()[1:]
        )
    }
    train_take = next(
        t for t, s in split.items() if s == "train" and t.startswith(render_project["subject"])
    )
    w = run / "work/takes" / train_take
    data = tmp_path / "r32.h5"
    build(
        train_take,
        render_project["demo"] / render_project["subject"] / f"{train_take}.mp4",
        w / "ingest.json",
        w / "track.npz",
        w / "coeffs.npz",
        w / "qc.json",
        run / "dataset/shards",
        run / "dataset/exp_basis.npz",
        32,
        data,
        progress=False,
    )
    # 32 px: one PatchGAN of 2 stride-2 layers (deeper ones reach 1 x 1: instance norm fails)
    cfg = RendererConfig(
        size=32,
        context=1,
        channels=4,
        max_channels=8,
        disc_channels=4,
        disc_scales=1,
        disc_layers=2,
    )
    kw = dict(
        batch_size=2,
        lr=1e-3,
        decay_fraction=0.5,
        seed=3,
        save_every=2,
        device="cpu",
        progress=False,
    )
    train(render_project["subject"], [data], tmp_path / "a.pt", cfg, steps=4, **kw)
    assert train(
        render_project["subject"], [data], tmp_path / "b.pt", cfg, steps=4, until=2, **kw
    ) == {"steps_done": 2}
    assert not (tmp_path / "b.pt").exists() and (tmp_path / "b.state.pt").exists()
    train(render_project["subject"], [data], tmp_path / "b.pt", cfg, steps=4, resume=True, **kw)
    a, b = load_renderer(tmp_path / "a.pt"), load_renderer(tmp_path / "b.pt")
    for k, v in a.generator.state_dict().items():
        assert torch.equal(v, b.generator.state_dict()[k]), k
    rows = (tmp_path / "b.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,d,gan,fm,l1") and len(rows) == 2  # the header + step 4


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_renderer_learns_the_demo_subject(render_project):
    run, take, subject = render_project["run"], render_project["take"], render_project["subject"]
    r = load_renderer(run / "runs/demo/render" / f"{subject}.pt", subject=subject)
    assert take not in r.info["takes"] and r.info["takes"]  # trained on the training takes only
    m = json.loads((run / "runs/demo/render" / f"{take}.json").read_text())
    # held-out reconstruction: clearly better than showing the training frames' median frame
    assert m["ssim_recon"] > m["ssim_mean_frame"] + 0.1, m
    assert m["psnr_recon"] > m["psnr_mean_frame"] + 2.0, m
    assert 0 < m["cpbd_real"] < 1 and 0 < m["cpbd"] < 1
