"""Latent action model and vector quantiser: shapes, gradients, no cheating, learning, labelling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.latent_action import (
    PRESETS,
    LatentActionConfig,
    LatentActionModel,
    config_from_preset,
    label_transitions,
    transition_windows,
)
from worldsim.metrics import normalized_mutual_information
from worldsim.nn.quantizer import VectorQuantizer

# The four known moves of the synthetic data: roll the grid by one cell (dim, step).
SHIFTS = [(-1, 1), (-1, -1), (-2, 1), (-2, -1)]


def rolling_clips(b: int, t: int, gen: torch.Generator, c: int = 4, s: int = 8):
    """Clips ``[b, t, c, s, s]`` of a random field moved by 4 known actions, and the actions."""
    frames = [torch.randn(b, c, s, s, generator=gen)]
    actions = torch.randint(0, len(SHIFTS), (b, t - 1), generator=gen)
    for j in range(t - 1):
        nxt = [
            torch.roll(frames[-1][i], SHIFTS[a][1], dims=SHIFTS[a][0])
            for i, a in enumerate(actions[:, j].tolist())
        ]
        frames.append(torch.stack(nxt))
    return torch.stack(frames, dim=1), actions


# ---------------------------------------------------------------------- quantizer
@pytest.mark.parametrize("update", ["ema", "loss"])
@pytest.mark.parametrize("cosine", [True, False])
def test_quantizer_shapes_and_straight_through(update, cosine):
    vq = VectorQuantizer(8, 6, update=update, cosine=cosine)
    z = torch.randn(3, 5, 6, requires_grad=True)
    out = vq(z)
    assert out.quantized.shape == (3, 5, 6) and out.indices.shape == (3, 5)
    assert out.indices.dtype == torch.int64
    # Forward values are exactly the chosen codes.
    torch.testing.assert_close(out.quantized.detach(), vq.lookup(out.indices), rtol=0, atol=0)
    # Straight-through: d(sum(w * q))/dz reaches z (through the l2 norm when cosine).
    w = torch.randn(3, 5, 6)
    (out.quantized * w).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    if not cosine:
        torch.testing.assert_close(z.grad, w)
    assert float(out.loss.detach()) > 0
    if update == "loss":
        assert vq.codebook.grad is None  # nothing backpropagated through the loss yet
        out2 = vq(z.detach())
        out2.loss.backward()
        assert vq.codebook.grad.abs().sum() > 0


def test_quantizer_nearest_matches_brute_force():
    vq = VectorQuantizer(5, 3, cosine=False)
    z = torch.randn(50, 3)
    brute = torch.cdist(z, vq.codes()).argmin(-1)
    assert torch.equal(vq.nearest(z), brute)


def test_dead_code_reset_revives_unused_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, dead_code_steps=5, cosine=True)
    # Every input sits near one direction, so one code wins and the others go unused.
    base = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for _ in range(5):
        vq(base + 0.01 * torch.randn(64, 4))
    assert int(vq.num_resets) > 0
    # The reset codes now lie among the recent inputs, so new data spreads over them.
    spread = torch.randn(512, 4) * 0.3 + base
    used = vq.nearest(spread).unique().numel()
    assert used >= 4
    # In eval mode nothing changes: no tracking, no resets.
    vq.eval()
    before = vq.codebook.clone(), int(vq.num_resets)
    for _ in range(10):
        vq(base.expand(16, 4))
    assert torch.equal(vq.codebook, before[0]) and int(vq.num_resets) == before[1]


def test_quantizer_usage_and_bad_input():
    vq = VectorQuantizer(4, 2, dead_code_steps=0, decay=0.9)
    for _ in range(60):
        vq(torch.randn(128, 2))
    usage = vq.usage()
    assert usage["codes_used"] >= 3 and 2.5 < usage["perplexity"] <= 4.0
    with pytest.raises(ValueError, match=r"expects \[\.\.\., 2\]"):
        vq(torch.randn(3, 5))
    with pytest.raises(ValueError, match="must lie in"):
        vq.lookup(torch.tensor([4]))
    with pytest.raises(ValueError, match="update must be one of"):
        VectorQuantizer(4, 2, update="kmeans")


def test_kmeans_init_puts_one_code_on_each_cluster():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(6)[:4]  # 4 orthogonal directions
    x = centres.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 6, generator=gen)
    vq = VectorQuantizer(4, 6, cosine=True)
    assert not bool(vq.initialized)
    counts = vq.kmeans_init(x)
    assert bool(vq.initialized) and counts.tolist() == [50.0] * 4
    # Each true direction has its own code, and the codes sit on the directions.
    idx = vq.nearest(centres)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(vq.codes()[idx], centres, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="at least num_codes=4 vectors"):
        vq.kmeans_init(torch.randn(3, 6))


def test_passthrough_fills_the_buffer_only_in_training():
    vq = VectorQuantizer(4, 3, cosine=True)
    z = torch.randn(10, 3)
    out = vq.passthrough(z)
    torch.testing.assert_close(out, torch.nn.functional.normalize(z, dim=-1))
    assert int(vq.recent_count) == 10
    vq.eval()
    vq.passthrough(z)
    assert int(vq.recent_count) == 10


# ---------------------------------------------------------------------- model
def test_warmup_runs_continuous_then_switches_to_kmeans_codes():
    torch.manual_seed(0)
    model = LatentActionModel(config_from_preset("tiny", warmup_steps=3))
    x = torch.randn(4, 3, 4, 8, 8)
    for _step in range(3):
        assert model.warming_up
        out = model.loss(x)
        # Continuous bottleneck: no quantiser loss, and the gradient reaches the encoder.
        assert float(out["commitment"]) == 0.0 and not bool(model.quantizer.initialized)
        out["loss"].backward()
        assert model.encoder.head[-1].weight.grad.abs().sum() > 0
    before = model.quantizer.codebook.clone()
    # Eval-mode passes neither count as training steps nor switch the bottleneck.
    model.eval()
    model(x)
    assert int(model.train_steps) == 3 and not bool(model.quantizer.initialized)
    model.train()
    out = model.loss(x)  # the first quantised step: k-means on the warm-up's encoder outputs
    assert not model.warming_up and bool(model.quantizer.initialized)
    assert not torch.equal(model.quantizer.codebook, before)
    assert float(out["commitment"]) > 0.0
    # The codes now quantise: the decoder input is exactly a codebook entry.
    z = model.encode(*[t.flatten(0, 1) for t in transition_windows(x, 1)])
    torch.testing.assert_close(
        model.quantizer(z).quantized, model.quantizer.lookup(model.quantizer.nearest(z))
    )
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        config_from_preset("tiny", warmup_steps=-1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # latent input, 4 x 8 x 8
        {
            "input": "pixel",
            "in_channels": 3,
            "frame_height": 16,
            "frame_width": 16,
            "pixel_downsample": 2,
        },
        {"context": 3, "num_codes": 5, "quantizer_update": "loss"},
        {"decoder_levels": 2, "recon_weighting": "change"},  # U-Net decoder down to 2x2
    ],
)
def test_model_shapes(overrides):
    cfg = config_from_preset("tiny", **overrides)
    model = LatentActionModel(cfg)
    x = torch.randn(2, 5, cfg.in_channels, cfg.frame_height, cfg.frame_width)
    out = model.loss(x)
    assert out["loss"].requires_grad and out["loss"].dim() == 0
    for key in ("recon", "commitment", "codebook", "perplexity", "codes_used"):
        assert out[key].dim() == 0
    assert out["codes"].shape == (2, 4)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    codes = model.infer_actions(x)
    assert codes.shape == (2, 4) and codes.dtype == torch.int64
    assert int(codes.max()) < cfg.num_codes
    pred = model.decode_with_action(x[:, :2], torch.tensor([0, 1]))
    assert pred.shape == (2, cfg.in_channels, cfg.frame_height, cfg.frame_width)
    assert model.decode_with_action(x[:, 0], 2).shape == pred.shape
    assert set(model.codebook_usage()) == {"perplexity", "codes_used", "dead", "resets"}


def test_transition_windows_pad_with_first_frame():
    x = torch.arange(4.0).view(1, 4, 1, 1, 1)
    past, nxt = transition_windows(x, context=3)
    assert past.shape == (1, 3, 3, 1, 1, 1)
    assert past[0, :, :, 0, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2]]
    assert nxt[0, :, 0, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("levels", [0, 2])
def test_decoder_never_sees_the_next_frame(levels):
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", context=2, decoder_levels=levels)
    model = LatentActionModel(cfg).eval()  # frozen codebook
    x = torch.randn(3, 4, 4, 8, 8)
    x2 = x.clone()
    x2[:, -1] = torch.randn(3, 4, 8, 8)  # change only the last frame
    out, out2 = model(x), model(x2)
    # The encoder sees x_{t+1}: the last transition's continuous action changes...
    assert not torch.allclose(out["actions"][:, -1], out2["actions"][:, -1])
    # ...earlier transitions are untouched (causality of the windows).
    torch.testing.assert_close(out["pred"][:, :-1], out2["pred"][:, :-1], rtol=0, atol=0)
    # Given a fixed code, the decoder's output does not depend on x_{t+1} at all.
    past = x[:, 1:3]
    for code in range(model.cfg.num_codes):
        a = model.decode_with_action(past, code)
        past_grad = past.clone().requires_grad_(True)
        b = model.decode_with_action(past_grad, code)
        torch.testing.assert_close(a, b)
    # Where the code is the same, the prediction is bit-identical even though x_{t+1} differs.
    same = out["codes"][:, -1] == out2["codes"][:, -1]
    torch.testing.assert_close(out["pred"][same, -1], out2["pred"][same, -1], rtol=0, atol=0)
    # And the gradient of a fixed-code prediction w.r.t. the clip is zero at x_{t+1}.
    xg = x.clone().requires_grad_(True)
    model.decode_with_action(xg[:, :3], 1).sum().backward()
    assert xg.grad[:, 3].abs().max() == 0 and xg.grad[:, 2].abs().max() > 0


def test_short_training_discovers_the_moves():
    """Tiny model, 4 known moves of a random field: NMI well above chance within seconds."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = LatentActionModel(config_from_preset("tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x, _ = rolling_clips(32, 3, gen)
        out = model.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    x, actions = rolling_clips(256, 2, torch.Generator().manual_seed(1))
    codes = model.infer_actions(x)
    nmi = normalized_mutual_information(codes.numpy(), actions.numpy())
    assert nmi > 0.4, f"NMI {nmi:.3f} after training (chance is ~0)"
    # Labelling a whole "episode" agrees with infer_actions on the same frames.
    episode = x[0]
    episode = torch.cat([x[0], rolling_clips(1, 6, gen)[0][0]])  # [8, c, h, w]
    labels = label_transitions(model, [episode, episode[:3].numpy()], batch_size=3)
    assert [lab.shape for lab in labels] == [(7,), (2,)]
    np.testing.assert_array_equal(labels[0], model.infer_actions(episode[None])[0].numpy())


def test_change_weighting_makes_small_changes_count():
    """recon_weighting="change": one transition's error over its own change, so a transition
    that barely changed and one that changed a lot weigh the same when both are missed."""
    model = LatentActionModel(config_from_preset("tiny", recon_weighting="change", warmup_steps=0))
    model.eval()
    past = torch.zeros(2, 1, 4, 8, 8)
    big = torch.ones(1, 1, 4, 8, 8)
    small = torch.zeros(1, 1, 4, 8, 8)
    small[..., :2, :2] = 1.0  # 1/16 of the cells change
    x = torch.cat([past, torch.cat([big, small])], dim=1)  # [2, 2, 4, 8, 8]
    # A decoder that predicts "no change" misses each transition by exactly its own change.
    for p in model.decoder.head[-1].parameters():
        torch.nn.init.zeros_(p)
    out = model.loss(x)
    plain = float(out["recon"])
    weighted = float((out["loss"] - out["commitment"] * model.cfg.beta).detach())
    # Plain MSE: the big change dominates, (1 + 1/16) / 2. Weighted: both count alike.
    assert plain == pytest.approx((1 + 1 / 16) / 2, rel=1e-5)
    change = torch.tensor([1.0, 1 / 16])
    w = 1 / (change + model.cfg.change_floor * change.mean())
    assert weighted == pytest.approx(float((change * w / w.mean()).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="recon_weighting must be one of"):
        config_from_preset("tiny", recon_weighting="l1")
    with pytest.raises(ValueError, match="decoder_levels=4"):
        config_from_preset("tiny", decoder_levels=4)


def test_presets_and_config_errors():
    assert {"tiny", "quickstart", "base"} <= set(PRESETS)
    assert LatentActionConfig().num_codes == 8 and config_from_preset("quickstart").num_codes == 16
    assert config_from_preset("tiny", num_codes=4).num_codes == 4
    with pytest.raises(ValueError, match="unknown latent action preset 'huge'"):
        config_from_preset("huge")
    with pytest.raises(ValueError, match=r"unknown latent action config field\(s\) \['num_code'\]"):
        config_from_preset("tiny", num_code=4)
    with pytest.raises(ValueError, match="input must be one of"):
        config_from_preset("tiny", input="video")
    with pytest.raises(ValueError, match="multiple of the stem"):
        config_from_preset("quickstart_pixel", frame_height=30)
    model = LatentActionModel(config_from_preset("tiny"))
    with pytest.raises(ValueError, match=r"expects a clip \[b, t>=2, 4, 8, 8\]"):
        model.loss(torch.randn(2, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="label_transitions: episode 0"):
        label_transitions(model, [torch.randn(5, 3, 8, 8)])
