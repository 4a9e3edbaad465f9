"""The MusicFace generator, its variants and parts (synthetic tensors; training is in
test_train.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from musicface.config import ModelConfig, from_dict
from musicface.data import mfcc_centres, mfcc_span, padded_rows
from musicface.model import Discriminator, MusicFace, count_parameters, export, load_checkpoint
from musicface.model.atm import UNet1d
from musicface.model.generators import (
    PGN,
    PoseRecurrence,
    PoseState,
    PoseWorkspace,
    combine_eye_states,
    sample_blinks,
)
from musicface.train import train_step

VARIANTS = ["single_stream", "two_stream", "with_atm", "full"]
TINY = dict(enc_channels=[8, 16], feat_dim=8, unet_channels=[8, 16], hidden=16, lstm_hidden=16,
            disc_channels=8)
SUBJECTS = ["singer1", "singer2"]
E = 5


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the CPU is shared, and torch's thread pool collapses when
    oversubscribed."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(variant: str, **kw) -> MusicFace:
    torch.manual_seed(0)
    return MusicFace(ModelConfig(variant=variant, **{**TINY, **kw}), SUBJECTS, E)


MF = ("mfcc_vocals", "mfcc_music", "mfcc_mix", "mfcc_index")  # the model's MFCC inputs


def batch(b=3, t=32, seed=0) -> dict:
    """A reader batch (musicface.data's item contract): MFCC rows + each frame's window index, for
    windows starting at frames 0, 1, 2, ... (every phase of the 30 fps / 100 Hz grid)."""
    g = torch.Generator().manual_seed(seed)
    r = mfcc_span(t)
    out = {k: torch.randn(b, r, 26, generator=g) for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
    c = mfcc_centres(np.arange(b), t, 10**6)
    out["mfcc_index"] = torch.from_numpy(c - c[:, :1])
    out["exp"] = torch.randn(b, t, E, generator=g)
    out["pose"] = torch.cumsum(0.05 * torch.randn(b, t, 6, generator=g), 1)
    out["pose_vel"] = torch.cat([torch.zeros(b, 1, 6), out["pose"][:, 1:] - out["pose"][:, :-1]], 1)
    out["eye_long"] = (torch.rand(b, t, generator=g) > 0.7).float() * 0.8
    out["valid"] = torch.ones(b, t)
    out["valid"][0, 5:9] = 0
    out["subject"] = torch.tensor([0, 1, 0][:b])
    return out


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_forward_shapes_per_variant(variant):
    m = tiny(variant)
    b = batch()
    out = m({k: b[k] for k in MF}, b["subject"])
    assert out["exp"].shape == (3, 32, E) and out["exp"].dtype == torch.float32
    assert out["pose"].shape == (3, 32, 6)
    assert out["e_long"].shape == (3, 32)
    assert float(out["e_long"].min()) > 0 and float(out["e_long"].max()) < 1
    if variant == "full":
        assert out["speed"].shape == (3, 32, 6)
    else:
        assert out["speed"] is None
    if variant in ("with_atm", "full"):
        assert set(out["att"]) == {"exp", "pose", "eye"}
        for a in out["att"].values():
            assert a.shape == (3, 32, 16)  # 2 streams x feat_dim 8
            assert float(a.min()) > 0 and float(a.max()) < 1
    else:
        assert out["att"] is None
    assert m.streams == (("mix",) if variant == "single_stream" else ("vocals", "music"))


@torch.no_grad()
def test_forward_on_rows_equals_forward_on_windows():
    """The model cuts the MFCC windows from the rows on its device (MusicFace.windows): exactly the
    windows the reader shipped before (numpy cut of the item contract), so the forward is the same
    to the bit as the forward on windows."""
    m = tiny("full")
    m.set_normalisation(_stats())
    b = batch()
    idx = b["mfcc_index"].numpy()[..., None] + np.arange(39)
    oh = m.onehot(b["subject"])
    got, _ = m.encode({k: b[k] for k in MF}, oh)
    windows = {s: torch.from_numpy(np.stack([r[i] for r, i in zip(b[f"mfcc_{s}"].numpy(), idx)]))
               for s in m.streams}
    assert windows["vocals"].shape == (3, 32, 39, 26)
    norm = {s: (w - m.mfcc_mean[i]) / m.mfcc_std[i] for i, (s, w) in enumerate(windows.items())}
    want, _ = m.encode_windows(norm, oh)
    assert all(torch.equal(got[k], want[k]) for k in want)
    audio = m.disc_audio({k: b[k] for k in MF})
    assert torch.equal(audio, torch.cat([norm[s][:, :, 19] for s in m.streams], -1))


@torch.no_grad()
def test_single_stream_reads_only_the_mix():
    m = tiny("single_stream")
    b = batch()
    mf = {k: b[k] for k in MF}
    a = m(mf, b["subject"])["exp"]
    mf2 = dict(mf, mfcc_vocals=torch.randn_like(b["mfcc_vocals"]), mfcc_music=None)
    assert torch.equal(a, m(mf2, b["subject"])["exp"])
    with pytest.raises(ValueError, match="variant 'full' needs mfcc_music"):
        tiny("full")(mf2, b["subject"])


@torch.no_grad()
def test_mixed_audio_feeds_the_mix_to_both_streams():
    """model.audio: mix (paper Table 2 "mixed wave"): the two-stream model hears only the mix,
    normalised with the mix's statistics, in both streams."""
    m = tiny("full", audio="mix")
    assert m.streams == ("vocals", "music") and m.inputs == {"mfcc_mix"}
    stats = {"mfcc_mean": torch.arange(3.0)[:, None].expand(3, 26), "mfcc_std": torch.ones(3, 26),
             "exp_mean": torch.zeros(E), "exp_std": torch.ones(E), "pose_mean": torch.zeros(6),
             "pose_std": torch.ones(6), "subject_pose": torch.zeros(2, 6), "vel_std": torch.ones(6)}
    m.set_normalisation(stats)
    assert torch.equal(m.mfcc_mean, torch.full((2, 26), 2.0))  # both rows: the mix's (row 2)
    b = batch()
    mf = {k: b[k] for k in MF}
    out = m(mf, b["subject"])
    same = m(dict(mf, mfcc_vocals=None, mfcc_music=None), b["subject"])
    assert torch.equal(out["pose"], same["pose"]) and torch.equal(out["exp"], same["exp"])
    gen = m.generate(mfcc_mix=b["mfcc_mix"][0].numpy(), subject=0,
                     mfcc_index=b["mfcc_index"][0].numpy())
    assert gen["exp"].shape == (32, E)
    sep = tiny("full")
    assert sep.inputs == {"mfcc_vocals", "mfcc_music"}
    with pytest.raises(ValueError, match="config key model.audio: 'stems'"):
        from_dict({"model": {"audio": "stems"}})


def test_default_sizes_and_parameter_count():
    """The documented default architecture (2 subjects, E = 64)."""
    m = MusicFace(ModelConfig(), SUBJECTS, 64)
    assert count_parameters(m.tsae) == 2 * 173_280
    assert count_parameters(m.atm) == 3 * 313_344
    assert count_parameters(m.pgn) == 157_580
    counts = {v: count_parameters(MusicFace(ModelConfig(variant=v), SUBJECTS, 64))
              for v in VARIANTS}
    assert counts == {"single_stream": 208_167, "two_stream": 406_023, "with_atm": 1_346_055,
                      "full": 1_486_093}


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    """One training step (generator + discriminator): no dead branch anywhere."""
    m = tiny(variant)
    d = Discriminator(26 * len(m.streams), 8)
    cfg = from_dict({"model": {"variant": variant, **TINY}})
    opt_g = torch.optim.SGD(m.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(d.parameters(), lr=0.0)
    parts = {k: float(v) for k, v in train_step(m, d, m, batch(), cfg, opt_g, opt_d).items()}
    assert np.isfinite(parts["loss"]) and parts["adv"] > 0 and parts["disc"] > 0
    for name, module in (("generator", m), ("discriminator", d)):
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{variant}: {name}.{pname} got no gradient"
            assert float(p.grad.abs().sum()) > 0, (f"{variant}: {name}.{pname} has an all-zero "
                                                   "gradient")
    if variant in ("with_atm", "full"):
        assert parts["att"] > 0


def test_bf16_autocast_step():
    """``train.bf16`` (meant for GPUs) traced on CPU autocast: the step runs, its losses (computed
    in float32 on bfloat16 network outputs) are within 2 % of the float32 step's on the same
    weights, and the parameters stay float32."""
    parts = {}
    for bf16 in (False, True):
        m = tiny("full")
        d = Discriminator(52, 8)
        cfg = from_dict({"model": {"variant": "full", **TINY}, "train": {"bf16": bf16}})
        opt_g, opt_d = (torch.optim.SGD(x.parameters(), lr=0.0) for x in (m, d))
        out = train_step(m, d, m, batch(2, 16), cfg, opt_g, opt_d)
        parts[bf16] = {k: float(v) for k, v in out.items()}
        assert all(p.dtype == p.grad.dtype == torch.float32 for p in m.parameters())
    for k in ("reg", "exp_mse", "pose_mmd", "eye_l1", "disc"):
        assert np.isfinite(parts[True][k]), k
        assert parts[True][k] == pytest.approx(parts[False][k], rel=0.02), k
    assert parts[True]["reg"] != parts[False]["reg"]  # bfloat16 really ran


# --------------------------------------------------------------------------------- the PGN
@torch.no_grad()
def test_pgn_speed_is_nonnegative_and_bounds_each_step():
    m = tiny("full")
    m.pgn.speed[2].bias.fill_(-3.0)  # push the speed MLP's raw output strongly negative
    m.pgn.speed_scale.copy_(torch.tensor([0.5, 1, 2, 0.1, 0.2, 3.0]))
    b = batch()
    out = m({k: b[k] for k in MF}, b["subject"])
    s, p = out["speed"], out["pose"]
    assert float(s.min()) >= 0
    assert float(s.mean()) > 0.1  # ABS, not a clamp: negative outputs become speed
    # p_t = p_{t-1} + s_t * d_t with |d_t| < 1: each step is at most the speed
    step = (p[:, 1:] - p[:, :-1]).abs()
    assert bool((step <= s[:, 1:] + 1e-6).all())
    assert float((step / s[:, 1:].clamp_min(1e-9)).max()) < 1.0


@torch.no_grad()
def test_pgn_is_autoregressive_and_starts_at_p0():
    m = tiny("full")
    b = batch()
    mf = {k: b[k] for k in MF}
    p0 = torch.zeros(3, 6)
    a = m(mf, b["subject"], p0=p0)["pose"]
    assert torch.equal(a[:, 0], p0)
    p0b = p0.clone()
    p0b[:, 1] = 2.0
    c = m(mf, b["subject"], p0=p0b)["pose"]
    # the LSTM sees its own previous pose: a different start changes the directions, not just an
    # offset
    assert float(((c - p0b[:, None]) - (a - p0[:, None])).abs()[:, 5:].max()) > 1e-4
    # the state carried over a split equals one roll-out
    h, _ = m.encode(mf, m.onehot(b["subject"]))
    _, full, _, _, _ = m.decode(h, p0=p0)
    first, second = {k: v[:, :17] for k, v in h.items()}, {k: v[:, 17:] for k, v in h.items()}
    _, pa, _, _, state = m.decode(first, p0=p0)
    _, pb, _, _, _ = m.decode(second, state=state)
    assert torch.allclose(torch.cat([pa, pb], 1), full, atol=1e-6)


@pytest.mark.parametrize("dtype, shape, tol", [(torch.float64, (3, 20, 9, 5), 1e-12),
                                               (torch.float32, (4, 127, 130, 128), 1e-5)])
def test_pose_recurrence_equals_autograd(dtype, shape, tol):
    """PGN.forward (PoseRecurrence, hand-written backward) against the autograd loop
    (PGN.forward_autograd, the implementation before it): the same poses, final state and
    gradients of every input and weight, to float rounding; float32 at the default sizes (B = 4,
    T = 127, 2F + S = 130, H = 128) differs by a few ulp (2e-6 relative)."""
    b, t, d_in, n = shape
    torch.manual_seed(0)
    pgn = PGN(d_in, 16, n).to(dtype)
    pgn.speed_scale.copy_(torch.tensor([0.5, 1, 2, 0.1, 0.2, 3.0]))
    g = torch.Generator().manual_seed(1)
    h = torch.randn(b, t, d_in, dtype=dtype, generator=g).requires_grad_()
    state = [torch.randn(b, k, dtype=dtype, generator=g).requires_grad_() for k in (n, n, 6, 6)]
    shapes = ((b, t, 6), (b, n), (b, n), (b, 6), (b, 6))
    w = [torch.randn(*s, dtype=dtype, generator=g) for s in shapes]
    results = []
    for fn in (PGN.forward_autograd, PGN.forward):
        pgn.zero_grad()
        for x in (h, *state):
            x.grad = None
        poses, speed, last = fn(pgn, h, PoseState(*state))
        outs = (poses, last.h, last.c, last.p, last.v)
        sum((o * wo).sum() for o, wo in zip(outs, w)).backward()
        grads = [x.grad.clone() for x in (h, *state)] + [p.grad.clone() for p in pgn.parameters()]
        results.append(([o.detach() for o in outs], grads))
    (want, want_g), (got, got_g) = results
    assert float(want[0].abs().max()) > 1.0  # the poses move
    for a, b_ in zip(want + want_g, got + got_g):
        scale = float(a.abs().max())
        assert scale > 0 and float((a - b_).abs().max()) <= tol * scale


def test_pose_workspace_is_reused_only_when_free():
    """The PGN reuses a shape's workspace once the graph that used it is gone; two forwards before
    one backward get two workspaces and both gradients are right; a backward whose workspace was
    overwritten anyway fails loudly (autograd's version check), it does not return wrong numbers."""
    torch.manual_seed(0)
    pgn = PGN(9, 16, 8)
    g = torch.Generator().manual_seed(3)
    h1, h2 = (torch.randn(2, 12, 9, generator=g).requires_grad_() for _ in range(2))
    state = pgn.init_state(torch.zeros(2, 6))

    def grads(fn):
        for x in (h1, h2):
            x.grad = None
        (fn(pgn, h1, state)[0] ** 2 + 2 * fn(pgn, h2, state)[0]).sum().backward()
        return h1.grad.clone(), h2.grad.clone()

    for want, got in zip(grads(PGN.forward_autograd), grads(PGN.forward)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    ws = pgn.workspace(12, 2, torch.float32, h1.device)
    assert not ws.busy and pgn.workspace(12, 2, torch.float32, h1.device) is ws  # kept, free again
    poses = pgn(h1, state)[0]
    assert ws.busy and pgn.workspace(12, 2, torch.float32, h1.device) is not ws
    ws.release()  # misuse: hand it out while poses' graph still needs it
    pgn(h2, state)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        poses.sum().backward()


def test_pose_recurrence_gradcheck():
    """The hand-written backward against finite differences (float64), every input."""
    g = torch.Generator().manual_seed(2)
    b, t, n = 2, 4, 3
    shapes = [(b, t, 4 * n), (b, t, 6), (4 * n, 12 + n), (6, n), (6,), (b, n), (b, n), (b, 6),
              (b, 6)]
    args = [torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_() for s in shapes]

    def fn(*a):  # a fresh workspace per call (gradcheck keeps several graphs alive)
        return PoseRecurrence.apply(*a, PoseWorkspace(t, b, n, torch.float64, "cpu"))

    assert torch.autograd.gradcheck(fn, args)


@torch.no_grad()
def test_pgn_rollout_equals_forward():
    """The generation-time roll-out (numpy) runs the training recurrence: same poses, speeds,
    state."""
    m = tiny("full", lstm_hidden=24)
    m.pgn.speed_scale.copy_(torch.tensor([0.5, 1, 2, 0.1, 0.2, 3.0]))
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 200, m.pgn.d_in, generator=g)
    state = m.pgn.init_state(torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g))
    want = m.pgn(h, state)
    got = m.pgn.rollout(h, state)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[1], want[1])
    for a, b in zip(dataclasses.astuple(got[2]), dataclasses.astuple(want[2])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert float((got[0] - h.new_zeros(1)).abs().max()) > 1.0  # the poses really move
    # chunks: the returned state continues the roll-out
    first = m.pgn.rollout(h[:, :77], state)
    second = m.pgn.rollout(h[:, 77:], first[2])
    torch.testing.assert_close(torch.cat([first[0], second[0]], 1), want[0], rtol=1e-5, atol=1e-5)
    assert m.pgn.rollout(h[:, :0], state)[0].shape == (3, 0, 6)


def _generate_vs_forward(m: MusicFace, song: dict, subject: int) -> dict:
    """Max |difference| per output between model.generate and the training forward, in data
    units."""
    gen = m.generate(**song, subject=subject, seed=3)
    with torch.no_grad():
        ref = m({k: torch.from_numpy(v)[None] for k, v in song.items()}, torch.tensor([subject]))
    want = {"exp": ref["exp"][0] * m.exp_std + m.exp_mean,
            "pose": ref["pose"][0] * m.pose_std + m.pose_mean}
    if ref["speed"] is not None:
        want["speed"] = ref["speed"][0] * m.pose_std
    e_long = ref["e_long"][0].numpy()
    want["e_long"] = np.where(e_long > m.cfg.eye_threshold, e_long, 0.0)
    for k, v in (ref["att"] or {}).items():
        want[f"att_{k}"] = v[0]
    got = dict(gen, **{f"att_{k}": v for k, v in (gen["att"] or {}).items()})
    assert (gen["speed"] is None) == (m.pgn is None) and (gen["att"] is None) == (m.atm is None)
    diffs = {}
    for k, v in want.items():
        v = np.asarray(v)
        assert got[k].shape == v.shape and got[k].dtype == np.float32, k
        diffs[k] = float(np.abs(got[k].astype(np.float64) - v).max())
    if m.pgn is not None:  # the roll-out really moves the head over the song
        assert np.ptp(np.asarray(want["pose"][:, 0])) > 0.01
    return diffs


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_equals_the_training_forward(variant):
    """model.generate (inference paths: channels-last encoder and U-Nets, numpy PGN roll-out)
    against the training forward, which is the implementation generation started from: a 4-minute
    song (7,200 frames), default sizes, data units. Differences are float32 rounding: below 1e-5
    everywhere (exp up to 63 and pose up to 55 here, where one float32 step is 4e-6)."""
    torch.manual_seed(0)
    m = MusicFace(ModelConfig(variant=variant), SUBJECTS, 64)
    m.set_normalisation(_stats(64))
    diffs = _generate_vs_forward(m, _song(7200), subject=1)
    assert max(diffs.values()) < 1e-5, diffs


def test_generate_equals_the_training_forward_odd_length():
    """A length that is no multiple of the U-Net stride (padding in both paths), small sizes."""
    for variant in ("with_atm", "full"):
        m = tiny(variant)
        m.set_normalisation(_stats())
        diffs = _generate_vs_forward(m, _song(1001, seed=2), subject=0)
        assert max(diffs.values()) < 1e-5, (variant, diffs)


# ----------------------------------------------------------------------------------- U-Net
def test_unet_context_bounds_the_receptive_field():
    torch.manual_seed(0)
    for channels in ([8, 16], [8, 16, 16], [8, 8, 8, 8]):
        u = UNet1d(4, 3, channels)
        x = torch.randn(1, 4, 400)
        y = u(x)
        assert y.shape == (1, 3, 400)
        t = 200
        x2 = x.clone()
        x2[:, :, :t - u.context] += 5.0  # change everything outside the context
        x2[:, :, t + u.context + 1:] -= 5.0
        assert torch.allclose(u(x2)[:, :, t], y[:, :, t], atol=1e-6)
        x3 = x.clone()
        x3[:, :, t - 1] += 5.0  # a neighbour inside the context does matter
        assert not torch.allclose(u(x3)[:, :, t], y[:, :, t], atol=1e-6)
    assert UNet1d(4, 3, [64, 96, 128]).context == 28


# ------------------------------------------------------------------------------ generation
def _song(t, seed=0):
    """A song's MFCC as generate takes it: padded rows + each frame's window start."""
    g, m = np.random.default_rng(seed), -(-t * 100 // 30)
    song = {k: padded_rows(g.normal(size=(m, 26)).astype(np.float32))
            for k in ("mfcc_vocals", "mfcc_music", "mfcc_mix")}
    return dict(song, mfcc_index=mfcc_centres(0, t, m))


def _stats(e=E):
    return {"mfcc_mean": np.full((3, 26), 0.5), "mfcc_std": np.full((3, 26), 2.0),
            "exp_mean": np.arange(e) * 1.0, "exp_std": np.full(e, 0.1),
            "pose_mean": np.array([0.1, -0.2, 0.0, 1.0, 2.0, 50.0]),
            "pose_std": np.array([0.05, 0.1, 0.02, 0.5, 0.5, 3.0]), "vel_std": np.full(6, 0.01),
            "subject_pose": np.array([[0.1, -0.2, 0.0, 1.0, 2.0, 50.0],
                                      [0.2, 0.0, 0.05, 1.5, 2.5, 55.0]])}


def test_generate_four_minute_song_full_model():
    """T = 7,200 frames (4 min at 30 fps) with the default architecture: finite, speed >= 0."""
    torch.manual_seed(0)
    m = MusicFace(ModelConfig(), SUBJECTS, 64)
    m.set_normalisation(_stats(64))
    out = m.generate(**_song(7200), subject="singer2", seed=3)
    assert out["exp"].shape == (7200, 64) and out["exp"].dtype == np.float32
    assert out["pose"].shape == (7200, 6) and out["speed"].shape == (7200, 6)
    for k in ("exp", "pose", "speed", "e_long", "e_blink", "eye"):
        assert out[k].shape[0] == 7200 and np.isfinite(out[k]).all(), k
    assert out["speed"].min() >= 0
    assert set(out["att"]) == {"exp", "pose", "eye"} and out["att"]["pose"].shape == (7200, 128)
    # frame 0 is the subject's mean pose (data units) when no pose0 is given
    np.testing.assert_allclose(out["pose"][0], _stats()["subject_pose"][1], rtol=1e-5)
    assert 0 <= out["eye"].min() and out["eye"].max() <= 1
    e = out["e_long"]
    assert ((e == 0) | (e > m.cfg.eye_threshold)).all()


@pytest.mark.parametrize("variant", ["with_atm", "full"])
def test_chunked_generation_has_no_seams(variant):
    m = tiny(variant)
    m.set_normalisation(_stats())
    song = _song(1000, seed=1)
    one = m.generate(**song, subject=1, pose0=np.array([0.0, 0.1, 0.0, 1.0, 2.0, 50.0]))
    for chunk in (64, 250, 333):
        ch = m.generate(**song, subject=1, pose0=np.array([0.0, 0.1, 0.0, 1.0, 2.0, 50.0]),
                        chunk=chunk)
        for k in ("exp", "pose", "e_long", "eye"):
            np.testing.assert_allclose(ch[k], one[k], atol=2e-5, rtol=1e-5,
                                       err_msg=f"{k}, chunk {chunk}")
        np.testing.assert_allclose(ch["att"]["exp"], one["att"]["exp"], atol=1e-6)


def test_generate_returns_data_units():
    """Zeroed output layers -> the normalisation's means come back exactly (in data units)."""
    stats = _stats()
    for variant in ("two_stream", "full"):
        m = tiny(variant)
        m.set_normalisation(stats)
        with torch.no_grad():
            m.egn.net[2].weight.zero_()
            m.egn.net[2].bias.zero_()
            if m.pgn is not None:
                m.pgn.speed[2].weight.zero_()
                m.pgn.speed[2].bias.zero_()
            else:
                m.mlp_pose.net[2].weight.zero_()
                m.mlp_pose.net[2].bias.zero_()
        pose0 = np.array([0.3, 0.1, -0.1, 0.0, 1.0, 40.0], np.float32)
        out = m.generate(**_song(200), subject="singer1", pose0=pose0)
        np.testing.assert_allclose(out["exp"], np.broadcast_to(stats["exp_mean"], (200, E)),
                                   atol=1e-5)
        if variant == "full":  # zero speed: the head stays where it started
            np.testing.assert_allclose(out["pose"], np.broadcast_to(pose0, (200, 6)), atol=1e-5)
            assert np.abs(out["speed"]).max() == 0
        else:
            np.testing.assert_allclose(out["pose"], np.broadcast_to(stats["pose_mean"], (200, 6)),
                                       atol=1e-5)
            assert out["speed"] is None


def test_generate_rejects_bad_input():
    m = tiny("full")
    with pytest.raises(ValueError,
                       match="unknown subject 'nobody'; this model knows: singer1, singer2"):
        m.generate(**_song(50), subject="nobody")
    song = _song(50)
    msg = r"mfcc_music: MFCC rows must have shape \(R, 26\), got \(50, 39, 26\)"
    with pytest.raises(ValueError, match=msg):
        m.generate(**dict(song, mfcc_music=np.zeros((50, 39, 26))), subject=0)
    msg = r"mfcc_index must be \(T,\) with 0 <= index <= R - 39 \(R = 205"
    with pytest.raises(ValueError, match=msg):
        m.generate(**dict(song, mfcc_index=song["mfcc_index"] + 5), subject=0)
    with pytest.raises(ValueError, match="mfcc_index is required"):
        m.generate(mfcc_vocals=song["mfcc_vocals"], mfcc_music=song["mfcc_music"], subject=0)
    with pytest.raises(ValueError, match="variant 'full' needs mfcc_music"):
        m.generate(mfcc_vocals=song["mfcc_vocals"], mfcc_index=song["mfcc_index"], subject=0)


def test_save_and_load_with_weights_only(tmp_path):
    m = tiny("full")
    m.set_normalisation(_stats())
    path = tmp_path / "model.pt"
    torch.save(export(m, epoch=7), path)
    loaded, meta = load_checkpoint(path)
    assert meta["subjects"] == SUBJECTS and meta["exp_dim"] == E and meta["epoch"] == 7
    assert meta["model_config"]["variant"] == "full" and meta["n_params"] == count_parameters(m)
    a = m.generate(**_song(300), subject=0, seed=1)
    b = loaded.generate(**_song(300), subject=0, seed=1)
    for k in ("exp", "pose", "speed", "e_long", "e_blink", "eye"):
        np.testing.assert_array_equal(a[k], b[k])
    payload = export(m)
    del payload["state_dict"]["tsae.encoders.vocals.norm.weight"]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(ValueError,
                       match=r"does not match this MusicFace's architecture .*missing \['tsae"):
        load_checkpoint(tmp_path / "old.pt")
    torch.save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a MusicFace model file"):
        load_checkpoint(tmp_path / "bad.pt")


# --------------------------------------------------------------------------------------- eyes
def test_blink_sampler_follows_the_paper_distributions():
    """The start-to-start reading of the paper's interval: onset to onset ~ U(1.2, 2.0) s."""
    fps = 30
    e = sample_blinks(7200, fps, seed=5, mode="start_to_start")
    assert e.dtype == np.float32 and set(np.unique(e)) == {0.0, 1.0}
    np.testing.assert_array_equal(e, sample_blinks(7200, fps, seed=5, mode="start_to_start"))
    assert not np.array_equal(e, sample_blinks(7200, fps, seed=6, mode="start_to_start"))
    d = np.diff(np.concatenate([[0], e, [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    dur = (ends - starts) / fps
    intervals = np.diff(starts) / fps  # start to start
    assert dur.min() >= 0.10 - 1 / fps and dur.max() <= 0.45 + 1 / fps
    assert intervals.min() >= 1.2 - 1 / fps and intervals.max() <= 2.0 + 1 / fps
    assert abs(dur.mean() - 0.275) < 0.03  # mean of U(0.10, 0.45)
    assert abs(intervals.mean() - 1.6) < 0.05  # mean of U(1.2, 2.0)
    assert abs(len(starts) / (7200 / fps) - 1 / 1.6) < 0.03  # blinks per second
    # the first blink comes after one interval
    assert 1.2 - 1 / fps <= starts[0] / fps <= 2.0 + 1 / fps


def test_blink_sampler_end_to_start_reading():
    """The default reading of the paper's interval (docs/fidelity.md): the open-eye gap from a
    blink's end to the next start ~ U(1.2, 2.0) s, so 1 / (1.6 + 0.275) blinks per second; the
    same random numbers as the other reading."""
    fps = 30
    e = sample_blinks(7200, fps, seed=5)
    np.testing.assert_array_equal(e, sample_blinks(7200, fps, seed=5, mode="end_to_start"))
    d = np.diff(np.concatenate([[0], e, [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    gaps = (starts[1:] - ends[:-1]) / fps
    assert gaps.min() >= 1.2 - 2 / fps and gaps.max() <= 2.0 + 2 / fps
    assert abs(len(starts) / (7200 / fps) - 1 / 1.875) < 0.03
    first = sample_blinks(7200, fps, seed=5, mode="start_to_start")
    assert np.flatnonzero(np.diff(first) == 1)[0] == starts[0] - 1  # the same first draw
    from musicface.config import ModelConfig

    assert ModelConfig().blink_interval_mode == "end_to_start"
    with pytest.raises(ValueError, match="blink interval mode 'onset'"):
        sample_blinks(100, fps, mode="onset")


def test_eye_combination_and_filter():
    e_long = np.array([0, 0, 0.8, 0.9, 0, 0, 0, 0], np.float32)
    e_blink = np.array([0, 1, 1, 0, 0, 1, 0, 0], np.float32)
    np.testing.assert_array_equal(combine_eye_states(e_long, e_blink, sigma=0),
                                  np.array([0, 1, 0.8, 0.9, 0, 1, 0, 0], np.float32))
    smooth = combine_eye_states(e_long, e_blink, sigma=1.0)
    assert smooth.shape == (8,) and 0 < smooth[4] < 0.9 and abs(smooth.sum() - 3.7) < 0.2


def test_discriminator_ignores_invalid_frames():
    torch.manual_seed(0)
    d = Discriminator(26, 8)
    pose, e, audio = torch.randn(2, 40, 6), torch.rand(2, 40), torch.randn(2, 40, 26)
    valid = torch.ones(2, 40)
    valid[:, 10:15] = 0
    a = d(pose, e, audio, valid)
    assert a.shape == (2, 40)
    pose2, e2 = pose.clone(), e.clone()
    pose2[:, 10:15] = 100.0
    e2[:, 10:15] = 1.0
    assert torch.equal(a, d(pose2, e2, audio, valid))
    pose3 = pose.clone()
    pose3[:, 20] += 1.0
    assert not torch.allclose(a, d(pose3, e, audio, valid))
