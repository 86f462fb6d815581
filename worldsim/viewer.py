"""The keyboard viewer: ``worldsim play bundle=DIR [episode=STORE:INDEX]``.

A pygame-ce window shows the generated world scaled up, with a heads-up line (FPS, step
latency, action, reward, return). Keys:

=============  ===============================================================================
1-9, 0         pick latent action 0..9 (sticky until another pick or a game key)
arrows / WASD  the real game's directions, space its FIRE (mapped through the binding); the
               held keys are matched against the game's action meanings (``UPRIGHT`` = up+right)
P              pause / resume;  N  one step while paused
R              reset to a new start context;  B  rewind one step (needs ``history > 0``)
V              start / stop recording to mp4 (``record_dir``)
mouse          a game whose actions are a ``Box`` (PushT's target position): the pointer over
               the picture is the action, its x and y across the box's first two dimensions;
               arrows / WASD nudge it by a tenth of the box
X              side-by-side mode (with ``episode=...``): the real episode's actions drive the
               model, the real frames on the left, the model's on the right, per-frame PSNR
Esc / Q        quit
=============  ===============================================================================

The logic (key -> command, the state machine, the HUD text) lives in :class:`PlayController`,
which needs no window and is tested directly; :class:`Viewer` is a thin pygame loop around it
and runs headless with ``SDL_VIDEODRIVER=dummy``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.actions import box_from_unit
from worldsim.config import require, world_options
from worldsim.data import EpisodeStore
from worldsim.data.episode import Episode
from worldsim.metrics import psnr
from worldsim.simulator import Simulator, load_simulator
from worldsim.video import save_video

LATENT_KEYS = {str((i + 1) % 10): i for i in range(10)}  # "1" -> 0, ..., "9" -> 8, "0" -> 9
GAME_KEYS = {
    "up": "UP",
    "w": "UP",
    "down": "DOWN",
    "s": "DOWN",
    "left": "LEFT",
    "a": "LEFT",
    "right": "RIGHT",
    "d": "RIGHT",
    "space": "FIRE",
}
COMMAND_KEYS = {
    "p": "pause",
    "n": "step",
    "r": "reset",
    "b": "rewind",
    "v": "record",
    "x": "side_by_side",
    "escape": "quit",
    "q": "quit",
}
TOKENS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
NUDGES = {"LEFT": (0, -0.1), "RIGHT": (0, 0.1), "UP": (1, -0.1), "DOWN": (1, 0.1)}  # Box games


def meaning_tokens(meaning: str) -> frozenset[str]:
    """``"UPRIGHTFIRE"`` -> {UP, RIGHT, FIRE}; ``"NOOP"`` -> {} (game keys that make it up)."""
    m = meaning.upper()
    return frozenset(t for t in TOKENS if t in m)


@dataclass
class PlayController:
    """Keyboard state machine of the viewer (no pygame): feed it key names, read actions/HUD.

    Args:
        num_latent: latent actions available (0 or None: none).
        meanings: the real game's action meanings, or None when real actions are unavailable.
        has_episode: whether a real episode is loaded for side-by-side mode.
        box_dim: the width of the real actions when they are a ``Box`` (0: none); the action
            is then the ``pointer`` in the unit box ``[-1, 1]^box_dim`` (centre at first).
    """

    num_latent: int | None = None
    meanings: list[str] | None = None
    has_episode: bool = False
    box_dim: int = 0
    pointer: list[float] = field(default_factory=list)
    paused: bool = False
    pending_steps: int = 0
    held: set[str] = field(default_factory=set)
    latent_code: int | None = None
    recording: bool = False
    side_by_side: bool = False
    quit: bool = False
    t: int = 0
    reward: float = 0.0
    episode_return: float = 0.0
    fps: float = 0.0
    latency_ms: float = 0.0
    psnr_db: float | None = None
    message: str = ""
    replay_over: bool = False  # paused because the real episode of side-by-side mode ended

    def __post_init__(self) -> None:
        if self.box_dim and not self.pointer:
            self.pointer = [0.0] * self.box_dim

    def point(self, x: float, y: float) -> None:
        """The mouse at ``(x, y)`` of the picture, each in [0, 1] (left/top 0): the pointer's
        first two dimensions (a one-dimensional box takes x)."""
        if not self.box_dim:
            return
        self.latent_code = None
        for i, u in enumerate((x, y)[: self.box_dim]):
            self.pointer[i] = float(np.clip(2.0 * u - 1.0, -1.0, 1.0))

    def key_down(self, name: str) -> str | None:
        """Handle a key press (pygame key name); returns the command it triggers, if any."""
        name = name.lower()
        if name in LATENT_KEYS and self.num_latent and LATENT_KEYS[name] < self.num_latent:
            self.latent_code = LATENT_KEYS[name]
            return "latent"
        if name in GAME_KEYS and self.box_dim and GAME_KEYS[name] in NUDGES:
            dim, step = NUDGES[GAME_KEYS[name]]
            if dim < self.box_dim:
                self.latent_code = None
                self.pointer[dim] = float(np.clip(self.pointer[dim] + step, -1.0, 1.0))
            return "game"
        if name in GAME_KEYS and self.meanings:
            self.held.add(GAME_KEYS[name])
            self.latent_code = None
            return "game"
        command = COMMAND_KEYS.get(name)
        if command == "pause":
            self.paused = not self.paused
        elif command == "step":
            if self.paused:
                self.pending_steps += 1
        elif command == "record":
            self.recording = not self.recording
        elif command == "side_by_side":
            if not self.has_episode:
                self.message = "side-by-side needs episode=STORE:INDEX"
                return None
            self.side_by_side = not self.side_by_side
        elif command == "quit":
            self.quit = True
        return command

    def key_up(self, name: str) -> None:
        token = GAME_KEYS.get(name.lower())
        if token:
            self.held.discard(token)

    def real_action(self) -> int | None:
        """The meaning that best matches the held game keys (exact, else the largest subset)."""
        if not self.meanings:
            return None
        held = frozenset(self.held)
        best, best_size = None, -1
        for i, m in enumerate(self.meanings):
            toks = meaning_tokens(m)
            if toks == held:
                return i
            if toks <= held and len(toks) > best_size:
                best, best_size = i, len(toks)
        return best

    def action(self) -> tuple[str, int | list[float]]:
        """``("latent", code)``, ``("real", index)`` or, for a ``Box`` game, ``("box", pointer)``
        (the unit box): what the next step takes."""
        if self.box_dim and self.latent_code is None:
            return "box", list(self.pointer)
        if self.latent_code is not None or not self.meanings:
            return "latent", self.latent_code or 0
        real = self.real_action()
        return ("real", real) if real is not None else ("latent", 0)

    def should_step(self) -> bool:
        """Whether the loop advances the world this frame (consumes a single-step request)."""
        if not self.paused:
            return True
        if self.pending_steps:
            self.pending_steps -= 1
            return True
        return False

    def on_step(self, reward: float, latency_s: float) -> None:
        self.t += 1
        self.reward = reward
        self.episode_return += reward
        self.latency_ms = 1000.0 * latency_s

    def on_reset(self) -> None:
        self.t, self.reward, self.episode_return, self.psnr_db = 0, 0.0, 0.0, None
        if self.replay_over:  # the pause belonged to the replay that ended, not to the player
            self.paused, self.replay_over, self.message = False, False, ""

    def end_replay(self) -> None:
        """The real episode of side-by-side mode has no more transitions: pause until a reset."""
        self.paused, self.replay_over = True, True
        self.message = "end of the real episode (R restarts)"

    def action_label(self) -> str:
        kind, value = self.action()
        if kind == "box":
            return " ".join(f"{v:+.2f}" for v in value)
        if kind == "real":
            return f"{self.meanings[value]}"
        return f"latent {value}"

    def hud(self) -> str:
        parts = [
            f"{self.fps:4.0f} fps",
            f"{self.latency_ms:5.1f} ms",
            self.action_label(),
            f"r {self.reward:+.2f}",
            f"R {self.episode_return:+.2f}",
            f"t {self.t}",
        ]
        if self.psnr_db is not None:
            parts.append(f"PSNR {self.psnr_db:.1f} dB")
        flags = [
            f
            for f, on in (
                ("PAUSED", self.paused),
                ("REC", self.recording),
                ("SxS", self.side_by_side),
            )
            if on
        ]
        text = " | ".join(parts + flags)
        return f"{text} | {self.message}" if self.message else text


class Viewer:
    """The pygame window around a Simulator (B=1) and a :class:`PlayController`."""

    def __init__(
        self,
        sim: Simulator,
        *,
        scale: int = 8,
        fps: float | None = None,
        episode: Episode | None = None,
        record_dir: str | Path = "recordings",
        seed: int = 0,
    ) -> None:
        if sim.batch != 1:
            raise ValueError(f"Viewer shows one world; got a Simulator with batch={sim.batch}")
        self.sim, self.scale, self.episode = sim, scale, episode
        self.fps = fps or sim.bundle.fps
        self.record_dir = Path(record_dir)
        self.rng = np.random.default_rng(seed)
        space = sim.bundle.action_space or {}
        meanings = space.get("meanings") if space.get("type") == "discrete" else None
        if meanings is not None:  # real keys need a way to reach the dynamics
            try:
                sim.model_actions(torch.zeros(1, dtype=torch.long), "real")
            except ValueError:
                meanings = None
        latent = sim.num_actions("latent") if sim.bundle.num_latent_actions else None
        self.box = None
        if space.get("type") == "box":  # a pointer reaches a bounded box only
            box = sim.bundle.actions.gym_space("real", f"bundle {sim.bundle.path}")
            self.box = box if box.is_bounded() else None
        self.ctl = PlayController(
            num_latent=latent, meanings=meanings, has_episode=episode is not None,
            box_dim=int(np.prod(self.box.shape)) if self.box is not None else 0,
        )
        self.frames: list[np.ndarray] = []
        self.saved: list[Path] = []
        self.real_frame: np.ndarray | None = None
        self.started = False

    # ------------------------------------------------------------------ world
    def reset(self) -> None:
        if self.ctl.side_by_side and self.episode is not None:
            self.sim.reset(self.episode)
            self._sxs_step = 0
            self.real_frame = self.episode.frames[
                min(self.sim.context_frames, len(self.episode)) - 1
            ]
        else:
            self.sim.reset(int(self.rng.integers(len(self.sim.bundle.contexts))))
        self.ctl.on_reset()

    def advance(self) -> None:
        start = time.perf_counter()
        if self.ctl.side_by_side and self.episode is not None:
            k = min(self.sim.context_frames, len(self.episode))
            i = k - 1 + self._sxs_step
            if self.episode.actions is None or i >= self.episode.num_steps:
                self.ctl.end_replay()
                return
            out = self.sim.step(
                torch.tensor([int(self.episode.actions[i])]), action_type="real", decode=True
            )
            self.real_frame = self.episode.frames[i + 1]
            self.ctl.psnr_db = float(
                psnr(
                    out.frames[0].cpu().movedim(-1, 0),
                    torch.from_numpy(self.real_frame).movedim(-1, 0),
                ).clamp(max=60)
            )
            self._sxs_step += 1
        else:
            kind, value = self.ctl.action()
            if kind == "box":
                act, kind = box_from_unit(torch.tensor([value]), self.box), "real"
            else:
                act = torch.tensor([value])
            out = self.sim.step(act, action_type=kind, decode=True)
        self.ctl.on_step(float(out.reward[0]), time.perf_counter() - start)
        if bool(out.terminated[0]):
            self.ctl.message = "episode ended (termination head); R resets"

    def picture(self) -> np.ndarray:
        """The frame on screen (unscaled): the model's, or real | model in side-by-side mode."""
        model = self.sim.render()[0].cpu().numpy()
        if self.ctl.side_by_side and self.real_frame is not None:
            bar = np.full((model.shape[0], 1, 3), 255, np.uint8)
            return np.concatenate([self.real_frame, bar, model], axis=1)
        return model

    def toggle_recording(self) -> None:
        if self.ctl.recording:  # just switched on
            self.frames = []
            return
        if self.frames:
            path = self.record_dir / f"play_{time.strftime('%Y%m%d_%H%M%S')}_{len(self.saved)}.mp4"
            shapes = {f.shape for f in self.frames}
            frames = (
                [f for f in self.frames if f.shape == self.frames[-1].shape]
                if len(shapes) > 1
                else self.frames
            )
            self.saved.append(save_video(np.stack(frames), path, fps=self.fps, scale=4))
            self.ctl.message = f"saved {path}"
        self.frames = []

    def handle(self, command: str | None) -> None:
        if command == "reset" or command == "side_by_side":
            self.reset()
        elif command == "rewind":
            try:
                if self.sim.rewind(1):
                    self.ctl.t = max(0, self.ctl.t - 1)
            except RuntimeError as err:
                self.ctl.message = str(err)
        elif command == "record":
            self.toggle_recording()

    # ------------------------------------------------------------------ pygame loop
    def run(self, max_frames: int | None = None) -> dict[str, Any]:
        """Open the window and play until quit (or ``max_frames`` frames); returns a summary."""
        import pygame  # lazy: only the window needs it (importing pygame prints a banner on stdout)

        pygame.init()
        pygame.display.set_caption(f"worldsim play: {self.sim.bundle.meta.get('game') or 'world'}")
        font = pygame.font.Font(None, 18)
        clock = pygame.time.Clock()
        if not self.started:  # a second run() continues the same world
            self.reset()
            self.started = True
        screen, frames_shown, steps = None, 0, 0
        try:
            while not self.ctl.quit and (max_frames is None or frames_shown < max_frames):
                for event in pygame.event.get():
                    if event.type == pygame.QUIT:
                        self.ctl.quit = True
                    elif event.type == pygame.KEYDOWN:
                        self.handle(self.ctl.key_down(pygame.key.name(event.key)))
                    elif event.type == pygame.KEYUP:
                        self.ctl.key_up(pygame.key.name(event.key))
                    elif event.type == pygame.MOUSEMOTION:
                        height, width = (self.scale * n for n in self.sim.frame_size)
                        self.ctl.point(event.pos[0] / width, event.pos[1] / height)
                if self.ctl.should_step():
                    self.advance()
                    steps += 1
                picture = self.picture()
                if self.ctl.recording:
                    self.frames.append(picture)
                big = picture.repeat(self.scale, 0).repeat(self.scale, 1)
                size = (big.shape[1], big.shape[0] + 20)
                if screen is None or screen.get_size() != size:
                    screen = pygame.display.set_mode(size)
                screen.fill((0, 0, 0))
                screen.blit(pygame.surfarray.make_surface(big.swapaxes(0, 1)), (0, 0))
                screen.blit(
                    font.render(self.ctl.hud(), True, (255, 255, 255)), (4, big.shape[0] + 3)
                )
                pygame.display.flip()
                clock.tick(self.fps)
                self.ctl.fps = clock.get_fps()
                frames_shown += 1
        finally:
            if self.ctl.recording:
                self.ctl.recording = False
                self.toggle_recording()
            pygame.display.quit()
        return {
            "frames": frames_shown,
            "steps": steps,
            "return": self.ctl.episode_return,
            "recordings": [str(p) for p in self.saved],
        }


def load_episode(spec: str) -> Episode:
    """``"STORE:INDEX"`` -> that episode of an :class:`~worldsim.data.EpisodeStore`."""
    store, sep, index = spec.rpartition(":")
    if not sep or not index.lstrip("-").isdigit():
        raise ValueError(f"episode must look like STORE:INDEX (e.g. data/collect:0), got {spec!r}")
    if not Path(store).is_dir():
        raise FileNotFoundError(f"episode store {store} does not exist")
    return EpisodeStore(store)[int(index)]


def run(cfg) -> dict[str, Any]:
    """``worldsim play``: the composed ``configs/play.yaml``."""
    sim = load_simulator(require(cfg, "bundle"), world_options(cfg), history=cfg.history)
    episode = load_episode(str(cfg.episode)) if cfg.episode else None
    viewer = Viewer(
        sim, scale=cfg.scale, fps=cfg.fps, episode=episode, record_dir=cfg.record_dir, seed=cfg.seed
    )
    if episode is not None:
        viewer.ctl.side_by_side = True
    return viewer.run(max_frames=cfg.max_frames)


__all__ = ["PlayController", "Viewer", "load_episode", "meaning_tokens", "run"]
