"""The batched, KV-cached Simulator on untrained tiny bundles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.bundle import load_bundle
from worldsim.data import Episode
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions

DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny bundle whose dynamics predicts non-zero velocities (the zero-initialised output
    layer is randomised, so samples depend on context, action and noise)."""
    path = untrained_bundle(tmp_path_factory.mktemp("sim") / "w", action_space=DISCRETE3)
    b = load_bundle(path)
    torch.manual_seed(1)
    for p in b.dynamics.parameters():
        if p.abs().sum() == 0 and p.dim() > 0:
            p.data.normal_(0, 0.2)
    return b


def _sim(bundle, batch=1, history=0, **fields):
    return load_simulator(bundle, WorldOptions(**{"seed": 0, **fields}), batch=batch, history=history)


def test_step_shapes_and_lazy_decode(bundle):
    sim = _sim(bundle, batch=3)
    first = sim.reset(decode=True)
    assert first.latents.shape == (3, 4, 8, 8) and first.frames.shape == (3, 32, 32, 3)
    out = sim.step(torch.tensor([0, 1, 3]))
    assert out.frames is None
    assert out.reward.shape == (3,) and out.terminated.dtype == torch.bool
    assert out.uncertainty.shape == (3,) and torch.isfinite(out.uncertainty).all()
    frames = sim.render()
    assert frames.dtype == torch.uint8 and frames.shape == (3, 32, 32, 3)
    assert sim.render() is frames  # decoded once per step
    assert torch.equal(sim.step(torch.tensor([2, 2, 2]), decode=True).frames, sim.render())
    assert sim.steps_taken.tolist() == [2, 2, 2]


def test_same_seed_repeats_and_actions_matter(bundle):
    runs = []
    for seed in (5, 5, 6):
        sim = _sim(bundle, batch=2, seed=seed)
        sim.reset()
        runs.append(torch.stack([sim.step(torch.tensor([1, 2])).latents for _ in range(4)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sim = _sim(bundle, batch=1)
    sim.reset(0, generator=g())
    a = sim.step(torch.tensor([0])).latents
    sim.reset(0, generator=g())
    b = sim.step(torch.tensor([3])).latents
    assert not torch.allclose(a, b)


def test_masked_reset_leaves_other_worlds_alone(bundle):
    a, b = _sim(bundle, batch=2, seed=3), _sim(bundle, batch=2, seed=3)
    for sim in (a, b):
        sim.reset([0, 1])
        sim.step(torch.tensor([1, 1]))
    a.reset(2, mask=torch.tensor([True, False]))
    assert a.steps_taken.tolist() == [0, 1]
    za, zb = a.step(torch.tensor([0, 2])).latents, b.step(torch.tensor([0, 2])).latents
    torch.testing.assert_close(za[1], zb[1])
    assert not torch.allclose(za[0], zb[0])
    with pytest.raises(ValueError, match="mask must be bool"):
        a.reset(mask=torch.tensor([1, 0]))


def test_every_kind_of_context(bundle, tmp_path):
    from PIL import Image

    sim = _sim(bundle, batch=2)
    k = sim.context_frames
    frames = np.random.default_rng(0).integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
    z = sim.reset(frames).latents
    torch.testing.assert_close(z[0], z[1])  # broadcast to both worlds
    torch.testing.assert_close(z, sim.encode(frames[None])[:, -1].expand(2, -1, -1, -1))
    ep = Episode(frames=np.concatenate([frames, frames]), actions=np.array([0, 1, 2]))
    sim.reset(ep)
    big = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "pic.png")
    sim.reset(str(tmp_path / "pic.png"))  # resized from 48x64 to 32x32
    sim.reset(big[:32, :32])
    sim.reset(torch.tensor([3, 0]), batch=2)
    assert sim.step(torch.tensor([0, 0])).latents.shape == (2, 4, 8, 8)
    sim.reset(batch=5)
    assert sim.batch == 5
    with pytest.raises(ValueError, match=r"index must lie in \[0, 4\)"):
        sim.reset(7)
    with pytest.raises(ValueError, match="uint8 frames"):
        sim.reset(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="no image file"):
        sim.reset(str(tmp_path / "missing.png"))


def test_real_actions_go_through_the_binding(bundle):
    sim = _sim(bundle, batch=3, action_type="real")
    codes = sim.model_actions(torch.tensor([0, 1, 2]))
    assert codes.tolist() == bundle.binding.action_to_code.clip(0).tolist()
    sim.reset()
    sim.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"real actions must lie in \[0, 3\)"):
        sim.step(torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"integers \[3\]"):
        sim.step(torch.tensor([0.5, 1.0, 0.0]))
    sim.step(torch.tensor([3, 0, 1]), action_type="latent")


def test_both_and_real_sources(tmp_path):
    both = load_simulator(
        untrained_bundle(tmp_path / "both", action_source="both", action_space=DISCRETE3),
        WorldOptions(seed=0),
        batch=2,
    )
    codes, onehot = both.model_actions(torch.tensor([0, 3]))
    assert onehot.shape == (2, 3) and codes.tolist() == [0, 3]
    both.reset()
    both.step(torch.tensor([0, 3]))
    real = load_simulator(
        untrained_bundle(
            tmp_path / "real",
            action_source="real",
            action_space={"type": "box", "shape": [2], "low": [-1, -1], "high": [1, 1]},
        )
    )
    real.reset()
    real.step(torch.zeros(1, 2), action_type="real")
    with pytest.raises(ValueError, match="has no latent actions"):
        real.step(torch.tensor([0]))


def test_uncertainty_is_the_euler_revision(bundle):
    sim = _sim(bundle, batch=2, sampler_steps=4)
    sim.reset()
    assert (sim.step(torch.tensor([0, 1])).uncertainty > 0).all()
    one = _sim(bundle, batch=2, sampler_steps=1)
    one.reset()
    assert torch.equal(one.step(torch.tensor([0, 1])).uncertainty, torch.zeros(2))


def test_rewind_restores_earlier_states(bundle):
    sim = _sim(bundle, history=4)
    sim.reset(0)
    seen = [sim.step(torch.tensor([i % 4])).latents for i in range(3)]
    assert sim.rewind(2) == 2
    torch.testing.assert_close(sim.render(), sim.decode(seen[0]))
    assert sim.steps_taken.tolist() == [1]
    assert sim.rewind(10) == 1 and sim.steps_taken.tolist() == [0]
    assert sim.rewind() == 0
    for _ in range(6):
        sim.step(torch.tensor([0]))
    assert sim.rewind(100) == 4  # only the last `history` steps are kept
    with pytest.raises(RuntimeError, match="history > 0"):
        _sim(bundle).rewind()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_memory_stays_flat_over_10000_steps(tmp_path):
    sim = load_simulator(untrained_bundle(tmp_path / "w", heads=False), WorldOptions(sampler_steps=1, seed=0))
    sim.reset()
    shapes = (sim.cache.k.shape, sim.cache.v.shape)
    act = torch.tensor([1])
    for i in range(10_000):
        sim.step(act)
        if i == 999:
            base = _rss_mb()
    assert (sim.cache.k.shape, sim.cache.v.shape) == shapes
    assert int(sim.cache.filled[0]) == sim.window
    assert _rss_mb() - base < 16, "resident memory grew over the rollout"


def test_policies_and_the_rollout_command(bundle, tmp_path):
    from worldsim.cli import run_command
    from worldsim.rollout import policy_actions

    rng = np.random.default_rng(0)
    sticky = policy_actions("sticky", 4, 200, 3, stickiness=0.9, rng=rng)
    rand = policy_actions("random", 4, 200, 3, rng=rng)
    changes = lambda a: (a[1:] != a[:-1]).mean()  # noqa: E731
    assert sticky.shape == (200, 3) and changes(sticky) < 0.2 < changes(rand)
    with pytest.raises(ValueError, match="policy must be one of"):
        policy_actions("greedy", 4, 2, 1, rng=rng)
    out = tmp_path / "roll.mp4"
    paths = run_command(
        "rollout",
        [
            f"bundle={bundle.path}",
            f"out={out}",
            "steps=6",
            "num_worlds=3",
            "policy=sticky",
            "world.sampler_steps=1",
        ],
    )
    assert paths == [out] and out.stat().st_size > 0
    import imageio.v3 as iio

    video = iio.imread(out)
    assert video.shape == (7, 2 * 32 * 4 + 8, 2 * 32 * 4 + 8, 3)  # 2x2 grid, sep 2 px x4
    paths = run_command(
        "rollout",
        [
            f"bundle={bundle.path}",
            f"out={tmp_path / 'w.gif'}",
            "steps=2",
            "num_worlds=2",
            "grid=false",
            "world.action_type=real",
        ],
    )
    assert [p.name for p in paths] == ["w_0.gif", "w_1.gif"]


def test_termination_threshold_or_sampled(bundle, monkeypatch):
    """A head that gives every transition p = 0.3: thresholded worlds never end, sampled ones end
    at that rate, reproducibly for a seed."""
    monkeypatch.setattr(
        bundle.heads,
        "predict",
        lambda z_prev, z, a: {"reward": torch.zeros(len(z)), "termination_prob": torch.full((len(z),), 0.3)},
    )
    ends = {}
    for termination, seed in (("threshold", 0), ("sample", 0), ("sample", 0), ("sample", 1)):
        sim = _sim(bundle, batch=400, termination=termination, seed=seed)
        sim.reset()
        ends.setdefault(termination, []).append(torch.stack([sim.step(torch.zeros(400, dtype=torch.long)).terminated for _ in range(3)]))
    assert not ends["threshold"][0].any()
    first, again, other = ends["sample"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(first.float().mean().item() - 0.3) < 0.05
    with pytest.raises(ValueError, match=r"termination must be one of \('threshold', 'sample'\)"):
        _sim(bundle, termination="always")


@pytest.mark.parametrize("chunk", [None, 3])
def test_frames_match_the_reference_implementation(tmp_path, chunk):
    """The ring-buffer KV cache draws the same worlds as the Simulator it replaced (frames kept in
    tests/data/simulator_reference.npz): one world, a batch, and resets mid-batch, in both
    attention layouts, in one pass or in chunks of 3 worlds. Tolerance 1e-4 in normalised latent
    units (float32; the runs differ only in summation order)."""
    from tests.reference_simulator import REFERENCE, reference_runs

    reference = np.load(REFERENCE)
    runs = reference_runs(tmp_path / "bundle", chunk=chunk)
    assert sorted(runs) == sorted(reference.files)
    for name, frames in runs.items():
        np.testing.assert_allclose(frames, reference[name], atol=1e-4, rtol=0, err_msg=name)
