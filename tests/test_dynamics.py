"""The spatiotemporal DiT: identity init, shapes in every mode, causality, KV-cached generation."""

import pytest
import torch

from worldsim.dynamics import PRESETS, DiTBlock, DynamicsModel, build_dynamics, config_from_preset
from worldsim.flow import rollout


def _perturbed(model: DynamicsModel, scale: float = 0.05) -> DynamicsModel:
    """Move every weight off its init so zero-initialised layers do something."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def _actions(kind: str, b: int, t: int):
    if kind == "discrete":
        return torch.randint(0, 4, (b, t))
    if kind == "continuous":
        return torch.randn(b, t, 3)
    return torch.randint(0, 4, (b, t)), torch.randn(b, t, 3)


def test_fresh_block_is_identity_and_fresh_model_predicts_zero():
    model = build_dynamics("tiny")
    block = model.blocks[0]
    assert isinstance(block, DiTBlock)
    x, c = torch.randn(2, 3, 16, 32), torch.randn(2, 3, 32)
    torch.testing.assert_close(block(x, c, model.grid), x)
    v = model(torch.randn(2, 3, 4, 8, 8), torch.rand(2, 3), torch.randint(0, 4, (2, 2)))
    assert torch.count_nonzero(v) == 0


@pytest.mark.parametrize("attention", ["factorized", "block_causal"])
@pytest.mark.parametrize("action_embedding", ["discrete", "continuous", "both"])
def test_forward_shapes_all_modes(attention, action_embedding):
    model = build_dynamics("tiny", attention=attention, action_embedding=action_embedding, action_dim=3)
    _perturbed(model)
    z = torch.randn(2, 4, 4, 8, 8)
    v = model(z, torch.rand(2, 4), _actions(action_embedding, 2, 3), step_size=torch.rand(2, 4))
    assert v.shape == z.shape and torch.isfinite(v).all()
    v_null = model(z, torch.rand(2, 4), None)  # all-null actions (CFG's unconditional branch)
    assert v_null.shape == z.shape


@pytest.mark.parametrize("attention", ["factorized", "block_causal"])
def test_output_at_frame_t_ignores_later_frames_and_actions(attention):
    model = _perturbed(build_dynamics("tiny", attention=attention))
    z, s, a = torch.randn(1, 5, 4, 8, 8), torch.rand(1, 5), torch.randint(0, 4, (1, 4))
    v = model(z, s, a)
    z2, s2, a2 = z.clone(), s.clone(), a.clone()
    z2[:, 3:] += 1.0
    s2[:, 3:] = 0.5
    a2[:, 2:] = (a2[:, 2:] + 1) % 4  # a_2 conditions frame 3
    v2 = model(z2, s2, a2)
    torch.testing.assert_close(v[:, :3], v2[:, :3], atol=1e-5, rtol=1e-5)
    assert (v[:, 3:] - v2[:, 3:]).abs().max() > 1e-3


def test_action_changes_the_prediction():
    model = _perturbed(build_dynamics("tiny"))
    z, s = torch.randn(1, 2, 4, 8, 8), torch.rand(1, 2)
    v0 = model(z, s, torch.tensor([[0]]))
    v1 = model(z, s, torch.tensor([[1]]))
    assert (v0[:, 1] - v1[:, 1]).abs().max() > 1e-3
    torch.testing.assert_close(v0[:, 0], v1[:, 0])


@pytest.mark.parametrize(
    "frame_concat,local_kernel", [(True, 0), (False, 0), (True, 3), (False, 3)]
)
@pytest.mark.parametrize("attention", ["factorized", "block_causal"])
def test_cached_generation_matches_uncached(attention, frame_concat, local_kernel):
    model = _perturbed(
        build_dynamics("tiny", attention=attention, context_window=3, frame_concat=frame_concat,
                       local_kernel=local_kernel)
    )
    z0, a0 = torch.randn(2, 2, 4, 8, 8), torch.randint(0, 4, (2, 1))
    actions = torch.randint(0, 4, (2, 8))  # 8 frames > window of 3
    cached = rollout(model, z0, a0, actions, steps=2, generator=torch.Generator().manual_seed(0))
    uncached = rollout(
        model, z0, a0, actions, steps=2, use_cache=False, generator=torch.Generator().manual_seed(0)
    )
    assert cached.shape == (2, 8, 4, 8, 8)
    torch.testing.assert_close(cached, uncached, atol=1e-4, rtol=1e-4)
    # one world per cached pass, the passes side by side on two threads: the same frames
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            chunked = rollout(model, z0, a0, actions, steps=2, chunk=1,
                              generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(chunked, cached, atol=1e-5, rtol=1e-5)


def test_cache_reset_of_one_world_leaves_the_others_alone():
    model = _perturbed(build_dynamics("tiny", context_window=3))
    z, a = torch.randn(3, 4, 4, 8, 8), torch.randint(0, 4, (3, 3))
    cache = model.init_cache(3)
    model.prefill(cache, z, a, noise_level=0.1)
    x, s, act = torch.randn(3, 4, 8, 8), torch.full((3,), 0.7), torch.randint(0, 4, (3,))
    before = model.step(cache, x, s, act)
    # World 1 restarts from a single new frame; its slots are re-filled, the others untouched.
    fresh = model.init_cache(1)
    model.prefill(fresh, torch.randn(1, 1, 4, 8, 8), None, noise_level=0.1)
    cache.assign([1], fresh)
    after = model.step(cache, x, s, act)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    assert (after[1] - before[1]).abs().max() > 1e-4


def test_partially_filled_cache_matches_full_pass():
    model = _perturbed(build_dynamics("tiny", attention="block_causal", context_window=4))
    ctx, act = torch.randn(2, 2, 4, 8, 8), torch.randint(0, 4, (2, 1))
    cache = model.init_cache(2)
    model.prefill(cache, ctx, act, noise_level=0.1)
    x, new_a = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2,))
    v_cached = model.step(cache, x, torch.full((2,), 0.6), new_a)
    seq = torch.cat([ctx, x[:, None]], 1)
    level = torch.tensor([[0.1, 0.1, 0.6]]).expand(2, 3)
    v_full = model(seq, level, torch.cat([act, new_a[:, None]], 1), window=4)[:, -1]
    torch.testing.assert_close(v_cached, v_full, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown dynamics preset 'huge'"):
        config_from_preset("huge")
    with pytest.raises(ValueError, match=r"unknown DynamicsConfig field\(s\) \['dimm'\]"):
        config_from_preset("tiny", dimm=3)
    with pytest.raises(ValueError, match="attention must be one of"):
        config_from_preset("tiny", attention="global")
    with pytest.raises(ValueError, match="not divisible by patch size"):
        config_from_preset("tiny", latent_height=7)
    assert {"tiny", "quickstart", "medium", "base", "large"} <= set(PRESETS)


def test_bad_inputs_raise_clear_errors():
    model = build_dynamics("tiny")
    z = torch.randn(2, 3, 4, 8, 8)
    with pytest.raises(ValueError, match=r"latents \[b, t, 4, 8, 8\]"):
        model(torch.randn(2, 3, 5, 8, 8), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"noise_level must be \[2, 3\]"):
        model(z, torch.rand(2))
    with pytest.raises(ValueError, match="transitions"):
        model(z, torch.rand(2, 3), torch.randint(0, 4, (2, 3)))
    no_shortcut = build_dynamics("tiny", shortcut=False)
    with pytest.raises(ValueError, match="shortcut is False"):
        no_shortcut(z, torch.rand(2, 3), step_size=torch.rand(2, 3))


def test_frame_concat_feeds_the_previous_frame_to_the_input():
    model = build_dynamics("tiny")
    assert model.patch_embed.channels == 2 * model.cfg.latent_channels
    z = torch.randn(1, 3, 4, 8, 8)
    x = model._with_previous(z)
    torch.testing.assert_close(x[:, 1:, 4:], z[:, :-1])  # frame t+1 carries frame t
    assert torch.count_nonzero(x[:, 0, 4:]) == 0  # frame 0 has no predecessor
    cache = model.init_cache(1)
    model.prefill(cache, z, torch.randint(0, 4, (1, 2)))
    torch.testing.assert_close(cache.previous_frame(), z[:, -1])
    cache.reset(torch.tensor([True]))
    assert torch.count_nonzero(cache.previous_frame()) == 0
    assert build_dynamics("tiny", frame_concat=False).init_cache(1).last is None


@pytest.mark.parametrize("frame_concat,local_kernel", [(True, 3), (False, 0)])
@pytest.mark.parametrize("attention", ["factorized", "block_causal"])
def test_teacher_pass_gives_each_noised_frame_the_view_of_cached_generation(
    attention, frame_concat, local_kernel
):
    """In one teacher-forced pass, noised frame j gets the velocity a plain pass gives the last
    frame of [clean 0 .. j-1, noised j]: what the sampler computes for a new frame."""
    model = _perturbed(build_dynamics("tiny", attention=attention, frame_concat=frame_concat,
                                      local_kernel=local_kernel))
    t = 5
    clean, noised = torch.randn(2, t, 4, 8, 8), torch.randn(2, t, 4, 8, 8)
    s_clean, s_noised = torch.rand(2, t) * 0.2, torch.rand(2, t)
    d = torch.rand(2, t)
    actions = torch.randint(0, 4, (2, t - 1))
    null = torch.rand(2, t - 1) < 0.3
    v = model(torch.cat([clean, noised], 1), torch.cat([s_clean, s_noised], 1), actions,
              step_size=torch.cat([torch.zeros(2, t), d], 1), null_mask=null, teacher=True)
    assert v.shape == (2, 2 * t, 4, 8, 8)
    plain = model(clean, s_clean, actions, step_size=torch.zeros(2, t), null_mask=null)
    torch.testing.assert_close(v[:, :t], plain, atol=1e-5, rtol=1e-4)
    for j in range(t):
        z = torch.cat([clean[:, :j], noised[:, j : j + 1]], 1)
        s = torch.cat([s_clean[:, :j], s_noised[:, j : j + 1]], 1)
        step = torch.cat([torch.zeros(2, j), d[:, j : j + 1]], 1)
        one = model(z, s, actions[:, :j], step_size=step, null_mask=null[:, :j])[:, -1]
        torch.testing.assert_close(v[:, t + j], one, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="2T"):
        model(torch.randn(1, 3, 4, 8, 8), torch.rand(1, 3), torch.randint(0, 4, (1, 1)), teacher=True)
