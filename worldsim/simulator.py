"""The Simulator: B generated worlds stepped at once, in pure torch (no gymnasium, no pygame).

``reset(context)`` encodes real frames (a bundle start context, a dataset episode, or a single
picture) with the autoencoder, normalises the latents with the bundle's per-channel stats, and
prefills the dynamics' KV cache; ``step(actions)`` samples the next latent of every world with
the flow sampler (``worldsim.flow.sample_next``), which writes the finished frame back into the
cache, and reads reward and termination from the dynamics' own readout of the new frame
(``worldsim/readout.py``) when it has one, else from the heads on ``(z_t, a_t, z_t+1)``. Frames are decoded only
when asked (``step(..., decode=True)`` or ``render()``), so agents that act on latents never pay
for the decoder.

How the worlds run (action type, sampler steps, termination rule, precision, device, ...) is one
:class:`~worldsim.world_options.WorldOptions`, passed whole: ``Simulator(bundle, options)``.

Implementation details:

1. **Rolling window.** The cache keeps the last ``window`` frames (default: the dynamics'
   ``context_window``); the cache's tensors have a fixed shape, so memory is flat however long
   a rollout runs (``tests/test_simulator.py`` checks 10,000 steps).
2. **Partial reset.** ``reset(mask=...)`` prefills a copy of the chosen worlds' cache slots and
   writes it back (``KVCache.select`` / ``assign``); the other worlds continue untouched. This
   is what the vector env's auto-reset uses.
3. **Actions.** ``WorldOptions.action_type="latent"`` (default) takes latent action codes,
   ``"real"`` the game's actions (``step(..., action_type=...)`` overrides it for one call).
   The bundle's :class:`~worldsim.actions.ActionSetup` converts them to what the dynamics was
   trained on (its ``action_source``) through the binding; a real action the binding never saw maps to code 0,
   a code never bound maps to real action 0 (NOOP in Atari-style games). When the bundle has
   an action adapter (``worldsim.action_adapter``), a real action becomes the code the adapter
   gives it in the world's current frame instead of the binding's one code per action: the
   LAM's codes depend on the state (a step, a push into a wall, ...), the binding's do not.
4. **Context actions.** When a context comes without actions in the model's form, the bundle's
   latent action model (if any) labels its transitions; otherwise they get the dynamics' learned
   ``null`` action (the one classifier-free guidance is trained with).
5. **Uncertainty** (``StepResult.uncertainty``): the root-mean-square gap, in normalised latent
   units, between the sampler's first clean-frame estimate ``x0 = x_1 - v(x_1, 1)`` (a one-step
   guess from pure noise) and the final sample. Where the model is sure of the next frame the
   Euler steps barely revise the first guess; where it hesitates they move far. It costs
   nothing extra; with ``sampler_steps=1`` it is 0 by construction.
6. **Rewind.** With ``history=H > 0`` the Simulator keeps copies of the cache, the last latent
   and the step counters from before each of the last ``H`` steps (a ring of snapshots);
   ``rewind(n)`` restores the state of ``n`` steps ago. Memory: ``H`` cache copies, so keep it
   for the viewer (B=1) and leave it 0 for batched training.
7. **Termination.** ``WorldOptions.termination="threshold"`` (default) ends a world when the head's
   probability exceeds 0.5; ``"sample"`` draws the end from that probability (Bernoulli, the
   Simulator's generator). A head that gives a real death p = 0.3 never ends a thresholded world
   there, while a sampled world ends 30% of the time: agents learn to fear it.
   ``termination_scale=k`` multiplies the probability first (capped at 1): pessimism about
   endings, for a model that draws fewer of them than the game has (default 1: the heads' own).
8. **Precision.** ``WorldOptions.precision`` casts the networks and the cache (e.g.
   ``bfloat16``; a copy of each network, so the loaded bundle keeps its own). Whether it is faster depends on the
   machine and the batch (``benchmarks/bench_simulator.py --dtype bfloat16``). ``autocast=True`` runs the networks under bf16 autocast on
   CUDA (ignored on CPU).
9. **Chunks.** ``WorldOptions.chunk=k`` runs each cached pass (and the decoder) over at most k worlds at a
   time: the same frames (tested against one pass), with every intermediate tensor small enough
   to stay in the CPU's caches and to be reused by the allocator, so a batch of 1,024 worlds
   costs per frame what one of 32 does; with several CPU threads the chunks run side by side,
   one thread each. Default: ``worldsim.flow.CPU_CHUNK`` on a CPU, one pass on a GPU
   (``worldsim.flow.default_chunk``).

einops legend: b worlds, k context frames, c latent channels, h w latent grid, H W frame size.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from worldsim.bundle import Bundle, load_bundle
from worldsim.data.clips import resize_frames
from worldsim.data.episode import frames_to_tensor
from worldsim.flow import default_chunk, sample_next
from worldsim.nn.attention import KVCache
from worldsim.start_context import start_context
from worldsim.world_options import WorldOptions


@dataclass
class StepResult:
    """What one step (or a reset) of B worlds returns; tensors live on the Simulator's device."""

    latents: torch.Tensor  # [b, c, h, w] normalised latents of the newest frame
    reward: torch.Tensor  # [b] float32 (0 without reward head)
    terminated: torch.Tensor  # [b] bool (False without termination head)
    uncertainty: torch.Tensor  # [b] float32, see the module docstring (item 5)
    frames: torch.Tensor | None = None  # [b, H, W, 3] uint8, only when decoded


@dataclass
class _Snapshot:
    cache: KVCache
    z: torch.Tensor
    t: torch.Tensor


class Simulator:
    """B worlds of a bundle's world model, KV-cached, on CPU or CUDA.

    Args:
        bundle: a loaded :class:`~worldsim.bundle.Bundle` (see ``worldsim.load_simulator``).
        options: how the worlds run (:class:`~worldsim.world_options.WorldOptions`: action type,
            sampler steps, context noise, guidance, termination rule, precision, device, chunk,
            window, seed; default ``WorldOptions()``). ``reset(generator=...)`` replaces the
            generator its ``seed`` made.
        batch: number of worlds B (``reset(batch=...)`` changes it).
        history: snapshots kept for ``rewind``.
    """

    def __init__(
        self,
        bundle: Bundle,
        options: WorldOptions | None = None,
        *,
        batch: int = 1,
        history: int = 0,
    ) -> None:
        options = options if options is not None else WorldOptions()
        if not isinstance(options, WorldOptions):
            raise TypeError(f"Simulator: options must be a WorldOptions, got {type(options).__name__}")
        if batch < 1 or history < 0:
            raise ValueError(f"Simulator: need batch >= 1 and history >= 0; got {batch}, {history}")
        self.bundle = bundle
        self.options = options
        self.device = torch.device(options.device)
        self.dtype = options.dtype
        self.autoencoder = self._place(bundle.autoencoder)
        self.dynamics = self._place(bundle.dynamics)
        self.heads = self._place(bundle.heads)
        self.lam = self._place(bundle.lam)
        self.adapter = self._place(bundle.action_adapter)
        self.window = options.window or self.dynamics.cfg.context_window
        self.chunk = options.chunk if options.chunk is not None else default_chunk(self.device)
        self.generator = torch.Generator(self.device)
        seed = options.seed
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
        c = self.dynamics.cfg.latent_channels
        self._mean = bundle.latent_mean.to(self.device).view(1, c, 1, 1)
        self._std = bundle.latent_std.to(self.device).view(1, c, 1, 1)
        self._history: deque[_Snapshot] = deque(maxlen=history)
        self._alloc(batch)

    # ------------------------------------------------------------------ shapes and spaces
    @property
    def batch(self) -> int:
        return self.cache.batch

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.bundle.frame_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.dynamics.cfg
        return (cfg.latent_channels, cfg.latent_height, cfg.latent_width)

    @property
    def context_frames(self) -> int:
        """k: frames per start context of the bundle."""
        return int(self.bundle.contexts.shape[1])

    @property
    def latents(self) -> torch.Tensor:
        """``[b, c, h, w]`` normalised latents of every world's newest frame."""
        return self._z

    @property
    def steps_taken(self) -> torch.Tensor:
        """``[b]`` steps since each world's last reset."""
        return self._t

    def num_actions(self, action_type: str | None = None) -> int | None:
        """Number of discrete actions of a type (``None`` for a continuous real space)."""
        return self.bundle.actions.num_actions(action_type or self.options.action_type)

    def _place(self, module: nn.Module | None) -> nn.Module | None:
        """The module on the device, in eval mode. A precision other than the module's own is
        cast on a copy, so a loaded ``Bundle`` shared with other simulators keeps its own."""
        if module is None:
            return None
        param = next(module.parameters(), None)
        if param is not None and param.dtype != self.dtype:
            module = copy.deepcopy(module)
        return module.to(self.device, self.dtype).eval()

    def _alloc(self, batch: int) -> None:
        self.cache = self.dynamics.init_cache(
            batch, self.window, device=self.device, dtype=self.dtype
        )
        self._z = torch.zeros(batch, *self.latent_shape, device=self.device, dtype=self.dtype)
        self._t = torch.zeros(batch, dtype=torch.long, device=self.device)
        self._frames: torch.Tensor | None = None
        self._history.clear()

    def _amp(self):
        if self.options.autocast and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 frames ``[b, t, H, W, 3]`` -> normalised latents ``[b, t, c, h, w]``."""
        x = frames_to_tensor(
            torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        )
        with self._amp():
            z = self.autoencoder.encode(x.to(self.device, self.dtype))
        return ((z - self._mean[:, None]) / self._std[:, None]).to(self.dtype)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[b, c, h, w]`` -> uint8 frames ``[b, H, W, 3]`` (on the device),
        decoded ``chunk`` frames at a time."""
        parts = [z] if not self.chunk or len(z) <= self.chunk else z.split(self.chunk)
        frames = []
        for part in parts:
            with self._amp():
                x = self.autoencoder.decode((part * self._std + self._mean).to(self.dtype))
            frames.append(x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8))
        return torch.cat(frames).movedim(-3, -1)

    def render(self) -> torch.Tensor:
        """The newest frame of every world, uint8 ``[b, H, W, 3]`` (decoded once per step)."""
        if self._frames is None:
            self._frames = self.decode(self._z)
        return self._frames

    # ------------------------------------------------------------------ actions
    def model_actions(
        self,
        actions: Any,
        action_type: str | None = None,
        batch: int | None = None,
        latents: torch.Tensor | None = None,
    ):
        """Convert actions of a type (``[b]`` ints, or ``[b, a]`` continuous real ones) into the
        form the dynamics is conditioned on (the bundle's :class:`~worldsim.actions.ActionSetup`;
        module docstring, item 3). ``latents`` ``[b, c, h, w]``: the frames the actions are
        taken in, for the action adapter."""
        with self._amp():
            return self.bundle.actions.to_model(
                actions,
                action_type or self.options.action_type,
                self.batch if batch is None else batch,
                device=self.device,
                dtype=self.dtype,
                latents=latents,
                adapter=self.adapter,
                where=f"bundle {self.bundle.path}",
            )

    # ------------------------------------------------------------------ contexts
    def _context_actions(self, z: torch.Tensor, acts: Any, kind: str | None):
        """Context actions in the model's form, or ``None`` (null action)."""
        m, k = z.shape[:2]
        if k < 2:
            return None
        if kind == "model":
            if isinstance(acts, tuple):
                return tuple(torch.as_tensor(np.asarray(a), device=self.device) for a in acts)
            return torch.as_tensor(np.asarray(acts), device=self.device)
        if kind == "real":
            with contextlib.suppress(ValueError):
                flat = torch.from_numpy(np.array(acts)).reshape(m * (k - 1), *acts.shape[2:])
                out = self.model_actions(flat, "real", batch=m * (k - 1),
                                         latents=z[:, :-1].reshape(m * (k - 1), *z.shape[2:]))
                shape = lambda a: a.reshape(m, k - 1, *a.shape[1:])  # noqa: E731
                return tuple(shape(a) for a in out) if isinstance(out, tuple) else shape(out)
        if self.lam is not None and self.bundle.action_source == "latent":
            cfg = self.lam.cfg
            if cfg.input == "latent" and (
                cfg.in_channels,
                cfg.frame_height,
                cfg.frame_width,
            ) == tuple(z.shape[2:]):
                with self._amp():
                    return self.lam.infer_actions(z.to(self.dtype))
        return None

    # ------------------------------------------------------------------ reset / step
    @torch.no_grad()
    def reset(
        self,
        context: Any = None,
        *,
        batch: int | None = None,
        mask: Any = None,
        generator: torch.Generator | None = None,
        decode: bool = False,
    ) -> StepResult:
        """Start worlds from a context: ``None`` (random bundle contexts), an index or ``[b]``
        indices into them, uint8 frames ``[b, k, H, W, 3]`` / ``[k, H, W, 3]`` (broadcast), an
        :class:`~worldsim.data.Episode` (its first k frames and actions), or a single image
        (path or ``[H, W, 3]`` array: a one-frame context). ``mask [b]`` (bool) resets only
        those worlds; ``batch`` changes B (only for a full reset)."""
        if generator is not None:
            self.generator = generator
        if batch is not None and batch != self.batch:
            if mask is not None:
                raise ValueError("Simulator.reset: cannot change batch and reset by mask at once")
            self._alloc(batch)
        b = self.batch
        if mask is None:
            idx = torch.arange(b, device=self.device)
        else:
            mask = torch.as_tensor(mask, device=self.device)
            if mask.dtype != torch.bool or tuple(mask.shape) != (b,):
                raise ValueError(
                    f"Simulator.reset: mask must be bool [{b}], got {mask.dtype} {tuple(mask.shape)}"
                )
            idx = mask.nonzero().squeeze(1)
        m = int(idx.numel())
        if m == 0:
            return self._result(
                torch.zeros(b, device=self.device),
                torch.zeros(b, dtype=torch.bool, device=self.device),
                torch.zeros(b, device=self.device),
                decode,
            )
        frames, acts, kind = start_context(self.bundle, context, m, generator=self.generator)
        if tuple(frames.shape[2:4]) != self.frame_size:
            frames = resize_frames(frames.reshape(-1, *frames.shape[2:]), self.frame_size).reshape(
                m, frames.shape[1], *self.frame_size, 3
            )
        z = self.encode(frames)  # [m, k, c, h, w]
        ctx_actions = self._context_actions(z, acts, kind)
        with self._amp():
            if m == b:
                self.dynamics.prefill(self.cache, z, ctx_actions, self.options.context_noise)
            else:
                sub = self.cache.select(idx)
                self.dynamics.prefill(sub, z, ctx_actions, self.options.context_noise)
                self.cache.assign(idx, sub)
        self._z = self._z.index_copy(0, idx, z[:, -1])  # out of place: results stay valid
        self._t = self._t.index_fill(0, idx, 0)
        self._frames = None
        self._history.clear()
        zeros = torch.zeros(b, device=self.device)
        return self._result(zeros, zeros.bool(), zeros, decode)

    def _result(self, reward, terminated, uncertainty, decode) -> StepResult:
        return StepResult(
            self._z, reward, terminated, uncertainty, self.render() if decode else None
        )

    def snapshot(self) -> _Snapshot:
        """A copy of the worlds' state (cache, newest latent, step counters)."""
        return _Snapshot(self.cache.select(slice(None)), self._z.clone(), self._t.clone())

    def restore(self, snap: _Snapshot) -> None:
        """Return to a state taken by :meth:`snapshot` (same batch size)."""
        if snap.z.shape != self._z.shape:
            raise ValueError(
                f"Simulator.restore: snapshot of {snap.z.shape[0]} worlds, have {self.batch}"
            )
        self.cache = snap.cache.select(slice(None))
        self._z, self._t, self._frames = snap.z.clone(), snap.t.clone(), None

    def rewind(self, n: int = 1) -> int:
        """Undo up to ``n`` steps (needs ``history > 0``); returns how many were undone."""
        if self._history.maxlen == 0:
            raise RuntimeError("Simulator.rewind needs history > 0 (snapshots kept per step)")
        done = 0
        while done < n and self._history:
            snap = self._history.pop()
            done += 1
        if done:
            self.restore(snap)
        return done

    @torch.no_grad()
    def step(
        self, actions: Any, *, decode: bool = False, action_type: str | None = None
    ) -> StepResult:
        """Advance every world by one frame. ``actions``: ``[b]`` ints (latent codes or discrete
        real actions) or ``[b, a]`` continuous real actions; ``action_type`` overrides the
        Simulator's for this call."""
        a = self.model_actions(actions, action_type, latents=self._z)
        if self._history.maxlen:
            self._history.append(self.snapshot())
        z_prev = self._z
        with self._amp():
            sample = sample_next(
                self.dynamics,
                None,
                None,
                a,
                steps=self.options.sampler_steps,
                context_noise=self.options.context_noise,
                cfg_scale=self.options.cfg_scale,
                cache=self.cache,
                generator=self.generator,
                chunk=self.chunk,
            )
            z = sample.z.to(self.dtype)
            out = None
            if sample.readout is not None:
                out = self.dynamics.readout.predict(sample.readout)
            elif self.heads is not None:
                out = self.heads.predict(z_prev, z, a)
            if out is not None:
                reward = out["reward"].float()
                p = out["termination_prob"]
                if self.options.termination_scale != 1.0:
                    p = (p * self.options.termination_scale).clamp(max=1.0)
                if self.options.termination == "sample":
                    draw = torch.rand(p.shape, generator=self.generator, device=self.device)
                    terminated = draw < p.float()
                else:
                    terminated = p > 0.5
            else:
                reward = torch.zeros(self.batch, device=self.device)
                terminated = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        uncertainty = (sample.first - z).float().pow(2).mean(dim=(1, 2, 3)).sqrt()
        self._z, self._frames = z, None
        self._t += 1
        return self._result(reward, terminated, uncertainty, decode)


def load_simulator(
    path: str | os.PathLike | Bundle,
    options: WorldOptions | None = None,
    *,
    batch: int = 1,
    history: int = 0,
) -> Simulator:
    """Load a bundle (a directory, or an already loaded :class:`Bundle`) and wrap it in a
    :class:`Simulator` run with ``options`` (default ``WorldOptions()``)."""
    bundle = path if isinstance(path, Bundle) else load_bundle(path)
    return Simulator(bundle, options, batch=batch, history=history)


__all__ = ["Simulator", "StepResult", "load_simulator"]
