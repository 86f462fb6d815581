"""Pixel-art drawing helpers shared by the built-in games.

The games draw at a fixed base resolution (64x64) with a handful of flat colours, then resize
to the requested observation size with nearest neighbour, so sprites stay crisp at any size.
Everything here is vectorised numpy: a tile map becomes an image with one fancy-indexing
gather, a sprite is pasted with one masked slice assignment, and resizing is one gather with
precomputed row/column indices. No per-pixel Python loops, so a frame costs microseconds.

Shapes (einops letters): ``h w`` pixels, ``c`` colour channels (3), ``k`` tile kinds,
``s`` tile side in pixels, ``H W`` a tile grid.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

#: The shared palette: flat, saturated colours with strong contrast against each other.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "floor": (28, 32, 48),
    "floor_alt": (36, 40, 60),
    "wall": (112, 120, 144),
    "wall_edge": (72, 78, 100),
    "coin": (255, 210, 40),
    "hazard": (220, 40, 40),
    "hazard_dark": (140, 20, 20),
    "goal": (60, 220, 90),
    "goal_dark": (20, 120, 50),
    "agent": (80, 170, 255),
    "agent_eye": (255, 255, 255),
    "enemy": (230, 90, 230),
    "white": (255, 255, 255),
    "paddle": (240, 240, 240),
    "ball": (255, 255, 255),
}


def colour(name: str) -> np.ndarray:
    """The palette colour ``name`` as uint8 ``[3]``; a clear error for unknown names."""
    try:
        return np.array(PALETTE[name], dtype=np.uint8)
    except KeyError:
        raise KeyError(f"unknown palette colour {name!r}; known: {sorted(PALETTE)}") from None


def solid(side: int, name: str) -> np.ndarray:
    """A ``side x side`` tile of one palette colour, uint8 ``[s, s, 3]``."""
    return np.broadcast_to(colour(name), (side, side, 3)).copy()


def bordered(side: int, fill: str, edge: str, width: int = 1) -> np.ndarray:
    """A tile of colour ``fill`` with a ``width``-pixel frame of colour ``edge``."""
    tile = solid(side, edge)
    tile[width : side - width, width : side - width] = colour(fill)
    return tile


def sprite_from_ascii(rows: list[str], legend: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Build a sprite from ASCII art.

    Args:
        rows: equal-length strings, one per pixel row; ``.`` is transparent.
        legend: character -> palette colour name.

    Returns:
        ``(rgb, mask)``: uint8 ``[h, w, 3]`` and bool ``[h, w]`` (True where opaque).
    """
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"sprite rows must be non-empty and of equal length, got {rows!r}")
    h, w = len(rows), len(rows[0])
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    for y, row in enumerate(rows):
        for x, ch in enumerate(row):  # build-time only, never per frame
            if ch == ".":
                continue
            if ch not in legend:
                raise KeyError(f"sprite character {ch!r} has no colour in legend {legend}")
            rgb[y, x] = colour(legend[ch])
            mask[y, x] = True
    return rgb, mask


def render_tilemap(grid: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Pre-render a tile map: int ``[H, W]`` indices into ``tiles`` ``[k, s, s, 3]``.

    Returns uint8 ``[H*s, W*s, 3]``, one gather and one reshape.
    """
    if grid.ndim != 2:
        raise ValueError(f"tile grid must be [H, W], got shape {grid.shape}")
    if tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2] or tiles.shape[3] != 3:
        raise ValueError(f"tiles must be [k, s, s, 3], got shape {tiles.shape}")
    if grid.min() < 0 or grid.max() >= len(tiles):
        raise ValueError(
            f"tile indices must lie in [0, {len(tiles)}), got [{grid.min()}, {grid.max()}]"
        )
    return rearrange(tiles[grid], "H W s t c -> (H s) (W t) c")


def paste(canvas: np.ndarray, rgb: np.ndarray, mask: np.ndarray | None, y: int, x: int) -> None:
    """Paste a sprite onto ``canvas`` [h, w, 3] in place at top-left ``(y, x)``, clipped to it."""
    ch, cw = canvas.shape[:2]
    sh, sw = rgb.shape[:2]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + sh, ch), min(x + sw, cw)
    if y0 >= y1 or x0 >= x1:
        return
    src = rgb[y0 - y : y1 - y, x0 - x : x1 - x]
    dst = canvas[y0:y1, x0:x1]
    if mask is None:
        dst[...] = src
    else:
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x]
        dst[m] = src[m]


class NearestResize:
    """Nearest-neighbour resize from a fixed ``base`` square to ``size x size``, uint8 rgb.

    Integer upscales use ``np.repeat`` (exact pixel blocks); any other ratio gathers with
    precomputed indices of the source pixel whose centre is nearest. ``size == base`` is a no-op.
    """

    def __init__(self, base: int, size: int) -> None:
        if not isinstance(size, (int, np.integer)) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        self.base, self.size = int(base), int(size)
        self.factor = self.size // self.base if self.size % self.base == 0 else 0
        centres = (np.arange(self.size) + 0.5) * self.base / self.size
        self.index = np.minimum(centres.astype(np.int64), self.base - 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.size == self.base:
            return image
        if self.factor:
            return image.repeat(self.factor, axis=0).repeat(self.factor, axis=1)
        return image[self.index][:, self.index]
