"""Flow matching with per-frame noise levels (diffusion forcing), shortcut steps, and the sampler.

The network is an argument everywhere (as in DiT's ``diffusion.training_losses(model, ...)``):
anything with the interface of :class:`worldsim.dynamics.DynamicsModel` works.

**Convention (rectified flow).** A noise level ``s`` in [0, 1] per frame, ``s = 0`` clean data,
``s = 1`` pure Gaussian noise: ``x_s = (1 - s) x_0 + s eps``. The network predicts the velocity
``v = dx_s/ds = eps - x_0``; sampling integrates from ``s = 1`` down to 0 with Euler steps
``x_{s-d} = x_s - d v(x_s, s, d)``.

**Diffusion forcing (Chen et al. 2024).** In training every frame of a clip draws its own
``s``, so the model learns to denoise a frame given context at any noise level and to trust a
slightly noisy history, which limits rollout drift. Levels come from
:func:`sample_noise_levels`: each frame is a low-noise *context* frame or a *target* frame, the
last frame always a target, and a fraction of clips are in "generation mode" (clean history,
noisy last frame: the regime the sampler works in). Only target frames count in the loss by
default, so the loss keeps asking for what only the action can tell: where the next frame moved.

**Shortcut models (Frans et al. 2024).** The network also sees the step size ``d`` it is asked
to take. ``d = 0`` is plain flow matching. For a fraction of the clips, frames draw
``d = 2^-k`` (k < ``shortcut_levels``) and ``s`` on the grid of ``d``, and are trained toward a
self-consistency target: the average velocity of two half steps taken by the same network
(without gradient). Two half steps at the finest level use ``d = 0``. After training, 1, 2 or 4
Euler steps per frame label their step size and stay sharp.

**Classifier-free guidance.** In training each transition's action is replaced by the learned
``null`` action with probability ``cfg_dropout``; the sampler can mix
``v = v_null + w (v_action - v_null)`` for the new frame.

einops legend: b batch, t time, c latent channels, h w latent grid, a action dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldsim.nn.adaln import ActionInput
from worldsim.nn.attention import KVCache


# --- action helpers (actions are a tensor or, for action_embedding='both', a tuple) --------------
def map_actions(actions: ActionInput | None, fn) -> ActionInput | None:
    """``fn`` applied to the action tensor, or to each tensor of a ``both`` pair."""
    if actions is None:
        return None
    if isinstance(actions, tuple):
        return tuple(fn(a) for a in actions)
    return fn(actions)


def _action_at(actions: ActionInput, i: int) -> ActionInput:
    """Step ``i`` of an action sequence ``[b, H, ...]`` -> ``[b, ...]``."""
    return map_actions(actions, lambda a: a[:, i])


def _cat_actions(first: ActionInput | None, new: ActionInput) -> ActionInput:
    """Append one step ``new [b, ...]`` to a sequence ``first [b, t, ...]`` (or start one)."""
    if first is None:
        return map_actions(new, lambda a: a[:, None])
    if isinstance(first, tuple):
        return tuple(torch.cat([f, n[:, None].to(f.dtype)], 1) for f, n in zip(first, new))
    return torch.cat([first, new[:, None].to(first.dtype)], dim=1)


# --- training --------------------------------------------------------------------------------
TARGET_NOISE = ("uniform", "logit_normal")


def sample_noise_levels(
    batch: int,
    frames: int,
    *,
    context_prob: float = 0.25,
    clean_prob: float = 0.5,
    context_noise_max: float = 0.2,
    target_noise: str = "uniform",
    device=None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame noise levels for diffusion forcing: ``-> (s [b, t], context [b, t] bool)``.

    Every frame is either a *context* frame, at a low level ``U(0, context_noise_max)`` (the
    regime of the sampler's clean, slightly-labelled history), or a *target* frame, whose level
    is drawn from ``target_noise`` (``uniform`` on (0, 1], or ``logit_normal`` (0, 1)). Frames
    are context with probability ``clean_prob``, independently; with probability
    ``context_prob`` a whole clip is in generation mode (every frame but the last is context).
    The last frame of a clip is always a target.

    Why: a frame can only learn to read its action when the frame before it is (nearly) clean
    and it is itself noisy; with independent uniform levels on every frame that pairing is rare
    and the loss is dominated by frames whose content is readable from their own noisy pixels,
    so the network learns to copy and ignores the action.
    """
    if target_noise not in TARGET_NOISE:
        raise ValueError(f"target_noise must be one of {TARGET_NOISE}, got {target_noise!r}")
    for name, p in (("context_prob", context_prob), ("clean_prob", clean_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"sample_noise_levels: {name} must lie in [0, 1], got {p}")
    if not 0.0 <= context_noise_max < 1.0:
        raise ValueError(f"context_noise_max must lie in [0, 1), got {context_noise_max}")

    def rand(*shape):
        return torch.rand(*shape, device=device, generator=generator)

    if target_noise == "uniform":
        s = 1.0 - rand(batch, frames)  # (0, 1]: pure noise included, exact data excluded
    else:
        s = torch.sigmoid(torch.randn(batch, frames, device=device, generator=generator))
    not_last = (torch.arange(frames, device=device) < frames - 1)[None]  # [1, t]
    context = (rand(batch, frames) < clean_prob) | (rand(batch, 1) < context_prob)
    context = context & not_last  # [b, t]
    s = torch.where(context, rand(batch, frames) * context_noise_max, s)
    return s, context


def training_loss(
    net,
    z: torch.Tensor,
    actions: ActionInput | None,
    *,
    cfg_dropout: float = 0.1,
    context_prob: float = 0.25,
    clean_prob: float = 0.5,
    context_noise_max: float = 0.2,
    context_loss_weight: float = 0.0,
    target_noise: str = "uniform",
    shortcut_fraction: float = 0.25,
    shortcut_levels: int = 6,
    rewards: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    readout_weight: float = 1.0,
    self_forcing: float = 0.0,
    self_forcing_steps: int = 1,
    teacher_forcing: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Flow-matching loss of ``net`` on clean latent clips ``z [b, t, c, h, w]``.

    ``actions``: ``[b, t-1]`` codes, ``[b, t-1, a]`` vectors, a tuple of both, or ``None``.
    Noise levels come from :func:`sample_noise_levels`; context frames (low levels, never
    denoised by the sampler) weigh ``context_loss_weight`` in the loss, target frames 1.
    Returns ``loss`` (to minimise) and its parts ``flow_loss`` (target frames with d = 0) and
    ``shortcut_loss`` (frames trained toward self-consistency targets; 0 when there are none).

    When the network has a reward/termination readout (``net.readout``, worldsim/readout.py) and
    ``rewards`` / ``terminated`` ``[b, t-1]`` are given, the readout of every frame (at its own
    noise level) is trained with them in the same pass, weighted by ``readout_weight``;
    transitions whose action was dropped for guidance are left out. Adds ``readout_loss`` and
    its parts ``readout_reward_loss`` / ``readout_termination_loss``.

    ``self_forcing``: the fraction of clips in generation mode (every frame but the last is
    context) whose history the network draws itself before the loss (:func:`self_forced`), so
    that it learns to predict the real next frame from its own drifting frames; 0 trains on
    real histories only. Adds ``self_forced`` (the fraction of clips that were).

    ``teacher_forcing``: every frame after the first is a target with a clean history, in one
    pass: the network sees the clip's T frames at context levels followed by the same frames
    noised (``DynamicsModel.forward(..., teacher=True)``), each noised frame attending to the
    clean frames before it and to itself. ``context_prob`` and ``clean_prob`` are then unused
    (frame 0, which has no history, is the one context frame); the readout learns on the clean
    half, the frames the sampler's write pass reads it from. Not with ``self_forcing``.
    """
    if z.dim() != 5:
        raise ValueError(f"training_loss expects latents [b, t, c, h, w], got {tuple(z.shape)}")
    for name, p in (
        ("cfg_dropout", cfg_dropout),
        ("shortcut_fraction", shortcut_fraction),
        ("context_loss_weight", context_loss_weight),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"training_loss: {name} must lie in [0, 1], got {p}")
    b, t = z.shape[:2]
    dev = z.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=generator)

    eps = torch.randn(z.shape, device=dev, generator=generator, dtype=z.dtype)
    if teacher_forcing and self_forcing > 0:
        raise ValueError("training_loss: teacher_forcing and self_forcing exclude each other")
    s, context = sample_noise_levels(
        b,
        t,
        context_prob=0.0 if teacher_forcing else context_prob,
        clean_prob=0.0 if teacher_forcing else clean_prob,
        context_noise_max=context_noise_max,
        target_noise=target_noise,
        device=dev,
        generator=generator,
    )
    def call(x, s, acts, *, rows=None, **kw):  # rows: the teacher-forced pass's subset
        return net(x, s, acts, **kw)

    if teacher_forcing:
        context[:, 0] = True
        s = torch.where(context, rand(b, t) * context_noise_max, s)
        call = _teacher_call(net, z, rand(b, t) * context_noise_max, generator)

    forced = None
    if self_forcing > 0 and t >= 4:
        z, forced = self_forced(net, z, actions, context, self_forcing, steps=self_forcing_steps,
                                generator=generator)

    d = torch.zeros(b, t, device=dev)
    shortcut = (
        bool(getattr(net.cfg, "shortcut", False)) and shortcut_fraction > 0 and shortcut_levels > 0
    )
    rows = (
        (rand(b) < shortcut_fraction) if shortcut else torch.zeros(b, dtype=torch.bool, device=dev)
    )
    moving = rows[:, None] & ~context  # [b, t]: frames taking a shortcut step
    if moving.any():
        k = torch.randint(0, shortcut_levels, (b, t), device=dev, generator=generator)
        d_big = torch.pow(2.0, -k.float())  # [b, t]
        # s on the grid of d, at least one step above 0: s = d * j, j in 1 .. 1/d.
        j = torch.floor(rand(b, t) * torch.pow(2.0, k.float())) + 1
        s = torch.where(moving, d_big * j, s)
        d = torch.where(moving, d_big, d)

    null_mask = None
    if actions is not None and cfg_dropout > 0 and t > 1:
        null_mask = rand(b, t - 1) < cfg_dropout

    sv = s[..., None, None, None]
    x = (1 - sv) * z + sv * eps
    target = eps - z
    step_arg = d if shortcut else None

    if moving.any():
        with torch.no_grad():
            idx = rows.nonzero().squeeze(1)
            sub = lambda a: a[idx]  # noqa: E731
            xs, ss, ds, mv = x[idx], s[idx], d[idx], moving[idx]
            half = ds / 2
            finest = 2.0 ** (-shortcut_levels)
            half_label = torch.where(half <= finest + 1e-9, torch.zeros_like(half), half)
            acts, nm = map_actions(actions, sub), None if null_mask is None else null_mask[idx]
            hv = half[..., None, None, None]
            v1 = call(xs, ss, acts, step_size=half_label, null_mask=nm, rows=idx)
            x1 = torch.where(mv[..., None, None, None], xs - hv * v1, xs)
            v2 = call(x1, ss - half, acts, step_size=half_label, null_mask=nm, rows=idx)
            boot = ((v1 + v2) / 2).to(target.dtype)  # under autocast (bf16-mixed) the net's output is bf16
            sc_target = target[idx].clone()
            sc_target[mv] = boot[mv]
            target = target.clone()
            target[idx] = sc_target

    read = getattr(net, "readout", None) is not None and (
        rewards is not None or terminated is not None
    )
    pred = call(x, s, actions, step_size=step_arg, null_mask=null_mask, readout=read)
    if read:
        pred, events = pred
    err = (pred.float() - target.float()).pow(2).mean(dim=(2, 3, 4))  # [b, t]
    weight = torch.where(context, context_loss_weight, 1.0)  # [b, t]
    loss = (err * weight).sum() / weight.sum()
    flow_frames = ~moving & ~context
    zero = loss.new_zeros(())
    out = {
        "loss": loss,
        "flow_loss": err[flow_frames].mean() if flow_frames.any() else zero,
        "shortcut_loss": err[moving].mean().detach() if moving.any() else zero,
    }
    if forced is not None:
        out["self_forced"] = forced.float().mean()
    if read:
        keep = None if null_mask is None else ~null_mask
        parts = net.readout.loss(events, rewards, terminated, mask=keep)
        out["loss"] = loss + readout_weight * parts["loss"]
        out.update({f"readout_{k}": v for k, v in parts.items()})
    return out


def _teacher_call(net, z: torch.Tensor, s_clean: torch.Tensor, generator):
    """``net`` as :func:`training_loss` calls it on a clip's ``[b, t]`` frames, run as a
    teacher-forced pass: the clean half (``z`` noised to ``s_clean``) goes first, the output is
    the noised half's (and the readout's on the clean half). ``rows``: the clips of a subset."""
    eps = torch.randn(z.shape, device=z.device, generator=generator, dtype=z.dtype)
    sv = s_clean[..., None, None, None]
    clean = (1 - sv) * z + sv * eps

    def call(x, s, actions, *, step_size=None, null_mask=None, readout=False, rows=None):
        c, sc = (clean, s_clean) if rows is None else (clean[rows], s_clean[rows])
        t = x.shape[1]
        step = None if step_size is None else torch.cat([torch.zeros_like(step_size), step_size], 1)
        out = net(torch.cat([c.to(x.dtype), x], 1), torch.cat([sc, s], 1), actions,
                  step_size=step, null_mask=null_mask, readout=readout, teacher=True)
        if not readout:
            return out[:, t:]
        v, events = out
        return v[:, t:], {k: e[:, :t] for k, e in events.items()}

    return call


@torch.no_grad()
def self_forced(
    net,
    z: torch.Tensor,
    actions: ActionInput | None,
    context: torch.Tensor,
    fraction: float,
    *,
    steps: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips whose history the network generated itself: ``-> (z', rows [b] bool)``.

    Among the clips in generation mode (``context [b, t]`` true on every frame but the last), a
    ``fraction`` keep their first ``k`` real frames (``k`` drawn in ``2 .. t-2``, one per batch)
    and have frames ``k .. t-2`` replaced by the network's own KV-cached rollout from them
    (:func:`rollout`, ``steps`` Euler / shortcut steps, the clip's actions), as the sampler
    would draw them. The last frame stays real: it is the target, now predicted from a drifted
    history. Rewards and terminations keep their real values, so a readout learns to read
    events from generated frames too. Without actions (an unconditional model) no clip is.
    """
    b, t = z.shape[:2]
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"self_forcing must lie in [0, 1], got {fraction}")
    dev = z.device
    rows = context[:, :-1].all(dim=1) & (torch.rand(b, device=dev, generator=generator) < fraction)
    if actions is None:  # an unconditional model: no rollout API without actions, so no rows
        rows = torch.zeros_like(rows)
    if t < 4 or not rows.any():
        return z, rows
    idx = rows.nonzero().squeeze(1)
    k = int(torch.randint(2, t - 1, (1,), device=dev, generator=generator))
    sub = map_actions(actions, lambda a: a[idx])
    ctx_a = map_actions(sub, lambda a: a[:, : k - 1])
    future = map_actions(sub, lambda a: a[:, k - 1 : t - 2])
    was_training = net.training
    net.eval()
    try:
        drawn = rollout(net, z[idx, :k], ctx_a, future, steps=steps, generator=generator)
    finally:
        net.train(was_training)
    z = z.clone()
    z[idx, k : t - 1] = drawn.to(z.dtype)
    return z, rows


# --- sampling --------------------------------------------------------------------------------
def _step_label(
    net, steps: int, batch: int, device, shortcut_levels: int = 6
) -> torch.Tensor | None:
    if not getattr(net.cfg, "shortcut", False):
        return None
    d = 1.0 / steps
    if d <= 2.0 ** (-shortcut_levels) + 1e-9:
        d = 0.0
    return torch.full((batch,), d, device=device)


def _guided(v_cond: torch.Tensor, v_null: torch.Tensor | None, cfg_scale: float) -> torch.Tensor:
    return v_cond if v_null is None else v_null + cfg_scale * (v_cond - v_null)


@dataclass
class FrameSample:
    """What :func:`sample_next` returns for B worlds.

    ``z [b, c, h, w]``: the new frame. ``first [b, c, h, w]``: the sampler's first estimate of
    the clean frame, ``x_1 - v(x_1, 1)`` (a one-step guess from pure noise, before guidance).
    ``readout``: with a network that has a readout, its raw outputs for the new frame
    (``reward_logits [b, k]``, ``termination_logit [b]``), read with the frame labelled as
    context (``None`` otherwise)."""

    z: torch.Tensor
    first: torch.Tensor
    readout: dict[str, torch.Tensor] | None = None


CPU_CHUNK = 32  # worlds per cached pass on a CPU (DynamicsModel.step, docs/simulator.md)


def default_chunk(device: torch.device | str) -> int | None:
    """Worlds per cached pass on ``device``: ``CPU_CHUNK`` on a CPU, one pass elsewhere."""
    return CPU_CHUNK if torch.device(device).type == "cpu" else None


@torch.no_grad()
def sample_next(
    net,
    context_z: torch.Tensor | None,
    context_actions: ActionInput | None,
    action: ActionInput,
    *,
    steps: int = 4,
    context_noise: float = 0.1,
    cfg_scale: float = 1.0,
    cache: KVCache | None = None,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
) -> FrameSample:
    """Generate the frame that follows the context through ``action`` (a :class:`FrameSample`).

    Args:
        context_z: clean context ``[b, t0, c, h, w]`` with ``context_actions`` (its ``t0 - 1``
            transitions). With a ``cache``: if given, the cache is prefilled from it first;
            if ``None``, the cache already holds the context (continuing a rollout).
        action: ``[b]`` codes, ``[b, a]`` vectors or a tuple of both: the transition to take.
        steps: Euler steps from noise to data (1, 2, 4, ... with shortcut training).
        context_noise: the noise level that labels the clean context frames.
        cfg_scale: classifier-free guidance weight on the action (1.0 = off).
        cache: a :class:`KVCache` from ``net.init_cache``; the finished frame is written into it.
        generator: torch RNG for the initial noise.
        chunk: cached passes run over at most this many worlds at a time (``DynamicsModel.step``).
    """
    if steps < 1:
        raise ValueError(f"sample_next: steps must be >= 1, got {steps}")
    cfg = net.cfg
    shape = (cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    if cache is not None:
        if context_z is not None:
            net.prefill(cache, context_z, context_actions, context_noise)
        b = cache.batch
    else:
        if context_z is None:
            raise ValueError("sample_next: give context_z, or a cache that holds the context")
        b = context_z.shape[0]
    device = next(net.parameters()).device
    dtype = context_z.dtype if context_z is not None else cache.k.dtype
    x = torch.randn((b, *shape), generator=generator, device=device, dtype=dtype)
    d = _step_label(net, steps, b, device)
    guide = cfg_scale != 1.0
    read = getattr(net, "readout", None) is not None
    first = None

    if cache is None:
        # Uncached twin: a full pass over the whole history, windowed like the cache
        # (frame 0 of the history keeps its 'start' label, as in the prefilled cache).
        window = cfg.context_window
        seq_actions = _cat_actions(context_actions, action)
        t = context_z.shape[1] + 1
        level = torch.full((b, t), float(context_noise), device=device)
        null_mask = torch.zeros(b, t - 1, dtype=torch.bool, device=device)
        null_mask[:, -1] = True
        for i in range(steps):
            s = 1.0 - i / steps
            level[:, -1] = s
            step = (
                None
                if d is None
                else torch.cat([torch.zeros(b, t - 1, device=device), d[:, None]], 1)
            )
            seq = torch.cat([context_z, x[:, None]], dim=1)
            v = net(seq, level, seq_actions, step_size=step, window=window)[:, -1]
            if first is None:
                first = x - v
            v_null = (
                net(seq, level, seq_actions, step_size=step, null_mask=null_mask, window=window)[
                    :, -1
                ]
                if guide
                else None
            )
            x = x - (1.0 / steps) * _guided(v, v_null, cfg_scale)
        events = None
        if read:  # the finished frame labelled as context, as the cached path's write pass
            level[:, -1] = float(context_noise)
            seq = torch.cat([context_z, x[:, None]], dim=1)
            _, events = net(seq, level, seq_actions, window=window, readout=True)
            events = {k: e[:, -1] for k, e in events.items()}
        return FrameSample(x, first, events)

    for i in range(steps):
        s = torch.full((b,), 1.0 - i / steps, device=device)
        v = net.step(cache, x, s, action, step_size=d, chunk=chunk)
        if first is None:
            first = x - v
        v_null = net.step(cache, x, s, None, step_size=d, chunk=chunk) if guide else None
        x = x - (1.0 / steps) * _guided(v, v_null, cfg_scale)
    # Store the finished frame's keys/values, labelled as clean-ish context (and read it out).
    out = net.step(cache, x, torch.full((b,), float(context_noise), device=device), action,
                   write=True, readout=read, chunk=chunk)
    return FrameSample(x, first, out[1] if read else None)


@torch.no_grad()
def rollout(
    net,
    context_z: torch.Tensor,
    context_actions: ActionInput | None,
    actions: ActionInput,
    *,
    steps: int = 4,
    context_noise: float = 0.1,
    cfg_scale: float = 1.0,
    window: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    readout: bool = False,
    chunk: int | None = None,
):
    """Autoregressive generation of ``H`` frames after the context: ``actions [b, H(, a)] ->
    z [b, H, c, h, w]``. With ``use_cache=False`` every frame is recomputed from the whole
    history (slow; the reference the cached path must match). With ``readout=True`` (a network
    with a readout) returns ``(z, readout)``, the readout's raw outputs of each generated frame
    stacked on dim 1 (``reward_logits [b, H, k]``, ``termination_logit [b, H]``). ``chunk``:
    worlds per cached pass (``sample_next``; ``None``: :func:`default_chunk` of the device)."""
    horizon = actions[0].shape[1] if isinstance(actions, tuple) else actions.shape[1]
    b = context_z.shape[0]
    kw = dict(steps=steps, context_noise=context_noise, cfg_scale=cfg_scale, generator=generator)
    if readout and getattr(net, "readout", None) is None:
        raise ValueError("rollout(readout=True): the network has no readout (DynamicsConfig.readout)")
    samples: list[FrameSample] = []
    if use_cache:
        cache = net.init_cache(b, window, dtype=context_z.dtype)
        net.prefill(cache, context_z, context_actions, context_noise)
        chunk = chunk or default_chunk(context_z.device)
        for i in range(horizon):
            samples.append(
                sample_next(net, None, None, _action_at(actions, i), cache=cache, chunk=chunk, **kw)
            )
    else:
        if window is not None and window != net.cfg.context_window:
            raise ValueError("rollout(use_cache=False) uses net.cfg.context_window; pass window=None")
        hist_z, hist_a = context_z, context_actions
        for i in range(horizon):
            a_i = _action_at(actions, i)
            samples.append(sample_next(net, hist_z, hist_a, a_i, **kw))
            hist_z = torch.cat([hist_z, samples[-1].z[:, None]], dim=1)
            hist_a = _cat_actions(hist_a, a_i)
    z = torch.stack([f.z for f in samples], dim=1)
    if not readout:
        return z
    return z, {k: torch.stack([f.readout[k] for f in samples], dim=1) for k in samples[0].readout}


def velocity_loss_floor(z: torch.Tensor) -> float:
    """Loss of predicting ``v = 0``: ``E|eps - x0|^2`` = 1 + E[x0^2] (a reference for logs)."""
    return 1.0 + float(z.float().pow(2).mean())


__all__ = [
    "FrameSample",
    "training_loss",
    "sample_next",
    "rollout",
    "velocity_loss_floor",
    "map_actions",
]
