"""The three downstream generators (paper 3.3) and the generation-time eye model.

All work on per-frame inputs h_t = l_t ++ m_t ++ s (the task's ATM output and the subject one-hot),
shape (B, T, D), and on *normalised* targets (per-dim z-scores of the training split; MusicFace
turns them back into data units).

* :class:`EGN`  expression: two FC layers with a ReLU between -> exp_t (E).
* :class:`PGN`  head pose as speed x direction (paper eq. 6-7):
      s_t = ABS(phi_speed(h_t)) * sigma_v                    speed >= 0 by construction
      o_t, c_t = LSTM(h_t ++ p_{t-1} ++ v_{t-1}, c_{t-1}),   v_{t-1} = p_{t-1} - p_{t-2}
      d_t = tanh(phi_direc(o_t))                             direction in (-1, 1)
      p_t = p_{t-1} + s_t * d_t
  from an initial pose p_0 (and velocity v_0). The LSTM is fed its own previous poses in training
  too (no teacher forcing), so training and generation run the same recurrence. sigma_v (a buffer,
  set from the training data) is the per-dim std of frame-to-frame velocity in normalised units: it
  puts the MLP's output at unit scale.
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

import collections
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter1d
from scipy.special import expit

from musicface.config import BLINK_INTERVALS
from preprocessing.timebase import FPS


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


class PoseWorkspace:
    """:class:`PoseRecurrence`'s buffers for one (T, B, H, dtype, device), with every per-frame view
    made once: a view is an aten op too, and building them on each call was ~11,000 of a training
    step's ~24,000 ops. A :class:`PGN` keeps a few (:meth:`PGN.workspace`) and hands one out again
    once the autograd graph that saved it is gone (``busy`` until then; a call meanwhile gets a
    fresh one). As a backstop, its tensors are saved for backward, so a backward after another
    call has overwritten them fails autograd's version check instead of returning wrong gradients.

    Layout: feature-major, (T, features, B), so that every op reads and writes contiguous row
    blocks. ``act[k]``: rows o, i, f (sigmoids), g (tanh) of frame k, then c_{k-1}; before frame k
    its gate rows hold pre_k and the recurrent product is added in place. ``x[k]`` = p_{k-1} ++
    v_{k-1} ++ o_{k-1} (frame k writes x[k + 1]), ``tc[k]`` = tanh(c_k), ``d[k]`` = d_k (the bias,
    then the product, then tanh), ``s[k]`` = s_k; the ``g*`` buffers are the backward's gradients.
    """

    def __init__(self, t: int, b: int, n: int, dtype, device):
        def e(*shape):
            return torch.empty(*shape, dtype=dtype, device=device)

        self.key, self.busy, self.keep = (t, b, n, dtype, device), False, False
        self.act, self.x, self.tc = e(t + 1, 5 * n, b), e(t + 1, 12 + n, b), e(t, n, b)
        self.d, self.s = e(t, 6, b), e(t, 6, b)
        self.gx, self.gg = e(t + 1, 12 + n, b), e(t, 4 * n, b)
        self.gs, self.ga = e(t, 6, b), e(t, 6, b)
        self.gc, self.gp, self.tmp, self.tmp3 = e(n, b), e(6, b), e(n, b), e(3 * n, b)
        self.fwd, self.bwd = [], []
        for k in range(t):
            a, xk, xn, gk, gn = self.act[k], self.x[k], self.x[k + 1], self.gg[k], self.gx[k + 1]
            gates = (a[:n], a[n:2 * n], a[2 * n:3 * n], a[3 * n:4 * n])  # o, i, f, g
            self.fwd.append((a[:4 * n], a[:3 * n], *gates, a[4 * n:], self.act[k + 1, 4 * n:], xk,
                             xk[:6], xn[:6], xn[6:12], xn[12:], self.d[k], self.tc[k], self.s[k]))
            self.bwd.append((a[:3 * n], *gates, a[3 * n:].view(2, n, b), self.tc[k], self.d[k],
                             self.s[k], gn[:6], gn[6:12], gn[12:], gk, gk[:3 * n], gk[3 * n:],
                             self.gs[k], self.ga[k], self.gx[k], self.gx[k, :6]))
        self.tmp3_o, self.tmp3_if = self.tmp3[:n], self.tmp3[n:].view(2, n, b)

    def release(self) -> None:
        self.busy = False


class PoseRecurrence(torch.autograd.Function):
    """The PGN's recurrence over T frames, with a hand-written backward (backpropagation in time).

    ``apply(pre, speed, w_rec, w_dir, b_dir, h0, c0, p0, v0, ws) -> (poses, h_T, c_T, p_T, v_T)``,
    batch B, hidden size H: ``pre`` (B, T, 4H) is the input projection of h_t with both LSTM
    biases, ``speed`` (B, T, 6), ``w_rec`` (4H, 12 + H) acts on x_t = p_{t-1} ++ v_{t-1} ++
    o_{t-1}, ``w_dir`` (6, H) and ``b_dir`` (6,) are the direction layer, ``ws`` a free
    :class:`PoseWorkspace` of this shape. Gate order **o, i, f, g** (the rows of ``nn.LSTMCell``'s
    i, f, g, o rolled by H: :meth:`PGN.forward` does that). Per frame

        gates = pre_t + w_rec x_t;  c_t = s(f) c_{t-1} + s(i) tanh(g);  o_t = s(o) tanh(c_t)
        d_t = tanh(w_dir o_t + b_dir);  p_t = p_{t-1} + s_t d_t;  v_t = p_t - p_{t-1}

    Why by hand: autograd records every small op of every frame and replays each one backward with
    its own bookkeeping (zero-filled gradients, copies, one weight-gradient product per frame): the
    whole training step was ~27,000 aten ops, ~15,000 of them not views, most of them in this
    loop (bench/train.py ``aten_ops_per_step``). Here a frame is 11 ops forward and 16 backward on
    contiguous blocks of the workspace (the gates o, i, f take one sigmoid; c_{k-1} sits right
    after g, so the i and f gradients are one op each; p, v, o of a frame are the rows of x that
    the next frame's product reads), and the weight gradients are one product over all frames. On
    a GPU every op is a kernel launch; these are what a CUDA graph replays (``train.cuda_graph``).
    Gradients are checked against autograd in float64 (tests/test_model.py).
    """

    @staticmethod
    def forward(ctx, pre, speed, w_rec, w_dir, b_dir, h0, c0, p0, v0, ws: PoseWorkspace):
        b, t, n4 = pre.shape
        n = n4 // 4
        ws.busy = True
        weakref.finalize(ctx, ws.release)  # free again once this call's graph is gone
        ws.act[:t, :4 * n].copy_(pre.permute(1, 2, 0))
        ws.act[0, 4 * n:].copy_(c0.t())
        torch.cat([p0.t(), v0.t(), h0.t()], out=ws.x[0])
        ws.s.copy_(speed.permute(1, 2, 0))
        ws.d.copy_(b_dir[None, :, None].expand(t, 6, b))
        for a4, a3, o, i, f, g, c_prev, c, xk, pk, pn, vn, on, dk, tck, sk in ws.fwd:
            a4.addmm_(w_rec, xk)
            a3.sigmoid_()
            g.tanh_()
            torch.mul(f, c_prev, out=c)
            c.addcmul_(i, g)
            torch.tanh(c, out=tck)
            torch.mul(o, tck, out=on)
            dk.addmm_(w_dir, on)
            dk.tanh_()
            torch.addcmul(pk, sk, dk, out=pn)
            torch.sub(pn, pk, out=vn)
        ctx.ws = ws
        ctx.save_for_backward(ws.x, ws.act, ws.tc, ws.d, ws.s, w_rec, w_dir)
        last = ws.x[t]
        state = (last[12:], ws.act[t, 4 * n:], last[:6], last[6:12])  # o_T, c_T, p_T, v_T
        fresh = torch.contiguous_format
        return (ws.x[1:, :6].permute(2, 0, 1).clone(memory_format=fresh),
                *(z.t().clone(memory_format=fresh) for z in state))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_poses, g_h, g_c, g_p, g_v):
        x, act, tc, d, s, w_rec, w_dir = ctx.saved_tensors  # (version-checked: see PoseWorkspace)
        ws = ctx.ws
        t, n, b = tc.shape
        sig_back = torch.ops.aten.sigmoid_backward.grad_input  # (g, y, grad_input=out): g y (1 - y)
        tanh_back = torch.ops.aten.tanh_backward.grad_input  # (g, y, grad_input=out): g (1 - y^2)
        gx, gc, gp, tmp = ws.gx, ws.gc, ws.gp, ws.tmp  # dL/dx[k], dL/dc_k, dL/dp_k, scratch
        gx.zero_()
        if g_poses is not None:
            gx[1:, :6].copy_(g_poses.permute(1, 2, 0))
        for g, rows in ((g_p, slice(0, 6)), (g_v, slice(6, 12)), (g_h, slice(12, None))):
            if g is not None:
                gx[t, rows].add_(g.t())
        gc.copy_(g_c.t()) if g_c is not None else gc.zero_()
        w_rec_t, w_dir_t = w_rec.t(), w_dir.t()
        for (a3, o, i, f, g, gcf, tck, dk, sk, gpn, gvn, gh, gk, gk3, gkg, gsk, gak, gxk,
             gxk_p) in reversed(ws.bwd):
            torch.add(gpn, gvn, out=gp)  # dL/dp_k, directly and through v_k
            torch.mul(gp, dk, out=gsk)
            torch.mul(gp, sk, out=gak)
            tanh_back(gak, dk, grad_input=gak)
            gh.addmm_(w_dir_t, gak)  # dL/do_k (x[k + 1]'s gradient is not needed after this frame)
            torch.mul(gh, tck, out=ws.tmp3_o)  # o gate
            torch.mul(gh, o, out=tmp)
            tanh_back(tmp, tck, grad_input=tmp)
            gc.add_(tmp)
            torch.mul(gcf, gc, out=ws.tmp3_if)  # i: gc g, f: gc c_{k-1}
            sig_back(ws.tmp3, a3, grad_input=gk3)  # o, i, f
            torch.mul(gc, i, out=tmp)
            tanh_back(tmp, g, grad_input=gkg)  # g
            gc.mul_(f)  # dL/dc_{k-1}
            gxk.addmm_(w_rec_t, gk)
            gxk_p.add_(gpn)  # p_k = p_{k-1} + s_k d_k, v_k = p_k - p_{k-1}: net dL/dp_k direct
        g_w_rec = torch.tensordot(ws.gg, x[:t], dims=([0, 2], [0, 2]))  # sums over frames and batch
        g_w_dir = torch.tensordot(ws.ga, x[1:, 12:], dims=([0, 2], [0, 2]))
        fresh = torch.contiguous_format  # gradients never alias the workspace (it is reused)
        first = (gx[0, 12:], gc, gx[0, :6], gx[0, 6:12])  # dL/d(h0, c0, p0, v0)
        return (ws.gg.permute(2, 0, 1).clone(memory_format=fresh),
                ws.gs.permute(2, 0, 1).clone(memory_format=fresh), g_w_rec, g_w_dir,
                ws.ga.sum((0, 2)), *(z.t().clone(memory_format=fresh) for z in first), None)


class PGN(nn.Module):
    """Pose generation network: speed MLP + direction LSTM, rolled out frame by frame."""

    def __init__(self, d_in: int, hidden: int, lstm_hidden: int):
        super().__init__()
        self.speed = mlp(d_in, hidden, 6)
        self.lstm = nn.LSTMCell(d_in + 12, lstm_hidden)  # input: h_t ++ p_{t-1} ++ v_{t-1}
        self.direc = nn.Linear(lstm_hidden, 6)
        self.d_in = d_in
        self.register_buffer("speed_scale", torch.ones(6))  # sigma_v, set from the training data
        self._workspaces: collections.OrderedDict = collections.OrderedDict()

    def workspace(self, t: int, b: int, dtype, device) -> PoseWorkspace:
        """A free :class:`PoseWorkspace` for T = t frames of batch b: the one kept for that shape
        when it is free (the last 3 shapes are kept: training, validation and a ragged last batch,
        and every one a CUDA graph was captured on), else a new one."""
        key = (t, b, self.lstm.hidden_size, dtype, device)
        ws = self._workspaces.get(key)
        if ws is None or ws.busy:
            ws = PoseWorkspace(t, b, self.lstm.hidden_size, dtype, device)
            if key not in self._workspaces:
                self._workspaces[key] = ws
                for old in [k for k, w in self._workspaces.items() if not w.keep][:-3]:
                    del self._workspaces[old]
        self._workspaces.move_to_end(key)
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            ws.keep = True  # a CUDA graph is recording kernels on its memory: never dropped
        return ws

    def init_state(self, p0: torch.Tensor, v0: torch.Tensor | None = None) -> PoseState:
        zeros = p0.new_zeros(p0.shape[0], self.lstm.hidden_size)
        return PoseState(zeros, zeros.clone(), p0, torch.zeros_like(p0) if v0 is None else v0)

    def speeds(self, h: torch.Tensor) -> torch.Tensor:
        """s_t = |phi_speed(h_t)| * sigma_v, (B, T, 6), >= 0 by construction."""
        return self.speed(h).abs() * self.speed_scale

    def forward(self, h: torch.Tensor,
                state: PoseState) -> tuple[torch.Tensor, torch.Tensor, PoseState]:
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
            ws = self.workspace(h.shape[1], h.shape[0], dt, h.device)
            poses, *last = PoseRecurrence.apply(
                pre.to(dt), speed.to(dt), w[:, self.d_in:], self.direc.weight, self.direc.bias,
                state.h, state.c, state.p, state.v, ws)
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
            i, f, g, o = torch.addmm(pre_t, torch.cat([p, v, hid], dim=1),
                                     w_rec.t()).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
            p_new = p + s_t * torch.tanh(self.direc(hid))
            v, p = p_new - p, p_new
            poses.append(p)
        return torch.stack(poses, dim=1), speed, PoseState(hid, cell, p, v)

    @torch.no_grad()
    def rollout(self, h: torch.Tensor,
                state: PoseState) -> tuple[torch.Tensor, torch.Tensor, PoseState]:
        """:meth:`forward`'s recurrence for generation (no autograd), stepped in numpy; same
        arguments and results.

        Why numpy: a frame's step is ~15 operations on 1 x 512 vectors, and torch spends ~4 us
        dispatching each one (0.3-0.45 s for a 4-minute song, 7,200 steps) against ~0.5 us for a
        numpy ufunc writing into a preallocated buffer (~0.1 s). The arithmetic is the same float32
        recurrence; only the rounding of the matrix products and of sigmoid/tanh differs (about 1e-7
        relative; tests/test_model.py compares this with :meth:`forward` over 7,200 frames).
        Everything that does not depend on the recurrence (speeds, input projection of h_t) is
        computed by torch for all frames at once, exactly as in :meth:`forward`.
        """
        b, t = h.shape[:2]
        n = self.lstm.hidden_size
        speed = self.speeds(h)
        w_ih = self.lstm.weight_ih
        pre = torch.nn.functional.linear(h, w_ih[:, :self.d_in],
                                         self.lstm.bias_ih + self.lstm.bias_hh)
        w_rec = torch.cat([w_ih[:, self.d_in:], self.lstm.weight_hh], dim=1)  # acts on p ++ v ++ o
        # gate rows i, f, g, o -> i, f, o, g: one sigmoid call covers the contiguous i, f, o block
        order = torch.cat([torch.arange(0, 2 * n), torch.arange(3 * n, 4 * n),
                           torch.arange(2 * n, 3 * n)])
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
        i, f, o, g, ifo = (gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:3 * n], gates[:, 3 * n:],
                           gates[:, :3 * n])
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
            np.subtract(p_t, p, out=v)                  # v_t = p_t - p_{t-1}, as in forward
            p[...] = p_t
        back = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(h.device)  # noqa: E731
        return (back(poses.transpose(1, 0, 2)), speed,
                PoseState(*(back(a.copy()) for a in (hid, cell, p, v))))


# ---------------------------------------------------------------------------- generation-time eyes
def sample_blinks(n_frames: int, fps: float = FPS, interval=(1.2, 2.0), duration=(0.10, 0.45),
                  seed: int = 0, mode: str = "end_to_start") -> np.ndarray:
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
