"""Face tracking on real material (Debian opencv-doc's Megamind.avi) and on videos made from it:
small face in a large frame, two faces, no face, face in part of the take, gaps, corrupt bytes,
frame-size change, a face too small to track; plus the gap filler and the demo acceptance."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from preprocessing.common import StepError, read_failure, save_json
from preprocessing.media import iter_frames, probe, write_video
from preprocessing.track import fill_gaps, track_video

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
needs_megamind = pytest.mark.skipif(not MEGAMIND.exists(), reason="apt-get install opencv-doc")
N_SHORT = 90  # frames of Megamind used for the derived videos (3 s)


def _placed(frame: np.ndarray, scale: float, canvas=(1280, 720), at=(700, 300)) -> np.ndarray:
    """``frame`` resized by ``scale`` and pasted at ``at`` into a grey canvas (width, height)."""
    h, w = frame.shape[:2]
    small = np.asarray(Image.fromarray(frame).resize((int(w * scale), int(h * scale)),
                                                     Image.BILINEAR))
    out = np.full((canvas[1], canvas[0], 3), 40, np.uint8)
    out[at[1]:at[1] + small.shape[0], at[0]:at[0] + small.shape[1]] = small
    return out


def _megamind(n=N_SHORT):
    return (f for _, f in iter_frames(MEGAMIND, n_frames=n))


@pytest.fixture(scope="module")
def megamind_track(tmp_path_factory, run_cli=None):
    """track.npz of the whole Megamind.avi through the CLI (ingest.json written here: n_frames)."""
    from tests.conftest import _run

    d = tmp_path_factory.mktemp("megamind")
    n = probe(MEGAMIND)["n_frames"]
    save_json(d / "ingest.json", {"n_frames": n})
    out = d / "track.npz"
    _run(["preprocessing.track", "--take", "megamind", "--video", MEGAMIND, "--ingest",
          d / "ingest.json", "--max-gap", "5", "--out", out])
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@needs_megamind
def test_megamind_tracked(megamind_track):
    t = megamind_track
    n = probe(MEGAMIND)["n_frames"]          # 11.26 s of 23.976 fps video -> 338 frames at 30 fps
    assert t["landmarks"].shape == (n, 478, 3) and t["landmarks"].dtype == np.float32
    assert t["valid"].dtype == np.uint8 and t["interpolated"].dtype == np.uint8
    assert t["frame_size"].shape == (n, 2) and t["frame_size"].dtype == np.int32
    assert t["bbox"].shape == (n, 4) and t["bbox"].dtype == np.float32
    assert (t["frame_size"] == [720, 528]).all()
    assert t["valid"].mean() >= 0.95                       # measured: 0.994 (the first 2 frames are
                                                           # black)
    assert not t["valid"][:2].any()                        # ... and those are not invented
    v = t["valid"].astype(bool)
    assert np.isfinite(t["landmarks"][v]).all() and np.isnan(t["landmarks"][~v]).all()
    assert not (t["interpolated"].astype(bool) & ~v).any()
    # bbox is the landmarks' box
    lm = t["landmarks"][v]
    np.testing.assert_allclose(t["bbox"][v][:, :2], lm[:, :, :2].min(axis=1), atol=1e-5)
    np.testing.assert_allclose(t["bbox"][v][:, 2:], lm[:, :, :2].max(axis=1), atol=1e-5)
    # one face followed: in the first shot (frames 2-123) a second face sits in the background at
    # x ~ 0.64; the track stays on the woman in front (x ~ 0.37-0.48)
    cx = (t["bbox"][2:124, 0] + t["bbox"][2:124, 2]) / 2
    assert (cx < 0.55).all() and (cx > 0.3).all()


@needs_megamind
def test_megamind_track_agrees_with_opencv_haar_detectors(megamind_track):
    """A check that does not go through the tracker: OpenCV's Viola-Jones (Haar cascade) face and
    eye detectors (shipped in cv2.data.haarcascades) on every second decoded frame. The tracked box
    (landmark extent) must coincide with a Haar face box (IoU >= 0.5) in most frames, and the
    tracked iris centres (landmarks 468, 473) must lie inside Haar eye boxes found in the upper
    face; the mouth centre (13, 14) in the lower part of the Haar face box, at its middle.
    Measured: IoU >= 0.5 in 92 % of 169 frames (median 0.65; Haar boxes jitter and miss turned
    faces), irises inside Haar eye boxes in 278 of 278 checks, mouth centre at 0.69-0.85 of the box
    height and 0.42-0.65 of its width (1st-99th percentiles). ~10 s of CPU."""
    import cv2

    t = megamind_track
    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    eye = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    W, H = 720, 528
    ious, irises, mouth = [], [], []
    for i, frame in iter_frames(MEGAMIND, n_frames=len(t["valid"])):
        if i % 2 or not t["valid"][i]:
            continue
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        tb = t["bbox"][i] * [W, H, W, H]
        best, box = 0.0, None
        for x, y, w, h in face.detectMultiScale(grey, 1.1, 5, minSize=(60, 60)):
            ix = (max(0, min(x + w, tb[2]) - max(x, tb[0]))
                  * max(0, min(y + h, tb[3]) - max(y, tb[1])))
            iou = ix / (w * h + (tb[2] - tb[0]) * (tb[3] - tb[1]) - ix)
            if iou > best:
                best, box = iou, (x, y, w, h)
        ious.append(best)
        if best < 0.5:
            continue
        x, y, w, h = box
        m = t["landmarks"][i, [13, 14], :2].mean(0) * [W, H]
        mouth.append(((m[0] - x) / w, (m[1] - y) / h))
        upper = grey[y:y + h * 5 // 8, x:x + w]
        eyes = eye.detectMultiScale(upper, 1.1, 5, minSize=(w // 8, w // 8))
        if len(eyes) >= 2:
            for k in (468, 473):
                px, py = t["landmarks"][i, k, :2] * [W, H] - [x, y]
                irises.append(any(ex <= px <= ex + ew and ey <= py <= ey + eh
                                  for ex, ey, ew, eh in eyes))
    ious, mouth = np.array(ious), np.array(mouth)
    assert len(ious) >= 160 and (ious >= 0.5).mean() >= 0.88 and np.median(ious) >= 0.6, \
        ((ious >= 0.5).mean(), np.median(ious))
    assert len(irises) >= 200 and np.mean(irises) >= 0.97, (len(irises), np.mean(irises))
    assert (np.abs(mouth[:, 0] - 0.5) < 0.12).mean() >= 0.95, mouth[:, 0]
    assert ((mouth[:, 1] > 0.65) & (mouth[:, 1] < 0.9)).mean() >= 0.95, mouth[:, 1]


@needs_megamind
def test_small_face_in_720p_frame(tmp_path):
    """Megamind at half size in a 1280x720 canvas: faces of ~70 px, far under FaceMesh's own
    range."""
    video = tmp_path / "small.mp4"
    write_video(video, (_placed(f, 0.5) for f in _megamind()))
    small = track_video(str(video), N_SHORT, progress=False)
    full = track_video(str(MEGAMIND), N_SHORT, progress=False)
    assert small["valid"].mean() >= 0.95
    face_px = (small["bbox"][:, 2] - small["bbox"][:, 0]) * 1280
    assert 50 < np.nanmedian(face_px) < 90
    # landmarks mapped back to the full frame agree with tracking the original video
    both = (small["valid"] & full["valid"]).astype(bool)
    p_full = full["landmarks"][both, :, :2] * [720, 528]
    p_small = (small["landmarks"][both, :, :2] * [1280, 720] - [700, 300]) / 0.5
    err = np.linalg.norm(p_full - p_small, axis=-1).mean(axis=1)   # px of the original frame
    size = (full["bbox"][both, 2] - full["bbox"][both, 0]) * 720
    assert (err / size).mean() < 0.03                               # measured: 0.008


@needs_megamind
def test_two_faces_keeps_following_the_first(tmp_path):
    """A larger face (the astronaut photo) appears at frame 30: the track stays on the face it
    follows."""
    from skimage import data

    astro = np.asarray(Image.fromarray(data.astronaut()).resize((560, 560), Image.BILINEAR))

    def frames():
        for i, f in enumerate(_megamind(60)):
            c = _placed(f, 1.0, at=(0, 100))
            if i >= 30:
                c[80:640, 720:1280] = astro
            yield c

    video = tmp_path / "two.mp4"
    write_video(video, frames())
    t = track_video(str(video), 60, progress=False)
    cx = (t["bbox"][:, 0] + t["bbox"][:, 2]) / 2 * 1280
    assert t["valid"][2:].all()
    assert (cx[2:] < 400).all()           # the woman (x ~ 300 px), never the astronaut (x ~ 960 px)
    # alone, the astronaut is found (the tracker could have switched to it)
    write_video(tmp_path / "astro.mp4",
                (np.concatenate([np.zeros((80, 560, 3), np.uint8), astro]) for _ in range(5)))
    a = track_video(str(tmp_path / "astro.mp4"), 5, progress=False)
    assert a["valid"].all()


@needs_megamind
def test_partial_face_gaps_and_no_face(tmp_path, run_cli):
    blank_long, blank_short = range(30, 60), range(70, 73)

    def frames():
        for i, f in enumerate(_megamind()):
            yield np.zeros_like(f) if i in blank_long or i in blank_short else f

    video = tmp_path / "partial.mp4"
    write_video(video, frames())
    t = track_video(str(video), N_SHORT, max_gap=5, progress=False)
    v, it = t["valid"].astype(bool), t["interpolated"].astype(bool)
    assert not v[30:60].any() and not it[30:60].any()          # 30-frame gap: left invalid
    assert v[70:73].all() and it[70:73].all()                  # 3-frame gap: interpolated, flagged
    assert it.sum() == 3 and v[2:30].all() and v[60:70].all() and v[73:].all()
    w = np.array([1, 2, 3]) / 4
    expect = (1 - w)[:, None, None] * t["landmarks"][69] + w[:, None, None] * t["landmarks"][73]
    np.testing.assert_allclose(t["landmarks"][70:73], expect, atol=1e-6)
    # no face anywhere: one line naming take and step, a failure record, exit 0
    write_video(tmp_path / "noface.mp4",
                (np.full((480, 640, 3), (i * 7) % 255, np.uint8) for i in range(20)))
    save_json(tmp_path / "ingest.json", {"n_frames": 20})
    out = tmp_path / "track.npz"
    proc = run_cli(["preprocessing.track", "--take", "empty", "--video", tmp_path / "noface.mp4",
                    "--ingest", tmp_path / "ingest.json", "--out", out])
    assert (proc.stderr.strip().splitlines()[-1]
            == "musicface: take 'empty' step 'track': no face found in any frame")
    assert read_failure(out) == {"unit": "empty", "step": "track",
                                 "reason": "no face found in any frame"}


@needs_megamind
def test_tiny_face_is_not_tracked(tmp_path):
    """A ~14 px face in a 1280x720 frame: nothing trustworthy to track -> the take fails clearly."""
    video = tmp_path / "tiny.mp4"
    write_video(video, (_placed(f, 0.1) for f in _megamind(30)))
    with pytest.raises(StepError, match="^no face found in any frame$"):
        track_video(str(video), 30, progress=False)


@needs_megamind
def test_corrupt_bytes_and_size_change(tmp_path):
    # bytes of the file overwritten in two places: frames are lost or damaged, the take goes on
    bad = tmp_path / "corrupt.avi"
    data = bytearray(MEGAMIND.read_bytes())
    for frac in (0.3, 0.6):
        k = int(len(data) * frac)
        data[k:k + 20000] = bytes(20000)
    bad.write_bytes(bytes(data))
    n = probe(MEGAMIND)["n_frames"]
    t = track_video(str(bad), n, progress=False)
    assert t["valid"].mean() >= 0.8
    # frame size changes mid-video (two MPEG-TS segments of different sizes, concatenated)
    parts = []
    for k, (scale, rng) in enumerate(((1.0, range(0, 45)), (0.5, range(45, 90)))):
        p = tmp_path / f"part{k}.ts"
        with av.open(str(p), "w", format="mpegts") as out:
            s = out.add_stream("mpeg2video", rate=30)
            s.width, s.height = int(720 * scale), int(528 * scale)
            s.pix_fmt = "yuv420p"
            s.bit_rate = 4_000_000
            for i, f in enumerate(_megamind()):
                if i in rng:
                    img = np.asarray(Image.fromarray(f).resize((s.width, s.height), Image.BILINEAR))
                    out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(s.encode(None))
        parts.append(p.read_bytes())
    cat = tmp_path / "sizes.ts"
    cat.write_bytes(b"".join(parts))
    t = track_video(str(cat), N_SHORT, progress=False)
    assert t["valid"][2:85].mean() >= 0.95
    assert (t["frame_size"] > 0).all()


@pytest.mark.slow
def test_demo_take_small_in_720p(demo_dir, tmp_path):
    """A demo singer shrunk to a ~85 px face in a 1280x720 frame: tracked, and its eyes still
    read."""
    from preprocessing.au45 import au45_from_landmarks

    take = sorted(demo_dir.glob("singer*/*.mp4"))[0]
    with np.load(take.with_name(take.stem + ".truth.npz")) as z:
        n, closure = int(z["n_frames"]), z["eye_closure"]
    scale = 0.45                                  # the demo face is ~190 px in its 640x480 frame
    video = tmp_path / "small demo.mp4"
    write_video(video, (_placed(f, scale, at=(800, 200)) for _, f in iter_frames(take, n_frames=n)))
    t = track_video(str(video), n, progress=False)
    assert t["valid"].mean() >= 0.95
    face = np.nanmedian((t["bbox"][:, 2] - t["bbox"][:, 0]) * 1280)
    assert 70 < face < 100
    au45, valid = au45_from_landmarks(t["landmarks"], t["frame_size"], t["valid"])
    ok = valid.astype(bool)
    assert np.corrcoef(au45[ok], closure[ok])[0, 1] >= 0.9     # measured 0.994 at 89 px


def test_fill_gaps_exact():
    n = 20
    lm = np.full((n, 478, 3), np.nan, np.float32)
    box = np.full((n, 4), np.nan, np.float32)
    valid = np.zeros(n, np.uint8)
    # gaps: 0-1 (start), 3-7 (5 frames), 10-15 (6 frames), 17-19 (end)
    for i in (2, 8, 9, 16):
        lm[i], box[i], valid[i] = i, (i, i, i + 1, i + 1), 1
    v, it = fill_gaps(lm, box, valid, max_gap=5)
    np.testing.assert_array_equal(np.flatnonzero(it), [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(np.flatnonzero(v), [2, 3, 4, 5, 6, 7, 8, 9, 16])
    np.testing.assert_allclose(lm[3:8, 0, 0], [3, 4, 5, 6, 7])  # linear between frames 2 and 8
    np.testing.assert_allclose(box[5], [5, 5, 6, 6])
    assert np.isnan(lm[[0, 1, 10, 15, 17, 19]]).all()          # edges and the long gap untouched
    v, it = fill_gaps(lm, box, valid, max_gap=0)
    assert it.sum() == 0 and (v == valid).all()


def test_tiles_cover_the_frame():
    from preprocessing.track import _tiles

    for w, h in ((1280, 720), (1920, 1080), (640, 480), (480, 854)):
        tiles = list(_tiles(w, h))
        cover = np.zeros((h, w), bool)
        for x0, y0, side in tiles:
            assert 0 <= x0 and 0 <= y0 and x0 + side <= w and y0 + side <= h
            if side < min(w, h):
                cover[y0:y0 + side, x0:x0 + side] = True
        assert cover.all(), (w, h)                     # the finest level covers every pixel
    assert [s for _, _, s in _tiles(1280, 720)] == [720] * 3 + [360] * 15


# ------------------------------------------------------------------ fast crops (media.Frame.crop)
def _write_av(path, frames, codec, pix_fmt, fmt=None):
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=30)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        if codec == "libx264":
            s.options = {"crf": "10"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))


SQUARES = [(100, 50, 300, 128), (-50, -30, 200, 64), (400, 300, 333, 100), (10, 11, 77, 128),
           (-100, 200, 900, 256), (2000, 2000, 50, 32)]   # inside, over the corner, larger, outside


@pytest.mark.parametrize("kind",
                         ["rot0", "rot90", "rot180", "rot270", "yuvj420p", "yuv444p", "scaled"])
def test_frame_crop_matches_the_rgb_frame(tmp_path, kind):
    """Frame.crop (cut from the YUV planes) = the same square of Frame.rgb() area-averaged, for
    rotated (phone) video, full-range MJPEG, 4:4:4, and frames rescaled by iter_frames(size=...)."""
    from skimage import data

    from preprocessing.media import crop_square

    img = np.asarray(Image.fromarray(data.astronaut()).resize((640, 480), Image.BILINEAR))
    video = tmp_path / "v.mp4"
    if kind.startswith("rot"):
        write_video(video, [img] * 2, crf=10, rotation=int(kind[3:]))
    elif kind == "yuvj420p":
        video = tmp_path / "v.avi"
        _write_av(video, [img] * 2, "mjpeg", "yuvj420p")
    elif kind == "yuv444p":
        _write_av(video, [img] * 2, "libx264", "yuv444p")
    else:
        write_video(video, [img] * 2, crf=10)
    size = (320, 240) if kind == "scaled" else None
    _, frame = next(iter(iter_frames(video, n_frames=1, size=size, lazy=True)))
    rgb = frame.rgb()
    assert frame.shape == rgb.shape == ((640, 480, 3) if kind in ("rot90", "rot270") else
                                         (240, 320, 3) if kind == "scaled" else (480, 640, 3))
    for x0, y0, side, out in SQUARES:
        crop, (cx0, cy0, cs) = frame.crop(x0, y0, side, out)
        assert crop.shape == (out, out, 3) and crop.dtype == np.uint8
        ref = crop_square(rgb, cx0, cy0, cs, out)
        d = np.abs(crop.astype(int) - ref)
        if kind == "scaled":                       # not YUV at decoded size: cut from rgb() itself
            assert (cx0, cy0, cs) == (x0, y0, side) and d.max() == 0
            continue
        k = max(1, side // out)                    # side grown to a multiple of k, same centre
        assert side <= cs <= side + k - 1 and cs % k == 0
        assert (abs((cx0 + cs / 2) - (x0 + side / 2)) <= 0.5
                and abs((cy0 + cs / 2) - (y0 + side / 2)) <= 0.5)
        assert d.mean() < 2.5, (x0, y0, side, d.mean())   # measured <= 1.8 (chroma edges)
    # a square entirely outside the frame is black
    assert frame.crop(2000, 2000, 50, 32)[0].max() == 0


@needs_megamind
def test_fast_crops_track_like_full_rgb_frames(tmp_path, monkeypatch):
    """Megamind x2 in a 1920x1080 frame: landmarks from the YUV crops agree with those from crops of
    the full RGB frame (the way frames were cut before) far below a pixel-level crop change."""
    import preprocessing.media as media
    from preprocessing.media import crop_square

    video = tmp_path / "hd.mp4"
    write_video(video, (_placed(f, 2.0, canvas=(1920, 1080), at=(240, 12)) for f in _megamind(60)))
    fast = track_video(str(video), 60, progress=False)
    monkeypatch.setattr(media.Frame, "crop", lambda self, x0, y0, s, out:
                        (crop_square(self.rgb(), x0, y0, s, out), (x0, y0, s)))
    ref = track_video(str(video), 60, progress=False)
    assert (fast["valid"] == ref["valid"]).all() and fast["valid"][2:].all()
    v = ref["valid"].astype(bool)
    d = np.linalg.norm((fast["landmarks"][v] - ref["landmarks"][v])[..., :2] * [1920, 1080],
                       axis=-1)
    size = (ref["bbox"][v, 2] - ref["bbox"][v, 0]) * 1920
    assert np.median(size) > 250
    assert (d.mean(axis=1) / size).mean() < 0.006      # measured 0.0032 (a 1 px crop shift: 0.0035)
