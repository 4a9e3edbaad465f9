"""Sequence discriminator (paper eq. 12): is this (pose, e_long) sequence real, given the audio?

Input per frame (all normalised): pose p_t (6), velocity p_t - p_{t-1} (6), e_long_t (1) and the
audio of the streams the variant uses, as the centre MFCC row of each frame's window (26 per
stream). Frames with valid = 0 are zeroed in real and generated sequences alike, so they carry no
evidence; their logits are left out of the loss by the mask.

Temporal conv net: conv k3 with dilations 1, 2, 4, 8 (LeakyReLU 0.2) -> 1x1 conv -> one logit per
frame; receptive field 31 frames (~1 s), so it judges the rhythm of motion against the music.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Discriminator(nn.Module):
    def __init__(self, audio_dim: int, channels: int = 64):
        super().__init__()
        layers, prev = [], 6 + 6 + 1 + audio_dim
        for dil in (1, 2, 4, 8):
            layers += [nn.Conv1d(prev, channels, 3, padding=dil, dilation=dil), nn.LeakyReLU(0.2)]
            prev = channels
        layers.append(nn.Conv1d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, pose: torch.Tensor, e_long: torch.Tensor, audio: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        """pose (B, T, 6), e_long (B, T), audio (B, T, A), valid (B, T) -> logits (B, T)."""
        m = valid[..., None]
        pose = pose * m
        vel = torch.cat([torch.zeros_like(pose[:, :1]), pose[:, 1:] - pose[:, :-1]], dim=1)
        vel = vel * (m * torch.cat([torch.zeros_like(m[:, :1]), m[:, :-1]], dim=1))
        x = torch.cat([pose, vel, e_long[..., None] * m, audio], dim=-1)
        return self.net(x.transpose(1, 2)).squeeze(1)
