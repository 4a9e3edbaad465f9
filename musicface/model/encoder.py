"""Two-stream audio encoder (TSAE, paper 3.2.2): one 1D temporal conv net per audio stream.

Each video frame t comes with a window of 39 MFCC rows (390 ms at 100 Hz, 26 coefficients each,
``preprocessing.mfcc.mfcc_windows``). An :class:`AudioEncoder` reads that window as a 1D signal of
39 steps with 26 + S channels (the S-dim one-hot subject code is concatenated to every row, paper
3.2.4) and maps it to one feature vector f_t of size F. The vocal and the music stream use two
encoders with the same structure and separate weights; the single-stream ablation uses one on the
mix.

Sizes (defaults, ``model.enc_channels = [32, 64, 128]``, ``enc_blocks = 1``, ``feat_dim = 64``):

    stem   conv k5 stride 2   26+S -> 32 channels, 39 -> 20 steps
    stage0 residual block      32            20 steps
    stage1 conv k3 stride 2    32 -> 64,     20 -> 10 steps, + residual block
    stage2 conv k3 stride 2    64 -> 128,    10 ->  5 steps, + residual block
    head   mean over steps, linear 128 -> F, LayerNorm over the F features of the frame

The strided stem halves the cost of the whole encoder (generation of a 4-minute song runs the
encoder on 2 x 7,200 windows); bench/generate.py measures it. The LayerNorm keeps the features at
unit scale (no normalisation elsewhere in the generator): without it they grew to |f| ~ 5 within 400
demo steps and drove the ATM's sigmoids into saturation. It acts on one frame at a time, so chunked
generation is unaffected.

Generation (``inference=True``) runs the same network in channels-last layout (:func:`conv_nhwc`):
an MFCC window (39, 26) is already time-major with the coefficients last, and oneDNN's NHWC
convolutions are ~1.4x faster on CPU than its (N, C, L) path at these channel counts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_nhwc(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to a channels-last ``(N, C, 1, L)`` tensor, as the equivalent 1 x k conv2d.

    Generation only; training keeps ``(N, C, L)`` and ``nn.Conv1d``. Same weights, same products,
    summed in another order by oneDNN's NHWC kernels: results differ by float32 rounding (~1e-7).
    A ``(B, T, C)`` feature sequence viewed as ``x.transpose(1, 2)[:, :, None]`` is such a tensor
    without a copy.
    """
    return F.conv2d(x, conv.weight[:, :, None], conv.bias, (1, conv.stride[0]),
                    (0, conv.padding[0]))


class ResBlock1d(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(conv(relu(x))))``, kernel 3, same length."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on a channels-last ``(N, C, 1, L)`` tensor (generation)."""
        return x + conv_nhwc(self.conv2, F.relu(conv_nhwc(self.conv1, F.relu(x))))


class AudioEncoder(nn.Module):
    """One stream: MFCC windows (N, 39, 26) + subject one-hot (N, S) -> features (N, F)."""

    def __init__(self, n_subjects: int, channels: list[int], blocks: int, feat_dim: int,
                 n_mfcc: int = 26):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Conv1d(n_mfcc + n_subjects, c0, 5, stride=2, padding=2)
        stages = [nn.Sequential(*[ResBlock1d(c0) for _ in range(blocks)])]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages.append(nn.Sequential(nn.Conv1d(c_in, c_out, 3, stride=2, padding=1),
                                        *[ResBlock1d(c_out) for _ in range(blocks)]))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels[-1], feat_dim)
        self.norm = nn.LayerNorm(feat_dim)

    def forward(self, mfcc: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """``mfcc`` (N, 39, 26) normalised, ``onehot`` (N, S) -> (N, F)."""
        x = mfcc.transpose(1, 2)  # (N, 26, 39): coefficients are channels, the 39 rows are time
        x = torch.cat([x, onehot[:, :, None].expand(-1, -1, x.shape[2])], dim=1)
        x = self.stages(self.stem(x))
        return self.norm(self.head(F.relu(x).mean(dim=2)))

    def forward_nhwc(self, mfcc: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in channels-last layout (generation, :func:`conv_nhwc`); same
        arguments."""
        # (N, 39, 26+S)
        x = torch.cat([mfcc, onehot[:, None, :].expand(-1, mfcc.shape[1], -1)], dim=2)
        # (N, 26+S, 1, 39) view: channels last
        x = conv_nhwc(self.stem, x.transpose(1, 2)[:, :, None])
        for stage in self.stages:
            for layer in stage:
                x = layer.forward_nhwc(x) if isinstance(layer, ResBlock1d) else conv_nhwc(layer, x)
        return self.norm(self.head(F.relu(x).mean(dim=(2, 3))))


class TSAE(nn.Module):
    """Two-stream audio encoder: AE^v on the vocals, AE^b on the music (same structure, own
    weights).

    With ``streams=("mix",)`` it is the single-stream encoder of the ablation.
    """

    def __init__(self, streams: tuple[str, ...], n_subjects: int, channels: list[int], blocks: int,
                 feat_dim: int):
        super().__init__()
        self.streams = tuple(streams)
        self.encoders = nn.ModuleDict(
            {s: AudioEncoder(n_subjects, channels, blocks, feat_dim) for s in self.streams})
        self.out_dim = feat_dim * len(self.streams)

    # frames per encoder call at inference (frames are independent: same result, cache-friendly)
    block = 1024

    def forward(self, mfcc: dict[str, torch.Tensor], onehot: torch.Tensor,
                inference: bool = False) -> torch.Tensor:
        """``mfcc[stream]`` (..., 39, 26), ``onehot`` (..., S) -> f_v ++ f_b (..., 2F) (or f (...,
        F)). ``inference``: the encoders' channels-last path (generation, no autograd)."""
        lead = onehot.shape[:-1]
        oh = onehot.reshape(-1, onehot.shape[-1])
        x = {s: mfcc[s].reshape(-1, *mfcc[s].shape[-2:]) for s in self.streams}
        n = oh.shape[0]
        step = n if torch.is_grad_enabled() else self.block
        enc = {s: self.encoders[s].forward_nhwc if inference else self.encoders[s]
               for s in self.streams}
        feats = torch.cat([
            torch.cat([enc[s](x[s][a:a + step], oh[a:a + step]) for s in self.streams], dim=-1)
            for a in range(0, n, max(step, 1))])
        return feats.reshape(*lead, self.out_dim)
