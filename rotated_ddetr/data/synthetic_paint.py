"""Drawing primitives of the synthetic aerial generator: a shared colour palette, things made of filled polygons,
and smooth value noise. Shapes come in an object's own frame; pixels go onto a canvas that may be any window of a
larger scene, so a scene can be drawn stripe by stripe with the same result. Used by `synthetic*.py`.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

Colour = tuple[float, float, float]  # B, G, R in 0..255
Part = tuple[np.ndarray, Colour]  # (K, 2) float64 polygon in the thing's own frame, and its fill colour

_SUBPIXEL_BITS = 4  # cv2 drawing with 1/16 px vertex precision


def object_colour(rng: np.random.Generator) -> Colour:
    """A paint colour for any man-made object. Every class draws from this one distribution, so colour alone never
    tells the classes apart: light and dark neutrals (white roofs, grey concrete, black cars) and saturated hues."""
    kind = rng.random()
    if kind < 0.3:
        value = rng.uniform(165, 245)
        return jitter((value, value, value), rng, 10)
    if kind < 0.5:
        value = rng.uniform(30, 100)
        return jitter((value, value, value), rng, 8)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.8), rng.uniform(0.35, 0.9))
    return (255 * b, 255 * g, 255 * r)


def jitter(colour: Colour, rng: np.random.Generator, amount: float) -> Colour:
    """`colour` with each channel moved by up to +-amount, clipped to 0..255."""
    moves = rng.uniform(-amount, amount, 3).tolist()
    return tuple(min(255.0, max(0.0, c + m)) for c, m in zip(colour, moves, strict=True))


def shade(colour: Colour, factor: float) -> Colour:
    """`colour` scaled by `factor` (darker below 1, lighter above), clipped to 0..255."""
    return tuple(float(min(255.0, c * factor)) for c in colour)


def luminance(colour: Colour) -> float:
    """Perceived brightness 0..255 of a BGR colour."""
    return 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]


def rect(length: float, width: float, x: float = 0.0, y: float = 0.0) -> np.ndarray:
    """(4, 2) axis-aligned rectangle of the given length (along x) and width, centred at (x, y)."""
    dx, dy = length / 2, width / 2
    return np.array([[x - dx, y - dy], [x + dx, y - dy], [x + dx, y + dy], [x - dx, y + dy]], dtype=np.float64)


def ellipse(rx: float, ry: float, *, x: float = 0.0, y: float = 0.0, n: int = 0) -> np.ndarray:
    """(n, 2) polygon of an ellipse with radii rx, ry centred at (x, y); n defaults to a smooth count for the size."""
    n = n or int(np.clip(2.5 * max(rx, ry), 12, 64))
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([x + rx * np.cos(t), y + ry * np.sin(t)], axis=1)


def to_scene(points: np.ndarray, rbox: np.ndarray) -> np.ndarray:
    """(K, 2) points of a thing's own frame -> scene pixels, with rbox = (cx, cy, w, h, angle) (DESIGN.md §2)."""
    cos, sin = math.cos(rbox[4]), math.sin(rbox[4])
    x, y = points[:, 0], points[:, 1]
    return np.stack([rbox[0] + x * cos - y * sin, rbox[1] + x * sin + y * cos], axis=1)


@dataclass
class Thing:
    """Anything drawn on the ground: filled polygons in its own frame, placed by an rbox.

    Attributes:
        rbox: (5,) float64 (cx, cy, w, h, angle) in scene pixels; for a labelled object, its oriented bounding
            rectangle (w along the object's length).
        parts: polygons in the thing's frame (x along w), drawn in order.
        layer: 0 roads (water drawn over them), 1 ground cover on top of water (pads, paint, wakes), 2 objects and
            buildings, 3 tree canopy (drawn last). Only layers 2 and 3 cast shadows.
        height: shadow length in pixels per unit of sun offset; 0 casts none.
        name: the DOTA class of a labelled object, None for scenery.
        difficult: the label's difficult flag (0, 1 small or occluded, 2 mostly outside the image).
    """

    rbox: np.ndarray
    parts: list[Part]
    layer: int = 2
    height: float = 0.0
    name: str | None = None
    difficult: int = 0
    _scene: list[tuple[np.ndarray, Colour]] | None = field(default=None, repr=False)
    _bounds: np.ndarray | None = field(default=None, repr=False)

    def scene_parts(self) -> list[tuple[np.ndarray, Colour]]:
        """The parts in scene pixels (computed once)."""
        if self._scene is None:
            self._scene = [(to_scene(poly, self.rbox), colour) for poly, colour in self.parts]
        return self._scene

    def part_bounds(self) -> np.ndarray:
        """(P, 4) scene extents (x0, y0, x1, y1) of the parts (computed once)."""
        if self._bounds is None:
            polys = [poly for poly, _ in self.scene_parts()]
            self._bounds = np.array([[*p.min(0), *p.max(0)] for p in polys], dtype=np.float64).reshape(-1, 4)
        return self._bounds

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) scene extent of all parts."""
        b = self.part_bounds()
        return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())

    def moved(self, gx: float, gy: float, angle: float) -> Thing:
        """This thing carried along when its group frame is placed at (gx, gy) turned by `angle`."""
        centre = to_scene(self.rbox[None, :2], np.array([gx, gy, 0.0, 0.0, angle]))[0]
        rbox = np.array([centre[0], centre[1], self.rbox[2], self.rbox[3], self.rbox[4] + angle])
        return Thing(rbox, self.parts, self.layer, self.height, self.name, self.difficult)


class Canvas:
    """A window (x0, y0, width, height) of a scene, backed by an image (H, W, C) uint8 or float32."""

    def __init__(self, image: np.ndarray, x0: int, y0: int):
        self.image, self.x0, self.y0 = image, x0, y0
        self.height, self.width = image.shape[:2]

    def sees(self, bounds: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether scene extents (..., 4) = (x0, y0, x1, y1), grown by `margin`, touch this window."""
        bounds = np.asarray(bounds)
        return (
            (bounds[..., 2] + margin >= self.x0)
            & (bounds[..., 0] - margin < self.x0 + self.width)
            & (bounds[..., 3] + margin >= self.y0)
            & (bounds[..., 1] - margin < self.y0 + self.height)
        )

    def fill(self, points: np.ndarray, colour: Colour | float, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        """Fills a scene polygon (K, 2), anti-aliased, shifted by `offset` pixels."""
        shifted = points + np.array([offset[0] - self.x0, offset[1] - self.y0])
        pts = np.round(shifted * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillPoly(self.image, [pts], colour, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)

    def draw(self, thing: Thing) -> None:
        """Draws the parts of `thing` that touch the window, in order."""
        if self.sees(thing.bounds(), 2):
            parts = thing.scene_parts()
            for i in np.flatnonzero(self.sees(thing.part_bounds(), 2)):
                self.fill(*parts[i])

    def shadow(self, thing: Thing, offset: tuple[float, float]) -> None:
        """Draws in 255 the shadow of `thing`: each part swept along `offset` (sun vector times its height)."""
        margin = max(abs(offset[0]), abs(offset[1])) + 2
        if thing.height > 0 and self.sees(thing.bounds(), margin):
            for poly, _ in thing.scene_parts():
                swept = np.concatenate([poly, poly + offset]).astype(np.float32)
                self.fill(cv2.convexHull(swept)[:, 0].astype(np.float64), 255)


class ValueNoise:
    """Smooth noise over a whole scene: random values on a lattice of `cell` pixels, smoothstep-interpolated.

    Any window of the scene evaluates to the same values, so stripes of a large scene join without seams.
    """

    def __init__(self, rng: np.random.Generator, width: int, height: int, cell: float, channels: int = 1):
        self.cell = float(cell)
        shape = (channels, int(height / cell) + 3, int(width / cell) + 3)
        self.lattice = rng.uniform(-1.0, 1.0, shape).astype(np.float32)

    @staticmethod
    def _weights(start: int, count: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
        t = (np.arange(start, start + count, dtype=np.float64) + 0.5) / cell
        index = np.floor(t).astype(np.int64)
        frac = t - index
        return index, (frac * frac * (3 - 2 * frac)).astype(np.float32)

    def __call__(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """(channels, height, width) float32 noise in [-1, 1] of the window at (x0, y0)."""
        iy, sy = self._weights(y0, height, self.cell)
        ix, sx = self._weights(x0, width, self.cell)
        iy, ix = np.clip(iy, 0, self.lattice.shape[1] - 2), np.clip(ix, 0, self.lattice.shape[2] - 2)
        rows = self.lattice[:, iy] * (1 - sy)[:, None] + self.lattice[:, iy + 1] * sy[:, None]  # (C, h, Lx)
        return rows[:, :, ix] * (1 - sx) + rows[:, :, ix + 1] * sx
