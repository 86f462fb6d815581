"""Latent-space planners: CEM and MPPI over sequences of discrete actions (continuous ones:
:mod:`agents.gaussian_planner`).

A planner searches action sequences ``[T]`` (T = ``horizon``) of latent codes for the one the
world model scores best, from a context of real frames. It talks to the model only through
:class:`PlanningModel` (``set_context(frames, population)``, ``rollout(actions [p, T])``,
``encode(frame)``), so it sees frames and latents, never a game's state.
:class:`SimulatorModel` implements it over a batched :class:`~worldsim.simulator.Simulator`:
the population is the batch; the context is encoded and prefilled once per plan, snapshotted,
and restored before each iteration's rollout.

Objectives (``[p, T, ...]`` latents and ``[p, T]`` rewards -> ``[p]`` scores):

- :class:`RewardObjective`: the discounted sum of the bundle's predicted rewards;
- :class:`GoalObjective`: closeness to a goal image's latent (the goal frame encoded by the
  bundle's autoencoder): the negative MSE at the closest step of the imagined trajectory, so
  reaching the goal at any step within the horizon counts (replanning keeps the agent there).

Search distributions are per-step categoricals ``probs [T, a]`` (uniform at first):

- **CEM**: sample ``population`` sequences, keep the ``elites`` best, move the categoricals
  towards the elites' action frequencies: ``probs <- (1 - alpha) probs + alpha freq``. Executes
  the best sequence seen.
- **MPPI** (softmax-weighted categorical updates, the discrete analogue of MPPI's weighted
  mean): weights ``w = softmax(score / temperature)`` over the whole population,
  ``freq[t, a] = sum_i w_i [a_i,t = a]``, same smoothed update. Executes the mode of the final
  distribution per step (MPPI's estimate), not a single sample.

Both keep the best sequence seen so far in the population (elitism) and warm-start the next
plan from the previous distribution shifted by the executed steps, mixed with uniform.

**Budget.** One model call is one world advanced by one step. A plan costs exactly
``population x iterations x horizon`` calls (``model_calls``); with replanning every ``k``
steps, the budget per executed action is that divided by ``k`` (``calls_per_action``).

einops legend: p population, t horizon step, a actions, c h w latent shape, k context frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.data.clips import resize_frames
from worldsim.simulator import Simulator

PLANNERS = ("cem", "mppi")


class PlanningModel(Protocol):
    """What a planner needs from a world model."""

    num_actions: int

    def set_context(self, frames: np.ndarray, population: int) -> None:
        """Start ``population`` copies of the world from uint8 frames ``[k, H, W, 3]``."""

    def rollout(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the context, play ``actions [p, t]``: latents ``[p, t, ...]``, rewards ``[p, t]``."""

    def encode(self, frame: np.ndarray) -> torch.Tensor:
        """A uint8 frame ``[H, W, 3]`` -> its latent ``[...]`` (the goal of a goal objective)."""


class SimulatorModel:
    """:class:`PlanningModel` over a Simulator (batched population).

    It plans over the actions of the Simulator's ``options.action_type``: ``latent`` codes, or
    the game's ``real`` actions: discrete ones, which a latent-code world plays as each action's
    most frequent code (a smaller search space, and only codes the dynamics saw often), or a
    ``Box`` (``num_actions`` is then ``None``; plan with
    :class:`~agents.gaussian_planner.GaussianPlanner`).
    """

    def __init__(self, sim: Simulator) -> None:
        action_type = sim.options.action_type
        n = sim.num_actions(action_type)
        self.sim, self.action_type = sim, action_type
        self.action_space = sim.bundle.actions.gym_space(action_type, f"bundle {sim.bundle.path}")
        self.num_actions = None if n is None else int(n)  # None: a Box (GaussianPlanner)
        self._snap = None

    def _frames(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(frames))
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"SimulatorModel: frames must be uint8 [k, H, W, 3], got {x.dtype} {tuple(x.shape)}"
            )
        return resize_frames(x, self.sim.frame_size)

    def set_context(self, frames: np.ndarray, population: int) -> None:
        self.sim.reset(self._frames(frames), batch=population)
        self._snap = self.sim.snapshot()

    def rollout(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._snap is None:
            raise RuntimeError("SimulatorModel.rollout called before set_context")
        self.sim.restore(self._snap)
        latents, rewards = [], []
        for t in range(actions.shape[1]):
            out = self.sim.step(actions[:, t].to(self.sim.device), action_type=self.action_type)
            latents.append(out.latents.float())
            rewards.append(out.reward.float())
        return torch.stack(latents, 1), torch.stack(rewards, 1)

    def encode(self, frame: np.ndarray) -> torch.Tensor:
        return self.sim.encode(self._frames(np.asarray(frame)[None])[None])[0, 0].float()


class RewardObjective:
    """Discounted sum of predicted rewards."""

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = gamma

    def __call__(self, latents: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        discounts = self.gamma ** torch.arange(rewards.shape[1], device=rewards.device)
        return (rewards * discounts).sum(1)


class GoalObjective:
    """Negative MSE to a goal latent at the trajectory's closest step (module docstring)."""

    def __init__(self, goal: torch.Tensor) -> None:
        self.goal = goal.float()

    def __call__(self, latents: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        if tuple(latents.shape[2:]) != tuple(self.goal.shape):
            raise ValueError(
                f"GoalObjective: latents {tuple(latents.shape[2:])} and goal {tuple(self.goal.shape)} differ"
            )
        mse = (latents - self.goal.to(latents.device)).pow(2).flatten(2).mean(-1)  # p t
        return -mse.min(1).values


def check_search(
    method: str, horizon: int, population: int, iterations: int, elites: int, alpha: float,
    temperature: float,
) -> None:
    """The arguments every sequence planner shares (discrete and Gaussian), or ``ValueError``."""
    if method not in PLANNERS:
        raise ValueError(f"planner method must be one of {PLANNERS}, got {method!r}")
    if min(horizon, population, iterations, elites) < 1 or elites > population:
        raise ValueError(
            f"planner: need horizon, population, iterations >= 1 and 1 <= elites <= population; "
            f"got {horizon}, {population}, {iterations}, {elites}"
        )
    if not (0 < alpha <= 1 and temperature > 0):
        raise ValueError(f"planner: need 0 < alpha <= 1 and temperature > 0; got {alpha}, {temperature}")


@dataclass
class PlanResult:
    actions: torch.Tensor  # [t] int64: the sequence to execute
    score: float  # the objective of the best sequence seen
    probs: torch.Tensor  # [t, a] the final search distribution
    model_calls: int  # worlds x steps this plan cost


class SequencePlanner:
    """CEM or MPPI (``method``) over categorical action sequences; see the module docstring."""

    def __init__(
        self,
        model: PlanningModel,
        objective,
        *,
        method: str = "cem",
        horizon: int = 8,
        population: int = 64,
        iterations: int = 3,
        elites: int = 8,
        alpha: float = 0.7,
        temperature: float = 0.1,
        warm_start_mix: float = 0.3,
        seed: int = 0,
    ) -> None:
        check_search(method, horizon, population, iterations, elites, alpha, temperature)
        if not 0 <= warm_start_mix <= 1:
            raise ValueError(f"planner: need 0 <= warm_start_mix <= 1; got {warm_start_mix}")
        self.model, self.objective, self.method = model, objective, method
        self.horizon, self.population, self.iterations, self.elites = (
            horizon,
            population,
            iterations,
            elites,
        )
        self.alpha, self.temperature, self.warm_start_mix = alpha, temperature, warm_start_mix
        self.generator = torch.Generator().manual_seed(seed)
        self.model_calls = 0
        self._probs: torch.Tensor | None = None
        self._best: torch.Tensor | None = None

    @property
    def calls_per_plan(self) -> int:
        return self.population * self.iterations * self.horizon

    def _uniform(self) -> torch.Tensor:
        a = self.model.num_actions
        return torch.full((self.horizon, a), 1.0 / a)

    def shift(self, executed: int) -> None:
        """Warm start: drop the ``executed`` first steps of the last distribution and best plan."""
        if self._probs is None:
            return
        uniform = self._uniform()
        probs = torch.cat([self._probs[executed:], uniform[: min(executed, self.horizon)]])
        self._probs = (1 - self.warm_start_mix) * probs + self.warm_start_mix * uniform
        tail = torch.randint(
            self.model.num_actions, (min(executed, self.horizon),), generator=self.generator
        )
        self._best = torch.cat([self._best[executed:], tail])

    @property
    def warm(self) -> bool:
        """Whether a previous plan exists to warm-start from."""
        return self._probs is not None

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self._probs = self._best = None

    def plan(self, context: np.ndarray) -> PlanResult:
        """Search from context frames ``[k, H, W, 3]`` (uint8); exactly ``calls_per_plan`` calls."""
        self.model.set_context(context, self.population)
        probs = self._uniform() if self._probs is None else self._probs.clone()
        best_seq, best_score, calls = self._best, -float("inf"), 0
        for _ in range(self.iterations):
            seqs = torch.multinomial(
                probs, self.population, replacement=True, generator=self.generator
            ).T  # p t
            if best_seq is not None:
                seqs[0] = best_seq  # elitism: the best sequence so far is always re-scored
            latents, rewards = self.model.rollout(seqs)
            calls += seqs.numel()
            scores = self.objective(latents, rewards).float().cpu()
            top = int(scores.argmax())
            if float(scores[top]) >= best_score:
                best_score, best_seq = float(scores[top]), seqs[top].clone()
            onehot = F.one_hot(seqs, self.model.num_actions).float()  # p t a
            if self.method == "cem":
                elite = scores.topk(self.elites).indices
                freq = onehot[elite].mean(0)
            else:
                weights = torch.softmax((scores - scores.max()) / self.temperature, 0)
                freq = torch.einsum("p,pta->ta", weights, onehot)
            probs = (1 - self.alpha) * probs + self.alpha * freq
        self.model_calls += calls
        self._probs, self._best = probs, best_seq
        actions = best_seq if self.method == "cem" else probs.argmax(-1)
        return PlanResult(actions.long(), best_score, probs, calls)


class PlanningAgent:
    """Model-predictive control from frames: plan, execute ``replan_every`` actions, replan.

    ``act(frame)`` takes the newest real frame (uint8 ``[H, W, 3]``) and returns an action (an
    int, or a float32 ``[a]`` array from a :class:`~agents.gaussian_planner.GaussianPlanner`);
    the last ``context_frames`` frames form the planner's context. Nothing else reaches it.
    """

    def __init__(
        self, planner, *, context_frames: int = 1, replan_every: int = 1
    ) -> None:
        if context_frames < 1 or not 1 <= replan_every <= planner.horizon:
            raise ValueError(
                f"PlanningAgent: need context_frames >= 1 and 1 <= replan_every <= horizon "
                f"({planner.horizon}); got {context_frames}, {replan_every}"
            )
        self.planner, self.replan_every = planner, replan_every
        self.frames: deque[np.ndarray] = deque(maxlen=context_frames)
        self.queue: list[int] = []

    @property
    def calls_per_action(self) -> float:
        return self.planner.calls_per_plan / self.replan_every

    def reset(self) -> None:
        self.frames.clear()
        self.queue = []
        self.planner.reset()

    def set_goal(self, goal_frame: np.ndarray) -> None:
        """Plan towards a goal image: the objective becomes a :class:`GoalObjective`."""
        self.planner.objective = GoalObjective(self.planner.model.encode(goal_frame))

    def act(self, frame: np.ndarray) -> int | np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"PlanningAgent.act takes a uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}"
            )
        self.frames.append(frame)
        if not self.queue:
            if self.planner.warm:
                self.planner.shift(self.replan_every)
            result = self.planner.plan(np.stack(self.frames))
            self.queue = list(result.actions[: self.replan_every].numpy())
        action = self.queue.pop(0)
        return int(action) if action.ndim == 0 else np.asarray(action, np.float32)


__all__ = [
    "PLANNERS",
    "check_search",
    "GoalObjective",
    "PlanResult",
    "PlanningAgent",
    "PlanningModel",
    "RewardObjective",
    "SequencePlanner",
    "SimulatorModel",
]
