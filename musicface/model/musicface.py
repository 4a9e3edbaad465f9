"""The MusicFace generator (paper Fig. 3): TSAE -> ATM per task -> EGN / PGN / ESGN, and its
variants.

Data flow for a sequence of T video frames (30 fps) of subject s:

    MFCC rows (R, 26) + index (T,) per stream -> windows (T, 39, 26) (cut here, on the device)
    MFCC windows (T, 39, 26) per stream ---- TSAE ----> f_v ++ f_b (T, 2F)     [mix only: f (T, F)]
    per task k in (exp, pose, eye):    ATM_k -> att_k (T, 2F), l_k ++ m_k = att_k * (f_v ++ f_b)
                                       h_k = l_k ++ m_k ++ onehot(s)            (T, 2F + S)
    EGN(h_exp) -> exp (T, E);  PGN(h_pose, p_0) -> pose, speed (T, 6);  ESGN(h_eye) -> e_long (T,)

Variants (``model.variant``, paper 4.3): ``single_stream`` (mix MFCC, one encoder, no ATM, MLP
pose), ``two_stream`` (vocals + music, TSAE, no ATM, MLP pose), ``with_atm`` (+ ATM, MLP pose),
``full`` (+ PGN). Without ATM every head gets h = f ++ onehot(s).

Sizes (config.yaml defaults, 2 subjects, E = 64): 1,486,093 generator parameters = TSAE 2 x 173,280
+ ATM 3 x 313,344 + EGN 25,024 + ESGN 16,897 + PGN 157,580 (speed MLP, LSTM 128, direction FC);
discriminator 49,665.

Generation (:meth:`generate`) runs inference paths of the same network, with the same weights:
channels-last convolutions in the encoders and U-Nets (``encoder.conv_nhwc``) and a numpy roll-out
of the PGN (:meth:`PGN.rollout`); training uses the plain ``forward`` paths. The two agree to
float32 rounding (tests/test_model.py: < 1e-5 in data units over 7,200 frames). bench/generate.py,
one CPU core, 4-minute song (7,200 frames): ~0.5 s (encoders 0.28 s, ATMs 0.07 s, PGN roll-out
0.10 s).

The model file is self-contained (:func:`export`): besides the weights it carries the expression
basis the exp coefficients are defined on (``exp_basis.npz`` of the training data, with its sha256),
so the landmark model, the preview and LMD need nothing else.

Normalisation lives in the model as buffers (saved with the weights): MFCC per stream and
coefficient, exp and pose per dimension (mean/std of the training split's valid frames), the
per-subject mean pose (the default p_0) and sigma_v, the PGN's speed scale. The network works on
z-scores; :meth:`generate` returns data units (exp in the coefficients' units, pose in radians and
the translation's units).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
import torch.nn as nn

from musicface.config import ModelConfig
from musicface.model.atm import ATM
from musicface.model.encoder import TSAE
from musicface.model.generators import (
    EGN,
    ESGN,
    PGN,
    MLPPose,
    PoseState,
    combine_eye_states,
    sample_blinks,
)
from preprocessing.timebase import CENTRE_ROW, FPS, MFCC_DIM, MFCC_WIDTH

TASKS = ("exp", "pose", "eye")
MFCC_KEY = {"vocals": "mfcc_vocals", "music": "mfcc_music", "mix": "mfcc_mix"}
FORMAT = "musicface-model"
FORMAT_VERSION = 1


class MusicFace(nn.Module):
    def __init__(self, cfg: ModelConfig, subjects: list[str], exp_dim: int, fps: int = FPS):
        super().__init__()
        self.cfg = cfg
        self.subjects = [str(s) for s in subjects]
        self.exp_dim = int(exp_dim)
        self.fps = int(fps)
        n_subj = len(self.subjects)
        self.streams = ("vocals", "music") if cfg.two_streams else ("mix",)
        # the audio each stream hears: its stem, or the unseparated mix in both streams
        # (model.audio: mix, the paper's Table 2 "mixed wave" row)
        self.sources = {s: "mix" if cfg.audio == "mix" else s for s in self.streams}
        self.tsae = TSAE(self.streams, n_subj, cfg.enc_channels, cfg.enc_blocks, cfg.feat_dim)
        c = self.tsae.out_dim
        self.atm = (nn.ModuleDict({k: ATM(c, cfg.unet_channels) for k in TASKS}) if cfg.use_atm
                    else None)
        d = c + n_subj
        self.egn = EGN(d, cfg.hidden, self.exp_dim)
        self.esgn = ESGN(d, cfg.hidden)
        self.pgn = PGN(d, cfg.hidden, cfg.lstm_hidden) if cfg.use_pgn else None
        self.mlp_pose = None if cfg.use_pgn else MLPPose(d, cfg.hidden)
        # normalisation (identity until set_normalisation is called with training-split statistics)
        ns = len(self.streams)
        self.register_buffer("mfcc_mean", torch.zeros(ns, MFCC_DIM))
        self.register_buffer("mfcc_std", torch.ones(ns, MFCC_DIM))
        self.register_buffer("exp_mean", torch.zeros(self.exp_dim))
        self.register_buffer("exp_std", torch.ones(self.exp_dim))
        self.register_buffer("pose_mean", torch.zeros(6))
        self.register_buffer("pose_std", torch.ones(6))
        # normalised mean pose per subject
        self.register_buffer("subject_pose", torch.zeros(n_subj, 6))
        # the expression basis exp is defined on (set_exp_basis; saved in model.pt, not a buffer)
        self.exp_basis: dict | None = None
        self.exp_basis_sha256: str | None = None

    @property
    def inputs(self) -> set[str]:
        """The MFCC keys the model reads: {mfcc_vocals, mfcc_music} or {mfcc_mix}."""
        return {MFCC_KEY[v] for v in self.sources.values()}

    def set_exp_basis(self, basis: dict, sha256: str) -> None:
        """Attach the expression basis (``exp_basis.npz`` as loaded, and its file's sha256): the
        landmark model of the generated exp. A PCA basis must have ``exp_dim`` components."""
        basis = {k: np.asarray(v) for k, v in basis.items()}
        if "components" in basis and len(basis["components"]) != self.exp_dim:
            n = len(basis["components"])
            raise ValueError(f"expression basis has {n} components but the model predicts "
                             f"{self.exp_dim}: use the exp_basis.npz of its training data")
        self.exp_basis, self.exp_basis_sha256 = basis, str(sha256)

    # ------------------------------------------------------------------------------- normalisation
    def set_normalisation(self, stats: dict) -> None:
        """Set the buffers from training-split statistics (numpy or tensors, data units):
        ``mfcc_mean/std`` (3, 26) in the order vocals, music, mix; ``exp_mean/std`` (E,);
        ``pose_mean/std`` (6,); ``subject_pose`` (S, 6) (data units); ``vel_std`` (6,) std of
        frame-to-frame pose velocity (data units)."""
        t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in stats.items()}
        rows = [("vocals", "music", "mix").index(self.sources[s]) for s in self.streams]
        self.mfcc_mean.copy_(t["mfcc_mean"][rows])
        self.mfcc_std.copy_(t["mfcc_std"][rows])
        for k in ("exp_mean", "exp_std", "pose_mean", "pose_std"):
            getattr(self, k).copy_(t[k])
        self.subject_pose.copy_((t["subject_pose"] - t["pose_mean"]) / t["pose_std"])
        if self.pgn is not None:
            self.pgn.speed_scale.copy_(t["vel_std"] / t["pose_std"])

    def normalise_targets(self, exp: torch.Tensor,
                          pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (exp - self.exp_mean) / self.exp_std, (pose - self.pose_mean) / self.pose_std

    @property
    def exp_variance_weight(self) -> torch.Tensor:
        """Each exp dim's share of the training variance, std_d^2 / mean(std^2) (mean 1)."""
        v = self.exp_std ** 2
        return v / v.mean()

    def _mfcc(self, mfcc: dict) -> dict[str, torch.Tensor]:
        """Raw MFCC rows keyed ``mfcc_vocals``/... -> normalised, keyed by stream (row by row, so
        normalising the rows and then cutting windows gives the windows' normalised values)."""
        out = {}
        for i, s in enumerate(self.streams):
            x = mfcc[MFCC_KEY[self.sources[s]]]
            if x is None:
                raise ValueError(f"variant '{self.cfg.variant}' needs {MFCC_KEY[self.sources[s]]}")
            out[s] = (x - self.mfcc_mean[i]) / self.mfcc_std[i]
        return out

    @staticmethod
    def windows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Every frame's MFCC window, cut from the rows (musicface.data's item contract): ``rows``
        (B, R, 26), ``index`` (B, T) int -> (B, T, 39, 26), frame t's window being
        ``rows[index[t] : index[t] + 39]``. One row gather on the rows' device (``index_select``
        copies whole 26-float rows: 6x faster on CPU than indexing a sliding-window view)."""
        b, r, d = rows.shape
        first = torch.arange(b, device=rows.device)[:, None, None] * r + index[..., None]
        flat = (first + torch.arange(MFCC_WIDTH, device=rows.device)).reshape(-1)
        return rows.reshape(b * r, d).index_select(0, flat).view(*index.shape, MFCC_WIDTH, d)

    def disc_audio(self, mfcc: dict) -> torch.Tensor:
        """The discriminator's audio input: each used stream's centre MFCC row, normalised
        (B, T, 26*n)."""
        norm, idx = self._mfcc(mfcc), mfcc["mfcc_index"] + CENTRE_ROW
        b = torch.arange(idx.shape[0], device=idx.device)[:, None]
        return torch.cat([norm[s][b, idx] for s in self.streams], dim=-1)

    # ------------------------------------------------------------------------------------- network
    def onehot(self, subject: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(subject.long(), len(self.subjects)).float()

    def encode(self, mfcc: dict, onehot: torch.Tensor) -> tuple[dict, dict | None]:
        """MFCC rows (B, R, 26) per stream + ``mfcc_index`` (B, T) -> per-task inputs h_k (B, T, D)
        and att_k (B, T, C) (training path)."""
        norm = self._mfcc(mfcc)
        idx = mfcc["mfcc_index"]
        return self.encode_windows({s: self.windows(norm[s], idx) for s in self.streams}, onehot)

    def encode_windows(self, norm: dict, onehot: torch.Tensor,
                       inference: bool = False) -> tuple[dict, dict | None]:
        """Normalised MFCC windows (B, T, 39, 26) per stream -> h_k (B, T, D) and att_k (B, T, C).
        ``inference``: the channels-last encoder and U-Net paths (generation: no autograd, ~1.6x
        faster on CPU; float32 rounding differs from the training path by ~1e-7 relative)."""
        b, t = norm[self.streams[0]].shape[:2]
        oh_t = onehot[:, None, :].expand(b, t, -1)
        f = self.tsae(norm, oh_t, inference)  # (B, T, C)
        if self.atm is None:
            h = torch.cat([f, oh_t], dim=-1)
            return {k: h for k in TASKS}, None
        hs, atts = {}, {}
        for k in TASKS:
            mod, atts[k] = self.atm[k](f, inference)
            hs[k] = torch.cat([mod, oh_t], dim=-1)
        return hs, atts

    def decode(self, h: dict, state: PoseState | None = None, p0: torch.Tensor | None = None,
               v0: torch.Tensor | None = None, inference: bool = False):
        """Heads on per-task inputs. With ``p0`` (B, 6) the sequence starts there (frame 0 = p0, and
        ``v0`` = p0 - p_{-1}, default 0); with ``state`` it continues a previous chunk. Returns exp,
        pose, speed (None for MLP pose), e_long and the PGN state (None for MLP pose).
        ``inference``: step the PGN with :meth:`PGN.rollout` (generation: numpy, no autograd, ~4x
        faster) instead of its ``forward`` (training)."""
        exp = self.egn(h["exp"])
        e_long = self.esgn(h["eye"])
        if self.pgn is None:
            return exp, self.mlp_pose(h["pose"]), None, e_long, None
        pgn = self.pgn.rollout if inference else self.pgn
        if state is None:
            state = self.pgn.init_state(p0, v0)
            rest, speed_rest, state = pgn(h["pose"][:, 1:], state)
            pose = torch.cat([p0[:, None], rest], dim=1)
            speed = torch.cat([self.pgn.speeds(h["pose"][:, :1]), speed_rest], dim=1)
        else:
            pose, speed, state = pgn(h["pose"], state)
        return exp, pose, speed, e_long, state

    def forward(self, mfcc: dict, subject: torch.Tensor, p0: torch.Tensor | None = None,
                v0: torch.Tensor | None = None) -> dict:
        """Training forward on whole windows; outputs are normalised.

        ``mfcc``: ``mfcc_vocals`` / ``mfcc_music`` / ``mfcc_mix`` (B, R, 26) raw MFCC rows (the ones
        the variant uses) and ``mfcc_index`` (B, T) (musicface.data's item contract); ``subject``
        (B,) int; ``p0`` (B, 6) normalised pose of frame 0 (default: the subject's mean pose);
        ``v0`` (B, 6) its normalised velocity p_0 - p_{-1} (default 0).
        Returns exp (B, T, E), pose (B, T, 6), speed (B, T, 6) or None, e_long (B, T),
        att {task: (B, T, C)} or None.
        """
        oh = self.onehot(subject)
        h, att = self.encode(mfcc, oh)
        if p0 is None:
            p0 = self.subject_pose[subject.long()]
        exp, pose, speed, e_long, _ = self.decode(h, p0=p0, v0=v0)
        return {"exp": exp, "pose": pose, "speed": speed, "e_long": e_long, "att": att}

    # ---------------------------------------------------------------------------------- generation
    @property
    def context(self) -> int:
        """Frames of overlap a generation chunk needs on each side to equal one pass exactly."""
        return 0 if self.atm is None else self.atm["exp"].unet.context

    @property
    def stride(self) -> int:
        return 1 if self.atm is None else self.atm["exp"].unet.stride

    def subject_index(self, subject) -> int:
        if isinstance(subject, str):
            if subject not in self.subjects:
                raise ValueError(f"unknown subject '{subject}'; this model knows: "
                                 f"{', '.join(self.subjects)}")
            return self.subjects.index(subject)
        i = int(subject)
        if not 0 <= i < len(self.subjects):
            raise ValueError(f"subject index {i} out of range (model has {len(self.subjects)} "
                             "subjects)")
        return i

    @torch.inference_mode()
    def generate(self, mfcc_vocals=None, mfcc_music=None, mfcc_mix=None, subject=0, pose0=None,
                 seed: int = 0, chunk: int | None = None, mfcc_index=None) -> dict:
        """Audio features of a whole song -> driving parameters in data units (numpy).

        ``mfcc_*``: (R, 26) MFCC rows (the streams the variant uses; single_stream needs only
        ``mfcc_mix``) and ``mfcc_index`` (T,): the window of video frame t is
        ``rows[mfcc_index[t] : mfcc_index[t] + 39]`` (``musicface.data.take_arrays`` and
        ``musicface.generate.song_features`` give both); ``subject``: name or index; ``pose0``: (6,)
        pose of frame 0 in data units (default: the subject's mean training pose); ``seed``: blink
        sampler; ``chunk``: frames per pass (None: one pass). Chunks overlap by :attr:`context`
        frames for the U-Net and carry the PGN's LSTM state and last pose/velocity, so the result
        equals one pass.

        Returns exp (T, E), pose (T, 6), speed (T, 6) per frame (None for MLP-pose variants),
        e_long (T,) (ESGN output, values <= ``eye_threshold`` set to 0), e_blink (T,) in {0, 1},
        eye (T,) (eq. 9 combination, Gaussian-filtered), att {exp, pose, eye: (T, C)} (None without
        ATM).
        """
        self.eval()
        dev = self.pose_mean.device
        if mfcc_index is None:
            raise ValueError("mfcc_index is required: MFCC rows and each frame's first row (the "
                             "window of frame t is rows[mfcc_index[t] : mfcc_index[t] + 39])")
        index = torch.as_tensor(np.asarray(mfcc_index), dtype=torch.int64, device=dev)
        given = {"mfcc_vocals": mfcc_vocals, "mfcc_music": mfcc_music, "mfcc_mix": mfcc_mix}
        norm = {}  # each stream's rows, normalised once (then windows are cut per chunk)
        for i, s in enumerate(self.streams):
            key = MFCC_KEY[self.sources[s]]
            x = given[key]
            if x is None:
                raise ValueError(f"variant '{self.cfg.variant}' needs {key}")
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)
            if x.dim() != 2 or x.shape[1] != MFCC_DIM:
                raise ValueError(f"{key}: MFCC rows must have shape (R, {MFCC_DIM}), "
                                 f"got {tuple(x.shape)}")
            inside = len(index) == 0 or (int(index.min()) >= 0
                                         and int(index.max()) + MFCC_WIDTH <= len(x))
            if index.dim() != 1 or not inside:
                raise ValueError(f"mfcc_index must be (T,) with 0 <= index <= R - {MFCC_WIDTH} "
                                 f"(R = {len(x)} rows of {key})")
            norm[s] = (x - self.mfcc_mean[i]).div_(self.mfcc_std[i])[None]  # (1, R, 26)
        n = len(index)
        si = self.subject_index(subject)
        oh = self.onehot(torch.tensor([si], device=dev))
        if pose0 is None:
            p0 = self.subject_pose[si][None]
        else:
            p0 = ((torch.as_tensor(np.asarray(pose0, np.float32), device=dev) - self.pose_mean)
                  / self.pose_std)[None]

        step = n if not chunk else -(-int(chunk) // self.stride) * self.stride
        margin = self.context
        parts: dict[str, list] = {k: [] for k in ("exp", "pose", "speed", "e_long")}
        att_parts: dict[str, list] = {k: [] for k in TASKS}
        state = None
        for a in range(0, n, max(step, 1)):
            b = min(n, a + step)
            lo, hi = max(0, a - margin), min(n, b + margin)
            win = {s: self.windows(v, index[None, lo:hi]) for s, v in norm.items()}
            h, att = self.encode_windows(win, oh, inference=True)
            h = {k: v[:, a - lo:b - lo] for k, v in h.items()}
            exp, pose, speed, e_long, state = self.decode(h, state=state,
                                                          p0=p0 if a == 0 else None,
                                                          inference=True)
            for k, v in (("exp", exp), ("pose", pose), ("speed", speed), ("e_long", e_long)):
                parts[k].append(v)
            if att is not None:
                for k in TASKS:
                    att_parts[k].append(att[k][:, a - lo:b - lo])

        exp = torch.cat(parts["exp"], 1)[0] * self.exp_std + self.exp_mean
        pose = torch.cat(parts["pose"], 1)[0] * self.pose_std + self.pose_mean
        speed = None if self.pgn is None else torch.cat(parts["speed"], 1)[0] * self.pose_std
        e_long = torch.cat(parts["e_long"], 1)[0].cpu().numpy()
        e_long = np.where(e_long > self.cfg.eye_threshold, e_long, 0.0).astype(np.float32)
        e_blink = sample_blinks(n, self.fps, self.cfg.blink_interval, self.cfg.blink_duration, seed,
                                self.cfg.blink_interval_mode)
        return {
            "exp": exp.cpu().numpy(),
            "pose": pose.cpu().numpy(),
            "speed": None if speed is None else speed.cpu().numpy(),
            "e_long": e_long,
            "e_blink": e_blink,
            "eye": combine_eye_states(e_long, e_blink, self.cfg.eye_sigma),
            "att": None if self.atm is None else {k: torch.cat(v, 1)[0].cpu().numpy()
                                                  for k, v in att_parts.items()},
        }


# ------------------------------------------------------------------------------- saving and loading
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def export(model: MusicFace, **meta) -> dict:
    """The model.pt payload: only tensors, dicts, lists, str and numbers (loads with
    ``torch.load(weights_only=True)``). ``exp_basis``: the model's expression basis (arrays as
    tensors, strings as str) and its sha256, or None for a model without one."""
    basis = None
    if model.exp_basis is not None:
        basis = {"sha256": model.exp_basis_sha256,
                 "arrays": {k: v.tolist() if v.dtype.kind in "US" else torch.from_numpy(v.copy())
                            for k, v in model.exp_basis.items()}}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": dataclasses.asdict(model.cfg),
        "subjects": list(model.subjects),
        "exp_dim": model.exp_dim,
        "fps": model.fps,
        "n_params": count_parameters(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "exp_basis": basis,
        "meta": meta,
    }


def from_payload(payload: dict, device: str | torch.device = "cpu") -> MusicFace:
    if payload.get("format") != FORMAT:
        raise ValueError("not a MusicFace model file (no 'format: musicface-model' entry)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"model file format version {payload.get('format_version')} is not "
                         f"supported (this MusicFace reads version {FORMAT_VERSION})")
    cfg = ModelConfig(**payload["model_config"])
    model = MusicFace(cfg, payload["subjects"], payload["exp_dim"], payload.get("fps", FPS))
    missing, unexpected = model.state_dict().keys() - payload["state_dict"].keys(), \
        payload["state_dict"].keys() - model.state_dict().keys()
    if missing or unexpected:
        raise ValueError("model file does not match this MusicFace's architecture (written by "
                         "another version?): "
                         f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    model.load_state_dict(payload["state_dict"])
    basis = payload.get("exp_basis")  # absent in model files written before it was embedded
    if basis is not None:
        model.set_exp_basis({k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                             for k, v in basis["arrays"].items()}, basis["sha256"])
    return model.to(device).eval()


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device = "cpu") -> tuple[MusicFace, dict]:
    """``runs/<name>/model.pt`` (or ``checkpoint.pt``) -> (model in eval mode on ``device``, meta).

    ``meta``: subjects, exp_dim, fps, model_config, n_params, ``exp_basis_sha256`` (None without a
    basis) and what training recorded (epoch, train_config, ...). The basis itself is
    ``model.exp_basis``. Loaded with ``weights_only=True``.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "generator" in payload:  # a training checkpoint: the same payload under "generator"
        payload = payload["generator"]
    model = from_payload(payload, device)
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "exp_basis")}
    meta.update(meta.pop("meta", {}))
    meta["exp_basis_sha256"] = model.exp_basis_sha256
    return model, meta
