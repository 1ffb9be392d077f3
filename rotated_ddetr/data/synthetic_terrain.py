"""The unlabelled scenery of the synthetic aerial generator: textured ground, crop fields, water, roads, buildings
and trees. Random numbers and the scene size in; plans (polygons, colours, noise lattices) out, and the functions
that paint any window of them, so that `synthetic.py` can draw a scene of any size stripe by stripe.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from rotated_ddetr.data.synthetic_paint import (
    Colour,
    Part,
    Thing,
    ValueNoise,
    ellipse,
    jitter,
    object_colour,
    rect,
    shade,
)

_REFERENCE = 512.0  # sizes and densities are given per 512 x 512 pixels


def _hsv(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]):
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return (255 * b, 255 * g, 255 * r)


@dataclass
class Ground:
    """Bare soil and vegetation mixed by a coarse noise, modulated in brightness by finer octaves."""

    soil: Colour
    green: Colour
    mix: ValueNoise
    detail: list[tuple[ValueNoise, float]]


def plan_ground(rng: np.random.Generator, width: int, height: int) -> Ground:
    """Ground colours and noise lattices covering a width x height scene."""
    soil = _hsv(rng, (0.05, 0.12), (0.15, 0.45), (0.45, 0.75))
    green = _hsv(rng, (0.17, 0.33), (0.2, 0.55), (0.3, 0.6))
    mix = ValueNoise(rng, width, height, rng.uniform(90, 220))
    detail = [(ValueNoise(rng, width, height, cell), amp) for cell, amp in ((60, 0.1), (16, 0.07), (4, 0.05))]
    return Ground(soil, green, mix, detail)


def render_ground(ground: Ground, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) float32 BGR ground of the window at (x0, y0)."""
    weight = 1 / (1 + np.exp(-4 * ground.mix(x0, y0, width, height)[0]))  # (h, w) share of vegetation
    image = np.asarray(ground.soil, np.float32) * (1 - weight[..., None])
    image += np.asarray(ground.green, np.float32) * weight[..., None]
    brightness = np.ones((height, width), np.float32)
    for noise, amplitude in ground.detail:
        brightness += amplitude * noise(x0, y0, width, height)[0]
    return image * brightness[..., None]


@dataclass
class Field:
    """A crop field: a quadrilateral with stripes (rows of crops) of a period and direction."""

    polygon: np.ndarray
    colour: Colour
    angle: float
    period: float
    contrast: float


def plan_fields(rng: np.random.Generator, width: int, height: int, scale: float) -> list[Field]:
    """About 0-4 crop fields per 512 x 512 pixels."""
    count = rng.poisson(1.6 * width * height / _REFERENCE**2)
    fields = []
    for _ in range(count):
        length, breadth = rng.uniform(80, 320, 2) * scale
        centre = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(0, math.pi)
        corners = rect(length, breadth) + rng.normal(0, 0.04 * min(length, breadth), (4, 2))
        polygon = centre + corners @ np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        colour = _hsv(rng, (0.08, 0.3), (0.2, 0.6), (0.35, 0.75))
        stripes = angle + (0.0 if rng.random() < 0.7 else math.pi / 2)
        fields.append(Field(polygon, colour, stripes, rng.uniform(3, 9) * scale, rng.uniform(0.1, 0.35)))
    return fields


def _patch(polygon: np.ndarray, x0: int, y0: int, width: int, height: int):
    """The window-clipped integer bounding box (px0, py0, px1, py1) of a polygon, or None when outside."""
    px0, py0 = np.floor(polygon.min(0)).astype(int) - 1
    px1, py1 = np.ceil(polygon.max(0)).astype(int) + 2
    px0, py0, px1, py1 = max(px0, x0), max(py0, y0), min(px1, x0 + width), min(py1, y0 + height)
    return None if px0 >= px1 or py0 >= py1 else (px0, py0, px1, py1)


def _coverage(polygon: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) float32 in [0, 1]: anti-aliased coverage of the polygon over the scene box (px0, py0, px1, py1)."""
    mask = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    pts = np.round((polygon - [box[0], box[1]]) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def render_fields(image: np.ndarray, fields: list[Field], x0: int, y0: int) -> None:
    """Paints the striped fields into the float32 window `image` whose top-left scene pixel is (x0, y0)."""
    height, width = image.shape[:2]
    for field in fields:
        box = _patch(field.polygon, x0, y0, width, height)
        if box is None:
            continue
        alpha = _coverage(field.polygon, box)[..., None]
        ys, xs = np.mgrid[box[1] : box[3], box[0] : box[2]].astype(np.float32)
        phase = (xs * math.cos(field.angle) + ys * math.sin(field.angle)) * (2 * math.pi / field.period)
        texture = np.asarray(field.colour, np.float32) * (1 + field.contrast * np.sin(phase))[..., None]
        window = image[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0]
        window[:] = window * (1 - alpha) + texture * alpha


@dataclass
class Water:
    """A lake or, with its centre beyond the scene edge, a coast: a wobbly closed outline and a colour."""

    polygon: np.ndarray
    colour: Colour


def plan_water(rng: np.random.Generator, width: int, height: int, probability: float) -> list[Water]:
    """Water bodies of one colour family: in a 512 x 512 image one with `probability`; in larger scenes a Poisson
    number of larger lakes covering about the same share of the ground."""
    reference = min(width, height, 3 * _REFERENCE)  # lake radii scale with this side
    area = width * height / _REFERENCE**2
    if area > 2:
        lake_area = math.pi * (0.35 * reference) ** 2
        count = rng.poisson(0.2 * probability * width * height / lake_area)
    else:
        count = int(rng.random() < probability)
    colour = _hsv(rng, (0.42, 0.62), (0.3, 0.75), (0.2, 0.5))
    bodies = []
    for _ in range(count):
        radius = rng.uniform(0.2, 0.5) * reference
        centre = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height])
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        wobble = sum(rng.uniform(0, 0.22 / k) * np.sin(k * t + rng.uniform(0, 2 * math.pi)) for k in range(2, 7))
        r = radius * (1 + wobble)
        bodies.append(Water(centre + np.stack([r * np.cos(t), r * np.sin(t)], 1), jitter(colour, rng, 6)))
    return bodies


def render_water(image: np.ndarray, bodies: list[Water], noise: np.ndarray, x0: int, y0: int) -> None:
    """Blends water bodies into the uint8 window `image`; `noise` (h, w) in [-1, 1] ripples their colour."""
    height, width = image.shape[:2]
    for body in bodies:
        box = _patch(body.polygon, x0, y0, width, height)
        if box is None:
            continue
        alpha = _coverage(body.polygon, box)[..., None]
        ripple = noise[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0, None]
        colour = np.asarray(body.colour, np.float32) * (1 + 0.12 * ripple)
        window = image[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0]
        window[:] = np.clip(window * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def plan_roads(rng: np.random.Generator, width: int, height: int, scale: float) -> list[Thing]:
    """Straight roads crossing the scene (about 0-2 per 512 pixels of side), asphalt with dashed centre lines.

    Each road is a layer-0 Thing whose rbox runs along it (w = its length), so vehicles can be put on it.
    """
    count = rng.poisson(1.0 * math.sqrt(width * height) / _REFERENCE)
    roads = []
    for _ in range(count):
        centre = rng.uniform([0, 0], [width, height])
        angle = rng.uniform(-math.pi, math.pi) if rng.random() < 0.5 else rng.integers(0, 4) * math.pi / 2
        length, lane = 2.9 * max(width, height), rng.uniform(5, 9) * scale
        asphalt = jitter((rng.uniform(55, 130),) * 3, rng, 6)
        parts: list[Part] = [(rect(length, 2 * lane + 2), asphalt)]
        if rng.random() < 0.7:
            dash, t = rng.uniform(6, 14) * scale, max(0.8, 0.1 * lane)
            count_dashes = int(length / (2 * dash))
            parts += [(rect(dash, t, (i + 0.25) * 2 * dash - length / 2), (215.0, 215.0, 210.0))
                      for i in range(count_dashes)]  # fmt: skip
        roads.append(Thing(np.array([*centre, length, 2 * lane + 2, angle]), parts, layer=0))
    return roads


def building(rng: np.random.Generator, scale: float) -> Thing:
    """A building seen from above (not labelled): a roof of any paint colour, a ridge or rooftop units."""
    length, breadth = rng.uniform(20, 90) * scale, rng.uniform(14, 50) * scale
    roof = object_colour(rng)
    parts: list[Part] = [(rect(length, breadth), roof)]
    if rng.random() < 0.5:  # pitched roof: the two halves lit differently, and a ridge
        parts.append((rect(length, breadth / 2, 0, breadth / 4), tuple(c * 0.8 for c in roof)))
        parts.append((rect(length, max(0.8, 0.04 * breadth)), tuple(c * 0.6 for c in roof)))
    else:
        for x, y in rng.uniform(-0.35, 0.35, (int(rng.integers(0, 4)), 2)):
            parts.append((rect(0.12 * length, 0.15 * breadth, x * length, y * breadth), jitter((190,) * 3, rng, 30)))
    return Thing(np.array([0.0, 0.0, length, breadth, 0.0]), parts, layer=2, height=rng.uniform(0.3, 1.0) * breadth)


def tree_cluster(rng: np.random.Generator, scale: float, radius: float | None = None) -> Thing:
    """A clump of tree crowns (not labelled, drawn over everything else) within about `radius` pixels."""
    radius = radius or rng.uniform(8, 40) * scale
    crowns = int(np.clip(radius / (3 * scale), 2, 18))
    base = _hsv(rng, (0.18, 0.36), (0.3, 0.75), (0.18, 0.45))
    parts: list[Part] = []
    for _ in range(crowns):
        r = rng.uniform(2.5, 7.0) * scale
        x, y = rng.normal(0, radius / 2.5, 2)
        parts.append((ellipse(r, r * rng.uniform(0.85, 1.0), x=x, y=y), jitter(base, rng, 14)))
        parts.append((ellipse(r * 0.45, r * 0.45, x=x - 0.25 * r, y=y - 0.25 * r), shade(jitter(base, rng, 10), 1.25)))
    return Thing(np.array([0.0, 0.0, 2 * radius, 2 * radius, 0.0]), parts, layer=3, height=rng.uniform(3, 8) * scale)
