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
* :func:`sample_blinks`, :func:`combine_eye_states`: random blinks (start-to-start interval
  ~ U(1.2, 2.0) s, duration ~ U(0.10, 0.45) s), eq. 9 and the temporal Gaussian filter. Generation
  time only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter1d
from scipy.special import expit


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


class PoseRecurrence(torch.autograd.Function):
    """The PGN's recurrence over T frames, with a hand-written backward (backpropagation in time).

    ``apply(pre, speed, w_rec, w_dir, b_dir, h0, c0, p0, v0) -> (poses, h_T, c_T, p_T, v_T)``, batch
    B, hidden size H: ``pre`` (B, T, 4H) is the input projection of h_t with both LSTM biases,
    ``speed`` (B, T, 6), ``w_rec`` (4H, 12 + H) acts on x_t = p_{t-1} ++ v_{t-1} ++ o_{t-1},
    ``w_dir`` (6, H) and ``b_dir`` (6,) are the direction layer. Gate order **o, i, f, g** (the rows
    of ``nn.LSTMCell``'s i, f, g, o rolled by H: :meth:`PGN.forward` does that). Per frame

        gates = pre_t + w_rec x_t;  c_t = s(f) c_{t-1} + s(i) tanh(g);  o_t = s(o) tanh(c_t)
        d_t = tanh(w_dir o_t + b_dir);  p_t = p_{t-1} + s_t d_t;  v_t = p_t - p_{t-1}

    Why by hand: autograd records every small op of every frame and replays each one backward with
    its own bookkeeping (zero-filled gradients, copies, one weight-gradient product per frame): the
    whole training step was ~27,000 aten ops, ~11,000 of them not views, most of them in this
    loop (bench/train.py ``aten_ops_per_step``). Here a frame is 11 ops forward and 16 backward and
    the weight gradients are one product over all frames. The buffers are feature-major,
    (T, features, B), so that every op reads and writes contiguous row blocks: the gates o, i, f
    take one sigmoid, the cell c_{t-1} sits right after g (the i and f gradients are then one op
    each) and p, v, o of a frame are the rows of x that the next frame's product reads. On a GPU
    every op is a kernel launch; these are what a CUDA graph replays (``train.cuda_graph``).
    Gradients are checked against autograd in float64 (tests/test_model.py).
    """

    @staticmethod
    def forward(ctx, pre, speed, w_rec, w_dir, b_dir, h0, c0, p0, v0):
        b, t, n4 = pre.shape
        n = n4 // 4
        # act[k]: rows o, i, f (sigmoids), g (tanh) of frame k, then c_{k-1}; before frame k runs,
        # its gate rows hold pre_k (one copy for all frames) and the product is added in place
        act = pre.new_empty(t + 1, 5 * n, b)
        act[:t, :4 * n] = pre.permute(1, 2, 0)
        act[0, 4 * n:] = c0.t()
        x = pre.new_empty(t + 1, 12 + n, b)  # x[k] = p_{k-1} ++ v_{k-1} ++ o_{k-1}
        torch.cat([p0.t(), v0.t(), h0.t()], out=x[0])
        s = speed.permute(1, 2, 0).contiguous()  # (T, 6, B)
        tc = pre.new_empty(t, n, b)  # tanh(c_k)
        d = b_dir[None, :, None].expand(t, 6, b).contiguous()  # d_k, after its product and tanh
        for k in range(t):
            a, xk, xn, dk, tck = act[k], x[k], x[k + 1], d[k], tc[k]
            o, i, f, g, c_prev = a[:n], a[n:2 * n], a[2 * n:3 * n], a[3 * n:4 * n], a[4 * n:]
            c = act[k + 1, 4 * n:]
            pk, pn, on = xk[:6], xn[:6], xn[12:]
            a[:4 * n].addmm_(w_rec, xk)
            a[:3 * n].sigmoid_()
            g.tanh_()
            torch.mul(f, c_prev, out=c)
            c.addcmul_(i, g)
            torch.tanh(c, out=tck)
            torch.mul(o, tck, out=on)
            dk.addmm_(w_dir, on)
            dk.tanh_()
            torch.addcmul(pk, s[k], dk, out=pn)
            torch.sub(pn, pk, out=xn[6:12])
        ctx.save_for_backward(x, act, tc, d, s, w_rec, w_dir)
        last = x[t]
        state = (last[12:], act[t, 4 * n:], last[:6], last[6:12])  # o_T, c_T, p_T, v_T
        return (x[1:, :6].permute(2, 0, 1).contiguous(), *(z.t().contiguous() for z in state))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_poses, g_h, g_c, g_p, g_v):
        x, act, tc, d, s, w_rec, w_dir = ctx.saved_tensors
        t, n, b = tc.shape
        sig_back = torch.ops.aten.sigmoid_backward.grad_input  # (g, y, grad_input=out): g y (1 - y)
        tanh_back = torch.ops.aten.tanh_backward.grad_input  # (g, y, grad_input=out): g (1 - y^2)
        gx = x.new_zeros(x.shape)  # dL/dx[k]: p, v, o of frame k - 1
        if g_poses is not None:
            gx[1:, :6] = g_poses.permute(1, 2, 0)
        for g, rows in ((g_p, slice(0, 6)), (g_v, slice(6, 12)), (g_h, slice(12, None))):
            if g is not None:
                gx[t, rows].add_(g.t())
        gc = g_c.t().contiguous() if g_c is not None else x.new_zeros(n, b)  # dL/dc_k
        gg = x.new_empty(t, 4 * n, b)  # dL/d(gate pre-activations o, i, f, g) = dL/dpre
        gs, ga = x.new_empty(t, 6, b), x.new_empty(t, 6, b)  # dL/ds_k, dL/d(w_dir o_k + b_dir)
        gp, tmp, tmp3 = x.new_empty(6, b), x.new_empty(n, b), x.new_empty(3 * n, b)
        w_rec_t, w_dir_t = w_rec.t(), w_dir.t()
        for k in range(t - 1, -1, -1):
            a, gk, gn, gak, dk, tck = act[k], gg[k], gx[k + 1], ga[k], d[k], tc[k]
            o, i, f, g, gpn, gh = a[:n], a[n:2 * n], a[2 * n:3 * n], a[3 * n:4 * n], gn[:6], gn[12:]
            torch.add(gpn, gn[6:12], out=gp)  # dL/dp_k, directly and through v_k
            torch.mul(gp, dk, out=gs[k])
            torch.mul(gp, s[k], out=gak)
            tanh_back(gak, dk, grad_input=gak)
            gh.addmm_(w_dir_t, gak)  # dL/do_k (x[k + 1]'s gradient is not needed after this frame)
            torch.mul(gh, tck, out=tmp3[:n])  # o gate
            torch.mul(gh, o, out=tmp)
            tanh_back(tmp, tck, grad_input=tmp)
            gc.add_(tmp)
            torch.mul(a[3 * n:].view(2, n, b), gc, out=tmp3[n:].view(2, n, b))  # gc g, gc c_{k-1}
            sig_back(tmp3, a[:3 * n], grad_input=gk[:3 * n])  # o, i, f
            torch.mul(gc, i, out=tmp)
            tanh_back(tmp, g, grad_input=gk[3 * n:])  # g
            gc.mul_(f)  # dL/dc_{k-1}
            gx[k].addmm_(w_rec_t, gk)
            gx[k, :6].add_(gpn)  # p_k = p_{k-1} + s_k d_k, v_k = p_k - p_{k-1}: net dL/dp_k direct
        g_w_rec = torch.tensordot(gg, x[:t], dims=([0, 2], [0, 2]))  # sums over frames and batch
        g_w_dir = torch.tensordot(ga, x[1:, 12:], dims=([0, 2], [0, 2]))
        return (gg.permute(2, 0, 1), gs.permute(2, 0, 1), g_w_rec, g_w_dir, ga.sum((0, 2)),
                gx[0, 12:].t(), gc.t(), gx[0, :6].t(), gx[0, 6:12].t())


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
        all frames at once; :class:`PoseRecurrence` runs the recurrent part (the arithmetic of
        ``nn.LSTMCell`` on the concatenated input, gate order i, f, g, o) with its own backward.
        """
        speed = self.speeds(h)
        n = self.lstm.hidden_size
        # gate rows i, f, g, o -> o, i, f, g (PoseRecurrence's order), columns h_t | p, v, o_{t-1}
        w = torch.roll(torch.cat([self.lstm.weight_ih, self.lstm.weight_hh], dim=1), n, dims=0)
        bias = torch.roll(self.lstm.bias_ih + self.lstm.bias_hh, n)
        pre = torch.nn.functional.linear(h, w[:, :self.d_in], bias)
        with torch.autocast(h.device.type, enabled=False):  # the weights' precision under autocast
            dt = w.dtype
            poses, *last = PoseRecurrence.apply(
                pre.to(dt), speed.to(dt), w[:, self.d_in:], self.direc.weight, self.direc.bias,
                state.h, state.c, state.p, state.v)
        return poses, speed, PoseState(*last)

    def forward_autograd(self, h: torch.Tensor, state: PoseState):
        """:meth:`forward` written with autograd, frame by frame (how it was before
        :class:`PoseRecurrence`): ~4x the ops per step. The reference that tests/test_model.py and
        bench/gpu_checks.py compare the hand-written backward with; not used in training."""
        speed = self.speeds(h)
        w_ih, w_hh = self.lstm.weight_ih, self.lstm.weight_hh
        bias = self.lstm.bias_ih + self.lstm.bias_hh
        pre = torch.nn.functional.linear(h, w_ih[:, :self.d_in], bias)
        w_rec = torch.cat([w_ih[:, self.d_in:], w_hh], dim=1)
        hid, cell, p, v = state.h, state.c, state.p, state.v
        poses = []
        for pre_t, s_t in zip(pre.unbind(1), speed.unbind(1)):
            i, f, g, o = torch.addmm(pre_t, torch.cat([p, v, hid], dim=1), w_rec.t()).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
            p_new = p + s_t * torch.tanh(self.direc(hid))
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
                  seed: int = 0) -> np.ndarray:
    """Random blinks (paper 3.3.3): e_blink (n_frames,) float32 in {0, 1}.

    Blink k starts B_i ~ U(interval) seconds after blink k-1 started (the first one B_i after 0) and
    lasts B_d ~ U(duration) seconds: the interval is start to start, as in the demo recordings
    (preprocessing.demo), about 1/1.6 = 0.63 blinks/s before eq. 9 lets long closures override some.
    A blink covers frames round(start*fps) up to round(end*fps) (exclusive), at least one frame.
    Same seed -> same blinks.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(n_frames, np.float32)
    t = rng.uniform(*interval)
    while t * fps < n_frames:
        d = rng.uniform(*duration)
        a = int(round(t * fps))
        out[a:max(a + 1, int(round((t + d) * fps)))] = 1.0
        t += rng.uniform(*interval)
    return out


def combine_eye_states(e_long: np.ndarray, e_blink: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Paper eq. 9 then the temporal Gaussian filter: e = e_long where e_long > 0, else e_blink.

    ``e_long`` must already have sub-threshold values set to 0 (MusicFace.generate does that with
    ``model.eye_threshold``). ``sigma`` is the filter's standard deviation in frames (0: no filter).
    """
    e = np.where(e_long > 0, e_long, e_blink).astype(np.float32)
    return gaussian_filter1d(e, sigma, mode="nearest").astype(np.float32) if sigma > 0 else e
