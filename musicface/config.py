"""Typed configuration of the model, its training and its losses (config.yaml sections
``model:``, ``train:``, ``loss:``).

The dataclass defaults are the paper's settings (section 3.4 and 4.1) with our architecture sizes;
config.yaml overrides a few of them so that the demo trains in about ten minutes on two CPU cores.
Every key is described in workflow/schemas/config.schema.yaml; :func:`from_dict` refuses unknown
keys with a message naming them, so a typo in a Python-side config fails as loudly as in Snakemake.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

VARIANTS = ("single_stream", "two_stream", "with_atm", "full")
AUDIO = ("separated", "mix")  # model.audio: what the two streams hear (paper Table 2 columns)
BLINK_INTERVALS = ("start_to_start", "end_to_start")  # model.blink_interval_mode


@dataclass
class ModelConfig:
    """Architecture (sizes are ours; the paper gives the structure, not the widths)."""

    variant: str = "full"  # single_stream | two_stream | with_atm | full (paper 4.3)
    # separated: each stream hears its stem | mix: both streams hear the unseparated mix (Table 2)
    audio: str = "separated"
    # TSAE: per stream, a strided stem conv + one stage per entry (stride-2 conv + residual blocks)
    # over the 39-step MFCC window, then mean over the remaining steps and a linear layer
    # -> feat_dim
    enc_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    enc_blocks: int = 1  # residual blocks per encoder stage
    feat_dim: int = 64  # F: per-stream feature size (f_v, f_b); the ATM sees 2F channels
    # ATM: temporal U-Net over the frame sequence, one level per entry (each level halves time)
    unet_channels: list[int] = field(default_factory=lambda: [64, 96, 128])
    hidden: int = 128  # hidden width of the EGN, ESGN, speed MLP and MLP-pose heads
    lstm_hidden: int = 128  # width of the PGN direction LSTM
    disc_channels: int = 64  # discriminator width
    # generation-time eye model (paper 3.3.3)
    # predicted e_long above this counts as a long closure ("e_long > 0")
    eye_threshold: float = 0.25
    eye_sigma: float = 1.0  # temporal Gaussian filter on the combined eye state, in frames
    # s, blink start to next start
    blink_interval: list[float] = field(default_factory=lambda: [1.2, 2.0])
    blink_duration: list[float] = field(default_factory=lambda: [0.10, 0.45])  # s, blink length
    # what blink_interval measures: start_to_start | end_to_start (the open gap between blinks)
    blink_interval_mode: str = "end_to_start"

    @property
    def two_streams(self) -> bool:
        return self.variant != "single_stream"

    @property
    def use_atm(self) -> bool:
        return self.variant in ("with_atm", "full")

    @property
    def use_pgn(self) -> bool:
        return self.variant == "full"


@dataclass
class TrainConfig:
    """Training schedule (paper 4.1: 128-frame windows, Adam 1e-4, 50 epochs, linear decay on the
    last 60%)."""

    name: str = "demo"
    seed: int = 0
    epochs: int = 50
    # windows drawn per epoch; None: about one pass,
    # (eligible window starts) // window ~ frames / window
    samples_per_epoch: int | None = None
    batch_size: int = 32  # global batch (split over DDP processes)
    window: int = 128  # frames per training window
    lr: float = 1.0e-4  # Adam, generator and discriminator
    decay_fraction: float = 0.6  # the LR decays linearly to 0 over this last fraction of the steps
    grad_clip: float = 1.0  # max global grad norm (0: off)
    num_workers: int = 0  # DataLoader worker processes (seeded; results do not depend on it)
    val_samples: int = 64  # test-split windows scored each epoch (0: off)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    deterministic: bool = True  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    # DDP processes the train rule launches with torchrun (train.py reads WORLD_SIZE)
    processes: int = 1
    cuda_graph: bool = False  # CUDA, one process: the whole step replayed as one CUDA graph
    bf16: bool = False  # bfloat16 autocast of the forward passes (GPU; losses stay float32)


@dataclass
class LossConfig:
    """Loss weights (paper eq. 10-13): w1=5, w2=50, w3=1, w4=10, w5=5, w6=1; lambda1=1,
    lambda2=0.1."""

    w1: float = 5.0  # expression MSE
    w2: float = 50.0  # expression velocity
    w3: float = 1.0  # pose MMD
    w4: float = 10.0  # L1 on absolute pose velocity
    w5: float = 5.0  # e_long L1
    w6: float = 1.0  # e_long MMD
    w_att: float = 1.0  # attention L1 (the paper adds it with weight 1)
    lambda1: float = 1.0  # regression losses
    lambda2: float = 0.1  # adversarial loss
    mmd_bandwidths: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    # exp dims weighted by their training variance | uniform (z-scores)
    exp_weighting: str = "variance"
    reduction: str = "mean"  # mean over frames and dimensions | sum: over dimensions (eq. 10-11)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)


def _build(cls, section: str, values: dict | None):
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config section '{section}': unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    return cls(**values)


def from_dict(cfg: dict | None) -> Config:
    """The whole (validated) config dict -> :class:`Config`; other sections are ignored."""
    cfg = cfg or {}
    out = Config(model=_build(ModelConfig, "model", cfg.get("model")),
                 train=_build(TrainConfig, "train", cfg.get("train")),
                 loss=_build(LossConfig, "loss", cfg.get("loss")))
    check(out)
    return out


def check(cfg: Config) -> None:
    """Value checks the schema also makes (for configs that did not come through Snakemake)."""
    m, t = cfg.model, cfg.train
    if m.variant not in VARIANTS:
        raise ValueError(f"config key model.variant: '{m.variant}' is not one of "
                         f"{', '.join(VARIANTS)}")
    if m.blink_interval_mode not in BLINK_INTERVALS:
        raise ValueError(f"config key model.blink_interval_mode: '{m.blink_interval_mode}' is not "
                         f"one of {', '.join(BLINK_INTERVALS)}")
    if m.audio not in AUDIO:
        raise ValueError(f"config key model.audio: '{m.audio}' is not one of {', '.join(AUDIO)}")
    if not m.enc_channels or not m.unet_channels:
        raise ValueError("config keys model.enc_channels and model.unet_channels need at least "
                         "one entry")
    if t.window < 2 ** len(m.unet_channels):
        raise ValueError(f"config key train.window: {t.window} frames is shorter than the U-Net's "
                         f"{2 ** len(m.unet_channels)}-frame stride")
    if cfg.loss.exp_weighting not in ("variance", "uniform"):
        raise ValueError(f"config key loss.exp_weighting: '{cfg.loss.exp_weighting}' is not one of "
                         "variance, uniform")
    if cfg.loss.reduction not in ("mean", "sum"):
        raise ValueError(f"config key loss.reduction: '{cfg.loss.reduction}' is not one of "
                         "mean, sum")
    if not 0 <= t.decay_fraction <= 1:
        raise ValueError("config key train.decay_fraction must be in [0, 1]")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
