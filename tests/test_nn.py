"""Layers of worldsim.nn owned by the dynamics model: RoPE, attention + KV cache, adaLN, patches."""

import pytest
import torch

from worldsim.nn.adaln import ActionEmbedder, TimestepEmbedder, modulate
from worldsim.nn.attention import Attention, KVCache
from worldsim.nn.patchify import PatchEmbed, patchify, unpatchify
from worldsim.nn.rope import AxialRotaryEmbedding, apply_rope, grid_positions, split_pairs


def test_rope_dot_product_depends_only_on_relative_position():
    torch.manual_seed(0)
    rope = AxialRotaryEmbedding(head_dim=16, num_axes=2)
    q, k = torch.randn(16), torch.randn(16)

    def score(pq, pk):
        cos, sin = rope(torch.tensor([pq, pk]))
        rq = apply_rope(q[None], cos[:1], sin[:1])[0]
        rk = apply_rope(k[None], cos[1:], sin[1:])[0]
        return float(rq @ rk)

    base = score((3, 5), (1, 2))
    assert score((10, 9), (8, 6)) == pytest.approx(base, abs=1e-4)  # same (2, 3) offset
    assert score((3, 5), (2, 2)) != pytest.approx(base, abs=1e-3)  # different offset


def test_rope_is_a_rotation():
    rope = AxialRotaryEmbedding(head_dim=12, num_axes=3)
    x = torch.randn(2, 24, 12)
    cos, sin = rope(grid_positions(2, 3, 4))
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # Position 0 is the identity.
    torch.testing.assert_close(y[:, 0], x[:, 0])
    assert split_pairs(6, 3) == [2, 2, 2] and split_pairs(8, 3) == [3, 3, 2]


def test_rope_bad_sizes_raise():
    with pytest.raises(ValueError, match="even head_dim"):
        AxialRotaryEmbedding(7, 1)
    with pytest.raises(ValueError, match="positions"):
        AxialRotaryEmbedding(8, 2)(torch.zeros(5, 3))


def test_patchify_round_trip_and_errors():
    z = torch.randn(2, 3, 4, 8, 6)
    tokens = patchify(z, 2)
    assert tokens.shape == (2, 3, 12, 16)
    torch.testing.assert_close(unpatchify(tokens, 2, 8, 6), z)
    assert PatchEmbed(4, 32, 2)(z).shape == (2, 3, 12, 32)
    with pytest.raises(ValueError, match="not divisible by patch size 3"):
        patchify(z, 3)


def test_modulate_and_timestep_embedder():
    x = torch.randn(2, 5)
    torch.testing.assert_close(modulate(x, torch.zeros(5), torch.zeros(5)), x)
    emb = TimestepEmbedder(16)
    out = emb(torch.rand(3, 4))
    assert out.shape == (3, 4, 16)
    assert not torch.allclose(emb(torch.zeros(1)), emb(torch.ones(1)))


def test_action_embedder_alignment_and_errors():
    emb = ActionEmbedder(8, "discrete", num_actions=3)
    seq = emb.sequence(torch.tensor([[0, 2]]), batch=1, frames=3)
    assert seq.shape == (1, 3, 8)
    torch.testing.assert_close(seq[0, 0], emb.start)  # frame 0 has no action
    torch.testing.assert_close(seq[0, 2], emb.codes.weight[2])  # frame t+1 sees a_t
    masked = emb.sequence(torch.tensor([[0, 2]]), 1, 3, null_mask=torch.tensor([[False, True]]))
    torch.testing.assert_close(masked[0, 2], emb.null)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        emb(torch.tensor([3]))
    with pytest.raises(ValueError, match="leading shape"):
        emb.sequence(torch.tensor([[0, 1, 2]]), 1, 3)
    both = ActionEmbedder(8, "both", num_actions=3, action_dim=2)
    assert both((torch.tensor([1, 2]), torch.randn(2, 2))).shape == (2, 8)
    with pytest.raises(ValueError, match="tuple"):
        both(torch.tensor([1]))
    with pytest.raises(ValueError, match="action_embedding"):
        ActionEmbedder(8, "joystick", 3)


@pytest.mark.parametrize("kind", ["temporal", "block"])
def test_attention_is_causal_in_time(kind):
    torch.manual_seed(0)
    attn = Attention(16, 2, kind, cache_index=0)
    x = torch.randn(2, 4, 6, 16)
    y = attn(x, (2, 3))
    x2 = x.clone()
    x2[:, 2:] = torch.randn_like(x2[:, 2:])
    y2 = attn(x2, (2, 3))
    torch.testing.assert_close(y[:, :2], y2[:, :2])
    assert not torch.allclose(y[:, 2:], y2[:, 2:])


@pytest.mark.parametrize("layout", ["temporal", "block"])
def test_kv_cache_ring_roll_reset_select_assign(layout):
    cache = KVCache(num_layers=2, batch=3, window=2, tokens=4, heads=1, head_dim=2, layout=layout)
    first = cache.k.data_ptr()
    for value in (1.0, 2.0, 3.0):
        for layer in range(2):
            kv = torch.full((3, 1, 4, 1, 2), value)
            cache.write_current(layer, kv, kv, stage=True)
        cache.commit()
    assert cache.k.data_ptr() == first  # written in place, never reallocated
    assert (cache.clock, cache.head) == (3, 0)
    assert cache.filled.tolist() == [2, 2, 2]
    ck, _ = cache.layer(0)
    window = ck.reshape(-1)[: ck.numel()]
    values = cache.k[0].movedim(cache._slot_dim, 0)[cache.physical(torch.arange(2))]
    assert values.unique().tolist() == [2.0, 3.0]  # oldest frame rolled out
    assert window.unique().tolist() == [1.0, 2.0, 3.0]  # ...into the free slot, for the next frame
    # a read pass writes only the free slot; the window is untouched
    cache.write_current(0, torch.full((3, 1, 4, 1, 2), 9.0), torch.full((3, 1, 4, 1, 2), 9.0))
    values = cache.k[0].movedim(cache._slot_dim, 0)[cache.physical(torch.arange(2))]
    assert values.unique().tolist() == [2.0, 3.0]
    cache.reset(torch.tensor([False, True, False]))
    assert cache.filled.tolist() == [2, 0, 2]
    assert cache.valid().tolist() == [[True, True], [False, False], [True, True]]
    mask = cache.mask()
    per_world = mask.reshape(3, -1)
    assert per_world.sum(1).tolist() == [3 * 4, 1 * 4, 3 * 4]  # world 1 sees only its new frame
    sub = cache.select([1])
    assert sub.batch == 1 and sub.filled.tolist() == [0] and (sub.clock, sub.head) == (3, 0)
    sub.filled[:] = 1
    cache.assign([1], sub)
    assert cache.filled.tolist() == [2, 1, 2]
    stale = KVCache(2, 1, 2, 4, 1, 2, layout=layout)
    stale.filled[:] = 1
    with pytest.raises(ValueError, match="clock"):
        cache.assign([1], stale)
    with pytest.raises(ValueError, match="mask must be bool"):
        cache.reset(torch.tensor([1, 0, 1]))
    with pytest.raises(RuntimeError, match="staged nothing"):
        cache.commit()
