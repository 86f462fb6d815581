"""Frame autoencoder: shapes, causality of temporal compression, input checks, fast learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.autoencoder import (
    PRESETS,
    Autoencoder,
    AutoencoderConfig,
    config_from_dict,
    config_from_preset,
)


def pixel_art(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic pixel-art frames ``[n, 3, size, size]`` in [-1, 1]: flat background,
    tiles and sprites from a fixed 6-colour palette."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(7).uniform(-1, 1, (6, 3)).astype(np.float32)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        f = np.broadcast_to(palette[0][:, None, None], (3, size, size)).copy()
        for k in range(1, 6):
            y, x = rng.integers(0, size - 6, 2)
            f[:, y : y + 6, x : x + 6] = palette[k][:, None, None]
        out[i] = f
    return torch.from_numpy(out)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("patch", [1, 2])
@pytest.mark.parametrize("f", [4, 8, 16])
def test_shapes_for_each_spatial_compression(f: int, patch: int) -> None:
    ae = Autoencoder(config_from_preset("tiny", spatial_compression=f, patch_size=patch))
    assert ae.cfg.num_stages == {4: 2, 8: 3, 16: 4}[f] - (patch - 1)
    x = pixel_art(6).reshape(2, 3, 3, 32, 32)  # b t c H W
    z = ae.encode(x)
    assert z.shape == (2, 3, 4, 32 // f, 32 // f)
    assert ae.latent_shape(32, 32) == (4, 32 // f, 32 // f)
    assert ae.decode(z).shape == x.shape
    # frame batches without a time axis: [n, 3, H, W] -> [n, c, h, w] -> [n, 3, H, W]
    z4 = ae.encode(x[0])
    assert z4.shape == (3, 4, 32 // f, 32 // f)
    torch.testing.assert_close(z4, z[0], rtol=1e-4, atol=1e-5)
    assert ae.decode(z4).shape == x[0].shape


def test_encode_is_deterministic_and_decode_clamps() -> None:
    ae = Autoencoder(PRESETS["tiny"])
    x = pixel_art(4)
    torch.testing.assert_close(ae.encode(x), ae.encode(x))
    assert not torch.equal(ae.encode(x, sample=True), ae.encode(x))
    big = ae.encode(x) * 1e3
    out = ae.decode(big)
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("k", [2, 4])
def test_temporal_compression_shapes(k: int) -> None:
    ae = Autoencoder(config_from_preset("tiny", temporal_compression=k))
    x = pixel_art(16).reshape(2, 8, 3, 32, 32)
    z = ae.encode(x)
    assert z.shape == (2, 8 // k, 4, 8, 8)
    assert ae.decode(z).shape == x.shape
    loss = ae.loss(x)
    assert torch.isfinite(loss["loss"])


@pytest.mark.parametrize("k", [2, 4])
def test_temporal_compression_is_causal(k: int) -> None:
    ae = Autoencoder(config_from_preset("tiny", temporal_compression=k)).eval()
    # Make the zero-initialised residual branches non-trivial so the test can fail.
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = pixel_art(8).reshape(1, 8, 3, 32, 32)
    z = ae.encode(x)
    for j in range(8 // k - 1):
        changed = x.clone()
        changed[:, (j + 1) * k :] = pixel_art(8 - (j + 1) * k, seed=99)
        z2 = ae.encode(changed)
        torch.testing.assert_close(z2[:, : j + 1], z[:, : j + 1])  # past latents unchanged
        assert not torch.allclose(z2[:, j + 1], z[:, j + 1])  # the changed block does move
    # Decoder: frames of latent block j depend on latents <= j only.
    y = ae.decode(z, clamp=False)
    z3 = z.clone()
    z3[:, -1] += 1.0
    y3 = ae.decode(z3, clamp=False)
    torch.testing.assert_close(y3[:, :-k], y[:, :-k])
    assert not torch.allclose(y3[:, -k:], y[:, -k:])


def test_wrong_frames_raise_naming_shapes() -> None:
    ae = Autoencoder(PRESETS["tiny"])
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\].*got \[2, 3, 64, 64\]"):
        ae.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"got \[2, 1, 32, 32\]"):
        ae.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        ae.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"latents .*\[N, 4, 8, 8\], got \[2, 5, 8, 8\]"):
        ae.decode(torch.zeros(2, 5, 8, 8))
    with pytest.raises(ValueError, match="T divisible by 2"):
        Autoencoder(config_from_preset("tiny", temporal_compression=2)).encode(
            torch.zeros(1, 3, 3, 32, 32)
        )
    with pytest.raises(ValueError, match="not divisible"):
        ae.latent_shape(30, 32)


def test_unknown_preset_and_field_raise() -> None:
    with pytest.raises(ValueError, match=r"unknown autoencoder preset 'huge'.*tiny, quickstart"):
        config_from_preset("huge")
    with pytest.raises(ValueError, match=r"\['widht'\].*allowed fields: .*width"):
        config_from_preset("tiny", widht=8)
    with pytest.raises(ValueError, match="spatial_compression must be one of"):
        config_from_preset("tiny", spatial_compression=2)
    with pytest.raises(ValueError, match="patch_size must be 1 or 2"):
        config_from_preset("tiny", patch_size=4)
    with pytest.raises(ValueError, match="temporal_compression must be one of"):
        AutoencoderConfig(temporal_compression=3)
    cfg = config_from_preset("quickstart", latent_channels=4)
    assert cfg.latent_channels == 4 and PRESETS["quickstart"].latent_channels != 4
    assert config_from_dict(cfg.to_dict()) == cfg
    for name in ("tiny", "quickstart", "base", "large"):
        assert name in PRESETS


def test_fingerprint_tracks_weights() -> None:
    a = Autoencoder(PRESETS["tiny"])
    b = Autoencoder(PRESETS["tiny"])
    assert a.fingerprint() != b.fingerprint()
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() == b.fingerprint()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core CPU, spinning OpenMP threads cost more than
    they give for these tiny convolutions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("variational", [True, False])
def test_tiny_learns_a_fixed_batch(variational: bool, one_thread) -> None:
    ae = Autoencoder(config_from_preset("tiny", variational=variational))
    x = pixel_art(12, seed=3)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = ae.loss(x)
    assert set(first) >= {"loss", "l1", "mse", "psnr", "kl" if variational else "latent_l2"}
    for _ in range(120):
        out = ae.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    ae.eval()
    with torch.no_grad():
        final = ae.loss(x)
    assert final["loss"] < 0.2 * first["loss"].item()
    assert final["psnr"] > first["psnr"] + 10
