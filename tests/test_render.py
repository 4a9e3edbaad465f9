"""musicface render / generate --render: streamed rendering, lip sync and eyes on pixels, the
outputs of `snakemake all`, and one-line errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from musicface.render import render_conditions, render_params, song_clip

sys.path.insert(0, str(Path(__file__).parent))
from test_render_train import _tiny_renderer


def test_song_clip_follows_the_sync_offset():
    mix = np.arange(16000 * 3, dtype=np.float32)
    a = song_clip(mix, 1.0, 30)  # video frame 0 = song second 1
    assert len(a) == 16000 and a[0] == 16000 and a[-1] == 31999
    b = song_clip(mix, -0.5, 60)  # the camera started 0.5 s before the song
    assert len(b) == 32000 and (b[:8000] == 0).all() and b[8000] == 0 and b[8001] == 1
    c = song_clip(mix, 2.5, 60)  # the song ends after 0.5 s of video
    assert (c[8000:] == 0).all() and c[7999] == mix[-1]


def test_streamed_rendering_equals_one_pass(tmp_path):
    """Blocks of conditions + their temporal context give the same frames as one block (memory stays
    flat in the song's length)."""
    from musicface.renderer import load_renderer

    _tiny_renderer(tmp_path / "anna.pt")
    r = load_renderer(tmp_path / "anna.pt")
    rng = np.random.default_rng(0)
    n = 23
    exp = rng.normal(0, 1, (n, 4))
    pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, math.log(0.4)], (n, 1)) + rng.normal(0, 0.05, (n, 6))
    eye = rng.uniform(0, 1, n)
    whole = np.stack(list(render_params(r, exp, pose, eye, chunk=1000)))
    blocks = np.stack(list(render_params(r, exp, pose, eye, chunk=5)))
    assert whole.shape == (n, 32, 32, 3) and whole.dtype == np.uint8
    assert np.array_equal(whole, blocks)
    assert render_conditions(r, np.zeros((0, 4, 32, 32), np.uint8)).shape == (0, 32, 32, 3)


def _retrack(video, n):
    from preprocessing.track import track_video

    return track_video(str(video), n, progress=False)


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_rendered_mouth_and_eyes_follow_the_driving_parameters(render_project):
    """FaceMesh re-tracked on the reconstruction (ground-truth parameters rendered): the mouth
    opening follows the driving one (r >= 0.8) and frames whose eye state is closed show closed
    eyes."""
    from musicface import metrics as M
    from musicface.render import driving_landmarks
    from musicface.render_data import RenderTake
    from musicface.renderer import load_renderer
    from preprocessing import landmarks as fm

    run, take = render_project["run"], render_project["take"]
    rt = RenderTake(run / "work/takes" / take / "render.h5")
    r = load_renderer(run / "runs/demo/render" / f"{render_project['subject']}.pt")
    tr = _retrack(run / "runs/demo/render" / f"{take}.recon.mp4", rt.n)
    ok = tr["valid"].astype(bool) & rt.valid
    assert ok.mean() > 0.9
    drive = driving_landmarks(rt.exp, rt.pose, rt.geometry, r.basis)
    got = tr["landmarks"][:, :, :2].astype(np.float64)
    r_mouth = M.pearson(M.mouth_opening(got[ok]), M.mouth_opening(drive[ok]))
    assert r_mouth >= 0.8, r_mouth
    # eyes: eye aspect ratio of the re-tracked lids where the driving eye state is closed vs open
    ear = fm.eye_aspect_ratio(fm.to_pixels(tr["landmarks"], (128, 128))).mean(axis=1)
    closed, open_ = ok & (rt.eye >= 0.8), ok & (rt.eye <= 0.1)
    assert closed.sum() >= 5 and open_.sum() >= 50
    assert np.median(ear[closed]) < 0.6 * np.median(ear[open_]), (
        np.median(ear[closed]),
        np.median(ear[open_]),
    )
    rt.close()


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_all_writes_videos_figure_and_rendered_metrics(render_project):
    import av

    run, take = render_project["run"], render_project["take"]
    d = run / "runs/demo/render"
    m = json.loads((d / f"{take}.json").read_text())
    for video in (d / f"{take}.mp4", d / f"{take}.recon.mp4"):
        with av.open(str(video)) as box:
            v = box.streams.video[0]
            assert (v.width, v.height) == (128, 128) and v.average_rate == 30
            assert sum(1 for _ in box.decode(video=0)) == m["n_frames"]
        with av.open(str(video)) as box:
            assert box.streams.audio[0].sample_rate == 16000
    from PIL import Image

    assert Image.open(d / f"{take}.png").size[1] > 3 * 128
    ev = json.loads((run / "runs/demo/eval/metrics.json").read_text())
    s = ev["summary"]
    for k in ("cpbd", "ssim_recon", "psnr_recon", "lmd_mouth_rendered", "lip_energy_corr_rendered"):
        assert isinstance(s[k], float), k
    assert s["ssim_recon"] == pytest.approx(m["ssim_recon"])
    assert ev["ground_truth"]["cpbd"] == pytest.approx(m["cpbd_real"])
    assert s["avc"]["value"] is None and "SyncNet weights not configured" in s["avc"]["reason"]
    table = (run / "runs/demo/eval/table.md").read_text()
    assert "Rendered: SSIM recon ↑" in table and "mean-frame baseline" in table


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_generate_render_on_a_real_song(render_project, tmp_path, run_cli):
    """musicface generate --render on the stempeg MUSDB18 clip: video.mp4, one frame per 1/30 s,
    with audio."""
    import importlib.util

    import av
    from scipy.io import wavfile

    from preprocessing.media import decode_audio

    # stempeg's example file (importing stempeg itself needs an ffmpeg binary)
    clip = (
        Path(importlib.util.find_spec("stempeg").origin).parent
        / "data"
        / "The Easton Ellises - Falcon 69.stem.mp4"
    )
    run, subject = render_project["run"], render_project["subject"]
    song = tmp_path / "falcon.wav"
    audio, sr = decode_audio(clip, sr=16000, stream=0)
    wavfile.write(song, 16000, audio[: 16000 * 3 + 5000].astype(np.float32))  # 3.3125 s
    out = tmp_path / "out"
    run_cli(
        [
            "musicface.cli",
            "generate",
            song,
            "--checkpoint",
            run / "runs/demo/model.pt",
            "--subject",
            subject,
            "--render",
            run / "runs/demo/render" / f"{subject}.pt",
            "--out",
            out,
            "--no-preview",
        ]
    )
    n = math.ceil((16000 * 3 + 5000) / 16000 * 30)
    with av.open(str(out / "video.mp4")) as box:
        assert box.streams.audio, "no audio track"
        assert sum(1 for _ in box.decode(video=0)) == n == 100
    back, _ = decode_audio(out / "video.mp4", sr=16000)
    assert abs(len(back) - (16000 * 3 + 5000)) < 1600


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_wrong_missing_or_corrupt_renderer_is_one_line(render_project, tmp_path, run_cli):
    run, subject = render_project["run"], render_project["subject"]
    other = next(s for s in render_project["subjects"] if s != subject)
    pt = run / "runs/demo/render" / f"{subject}.pt"
    (tmp_path / "corrupt.pt").write_bytes(pt.read_bytes()[:5000])
    song = render_project["demo"] / "songs" / "song1.wav"
    cases = [
        (other, pt, f"musicface generate: renderer {pt} is for subject '{subject}', not '{other}'"),
        (
            subject,
            tmp_path / "none.pt",
            f"musicface generate: renderer not found: {tmp_path / 'none.pt'}",
        ),
        (
            subject,
            tmp_path / "corrupt.pt",
            f"musicface generate: cannot load renderer {tmp_path / 'corrupt.pt'}: ",
        ),
    ]
    for who, renderer, msg in cases:
        p = run_cli(
            [
                "musicface.cli",
                "generate",
                song,
                "--checkpoint",
                run / "runs/demo/model.pt",
                "--subject",
                who,
                "--render",
                renderer,
                "--out",
                tmp_path / "o",
                "--no-preview",
            ],
            check=False,
        )
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(msg), p.stderr
        assert not (tmp_path / "o" / "params.npz").exists()  # checked before any work
