"""The renderer (paper Fig. 2 and 4.1): a conditional GAN that turns condition images into frames of
one recorded singer. Our own code, read top to bottom; the architecture family is FACIAL's
(pix2pixHD-style: image generator, multi-scale PatchGAN, LSGAN + discriminator feature matching),
none of their code is used (AGPL / CC BY-NC-SA).

    cfg = RendererConfig(size=128)
    G, D = Generator(cfg), MultiScaleDiscriminator(cfg)
    fake = G(cond_stack, reference)     # (B, 4 (2 context + 1), S, S), (B, 3, S, S) -> (B, 3, S, S)
    losses = generator_losses(D, cond, fake, real, cfg, vgg)   # dict of the terms + "total"
    save_renderer(path, ...); R = load_renderer(path)          # self-contained, weights_only=True

Generator: a U-Net. Input = the temporal stack of condition frames (:mod:`musicface.raster`: PNCC +
eye attention, frames t - context .. t + context) and the subject's *reference frame* (the per-pixel
median of its training frames in the crop: the paper's reference module, giving background, hair
and clothes so the network spends its capacity on the face). ``levels = log2(size / 4)`` stride-2
4x4 convolutions (instance norm, LeakyReLU 0.2) down to 4 x 4, then nearest-neighbour upsampling
+ 3x3 convolutions (no transposed convolutions: no checkerboard artefacts) with skip connections,
tanh output in [-1, 1]. Widths ``channels * 2^level`` capped at ``max_channels``.

Discriminator: ``disc_scales`` PatchGANs, each on the image (and the centre condition frame) at
1/1, 1/2, ... resolution (average-pooled); each has ``disc_layers`` stride-2 4x4 convolutions, one
stride-1 and a 1-channel patch output; LSGAN targets 1 (real) / 0 (fake).

Generator loss: ``w_gan * LSGAN + w_fm * feature matching (L1 between the discriminator's
intermediate features on real and fake, every layer and scale) + w_l1 * L1(fake, real)
[+ w_vgg * VGG]``. The L1 is weighted ``1 + w_eye`` around the eyes (the eye attention map of the
rendered frame, dilated by 2 px): they are tiny at 128 px, and blinks and long closures must show.
The VGG term exists only when the user points ``render.vgg_weights`` at a torchvision VGG
state_dict (no weights can be downloaded here): L1 between ImageNet-normalised
features after relu1_1 .. relu5_1, weighted 1/32, 1/16, 1/8, 1/4, 1 (pix2pixHD's choice).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musicface.raster import CHANNELS

FORMAT = "musicface-renderer"
VERSION = 1


@dataclass
class RendererConfig:
    size: int = 256  # frame side in pixels (a power of two, >= 32)
    context: int = 2  # condition frames on each side of the rendered one
    channels: int = 32  # generator width at full resolution
    max_channels: int = 256
    disc_channels: int = 32
    disc_scales: int = 2
    disc_layers: int = 3
    w_gan: float = 1.0
    w_fm: float = 10.0
    w_l1: float = 50.0
    w_vgg: float = 10.0  # only with a VGG state_dict
    w_eye: float = 10.0  # extra L1 weight inside the (dilated) eye attention map

    @property
    def cond_channels(self) -> int:
        return len(CHANNELS) * (2 * self.context + 1)

    @property
    def levels(self) -> int:
        return int(round(math.log2(self.size / 4)))

    def check(self) -> "RendererConfig":
        if self.size < 32 or 2 ** (self.levels + 2) != self.size:
            raise ValueError(f"render size must be a power of two >= 32, got {self.size}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "RendererConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).check()


def _width(cfg: RendererConfig, level: int) -> int:
    return min(cfg.channels * 2**level, cfg.max_channels)


# ------------------------------------------------------------------------------------ generator
class Down(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
        self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()

    def forward(self, x):
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin + cskip, cout, 3, padding=1)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.norm(self.conv(torch.cat([x, skip], 1))))


class Generator(nn.Module):
    def __init__(self, cfg: RendererConfig):
        super().__init__()
        self.cfg = cfg.check()
        cin = cfg.cond_channels + 3  # + the reference frame
        widths = [_width(cfg, i) for i in range(cfg.levels)]  # after each Down
        self.downs = nn.ModuleList()
        c = cin
        for i, w in enumerate(widths):
            self.downs.append(Down(c, w, norm=i > 0))
            c = w
        self.ups = nn.ModuleList()
        skips = [cin] + widths[:-1]  # the input of each Down, full resolution first
        for i in reversed(range(cfg.levels)):
            out = _width(cfg, max(i - 1, 0))
            self.ups.append(Up(c, skips[i], out))
            c = out
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, cond: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``cond (B, C, S, S)`` in [0, 1], ``reference (B, 3, S, S)`` in [-1, 1] -> image in
        [-1, 1]."""
        x = torch.cat([cond, reference], 1)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for up in self.ups:
            x = up(x, skips.pop())
        return torch.tanh(self.to_rgb(x))


# ------------------------------------------------------------------------------------ discriminator
class PatchGAN(nn.Module):
    def __init__(self, cin: int, width: int, layers: int):
        super().__init__()
        blocks, c = [], cin
        for i in range(layers):
            w = width * 2**i
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 4, stride=2, padding=1),
                    nn.InstanceNorm2d(w, affine=True) if i else nn.Identity(),
                    nn.LeakyReLU(0.2),
                )
            )
            c = w
        w = width * 2**layers
        blocks.append(
            nn.Sequential(
                nn.Conv2d(c, w, 4, padding=1), nn.InstanceNorm2d(w, affine=True), nn.LeakyReLU(0.2)
            )
        )
        blocks.append(nn.Conv2d(w, 1, 4, padding=1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x) -> list[torch.Tensor]:
        """Every block's output (the last is the patch map): the features for feature matching."""
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, cfg: RendererConfig):
        super().__init__()
        cin = len(CHANNELS) + 3  # the centre condition frame + the image
        self.nets = nn.ModuleList(
            [PatchGAN(cin, cfg.disc_channels, cfg.disc_layers) for _ in range(cfg.disc_scales)]
        )

    def forward(self, cond_centre, image) -> list[list[torch.Tensor]]:
        x = torch.cat([cond_centre, image], 1)
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


# ------------------------------------------------------------------------------------ VGG loss
VGG_LAYERS = {
    "vgg11": (1, 4, 9, 14, 19),
    "vgg13": (1, 6, 11, 16, 21),
    "vgg16": (1, 6, 11, 18, 25),
    "vgg19": (1, 6, 11, 20, 29),
}  # index of relu1_1 .. relu5_1 in torchvision's features
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
VGG_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}  # torchvision.models.vgg.cfgs


class VGGLoss(nn.Module):
    """Perceptual loss from the user's torchvision VGG weights (``vgg11/13/16/19`` without batch
    norm; a full state_dict or only its ``features.*`` entries)."""

    def __init__(self, weights: str | Path, arch: str = "vgg19"):
        super().__init__()
        import torchvision

        if arch not in VGG_LAYERS:
            raise ValueError(f"render.vgg_arch must be one of {sorted(VGG_LAYERS)}, got {arch!r}")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG weights not found: {path} (render.vgg_weights: a torchvision "
                f"{arch} state_dict, e.g. {arch}-*.pth from torchvision's model zoo)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        last = VGG_LAYERS[arch][-1]
        # torchvision's VGG feature stack without the classifier (100M parameters we do not need)
        layout = torchvision.models.vgg.cfgs[VGG_CFG[arch]]
        self.features = torchvision.models.vgg.make_layers(layout, batch_norm=False)[: last + 1]
        try:
            missing, _ = self.features.load_state_dict(feats, strict=False)
        except RuntimeError as e:  # shapes that do not fit
            raise ValueError(
                f"{path} is not a torchvision {arch} state_dict: {' '.join(str(e).split())[:200]}"
            ) from e
        if missing:
            raise ValueError(
                f"{path} is not a torchvision {arch} state_dict: missing {missing[:3]}"
            )
        self.features.eval().requires_grad_(False)
        self.taps = VGG_LAYERS[arch]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _feats(self, x):
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, fake, real):
        with torch.no_grad():
            fr = self._feats(real)
        ff = self._feats(fake)
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(VGG_WEIGHTS, ff, fr, strict=True))


# ------------------------------------------------------------------------------------ losses
def lsgan(outputs: list[list[torch.Tensor]], target: float) -> torch.Tensor:
    return sum(F.mse_loss(o[-1], torch.full_like(o[-1], target)) for o in outputs) / len(outputs)


def feature_matching(fake_out, real_out) -> torch.Tensor:
    loss, n = 0.0, 0
    for f_scale, r_scale in zip(fake_out, real_out, strict=True):
        for f, r in zip(f_scale[:-1], r_scale[:-1], strict=True):
            loss = loss + F.l1_loss(f, r.detach())
            n += 1
    return loss / max(n, 1)


def centre_frame(cond: torch.Tensor, cfg: RendererConfig) -> torch.Tensor:
    """The rendered frame's own condition channels out of a temporal stack."""
    c = len(CHANNELS)
    return cond[:, cfg.context * c : (cfg.context + 1) * c]


def eye_weight(cond_centre: torch.Tensor, w_eye: float) -> torch.Tensor:
    """Per-pixel L1 weight (B, 1, S, S): 1, and 1 + w_eye in the eye map dilated by 2 px."""
    eyes = (cond_centre[:, CHANNELS.index("eye") : CHANNELS.index("eye") + 1] > 0).float()
    return 1.0 + w_eye * F.max_pool2d(eyes, 5, stride=1, padding=2)


def generator_losses(D, cond, fake, real, cfg: RendererConfig, vgg: VGGLoss | None = None) -> dict:
    cc = centre_frame(cond, cfg)
    fake_out, real_out = D(cc, fake), D(cc, real)
    weight = eye_weight(cc, cfg.w_eye)
    terms = {
        "gan": lsgan(fake_out, 1.0),
        "fm": feature_matching(fake_out, real_out),
        "l1": ((fake - real).abs() * weight).mean() / weight.mean(),
    }
    total = cfg.w_gan * terms["gan"] + cfg.w_fm * terms["fm"] + cfg.w_l1 * terms["l1"]
    if vgg is not None:
        terms["vgg"] = vgg(fake, real)
        total = total + cfg.w_vgg * terms["vgg"]
    terms["total"] = total
    return terms


def discriminator_loss(D, cond, fake, real, cfg: RendererConfig) -> torch.Tensor:
    cc = centre_frame(cond, cfg)
    return 0.5 * (lsgan(D(cc, real), 1.0) + lsgan(D(cc, fake.detach()), 0.0))


# ------------------------------------------------------------------------------------ checkpoint
class RendererError(ValueError):
    """A renderer file that cannot be used (missing, corrupt, another subject): one-line message."""


def save_renderer(
    path,
    *,
    subject: str,
    cfg: RendererConfig,
    generator: Generator,
    reference,
    geometry: dict,
    basis: dict,
    info: dict,
) -> None:
    """Self-contained renderer file: everything :func:`load_renderer` needs, tensors and plain types
    only (loads with ``weights_only=True``). ``reference`` uint8 (3, S, S); ``geometry`` =
    :meth:`musicface.raster.Geometry.to_dict` of the subject's canonical take; ``basis`` = the
    expression basis arrays the conditions are built with."""
    from preprocessing.common import atomic_path

    def t(v):
        return v if isinstance(v, torch.Tensor) else torch.as_tensor(v)

    obj = {
        "format": FORMAT,
        "version": VERSION,
        "subject": subject,
        "config": asdict(cfg),
        "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "reference": t(reference).to(torch.uint8),
        "geometry": {k: t(v) for k, v in geometry.items()},
        "basis": {k: t(v) for k, v in basis.items() if k in ("mean", "components", "identity")},
        "info": info,
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass
class Renderer:
    subject: str
    cfg: RendererConfig
    generator: Generator
    reference: torch.Tensor  # uint8 (3, S, S)
    geometry: dict
    basis: dict
    info: dict

    def reference_input(self, batch: int, device="cpu") -> torch.Tensor:
        ref = self.reference.to(device=device, dtype=torch.float32) / 127.5 - 1.0
        return ref.unsqueeze(0).expand(batch, -1, -1, -1)


def load_renderer(path, subject: str | None = None, device: str = "cpu") -> Renderer:
    """Load a renderer file; :class:`RendererError` (one line) when it is missing, not a renderer,
    corrupt, or made for another subject than ``subject``."""
    path = Path(path)
    if not path.is_file():
        raise RendererError(f"renderer not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one-line answer
        msg = " ".join(str(e).split())[:200]
        raise RendererError(f"cannot load renderer {path}: {type(e).__name__}: {msg}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RendererError(f"{path} is not a MusicFace renderer file")
    if obj.get("version") != VERSION:
        raise RendererError(
            f"{path}: renderer file version {obj.get('version')}, this MusicFace "
            f"reads version {VERSION}"
        )
    if subject is not None and obj["subject"] != subject:
        raise RendererError(f"renderer {path} is for subject '{obj['subject']}', not '{subject}'")
    cfg = RendererConfig.from_dict(obj["config"])
    G = Generator(cfg)
    try:
        G.load_state_dict(obj["generator"])
    except RuntimeError as e:
        raise RendererError(
            f"{path}: generator weights do not fit its config: {' '.join(str(e).split())[:200]}"
        ) from e
    G.to(device).eval()
    return Renderer(
        subject=obj["subject"],
        cfg=cfg,
        generator=G,
        reference=obj["reference"],
        geometry=obj["geometry"],
        basis={k: v.numpy() for k, v in obj["basis"].items()},
        info=obj.get("info", {}),
    )
