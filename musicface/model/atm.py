"""Attention-based Modulator (ATM, paper 3.2.3): per-task channel attention over time.

    att    = sigmoid(UNet1d(f_v ++ f_b))        (T, 2F), values in (0, 1)
    [l, m] = att * (f_v ++ f_b)

Like squeeze-and-excitation, but the weights come from a temporal U-Net over the whole frame
sequence, so the weight of a channel at frame t depends on seconds of context around t (which stream
dominates changes between intro, singing and breaks). One ATM per task: exp, pose, eye.

U-Net (defaults ``model.unet_channels = [64, 96, 128]``): level i works at 1/2^i of the frame rate
with ``channels[i]`` channels (two conv k3 + LeakyReLU); average pooling down, nearest upsampling
up, skip connections by concatenation; a 1x1 conv gives the 2F attention logits. No normalisation
layer: every output frame depends only on a bounded neighbourhood (:func:`UNet1d.context`), so
generation in chunks with that much overlap gives the same values as one pass.

Generation (``inference=True``) runs the U-Net in channels-last layout (``encoder.conv_nhwc``): the
(B, T, C) features are a channels-last (B, C, 1, T) tensor as they are, so no transposes, and
oneDNN's NHWC convolutions are faster on CPU (the three ATMs of a 4-minute song: 135 -> 72 ms).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from musicface.model.encoder import conv_nhwc


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv1d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))


def conv_block_nhwc(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A :func:`conv_block` on a channels-last (B, C, 1, T) tensor (generation)."""
    return F.leaky_relu(conv_nhwc(block[2], F.leaky_relu(conv_nhwc(block[0], x), 0.2)), 0.2)


class UNet1d(nn.Module):
    """(B, C_in, T) -> (B, C_out, T) for any T (the input is padded to a multiple of
    :attr:`stride`)."""

    def __init__(self, c_in: int, c_out: int, channels: list[int]):
        super().__init__()
        self.down = nn.ModuleList()
        prev = c_in
        for c in channels:
            self.down.append(conv_block(prev, c))
            prev = c
        self.up = nn.ModuleList(conv_block(channels[i + 1] + channels[i], channels[i])
                                for i in reversed(range(len(channels) - 1)))
        self.out = nn.Conv1d(channels[0], c_out, 1)
        self.stride = 2 ** (len(channels) - 1)

    @property
    def context(self) -> int:
        """Frames on each side that can influence an output frame (an upper bound), rounded up to a
        multiple of :attr:`stride`: two k3 convs per level on the way down and up (+-2 steps at
        scale 2^i each) and the pooling/upsampling grid (+-2^i)."""
        depth = len(self.down) - 1
        half = sum(2 * 2 ** i for i in range(depth + 1)) + sum(2 * 2 ** i + 2 * 2 ** i
                                                               for i in range(depth))
        return -(-half // self.stride) * self.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2]
        pad = (-n) % self.stride
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.avg_pool1d(x, 2)
            x = block(x)
            skips.append(x)
        for j, block in enumerate(self.up):
            skip = skips[-2 - j]
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)[:, :, :n]

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for generation: (B, C_in, 1, T) channels-last -> (B, T, C_out)
        (time-major)."""
        n = x.shape[3]
        pad = (-n) % self.stride
        if pad:
            x = F.pad(x, (0, pad, 0, 0), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.avg_pool2d(x, (1, 2))
            x = conv_block_nhwc(block, x)
            skips.append(x)
        for j, block in enumerate(self.up):
            x = F.interpolate(x, scale_factor=(1, 2), mode="nearest")
            x = conv_block_nhwc(block, torch.cat([x, skips[-2 - j]], dim=1))
        # the 1x1 output conv as a matrix product on the (B, 1, T, C) view: time-major result
        return F.linear(x.permute(0, 2, 3, 1), self.out.weight[:, :, 0], self.out.bias)[:, 0, :n]


class ATM(nn.Module):
    """One task's modulator: features (B, T, C) -> (att * features, att), both (B, T, C)."""

    def __init__(self, channels: int, unet_channels: list[int]):
        super().__init__()
        self.unet = UNet1d(channels, channels, unet_channels)

    def forward(self, feats: torch.Tensor,
                inference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``inference``: the U-Net's channels-last path (generation, no autograd)."""
        if inference:
            att = torch.sigmoid(self.unet.forward_nhwc(feats.transpose(1, 2)[:, :, None]))
        else:
            att = torch.sigmoid(self.unet(feats.transpose(1, 2))).transpose(1, 2)
        return att * feats, att
