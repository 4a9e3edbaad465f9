"""`musicface generate`: any song -> separation -> MFCC -> the model -> driving parameters + a
preview.

    musicface generate song.mp3 --checkpoint runs/demo/model.pt --subject singer1 --out out/
        [--separate builtin|spleeter] [--seed K] [--no-preview]

The model file is all it needs: the expression basis of the preview's landmark model is inside it.

Pipeline (the same features as the dataset, so a model sees at generation what it saw in training):

1. ``preprocessing.media.decode_audio``: the song at 16 kHz mono (any format FFmpeg reads);
   ``N = ceil(duration * 30)`` video frames (frame i at i / 30 s, the project's frame-count rule).
2. Separation into vocals + music (``preprocessing.separate``: builtin REPET-SIM, or Spleeter 2stems
   in its own environment); skipped for the single_stream variant, which only uses the mix.
3. ``preprocessing.mfcc``: 26-D MFCC+delta at 100 Hz per stream, windows ``(N, 39, 26)``.
4. ``model.generate`` (seeded blink sampler; initial pose = the subject's mean training pose).
5. ``DIR/params.npz``: ``exp (N, E)``, ``pose (N, 6)`` (pitch, yaw, roll rad, tx, ty, tz), ``eye``
   (N,) combined + filtered eye state, ``e_long``, ``e_blink``, ``speed (N, 6)`` (the PGN's
   speed; for variants without PGN ``|p_t - p_(t-1)|`` of the generated pose, flagged by
   ``speed_from_pose``), ``att_exp/att_pose/att_eye (N, C)`` (ATM variants), ``fps``, ``subject``,
   ``variant``, ``seed``, ``duration_s``.
6. ``DIR/preview.mp4``: the face mesh driven by the parameters (landmark model: the expression basis
   embedded in the model file + pose; eye state applied to the lids), H.264 + AAC with the song,
   480 x 480.
7. With ``--render RENDERER.pt`` (a subject's renderer, ``musicface render-train``):
   ``DIR/video.mp4``, the parameters rendered as that singer's face (:mod:`musicface.render`), one
   frame per 1/30 s of the song, H.264 + AAC with the song. The renderer must be the subject's.

Errors (missing checkpoint, unknown subject, unreadable audio, a model file without a basis, a
renderer file that is missing, corrupt or another subject's) are one line:
``musicface generate: <reason>``, exit status 1; the renderer is checked before any work.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from preprocessing.common import StepError, one_line, save_json, save_npz
from preprocessing.timebase import FPS, SR


# -------------------------------------------------------------------------------------- features
def load_song(path, sr: int = SR) -> np.ndarray:
    """Decode any audio/video file's first audio track to float32 mono at ``sr`` (StepError if
    unreadable)."""
    from preprocessing.media import decode_audio

    path = Path(path)
    if not path.is_file():
        raise StepError(f"song not found: {path}")
    try:
        audio, _ = decode_audio(path, sr=sr)
    except StepError as e:
        raise StepError(f"cannot read audio from '{path}': {one_line(e)}") from e
    if len(audio) == 0 or not np.isfinite(audio).all():
        raise StepError(f"cannot read audio from '{path}': no samples decoded")
    return np.asarray(audio, np.float32)


def separate(mix: np.ndarray, song_path, backend: str = "builtin",
             spleeter_python=".venv-spleeter/bin/python", spleeter_model_dir=None,
             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Song -> (vocals, music), float32 (n,) at 16 kHz, via ``preprocessing.separate``'s
    backends."""
    from preprocessing import separate as sep

    if backend == "builtin":
        return sep.separate_builtin(mix, SR, progress=progress)
    if backend == "spleeter":
        return sep.separate_spleeter(song_path, len(mix), spleeter_python, spleeter_model_dir)
    raise StepError(f"unknown separation backend '{backend}' (builtin or spleeter)")


def song_features(mix: np.ndarray, vocals=None, music=None, fps: int = FPS, keys=None) -> dict:
    """MFCC rows per available stream, ``mfcc_index`` and ``n_frames``; N = ceil(duration * fps).

    The dataset's features exactly (``preprocessing.mfcc``: M = ceil(N * 100 / fps) rows at 100 Hz,
    row 0 at song time 0) in the form of :func:`musicface.data.take_arrays`: the rows padded to
    ``(M + 38, 26)`` and ``mfcc_index`` ``(N,)``, the window of frame t being rows
    ``mfcc_index[t] .. + 39`` (the model cuts them). ``keys``: the streams to compute
    (``mfcc_vocals`` / ``mfcc_music`` / ``mfcc_mix``; default all available): a model uses either
    the two separated streams or the mix, never all three.
    """
    from musicface.data import mfcc_centres, padded_rows
    from preprocessing.media import n_frames_cfr
    from preprocessing.mfcc import features_at
    from preprocessing.timebase import n_mfcc_rows

    n = n_frames_cfr(len(mix) / SR, fps)
    if n < 1:
        raise StepError(f"song too short: {len(mix) / SR:.3f} s")
    m = n_mfcc_rows(n, fps)
    out = {"n_frames": n, "mfcc_index": mfcc_centres(0, n, m, fps)}
    for key, wav in (("mfcc_mix", mix), ("mfcc_vocals", vocals), ("mfcc_music", music)):
        if wav is not None and (keys is None or key in keys):
            feats = features_at(np.asarray(wav, np.float32), 0, m, SR)
            out[key] = padded_rows(np.asarray(feats, np.float32))
    return out


# ------------------------------------------------------------------------------------ generation
def check_inputs(checkpoint, subject: str, device: str = "cpu"):
    """Load the model and check the subject; one-line StepErrors for a missing checkpoint / unknown
    subject."""
    from musicface.model import load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise StepError(f"checkpoint not found: {checkpoint}")
    try:
        model, meta = load_checkpoint(checkpoint, device)
    except Exception as e:  # any unreadable file gets the same one-line answer
        raise StepError(f"cannot load checkpoint {checkpoint}: {one_line(e)}") from e
    if subject not in model.subjects:
        raise StepError(f"unknown subject '{subject}'; known subjects: {', '.join(model.subjects)}")
    return model, meta


def model_streams(model) -> set[str]:
    """The MFCC inputs the model's variant uses: {mfcc_vocals, mfcc_music} or {mfcc_mix}."""
    return model.inputs


def params_from_output(gen: dict, variant: str, fps: int) -> dict:
    """``model.generate``'s dict -> the arrays of params.npz (module docstring)."""
    pose = np.asarray(gen["pose"], np.float32)
    speed = gen.get("speed")
    from_pose = speed is None
    if from_pose:  # MLP-pose variants predict the pose directly: report its frame-to-frame speed
        speed = np.abs(np.diff(pose, axis=0, prepend=pose[:1]))
    out = {
        "exp": np.asarray(gen["exp"], np.float32), "pose": pose,
        "eye": np.asarray(gen["eye"], np.float32), "e_long": np.asarray(gen["e_long"], np.float32),
        "e_blink": np.asarray(gen["e_blink"], np.uint8), "speed": np.asarray(speed, np.float32),
        "speed_from_pose": np.array(from_pose), "fps": np.array(fps, np.int32),
        "variant": np.array(variant),
    }
    for k, v in (gen.get("att") or {}).items():
        out[f"att_{k}"] = np.asarray(v, np.float32)
    return out


def generate(song, checkpoint, subject: str, out, *, separate_backend: str = "builtin",
             seed: int = 0, device: str = "cpu", preview: bool = True, size: int = 480,
             spleeter_python=".venv-spleeter/bin/python", spleeter_model_dir=None, bfm_dir=None,
             render=None, progress: bool = True) -> dict:
    """The whole pipeline (module docstring). Returns timings and output paths."""
    out = Path(out)
    timings = {}
    t0 = time.perf_counter()
    model, meta = check_inputs(checkpoint, subject, device)
    timings["checkpoint_s"] = time.perf_counter() - t0
    renderer = None
    if render is not None:  # checked before any work: a wrong file is one line, at once
        from musicface.renderer import RendererError, load_renderer

        try:
            renderer = load_renderer(render, subject=subject, device=device)
        except RendererError as e:
            raise StepError(str(e)) from e
        comps = renderer.basis.get("components")
        if comps is not None and len(comps) != model.exp_dim:
            raise StepError(f"renderer {render} was trained with {len(comps)} expression "
                            f"components, the model predicts {model.exp_dim}: use a renderer made "
                            "from the model's dataset")
    if preview and model.exp_basis is None:
        raise StepError(f"{checkpoint} carries no expression basis for the preview (written before "
                        "model files embedded it, or trained without --basis): retrain it, or pass "
                        "--no-preview")
    t = time.perf_counter()
    mix = load_song(song)
    timings["decode_s"] = time.perf_counter() - t

    t = time.perf_counter()
    vocals = music = None
    if model.cfg.two_streams:
        vocals, music = separate(mix, song, separate_backend, spleeter_python, spleeter_model_dir,
                                 progress)
    timings["separate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    feats = song_features(mix, vocals, music, keys=model_streams(model))
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gen = model.generate(feats.get("mfcc_vocals"), feats.get("mfcc_music"), feats.get("mfcc_mix"),
                         subject, seed=seed, mfcc_index=feats["mfcc_index"])
    timings["generate_s"] = time.perf_counter() - t

    params = params_from_output(gen, model.cfg.variant, FPS)
    params.update(subject=np.array(subject), seed=np.array(seed, np.int64),
                  duration_s=np.array(len(mix) / SR), song=np.array(str(song)))
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "params.npz", **params)
    result = {"params": str(out / "params.npz"), "n_frames": int(feats["n_frames"]),
              "variant": model.cfg.variant, "subject": subject}

    if preview:
        from musicface.preview import write_preview
        from preprocessing.coeffs import landmarks_from_coeffs

        t = time.perf_counter()
        lm = landmarks_from_coeffs(params["exp"], params["pose"], model.exp_basis,
                                   frame_size=(1, 1), bfm_dir=bfm_dir)
        write_preview(out / "preview.mp4", lm, params["eye"], mix, SR, fps=FPS, size=size,
                      progress=progress)
        timings["preview_s"] = time.perf_counter() - t
        result["preview"] = str(out / "preview.mp4")
        result["basis_sha256"] = model.exp_basis_sha256
    if renderer is not None:
        from musicface.render import render_params
        from musicface.render_data import load_bfm_for
        from preprocessing.media import write_video

        t = time.perf_counter()
        frames = render_params(renderer, params["exp"], params["pose"], params["eye"], device,
                               bfm=load_bfm_for(renderer.basis, bfm_dir))
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=len(params["exp"]), desc="render", unit="frame",
                          leave=False)
        write_video(out / "video.mp4", frames, fps=FPS, audio=mix, sr=SR)
        timings["render_s"] = time.perf_counter() - t
        result["video"] = str(out / "video.mp4")
    result["timings"] = timings
    return result


# ------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicface generate",
                                 description="song audio -> expression, head pose and eye "
                                             "parameters + a preview video")
    ap.add_argument("song",
                    help="any audio (or video) file FFmpeg reads: wav, mp3, flac, m4a, mp4, ...")
    ap.add_argument("--checkpoint", required=True, help="runs/<name>/model.pt")
    ap.add_argument("--subject", required=True,
                    help="whose singing style (one of the model's subjects)")
    ap.add_argument("--out", required=True,
                    help="output folder: params.npz, preview.mp4 (, video.mp4)")
    ap.add_argument("--separate", default="builtin", choices=["builtin", "spleeter"],
                    help="vocal/music separation backend (default builtin)")
    ap.add_argument("--seed", type=int, default=0, help="blink-sampler seed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-preview", action="store_true", help="write params.npz only")
    ap.add_argument("--size", type=int, default=480, help="preview width = height in pixels")
    ap.add_argument("--spleeter-python", default=".venv-spleeter/bin/python",
                    help="interpreter of the Spleeter environment (--separate spleeter)")
    ap.add_argument("--spleeter-model-dir", default=None,
                    help="MODEL_PATH holding 2stems/ (--separate spleeter)")
    ap.add_argument("--bfm-dir", default=None,
                    help="Basel Face Model folder (deep3d coefficients only)")
    ap.add_argument("--render", default=None, metavar="RENDERER.pt",
                    help="the subject's renderer (runs/<name>/render/<subject>.pt): also write "
                    "video.mp4")
    a = ap.parse_args(argv)
    try:
        r = generate(a.song, a.checkpoint, a.subject, a.out, separate_backend=a.separate,
                     seed=a.seed, device=a.device, preview=not a.no_preview, size=a.size,
                     spleeter_python=a.spleeter_python, spleeter_model_dir=a.spleeter_model_dir,
                     bfm_dir=a.bfm_dir, render=a.render)
    except StepError as e:
        print(f"musicface generate: {one_line(e)}", file=sys.stderr)
        return 1
    save_json(Path(a.out) / "generate.json", r)
    print(f"{r['n_frames']} frames ({r['n_frames'] / FPS:.2f} s) -> {r['params']}"
          + (f", {r['preview']}" if "preview" in r else "")
          + (f", {r['video']}" if "video" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
