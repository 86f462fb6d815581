"""Flow matching objective and sampler on a tiny synthetic latent world."""

import pytest
import torch

from worldsim.dynamics import build_dynamics
from worldsim.flow import rollout, sample_next, sample_noise_levels, training_loss

MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])  # stay, up, down, left, right


def blob_world(batch: int, frames: int, size: int = 8, seed: int = 0):
    """Latents [b, t, 4, size, size] of a blob that moves one cell per step in the action's direction."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, size, (batch, 2), generator=g)
    actions = torch.randint(0, 5, (batch, frames - 1), generator=g)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for t in range(frames):
        if t:
            pos = (pos + MOVES[actions[:, t - 1]]) % size
        blob = torch.exp(
            -((ys - pos[:, 0, None, None]) ** 2 + (xs - pos[:, 1, None, None]) ** 2) / 1.5
        )
        out.append(
            torch.stack(
                [
                    2 * blob - 0.5,
                    -blob,
                    ys.expand_as(blob) / size - 0.5,
                    xs.expand_as(blob) / size - 0.5,
                ],
                1,
            )
        )
    return torch.stack(out, 1), actions


def test_training_loss_parts_are_finite():
    net = build_dynamics("tiny", num_actions=5)
    z, a = blob_world(4, 4)
    out = training_loss(
        net, z, a, shortcut_fraction=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert set(out) == {"loss", "flow_loss", "shortcut_loss"}
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert net.final.linear.weight.grad.abs().sum() > 0


def test_training_loss_under_bf16_autocast():
    """bf16-mixed training (trainer=gpu): the shortcut targets come from the net in bf16 and are
    written into float32 targets; the loss stays float32 and finite, and gradients flow."""
    net = build_dynamics("tiny", num_actions=5)
    assert net.cfg.shortcut
    torch.nn.init.normal_(net.final.linear.weight, std=0.1)  # a fresh DiT predicts 0: no shortcut target
    z, a = blob_world(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = training_loss(net, z, a, shortcut_fraction=1.0, generator=torch.Generator().manual_seed(0))
    assert out["shortcut_loss"] > 0  # the shortcut branch ran
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert net.final.linear.weight.grad.abs().sum() > 0


def test_training_loss_rejects_bad_arguments():
    net = build_dynamics("tiny", num_actions=5)
    z, a = blob_world(2, 3)
    with pytest.raises(ValueError, match="cfg_dropout must lie in"):
        training_loss(net, z, a, cfg_dropout=1.5)
    with pytest.raises(ValueError, match=r"latents \[b, t, c, h, w\]"):
        training_loss(net, z[:, 0], a)


def test_flow_loss_decreases_on_synthetic_world():
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(40):
        z, a = blob_world(8, 3, seed=step % 8)
        loss = training_loss(net, z, a, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sampler_runs_with_few_steps(steps):
    net = build_dynamics("tiny", num_actions=5)
    z, a = blob_world(2, 3)
    x = sample_next(
        net, z[:, :2], a[:, :1], a[:, 1], steps=steps, generator=torch.Generator().manual_seed(0)
    ).z
    assert x.shape == (2, 4, 8, 8) and torch.isfinite(x).all()
    cache = net.init_cache(2)
    x_cached = sample_next(
        net,
        z[:, :2],
        a[:, :1],
        a[:, 1],
        steps=steps,
        cache=cache,
        generator=torch.Generator().manual_seed(0),
    ).z
    torch.testing.assert_close(x_cached, x, atol=1e-5, rtol=1e-5)
    assert cache.filled.tolist() == [3, 3]  # 2 context frames + the new one


def test_classifier_free_guidance_path():
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    z, a = blob_world(2, 3)
    kw = dict(steps=2, generator=None)
    plain = sample_next(
        net, z[:, :2], a[:, :1], a[:, 1], **{**kw, "generator": torch.Generator().manual_seed(0)}
    ).z
    guided = sample_next(
        net,
        z[:, :2],
        a[:, :1],
        a[:, 1],
        cfg_scale=3.0,
        **{**kw, "generator": torch.Generator().manual_seed(0)},
    ).z
    cache = net.init_cache(2)
    guided_cached = sample_next(
        net,
        z[:, :2],
        a[:, :1],
        a[:, 1],
        cfg_scale=3.0,
        cache=cache,
        **{**kw, "generator": torch.Generator().manual_seed(0)},
    ).z
    assert (plain - guided).abs().max() > 1e-4
    torch.testing.assert_close(guided_cached, guided, atol=1e-5, rtol=1e-5)


def test_rollout_continuous_actions_shape_and_effect():
    net = build_dynamics("tiny", action_embedding="continuous", action_dim=2)
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh net is the identity (zero-init): make the action reach the output
        for p in net.parameters():
            if p.dim() > 0 and p.abs().sum() == 0:
                p.normal_(0, 0.2)
    z = torch.randn(3, 2, 4, 8, 8)
    context, actions = torch.randn(3, 1, 2), torch.randn(3, 5, 2)

    def run(acts):
        return rollout(net, z, context, acts, steps=1, generator=torch.Generator().manual_seed(0))

    out = run(actions)
    assert out.shape == (3, 5, 4, 8, 8)
    torch.testing.assert_close(run(actions), out)  # same noise, same actions: same rollout
    other = actions.clone()
    other[:, 0] += 1.0  # only the first action differs
    moved = (run(other) - out).abs().flatten(2).amax(-1)  # [b, H]
    assert (moved > 1e-3).all(), moved  # every world, from the first generated frame on


def test_noise_levels_keep_the_predicted_frame_noisy():
    g = torch.Generator().manual_seed(0)
    s, context = sample_noise_levels(512, 6, context_prob=0.25, clean_prob=0.5, generator=g)
    assert s.shape == context.shape == (512, 6)
    assert not context[:, -1].any()  # the last frame of a clip is always a target
    assert (s[context] <= 0.2).all() and (s[~context] > 0).all() and (s <= 1).all()
    # Context frames: clean_prob of them, plus whole clips in generation mode.
    frac = context[:, :-1].float().mean().item()
    assert 0.55 < frac < 0.7, frac
    assert (s[~context] > 0.5).float().mean() > 0.4  # targets are usually far from clean
    with pytest.raises(ValueError, match="target_noise must be one of"):
        sample_noise_levels(2, 3, target_noise="cosine")


def test_context_frames_do_not_count_in_the_loss():
    net = build_dynamics("tiny", num_actions=5, shortcut=False)
    with torch.no_grad():
        net.final.linear.bias.fill_(0.3)
    z, a = blob_world(4, 4)
    kw = dict(cfg_dropout=0.0, generator=torch.Generator().manual_seed(0))
    all_context = training_loss(net, z, a, context_prob=1.0, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    weighted = training_loss(net, z, a, context_prob=1.0, context_loss_weight=1.0, **kw)
    # Generation mode everywhere: only the last frame is a target, so the two losses differ.
    assert not torch.isclose(all_context["loss"], weighted["loss"])
    torch.testing.assert_close(all_context["loss"], all_context["flow_loss"])


STEP = torch.tensor(
    [[0, 0, 0, 0], [0.6, 0, 0, 0], [-0.6, 0, 0, 0], [0, 0.6, 0, 0], [0, -0.6, 0, 0]]
)


def offset_world(batch: int, frames: int, seed: int):
    """Latents [b, t, 4, 8, 8]: a fixed random pattern whose channel levels the action alone
    moves (action k adds STEP[k] to every cell): nothing but a_t tells frame t+1 from frame t."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 4, 8, 8, generator=g) * 0.5
    actions = torch.randint(0, 5, (batch, frames - 1), generator=g)
    offset = torch.cat([torch.zeros(batch, 1, 4), STEP[actions].cumsum(1)], 1)  # [b, t, c]
    offset = offset - offset.mean(1, keepdim=True)
    return base[:, None] + offset[..., None, None], actions


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((-10 * torch.log10((x - y).pow(2).mean(dim=(2, 3, 4)))).mean())


def test_true_actions_beat_random_actions_after_short_training():
    """The unit-level form of Genie's delta-PSNR: if actions do not reach the predicted frame
    (misaligned, gated off, or ignored because the loss never needs them), true and random
    actions give the same rollout and this fails."""
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(250):
        z, a = offset_world(16, 4, seed=step)
        loss = training_loss(net, z, a, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    z, a = offset_world(64, 5, seed=10_000)
    wrong = (a + torch.randint(1, 5, a.shape, generator=torch.Generator().manual_seed(3))) % 5
    kw = dict(steps=4)
    true = rollout(
        net, z[:, :2], a[:, :1], a[:, 1:], generator=torch.Generator().manual_seed(0), **kw
    )
    rand = rollout(
        net, z[:, :2], a[:, :1], wrong[:, 1:], generator=torch.Generator().manual_seed(0), **kw
    )
    delta = _psnr(true, z[:, 2:]) - _psnr(rand, z[:, 2:])
    assert delta > 1.0, delta


def test_self_forced_history_is_the_models_own_rollout():
    from worldsim.flow import self_forced

    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5).eval()
    z, actions = blob_world(6, 8)
    context = torch.ones(6, 8, dtype=torch.bool)
    context[:, -1] = False
    context[3:, 2] = False  # rows 3..5 are not in generation mode: left alone
    out, rows = self_forced(net, z, actions, context, 1.0, steps=1, generator=torch.Generator().manual_seed(1))
    assert rows.tolist() == [True, True, True, False, False, False]
    changed = (out != z).flatten(2).any(-1)  # [b, t]: frames replaced
    assert not changed[3:].any() and not changed[:, -1].any()  # other rows and every target stay real
    k = int(changed[0].float().argmax())  # the first drawn frame
    assert 2 <= k <= 6 and changed[:3, k:7].all() and not changed[:3, :k].any()
    # the drawn frames are the sampler's rollout from the same real frames and actions (the
    # generator replayed: the row draw, then k, then the rollout's noise)
    g = torch.Generator().manual_seed(1)
    torch.rand(6, generator=g), torch.randint(2, 7, (1,), generator=g)
    expect = rollout(net, z[:3, :k], actions[:3, : k - 1], actions[:3, k - 1 : 6], steps=1, generator=g)
    torch.testing.assert_close(out[:3, k:7], expect)
    assert torch.isfinite(out).all()
    same, _ = self_forced(net, z, actions, context, 0.0)
    assert torch.equal(same, z)
    with pytest.raises(ValueError, match="self_forcing"):
        self_forced(net, z, actions, context, 1.5)


def test_training_loss_with_self_forcing_trains():
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5)
    z, actions = blob_world(8, 6)
    out = training_loss(net, z, actions, context_prob=1.0, self_forcing=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert out["self_forced"].item() == 1.0  # every clip in generation mode had its history drawn
    out["loss"].backward()
    assert net.training and all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    plain = training_loss(net, z, actions, context_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert "self_forced" not in plain and plain["loss"].item() != out["loss"].item()


def test_teacher_forcing_trains_every_frame_after_the_first_from_a_clean_history():
    net = build_dynamics("tiny", readout=True)
    z, actions = torch.randn(2, 5, 4, 8, 8), torch.randint(0, 4, (2, 4))
    rewards, terminated = torch.randn(2, 4), torch.zeros(2, 4)
    seen = []
    forward = net.forward

    def spy(*args, **kw):
        seen.append((args[0].shape[1], kw.get("teacher", False), args[1].detach().clone()))
        return forward(*args, **kw)

    net.forward = spy
    out = training_loss(net, z, actions, rewards=rewards, terminated=terminated,
                        teacher_forcing=True, shortcut_fraction=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["readout_loss"] > 0
    out["loss"].backward()
    # every pass (two bootstrap half steps, then the loss pass) is teacher-forced over 2T frames
    assert [(f, tf) for f, tf, _ in seen] == [(10, True)] * 3
    levels = seen[-1][2]
    assert (levels[:, :5] <= 0.2).all()  # the clean half at context levels
    assert (levels[:, 6:] > 0).all()  # frames 1 .. T-1 of the noised half are targets
    with pytest.raises(ValueError, match="exclude"):
        training_loss(net, z, actions, teacher_forcing=True, self_forcing=0.5)
