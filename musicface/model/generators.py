"""The three downstream generators (paper 3.3) and the generation-time eye model.

All work on per-frame inputs h_t = l_t ++ m_t ++ s (the task's ATM output and the subject one-hot),
shape (B, T, D), and on *normalised* targets (per-dim z-scores of the training split; MusicFace turns
them back into data units).

* :class:`EGN`  expression: two FC layers with a ReLU between -> exp_t (E).
* :class:`PGN`  head pose as speed x direction (paper eq. 6-7):
      s_t = ABS(phi_speed(h_t)) * sigma_v                    speed >= 0 by construction
      o_t, c_t = LSTM(h_t ++ p_{t-1} ++ v_{t-1}, c_{t-1}),   v_{t-1} = p_{t-1} - p_{t-2}
      d_t = tanh(phi_direc(o_t))                             direction in (-1, 1)
      p_t = p_{t-1} + s_t * d_t
  from an initial pose p_0 (and velocity v_0). The LSTM is fed its own previous poses in training too
  (no teacher forcing), so training and generation run the same recurrence. sigma_v (a buffer, set from
  the training data) is the per-dim std of frame-to-frame velocity in normalised units: it puts the
  MLP's output at unit scale.
* :class:`MLPPose` the ablations' pose head: an MLP regressing p_t directly.
* :class:`ESGN` long eye closures: MLP -> sigmoid -> e_long_t in (0, 1) (the data's e_long is the
  normalised AU45 in [0, 1] inside closures >= tau and 0 elsewhere). Sigmoid rather than ReLU: its
  gradient never dies, and the data range is (0, 1) anyway; "e_long > 0" of paper eq. 9 is then
  ``e_long > model.eye_threshold`` (default 0.25, half the eyes step's closed threshold of 0.5).
* :func:`sample_blinks`, :func:`combine_eye_states`: random blinks (interval ~ U(1.2, 2.0) s,
  start to start or end to start, ``model.blink_interval_mode``; duration ~ U(0.10, 0.45) s), eq. 9
  and the temporal Gaussian filter. Generation time only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter1d
from scipy.special import expit

from musicface.config import BLINK_INTERVALS


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Two fully connected layers with one ReLU between them."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class EGN(nn.Module):
    """Expression generation network: (B, T, D) -> (B, T, E)."""

    def __init__(self, d_in: int, hidden: int, exp_dim: int):
        super().__init__()
        self.net = mlp(d_in, hidden, exp_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ESGN(nn.Module):
    """Eye state generation network (long closures): (B, T, D) -> e_long (B, T) in (0, 1)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.net = mlp(d_in, hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(h)).squeeze(-1)


class MLPPose(nn.Module):
    """Ablation pose head (single_stream, two_stream, with_atm): (B, T, D) -> pose (B, T, 6)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.net = mlp(d_in, hidden, 6)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


@dataclass
class PoseState:
    """What the PGN carries from frame to frame (and from one generation chunk to the next)."""

    h: torch.Tensor  # (B, H) LSTM output o_{t-1}
    c: torch.Tensor  # (B, H) LSTM cell c_{t-1}
    p: torch.Tensor  # (B, 6) previous pose p_{t-1} (normalised)
    v: torch.Tensor  # (B, 6) previous velocity v_{t-1} = p_{t-1} - p_{t-2}


class PGN(nn.Module):
    """Pose generation network: speed MLP + direction LSTM, rolled out frame by frame."""

    def __init__(self, d_in: int, hidden: int, lstm_hidden: int):
        super().__init__()
        self.speed = mlp(d_in, hidden, 6)
        self.lstm = nn.LSTMCell(d_in + 12, lstm_hidden)  # input: h_t ++ p_{t-1} ++ v_{t-1}
        self.direc = nn.Linear(lstm_hidden, 6)
        self.d_in = d_in
        self.register_buffer("speed_scale", torch.ones(6))  # sigma_v, set from the training data

    def init_state(self, p0: torch.Tensor, v0: torch.Tensor | None = None) -> PoseState:
        zeros = p0.new_zeros(p0.shape[0], self.lstm.hidden_size)
        return PoseState(zeros, zeros.clone(), p0, torch.zeros_like(p0) if v0 is None else v0)

    def speeds(self, h: torch.Tensor) -> torch.Tensor:
        """s_t = |phi_speed(h_t)| * sigma_v, (B, T, 6), >= 0 by construction."""
        return self.speed(h).abs() * self.speed_scale

    def forward(self, h: torch.Tensor, state: PoseState) -> tuple[torch.Tensor, torch.Tensor, PoseState]:
        """Roll out over all T frames of ``h`` (B, T, D) from ``state`` (the frame before h[:, 0]).

        Returns poses p_1..p_T (B, T, 6), speeds (B, T, 6) and the state after the last frame.
        The LSTM's input projection of h_t does not depend on the recurrence, so it is computed for
        all frames at once; the loop only does the recurrent part (the same arithmetic as
        ``nn.LSTMCell`` on the concatenated input, gate order i, f, g, o).
        """
        speed = self.speeds(h)
        w_ih, w_hh = self.lstm.weight_ih, self.lstm.weight_hh
        pre = torch.nn.functional.linear(h, w_ih[:, :self.d_in], self.lstm.bias_ih + self.lstm.bias_hh)
        w_rec = torch.cat([w_ih[:, self.d_in:], w_hh], dim=1)  # acts on p_{t-1} ++ v_{t-1} ++ o_{t-1}
        hid, cell, p, v = state.h, state.c, state.p, state.v
        poses = []
        # unbind once: indexing pre[:, t] in the loop would make backward allocate a full-size
        # zero gradient per frame (quadratic in T)
        for pre_t, s_t in zip(pre.unbind(1), speed.unbind(1)):
            gates = torch.addmm(pre_t, torch.cat([p, v, hid], dim=1), w_rec.t())
            i, f, g, o = gates.chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
            d = torch.tanh(self.direc(hid))
            p_new = p + s_t * d
            v, p = p_new - p, p_new
            poses.append(p)
        return torch.stack(poses, dim=1), speed, PoseState(hid, cell, p, v)

    @torch.no_grad()
    def rollout(self, h: torch.Tensor, state: PoseState) -> tuple[torch.Tensor, torch.Tensor, PoseState]:
        """:meth:`forward`'s recurrence for generation (no autograd), stepped in numpy; same arguments
        and results.

        Why numpy: a frame's step is ~15 operations on 1 x 512 vectors, and torch spends ~4 us
        dispatching each one (0.3-0.45 s for a 4-minute song, 7,200 steps) against ~0.5 us for a numpy
        ufunc writing into a preallocated buffer (~0.1 s). The arithmetic is the same float32
        recurrence; only the rounding of the matrix products and of sigmoid/tanh differs (about 1e-7
        relative; tests/test_model.py compares this with :meth:`forward` over 7,200 frames).
        Everything that does not depend on the recurrence (speeds, input projection of h_t) is
        computed by torch for all frames at once, exactly as in :meth:`forward`.
        """
        b, t = h.shape[:2]
        n = self.lstm.hidden_size
        speed = self.speeds(h)
        w_ih = self.lstm.weight_ih
        pre = torch.nn.functional.linear(h, w_ih[:, :self.d_in], self.lstm.bias_ih + self.lstm.bias_hh)
        w_rec = torch.cat([w_ih[:, self.d_in:], self.lstm.weight_hh], dim=1)  # acts on p ++ v ++ o
        # gate rows i, f, g, o -> i, f, o, g: one sigmoid call covers the contiguous i, f, o block
        order = torch.cat([torch.arange(0, 2 * n), torch.arange(3 * n, 4 * n), torch.arange(2 * n, 3 * n)])
        arr = lambda a: a.detach().cpu().contiguous().numpy()  # noqa: E731 - float32 numpy view/copy
        pre = arr(pre[..., order].transpose(0, 1))                      # (T, B, 4H), time-major
        w_rec = arr(w_rec[order].t())                                   # (12 + H, 4H)
        w_dir, b_dir = arr(self.direc.weight.t()), arr(self.direc.bias)
        s = arr(speed.transpose(0, 1))                                  # (T, B, 6)

        # x = p_{t-1} ++ v_{t-1} ++ o_{t-1}, the recurrent input, updated in place through its views
        x = arr(torch.cat([state.p, state.v, state.h], dim=1)).copy()
        p, v, hid = x[:, :6], x[:, 6:12], x[:, 12:]
        cell = arr(state.c).copy()
        gates = np.empty((b, 4 * n), np.float32)
        i, f, o, g, ifo = gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:3 * n], gates[:, 3 * n:], gates[:, :3 * n]
        tanh_c, d = np.empty((b, n), np.float32), np.empty((b, 6), np.float32)
        poses = np.empty((t, b, 6), np.float32)
        for pre_t, s_t, p_t in zip(pre, s, poses):
            np.dot(x, w_rec, out=gates)
            gates += pre_t
            expit(ifo, out=ifo)
            np.tanh(g, out=g)
            cell *= f                                   # c_t = f c_{t-1} + i g
            g *= i
            cell += g
            np.tanh(cell, out=tanh_c)
            np.multiply(o, tanh_c, out=hid)             # o_t = o tanh(c_t)
            np.dot(hid, w_dir, out=d)                   # d_t = tanh(phi_direc(o_t))
            d += b_dir
            np.tanh(d, out=d)
            d *= s_t
            np.add(p, d, out=p_t)                       # p_t = p_{t-1} + s_t d_t
            np.subtract(p_t, p, out=v)                  # v_t = p_t - p_{t-1}, as forward computes it
            p[...] = p_t
        back = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(h.device)  # noqa: E731
        return back(poses.transpose(1, 0, 2)), speed, PoseState(*(back(a.copy()) for a in (hid, cell, p, v)))


# ------------------------------------------------------------------------------ generation-time eyes
def sample_blinks(n_frames: int, fps: float = 30.0, interval=(1.2, 2.0), duration=(0.10, 0.45),
                  seed: int = 0, mode: str = "start_to_start") -> np.ndarray:
    """Random blinks (paper 3.3.3): e_blink (n_frames,) float32 in {0, 1}.

    Blink k lasts B_d ~ U(duration) seconds and the blink interval B_i ~ U(interval) separates it
    from blink k-1 (the first blink starts B_i after 0). The paper does not say between which
    instants B_i is measured; ``mode`` picks the reading: ``start_to_start`` (onset to onset, as the
    demo recordings draw it: 1 / E[B_i] = 1/1.6 = 0.63 blinks/s) or ``end_to_start`` (the open-eye
    gap from one blink's end to the next one's start: 1 / (E[B_i] + E[B_d]) = 1/1.875 = 0.53
    blinks/s), each before eq. 9 lets long closures override some. A blink covers frames
    round(start*fps) up to round(end*fps) (exclusive), at least one frame. Same seed and mode ->
    same blinks; both modes draw the same random numbers.
    """
    if mode not in BLINK_INTERVALS:
        raise ValueError(f"blink interval mode '{mode}' is not one of {', '.join(BLINK_INTERVALS)}")
    rng = np.random.default_rng(seed)
    out = np.zeros(n_frames, np.float32)
    t = rng.uniform(*interval)
    while t * fps < n_frames:
        d = rng.uniform(*duration)
        a = int(round(t * fps))
        out[a:max(a + 1, int(round((t + d) * fps)))] = 1.0
        t += rng.uniform(*interval) + (d if mode == "end_to_start" else 0.0)
    return out


def combine_eye_states(e_long: np.ndarray, e_blink: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Paper eq. 9 then the temporal Gaussian filter: e = e_long where e_long > 0, else e_blink.

    ``e_long`` must already have sub-threshold values set to 0 (MusicFace.generate does that with
    ``model.eye_threshold``). ``sigma`` is the filter's standard deviation in frames (0: no filter).
    """
    e = np.where(e_long > 0, e_long, e_blink).astype(np.float32)
    return gaussian_filter1d(e, sigma, mode="nearest").astype(np.float32) if sigma > 0 else e
