"""render_data: the take's fixed face crop, JPEG frames read back, conditions from the shards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicface.render_data import PAD, RenderTake, decode_jpeg, encode_jpeg, take_box


def test_take_box_spans_the_boxes_padded_and_stays_inside():
    n = 200
    rng = np.random.default_rng(0)
    # a face box 100 x 120 px moving +-20 px around (300, 200) in a 640 x 480 frame
    cx, cy = 300 + rng.uniform(-20, 20, n), 200 + rng.uniform(-20, 20, n)
    bbox = np.stack([cx - 50, cy - 60, cx + 50, cy + 60], 1) / [640, 480, 640, 480]
    valid = np.ones(n, bool)
    bbox[5] = np.nan  # an untracked frame
    valid[5] = False
    bbox[7] = [0.0, 0.0, 1.0, 1.0]  # a wild (but valid) box: outside the 2..98 percentiles
    x0, y0, side = take_box(bbox, valid, (640, 480))
    extent = 120 + 40  # the box's height + the motion
    assert abs(side - PAD * extent) < 4 and side % 2 == 0
    assert abs(x0 + side / 2 - 300) < 3 and abs(y0 + side / 2 - 200) < 3
    # near the border the square moves inside the frame instead of leaving it
    x0, y0, side = take_box(bbox - [0.4, 0.3, 0.4, 0.3], valid, (640, 480))
    assert x0 == 0 and y0 == 0
    with pytest.raises(Exception, match="no tracked face box"):
        take_box(np.full((3, 4), np.nan), np.ones(3), (640, 480))


def test_jpeg_round_trip_is_close():
    from skimage.data import astronaut

    img = astronaut()[::4, ::4].copy()
    back = decode_jpeg(encode_jpeg(img))
    assert back.shape == img.shape and back.dtype == np.uint8
    mse = np.mean((back.astype(float) - img) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # dB: quality 95 on a detailed (aliased) photo


@pytest.mark.slow  # uses the shared DAG run (conftest.render_project)
@pytest.mark.timeout(2400)  # the first one builds it: demo + DAG, minutes
def test_render_data_of_the_test_take(render_project):
    from musicface.data import open_shards, take_arrays
    from preprocessing.media import crop_square, iter_frames

    run, take = render_project["run"], render_project["take"]
    rt = RenderTake(run / "work/takes" / take / "render.h5")
    assert (rt.take, rt.subject, rt.split, rt.size) == (
        take,
        render_project["subject"],
        "test",
        128,
    )
    ingest = json.loads((run / "work/takes" / take / "ingest.json").read_text())
    assert rt.n == ingest["n_frames"] and rt.cond.shape == (rt.n, 4, 128, 128)
    # the conditions come from the shards' parameters (what generation gives the renderer)
    shards = open_shards(run / "dataset/shards")
    gt = take_arrays(shards, take, landmarks=False)
    assert np.array_equal(rt.exp, gt["exp"].numpy()) and np.array_equal(rt.eye, gt["au45"].numpy())
    assert np.array_equal(rt.valid, gt["valid"].numpy().astype(bool))
    face = (rt.cond[:, :3] > 0).any(axis=1)
    cover = face.reshape(rt.n, -1).mean(axis=1)
    assert (cover[rt.valid] > 0.1).all() and (cover[rt.valid] < 0.6).all()
    # frames: the video's frames cut at the stored box, JPEG-compressed (PSNR > 33 dB)
    x0, y0, side = (int(v) for v in rt.geometry["box"])
    video = render_project["demo"] / render_project["subject"] / f"{take}.mp4"
    for i, rgb in iter_frames(video, n_frames=40):
        if i in (0, 39):
            want = crop_square(rgb, x0, y0, side, 128).astype(float)
            got = rt.frame(i).astype(float)
            assert 10 * np.log10(255**2 / np.mean((got - want) ** 2)) > 33
    # the face (mesh) lies where the real face is: the mesh's centre vs the skin-coloured region's
    i = int(np.flatnonzero(rt.valid)[len(np.flatnonzero(rt.valid)) // 2])
    ys, xs = np.nonzero(face[i])
    assert 40 < xs.mean() < 88 and 30 < ys.mean() < 98
    rt.close()


def test_failed_qc_gives_a_failure_record(tmp_path, run_cli):
    from preprocessing.common import read_failure

    qc = tmp_path / "qc.json"
    qc.write_text(
        json.dumps({"take": "t1", "status": "fail", "reasons": ["too short: 90 frames < 128"]})
    )
    out = tmp_path / "render.h5"
    args = [
        "musicface.cli",
        "render-data",
        "--take",
        "t1",
        "--video",
        "none.mp4",
        "--qc",
        qc,
        "--out",
        out,
    ]
    for k in ("ingest", "track", "coeffs", "shards", "basis"):
        args += [f"--{k}", tmp_path / k]
    p = run_cli(args)
    assert p.stderr.strip().splitlines()[-1] == (
        "musicface: take 't1' step 'render_data': skipped, upstream step 'qc' failed: "
        "too short: 90 frames < 128"
    )
    assert read_failure(out)["reason"] == "too short: 90 frames < 128"
