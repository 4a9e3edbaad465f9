"""`musicface render`: a test take rendered by its subject's renderer, scored against real frames.

    python -m musicface.cli render --renderer runs/demo/render/singer1.pt \
        --checkpoint runs/demo/model.pt \
        --shards dataset/shards --data work/takes/T/render.h5 --mix work/songs/S/mix.wav \
        --out-dir runs/demo/render --take T

writes into ``--out-dir``:

* ``T.recon.mp4``: the take's own ground-truth parameters (the shards' exp, pose, eye state, in the
  take's crop) rendered: held-out reconstruction;
* ``T.mp4``: the model's parameters generated from the take's audio (as ``musicface evaluate`` does:
  initial pose = the take's first valid pose, blink seed ``--seed`` + the take's rank among the test
  takes) rendered in the same crop;
* ``T.png``: a frame grid, real frames (top) beside their reconstruction and the generated video;
* ``T.json``: the rendered-video metrics (:data:`DEFINITIONS`), gathered by ``musicface evaluate
  --render-metrics``.

Both videos are 30 fps, H.264 + AAC with the song's audio (the mix at the take's sync offset, so the
song plays as it did during the recording).

Rendering streams: conditions are built and rendered ``CHUNK`` frames at a time (plus the temporal
context), so memory does not grow with the song's length (:func:`render_params`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from preprocessing.common import StepError, one_line, save_json
from preprocessing.timebase import FPS, SR

CHUNK = 128  # frames per conditions + rendering block
BATCH = 16  # frames per generator call
CPBD_FRAMES = 48  # frames scored by CPBD per video (evenly spaced; about 60 ms each at 128 px)

DEFINITIONS = {
    "ssim_recon": "mean SSIM (skimage, RGB, data range 255) of the reconstruction (ground-truth "
    "parameters rendered) vs the real held-out frames, valid frames of the test takes",
    "psnr_recon": "mean PSNR (dB) of the same pairs",
    "ssim_mean_frame": "the same SSIM for the baseline that shows the reference frame (median of "
    "the training frames) all the time",
    "psnr_mean_frame": "PSNR of that baseline",
    "cpbd": "sharpness (CPBD, cpbd-py312, grayscale 0-255) of the rendered generated video, mean "
    f"over {CPBD_FRAMES} evenly spaced frames per take (paper Table 2: 0.34 ours, 0.37 real)",
    "cpbd_real": "the same on the real frames of the test takes (the reference row)",
    "lmd_mouth_rendered": "FaceMesh re-tracked on the rendered generated video: mean distance of "
    "the 40 lip landmarks to the driving landmarks (the landmark model of the generated "
    "exp + pose), % of the driving inter-ocular distance",
    "lip_energy_corr_rendered": "Pearson correlation of the re-tracked mouth opening with the "
    "vocal energy (dB), frame-weighted over takes (ground truth: the proxy's)",
    "mouth_corr_rendered": "Pearson correlation of the re-tracked mouth opening with the driving "
    "one",
}


# ------------------------------------------------------------------------------------ rendering
@torch.no_grad()
def render_conditions(
    renderer,
    cond: np.ndarray,
    context_before=None,
    context_after=None,
    device: str = "cpu",
    batch: int = BATCH,
):
    """Frames uint8 ``(n, S, S, 3)`` for condition frames ``cond (n, 4, S, S)`` uint8; the
    temporal stack uses ``context_before`` / ``context_after`` (condition frames just outside the
    block, possibly empty) and repeats the edge frames beyond them."""
    from musicface.raster import temporal_stack

    c = renderer.cfg.context
    parts = [x for x in (context_before, cond, context_after) if x is not None and len(x)]
    full = np.concatenate(parts) if len(parts) > 1 else cond
    off = 0 if context_before is None else len(context_before)
    out = []
    for a in range(0, len(cond), batch):
        idx = np.arange(a, min(a + batch, len(cond))) + off
        stack = torch.from_numpy(temporal_stack(full, idx, c)).to(device).float().div_(255.0)
        img = renderer.generator(stack, renderer.reference_input(len(idx), device))
        out.append(
            ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        )
    return np.concatenate(out) if out else np.zeros((0, *cond.shape[2:], 3), np.uint8)


def render_stored(renderer, cond_ds, device: str = "cpu", chunk: int = CHUNK):
    """Yield rendered frames of stored condition frames (HDF5 dataset or array), block by block."""
    n, c = len(cond_ds), renderer.cfg.context
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        before = cond_ds[max(a - c, 0) : a]
        after = cond_ds[b : min(b + c, n)]
        yield from render_conditions(renderer, cond_ds[a:b], before, after, device)


def render_params(renderer, exp, pose, eye, device: str = "cpu", chunk: int = CHUNK, bfm=None):
    """Yield rendered frames for parameter sequences (generation), conditions built per block."""
    from musicface.raster import Geometry, conditions

    geo = Geometry.from_dict(renderer.geometry)
    size, c, n = renderer.cfg.size, renderer.cfg.context, len(exp)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        lo, hi = max(a - c, 0), min(b + c, n)
        cond = conditions(exp[lo:hi], pose[lo:hi], eye[lo:hi], geo, renderer.basis, size, bfm=bfm)
        yield from render_conditions(
            renderer, cond[a - lo : b - lo], cond[: a - lo], cond[b - lo :], device
        )


def song_clip(mix: np.ndarray, offset_s: float, n_frames: int, sr: int = SR) -> np.ndarray:
    """The song audio under video frames 0 .. n-1 (video time t = song time t + offset), zeros
    where the song has not started or has ended."""
    n = int(round(n_frames / FPS * sr))
    start = int(round(offset_s * sr))
    out = np.zeros(n, np.float32)
    a, b = max(start, 0), min(start + n, len(mix))
    if b > a:
        out[a - start : b - start] = mix[a:b]
    return out


# ------------------------------------------------------------------------------------ metrics
def driving_landmarks(exp, pose, geometry: dict, basis: dict) -> np.ndarray:
    """The landmark model's FaceMesh points of the driving parameters, normalised to the crop
    ``(N, 478, 2)`` (builtin coefficients only)."""
    from musicface.raster import Geometry
    from preprocessing.coeffs import landmarks_from_coeffs

    geo = Geometry.from_dict(geometry)
    lm = landmarks_from_coeffs(exp, pose, basis, reference=geo.identity, frame_size=geo.frame_size)
    x, y = geo.to_crop(lm[..., 0].astype(np.float64), lm[..., 1].astype(np.float64), 1.0)
    return np.stack([x, y], -1)


def lip_scores(
    video, n: int, driving: np.ndarray, energy_db: np.ndarray, valid: np.ndarray
) -> dict:
    """FaceMesh re-tracked on a rendered video vs its driving landmarks and the vocal energy."""
    from musicface import metrics as M
    from preprocessing.track import track_video

    frames = int(np.asarray(valid, bool).sum())
    try:
        tr = track_video(str(video), n, progress=False)
    except StepError as e:  # a renderer that draws no face: the metrics are missing, not the take
        return {"retracked_frames": 0, "frames": frames, "retrack_error": one_line(e)}
    ok = tr["valid"].astype(bool) & np.asarray(valid, bool)
    out = {"retracked_frames": int(ok.sum()), "frames": frames}
    if ok.sum() < 3:
        return out
    got = tr["landmarks"][ok, :, :2].astype(np.float64)
    ref = driving[ok]
    o_got, o_ref = M.mouth_opening(got), M.mouth_opening(ref)
    out["lmd_mouth_rendered"] = M.lmd(got, ref, region="mouth")
    out["mouth_corr_rendered"] = M.pearson(o_got, o_ref)
    out["lip_energy_corr_rendered"] = M.pearson(o_got, np.asarray(energy_db)[ok])
    out["_landmarks"] = tr["landmarks"]
    out["_valid"] = ok
    return out


def frame_grid(path, rows: dict, columns, labels=None) -> None:
    """PNG: a row per entry of ``rows`` (name -> function: frame index -> RGB), a column per
    frame index."""
    from PIL import Image, ImageDraw

    from preprocessing.common import atomic_path

    names = list(rows)
    tiles = [[rows[name](i) for i in columns] for name in names]
    s = tiles[0][0].shape[0]
    pad, left = 4, 90
    img = Image.new(
        "RGB", (left + len(columns) * (s + pad), len(names) * (s + pad) + 18), (255, 255, 255)
    )
    draw = ImageDraw.Draw(img)
    for r, name in enumerate(names):
        draw.text((4, r * (s + pad) + s // 2), name, fill=(0, 0, 0))
        for c, tile in enumerate(tiles[r]):
            img.paste(Image.fromarray(tile), (left + c * (s + pad), r * (s + pad)))
    for c, i in enumerate(columns):
        label = labels[c] if labels else f"frame {i}"
        draw.text((left + c * (s + pad), len(names) * (s + pad) + 2), label, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def grid_columns(valid, mouth, eye, k: int = 6) -> list[int]:
    """Frames for the grid: evenly spread valid frames, plus the widest-open mouth and the most
    closed eyes (so the figure shows both)."""
    idx = np.flatnonzero(valid)
    cols = set(idx[np.linspace(0, len(idx) - 1, k - 2).astype(int)].tolist())
    cols.add(int(idx[np.argmax(np.asarray(mouth)[idx])]))
    cols.add(int(idx[np.argmax(np.asarray(eye)[idx])]))
    return sorted(cols)


# ------------------------------------------------------------------------------------ the step
def render_take(
    renderer_path,
    checkpoint,
    shards,
    data,
    mix_path,
    out_dir,
    take: str,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    from tqdm import tqdm

    from musicface import metrics as M
    from musicface.data import open_shards, take_arrays
    from musicface.evaluate import vocal_energy_db
    from musicface.generate import check_inputs
    from musicface.render_data import RenderTake
    from musicface.renderer import RendererError, load_renderer
    from preprocessing.coeffs import _is_identity_basis
    from preprocessing.media import read_wav, write_video

    out_dir = Path(out_dir)
    rt = RenderTake(data)
    if rt.take != take:
        raise StepError(f"{data} holds take '{rt.take}', not '{take}'")
    try:
        renderer = load_renderer(renderer_path, subject=rt.subject, device=device)
    except RendererError as e:
        raise StepError(str(e)) from e
    if renderer.cfg.size != rt.size:
        raise StepError(f"renderer size {renderer.cfg.size} px, render data {rt.size} px")
    model, _ = check_inputs(checkpoint, rt.subject, device)
    shardset = open_shards(shards)
    info = shardset.take(take)
    gt = {k: np.asarray(v) for k, v in take_arrays(shardset, take, landmarks=False).items()}
    n = rt.n
    valid = rt.valid
    audio = song_clip(read_wav(mix_path, SR), info.offset_s, n)
    bar = dict(total=n, unit="frame", disable=not progress, mininterval=5)

    # 1. reconstruction from the stored ground-truth conditions (the take's crop), held-out frames
    recon_path = out_dir / f"{take}.recon.mp4"
    recon_frames = render_stored(renderer, rt.cond, device)
    ssim, psnr, ssim0, psnr0, cp_rec = [], [], [], [], []
    cp_idx = set(
        np.flatnonzero(valid)[
            np.linspace(0, valid.sum() - 1, min(CPBD_FRAMES, valid.sum())).astype(int)
        ].tolist()
    )
    ref = renderer.reference.numpy().transpose(1, 2, 0)
    real_cp = []
    mouth = (
        rt.eye
        if _is_identity_basis(renderer.basis)
        else M.mouth_opening(driving_landmarks(rt.exp, rt.pose, rt.geometry, renderer.basis))
    )
    cols = grid_columns(valid, mouth, rt.eye)
    recon_cache = {}

    def scored(frames):
        for i, img in enumerate(frames):
            if valid[i]:
                real = rt.frame(i)
                s, p = M.image_similarity(img, real)
                s0, p0 = M.image_similarity(ref, real)
                ssim.append(s), psnr.append(p), ssim0.append(s0), psnr0.append(p0)
                if i in cp_idx:
                    cp_rec.append(M.cpbd_sharpness(img))
                    real_cp.append(M.cpbd_sharpness(real))
            if i in cols:
                recon_cache[i] = img
            yield img

    write_video(
        recon_path,
        tqdm(scored(recon_frames), desc=f"render {take} (recon)", **bar),
        fps=FPS,
        audio=audio,
        sr=SR,
    )

    # 2. generated parameters, rendered in the take's crop
    # as musicface evaluate generates it: the k-th test take (by name) with blink seed seed + k
    tests = [t.take for t in shardset.takes("test")]
    seed = seed + (tests.index(take) if take in tests else 0)
    pose0 = gt["pose"][int(np.argmax(valid))]
    gen = model.generate(
        gt["mfcc_vocals"], gt["mfcc_music"], gt["mfcc_mix"], rt.subject, pose0=pose0, seed=seed,
        mfcc_index=gt["mfcc_index"],
    )
    if (
        renderer.basis.get("components") is not None
        and len(renderer.basis["components"]) != model.exp_dim
    ):
        raise StepError(
            f"the renderer's expression basis has {len(renderer.basis['components'])} "
            f"components, the model predicts {model.exp_dim}"
        )
    gen_path = out_dir / f"{take}.mp4"
    cp_gen = []
    kept = {}

    def keep(frames):
        for i, img in enumerate(frames):
            if i in cp_idx:
                cp_gen.append(M.cpbd_sharpness(img))
            if i in cols:
                kept[i] = img
            yield img

    write_video(
        gen_path,
        tqdm(
            keep(render_params(renderer, gen["exp"], gen["pose"], gen["eye"], device)),
            desc=f"render {take} (generated)",
            **bar,
        ),
        fps=FPS,
        audio=audio,
        sr=SR,
    )

    result = {
        "take": take,
        "subject": rt.subject,
        "n_frames": n,
        "valid_frames": int(valid.sum()),
        "size": rt.size,
        "renderer": str(renderer_path),
        "seed": seed,
        "ssim_recon": float(np.mean(ssim)),
        "psnr_recon": float(np.mean(psnr)),
        "ssim_mean_frame": float(np.mean(ssim0)),
        "psnr_mean_frame": float(np.mean(psnr0)),
        "cpbd": float(np.mean(cp_gen)),
        "cpbd_recon": float(np.mean(cp_rec)),
        "cpbd_real": float(np.mean(real_cp)),
        "videos": [gen_path.name, recon_path.name],
    }

    # 3. lip sync on pixels: FaceMesh re-tracked on the generated video (builtin landmark model)
    energy = vocal_energy_db(gt["mfcc_vocals"], gt["mfcc_index"])
    if _is_identity_basis(renderer.basis):
        result["notes"] = {
            "lmd_mouth_rendered": "deep3d coefficients: the driving landmarks are BFM "
            "points, not FaceMesh's; not comparable"
        }
    else:
        drive = driving_landmarks(
            gen["exp"], gen["pose"], renderer_geometry_for(rt), renderer.basis
        )
        lips = lip_scores(gen_path, n, drive, energy, np.ones(n, bool))
        result.update({k: v for k, v in lips.items() if not k.startswith("_")})
        if "lmd_mouth_rendered" not in lips:
            why = f"FaceMesh found a face in {lips['retracked_frames']} of {n} rendered frames"
            result["notes"] = {k: why for k in ("lmd_mouth_rendered", "lip_energy_corr_rendered")}

    # 4. the figure: real | reconstruction | generated
    frame_grid(
        out_dir / f"{take}.png",
        {
            "real": rt.frame,
            "reconstruction": recon_cache.__getitem__,
            "generated": kept.__getitem__,
        },
        cols,
        labels=[f"{i / FPS:.1f} s,  eye {rt.eye[i]:.1f}" for i in cols],
    )
    result["figure"] = f"{take}.png"
    result["definitions"] = DEFINITIONS
    clean = {k: (M.finite_or_none(v) if isinstance(v, float) else v) for k, v in result.items()}
    save_json(out_dir / f"{take}.json", clean)
    rt.close()
    return clean


def renderer_geometry_for(rt) -> dict:
    """The take's own geometry (its crop): generated parameters of a test take are drawn there."""
    return rt.geometry


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface render", description=__doc__.split("\n")[0])
    ap.add_argument("--renderer", required=True, help="runs/<name>/render/<subject>.pt")
    ap.add_argument("--checkpoint", required=True, help="runs/<name>/model.pt")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--data", required=True, help="work/takes/<take>/render.h5")
    ap.add_argument("--mix", required=True, help="work/songs/<song>/mix.wav")
    ap.add_argument("--take", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        r = render_take(
            a.renderer,
            a.checkpoint,
            a.shards,
            a.data,
            a.mix,
            a.out_dir,
            a.take,
            seed=a.seed,
            device=a.device,
        )
    except StepError as e:
        print(f"musicface: take '{a.take}' step 'render': {one_line(e)}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in r.items() if k != "definitions"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
