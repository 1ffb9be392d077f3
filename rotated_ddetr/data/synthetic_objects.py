"""The labelled objects of the synthetic aerial generator and the groups they come in (parking lots, aprons, tank
farms, court blocks, moored ships). Random numbers in; `Group`s of `Thing`s in a group frame out, which
`synthetic.py` places in the scene. Every object's rbox is its tight oriented bounding rectangle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rotated_ddetr.data.synthetic_paint import (
    Colour,
    Part,
    Thing,
    ellipse,
    jitter,
    luminance,
    object_colour,
    rect,
    shade,
)

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "plane", "ship", "small-vehicle", "large-vehicle", "storage-tank", "tennis-court",
)  # fmt: skip

_DARK_GLASS: Colour = (38.0, 34.0, 32.0)


@dataclass
class Group:
    """Things in a group frame centred at (0, 0), with the footprint (length along x, width along y) they need."""

    things: list[Thing]
    length: float
    width: float
    on_water: bool = False

    @property
    def count(self) -> int:
        """Number of labelled objects."""
        return sum(thing.name is not None for thing in self.things)


def _mirror(points: list[tuple[float, float]]) -> np.ndarray:
    """A polygon symmetric about the x axis from its y >= 0 half, given nose to tail."""
    half = np.array(points, dtype=np.float64)
    return np.concatenate([half, half[::-1] * [1, -1]])


def plane_parts(rng: np.random.Generator, length: float, span: float, colour: Colour) -> list[Part]:
    """Top view of an airliner or jet, nose at +x: swept wings, tailplane, fuselage, engines; fits (length, span)."""
    L, S = length, span
    fw = L * rng.uniform(0.08, 0.12)
    lead, sweep = L * rng.uniform(0.04, 0.16), L * rng.uniform(0.08, 0.26)
    chord = L * rng.uniform(0.17, 0.25)
    tip = chord * rng.uniform(0.25, 0.45)
    wing = [(lead, fw * 0.4), (lead - sweep, S / 2), (lead - sweep - tip, S / 2), (lead - chord, fw * 0.4)]
    tail_lead, tail_span = -L * rng.uniform(0.33, 0.38), S * rng.uniform(0.28, 0.4) / 2
    tail = [(tail_lead, fw * 0.3), (-0.43 * L, tail_span), (-0.48 * L, tail_span), (-0.47 * L, fw * 0.3)]
    body = _mirror(
        [(0.5 * L, 0), (0.46 * L, 0.3 * fw), (0.4 * L, 0.5 * fw), (-0.38 * L, 0.45 * fw), (-0.5 * L, 0.12 * fw)]
    )
    wing_colour = shade(colour, rng.uniform(0.82, 1.0))
    parts: list[Part] = []
    for side in (1, -1):
        parts.append((np.array(wing) * [1, side], wing_colour))
        parts.append((np.array(tail) * [1, side], wing_colour))
    parts.append((body, colour))
    engine_colour = shade(colour, rng.uniform(0.45, 0.7))
    for y in [0.2 * S] + ([0.34 * S] if rng.random() < 0.3 else []):
        x = lead - sweep * (y - fw * 0.4) / (S / 2 - fw * 0.4) + 0.03 * L
        for side in (1, -1):
            parts.append((rect(0.09 * L, 0.05 * L, x, side * y), engine_colour))
    parts.append((_mirror([(0.47 * L, 0.0), (0.44 * L, 0.28 * fw), (0.41 * L, 0.3 * fw)]), _DARK_GLASS))
    return parts


def ship_parts(rng: np.random.Generator, length: float, beam: float, colour: Colour) -> list[Part]:
    """Top view of a ship, bow at +x: pointed hull, deck, bridge house at the stern, hatches or containers."""
    L, B = length, beam
    taper = L * rng.uniform(0.14, 0.3)
    bow = 0.5 * L - taper
    hull = _mirror(
        [(0.5 * L, 0), (bow + 0.6 * taper, 0.36 * B), (bow, 0.5 * B), (-0.47 * L, 0.5 * B), (-0.5 * L, 0.4 * B)]
    )
    parts: list[Part] = [(hull, colour)]
    deck = shade(colour, rng.uniform(0.7, 1.25))
    parts.append((hull * [0.94, 0.8], deck))
    parts.append((rect(L * rng.uniform(0.08, 0.16), B * 0.78, -0.38 * L), object_colour(rng)))
    front = bow
    if rng.random() < 0.5:  # containers in bays of random colours
        bays = int(rng.integers(3, 9))
        pitch = (front + 0.28 * L) / bays
        for i in range(bays):
            x = -0.28 * L + (i + 0.5) * pitch
            parts.append((rect(pitch * 0.86, B * 0.7, x), jitter(object_colour(rng), rng, 15)))
    else:  # hatch covers
        hatches = int(rng.integers(2, 6))
        pitch = (front + 0.25 * L) / hatches
        for i in range(hatches):
            parts.append((rect(pitch * 0.6, B * 0.55, -0.25 * L + (i + 0.5) * pitch), shade(deck, 0.75)))
    return parts


def small_vehicle_parts(rng: np.random.Generator, length: float, width: float, colour: Colour) -> list[Part]:
    """Top view of a car or van, front at +x: chamfered body, windscreen, rear window, roof."""
    L, W = length, width
    c = 0.22 * W
    body = _mirror([(L / 2, 0), (L / 2, W / 2 - c), (L / 2 - c, W / 2), (-L / 2 + c, W / 2), (-L / 2, W / 2 - c)])
    parts: list[Part] = [(body, colour)]
    van = rng.random() < 0.2
    front = 0.36 if van else 0.28
    parts.append(
        (np.array([[front * L - 0.17 * L, -0.4 * W], [front * L, -0.36 * W], [front * L, 0.36 * W],
                   [front * L - 0.17 * L, 0.4 * W]]), _DARK_GLASS)
    )  # fmt: skip
    if not van:
        parts.append((rect(0.1 * L, 0.72 * W, -0.33 * L), shade(_DARK_GLASS, 1.3)))
    parts.append(
        (rect((0.3 if not van else 0.62) * L, 0.66 * W, -0.03 * L - (0.13 * L if van else 0)), shade(colour, 1.08))
    )
    return parts


def large_vehicle_parts(rng: np.random.Generator, length: float, width: float, colour: Colour) -> list[Part]:
    """Top view of a truck (cab and trailer) or a bus, front at +x."""
    L, W = length, width
    if rng.random() < 0.6:
        cab = L * rng.uniform(0.14, 0.2)
        trailer_colour = object_colour(rng) if rng.random() < 0.5 else jitter((215.0, 215.0, 212.0), rng, 25)
        parts: list[Part] = [(rect(cab, W * 0.92, L / 2 - cab / 2), colour)]
        parts.append((rect(cab * 0.3, W * 0.8, L / 2 - cab * 0.2), _DARK_GLASS))
        trailer = L - cab * 1.12
        parts.append((rect(trailer, W, -L / 2 + trailer / 2), trailer_colour))
        for i in range(1, int(rng.integers(0, 6))):
            parts.append((rect(max(0.8, 0.015 * L), W * 0.96, -L / 2 + i * trailer / 6), shade(trailer_colour, 0.85)))
        return parts
    parts = [(rect(L, W), colour), (rect(0.05 * L, 0.86 * W, 0.46 * L), _DARK_GLASS)]
    for x in rng.uniform(-0.35, 0.3, int(rng.integers(1, 4))):
        parts.append((rect(0.1 * L, 0.5 * W, x * L), shade(colour, 1.25)))
    return parts


def tank_parts(rng: np.random.Generator, diameter: float, colour: Colour) -> list[Part]:
    """Top view of a cylindrical storage tank: rim, roof (fixed or floating), a sunlit highlight."""
    r = diameter / 2
    parts: list[Part] = [(ellipse(r, r), shade(colour, 0.72)), (ellipse(0.92 * r, 0.92 * r), colour)]
    if rng.random() < 0.35:
        parts.append((ellipse(0.82 * r, 0.82 * r), shade(colour, rng.uniform(0.5, 0.8))))  # floating roof
    else:
        parts.append((ellipse(0.55 * r, 0.55 * r, x=-0.08 * r, y=-0.08 * r), shade(colour, 1.08)))
    parts.append((ellipse(0.08 * r, 0.08 * r), shade(colour, 0.6)))
    return parts


def court_parts(rng: np.random.Generator, length: float, width: float, surround: Colour, court: Colour) -> list[Part]:
    """Top view of a tennis court with its run-off area: the surface, the court, its lines and the net."""
    L, W = length, width
    lc, wc = L * rng.uniform(0.6, 0.7), W * rng.uniform(0.56, 0.66)
    line = (235.0, 235.0, 235.0) if luminance(court) < 150 else (60.0, 60.0, 60.0)
    t = max(0.9, 0.013 * L)
    parts: list[Part] = [(rect(L, W), surround), (rect(lc, wc), court)]
    for y in (-wc / 2, wc / 2, -0.375 * wc, 0.375 * wc):  # doubles and singles side lines
        parts.append((rect(lc, t, 0, y), line))
    for x in (-lc / 2, lc / 2):
        parts.append((rect(t, wc, x), line))  # base lines
    service = 0.27 * lc
    for x in (-service, service):
        parts.append((rect(t, 0.75 * wc, x), line))
    parts.append((rect(2 * service, t), line))  # centre service line
    parts.append((rect(1.4 * t, wc * 1.08), shade(court, 0.35)))  # net
    return parts


def _object(
    name: str, parts: list[Part], x: float, y: float, *, size: tuple[float, float], angle: float, height: float
) -> Thing:
    return Thing(np.array([x, y, size[0], size[1], angle]), parts, layer=2, height=height, name=name)


def vehicle(
    rng: np.random.Generator, name: str, x: float, y: float, *, angle: float, scale: float, tiny: bool
) -> Thing:
    """One small or large vehicle of random size at (x, y) heading `angle` (a `tiny` one is drawn at 0.6x size)."""
    factor = scale * (0.6 if tiny else 1.0)
    if name == "small-vehicle":
        size = (rng.uniform(15, 22) * factor, rng.uniform(7.5, 10) * factor)
        parts = small_vehicle_parts(rng, *size, object_colour(rng))
    else:
        size = (rng.uniform(30, 60) * factor, rng.uniform(10, 15) * factor)
        parts = large_vehicle_parts(rng, *size, object_colour(rng))
    return _object(name, parts, x, y, size=size, angle=angle, height=size[1] * 0.35)


def parking_group(rng: np.random.Generator, scale: float, budget: int, tiny_prob: float, large: bool) -> Group:
    """A lot of vehicles side by side in rows (back-to-back row pairs with aisles), on asphalt with slot lines."""
    name = "large-vehicle" if large else "small-vehicle"
    vl, vw = (60 * scale, 15 * scale) if large else (22 * scale, 10 * scale)  # the largest vehicle of the lot
    rows = int(rng.integers(1, 3 if large else 5))
    cols = int(rng.integers(2 if large else 3, 8 if large else 11))
    pitch, depth, aisle = vw * rng.uniform(1.3, 1.7), vl * rng.uniform(1.05, 1.2), vl * rng.uniform(0.7, 1.1)
    ys = [i * depth + (i // 2) * aisle for i in range(rows)]
    ys = [y - (ys[-1] + depth) / 2 + depth / 2 for y in ys]
    length, width = cols * pitch + vw, rows * depth + ((rows - 1) // 2) * aisle + vw
    asphalt = jitter((rng.uniform(60, 150),) * 3, rng, 8)
    paint = (225.0, 225.0, 225.0) if rng.random() < 0.8 else (60.0, 200.0, 230.0)
    lot_parts: list[Part] = [(rect(length, width), asphalt)]
    for y in ys:
        for j in range(cols + 1):
            lot_parts.append((rect(max(0.8, 0.05 * vw), depth * 0.9, (j - cols / 2) * pitch, y), paint))
    things = [Thing(np.array([0.0, 0.0, length, width, 0.0]), lot_parts, layer=1)]
    fill = rng.uniform(0.45, 0.95)
    for i, y in enumerate(ys):
        facing = math.pi / 2 if i % 2 == 0 else -math.pi / 2
        for j in range(cols):
            if rng.random() < fill and len(things) <= budget:
                angle = facing + (math.pi if rng.random() < 0.25 else 0.0) + rng.normal(0, 0.04)
                x = (j + 0.5 - cols / 2) * pitch + rng.normal(0, 0.05 * vw)
                dy = rng.normal(0, 0.04 * vl)
                things.append(vehicle(rng, name, x, y + dy, angle=angle, scale=scale, tiny=rng.random() < tiny_prob))
    return Group(things, length, width)


def apron_group(rng: np.random.Generator, scale: float, budget: int) -> Group:
    """1-4 parked planes in a row on a concrete apron, noses in, or scattered headings."""
    count = int(min(budget, rng.integers(1, 5)))
    base = rng.uniform(40, 95) * scale
    same = rng.random() < 0.6
    sizes = [(base if same else rng.uniform(40, 95) * scale) for _ in range(count)]
    spans = [size * rng.uniform(0.85, 1.12) for size in sizes]
    pitch = max(spans) * rng.uniform(1.08, 1.4)
    heading = math.pi / 2 * rng.choice([-1, 1])
    colour = object_colour(rng)
    things = []
    for i, (size, span) in enumerate(zip(sizes, spans, strict=True)):
        angle = heading + rng.normal(0, 0.03) if count > 1 else rng.uniform(-math.pi, math.pi)
        paint = colour if same and rng.random() < 0.7 else object_colour(rng)
        parts = plane_parts(rng, size, span, paint)
        things.append(
            _object(
                "plane", parts, (i + 0.5 - count / 2) * pitch, 0.0, size=(size, span), angle=angle, height=0.12 * size
            )
        )
    length, width = count * pitch + 0.2 * max(sizes), max(sizes) * 1.5
    concrete = jitter((rng.uniform(120, 210),) * 3, rng, 10)
    pad: list[Part] = [(rect(length, width), concrete)]
    if rng.random() < 0.5:
        pad.append((rect(length, max(1.0, 0.02 * max(sizes)), 0, width * 0.42), (40.0, 190.0, 220.0)))
    return Group([Thing(np.array([0.0, 0.0, length, width, 0.0]), pad, layer=1), *things], length, width)


def harbour_group(rng: np.random.Generator, scale: float, budget: int, water: Colour) -> Group:
    """1-6 ships on water: moored side by side, or one under way with its wake."""
    moored = rng.random() < 0.6
    count = int(min(budget, rng.integers(2, 7) if moored else 1))
    lengths = rng.uniform(30, 110, count) * scale
    beams = lengths * rng.uniform(0.16, 0.28, count)
    pitch = beams.max() * rng.uniform(1.25, 2.0)
    things = []
    for i in range(count):
        angle = rng.choice([0.0, math.pi]) if moored else rng.uniform(-math.pi, math.pi)
        y = (i + 0.5 - count / 2) * pitch if moored else 0.0
        parts = ship_parts(rng, lengths[i], beams[i], object_colour(rng))
        things.append(_object("ship", parts, 0.0, y, size=(lengths[i], beams[i]), angle=angle, height=0.25 * beams[i]))
        if not moored:
            L, B, wake = lengths[i], beams[i], lengths[i] * rng.uniform(0.4, 1.2)
            trail = np.array([[-0.48 * L, -0.4 * B], [-0.5 * L - wake, -1.3 * B], [-0.5 * L - wake, 1.3 * B],
                              [-0.48 * L, 0.4 * B]])  # fmt: skip
            things.insert(0, Thing(things[-1].rbox.copy(), [(trail, shade(water, 1.35))], layer=1))
    extent = lengths.max() * (1.1 if moored else 3.0)
    return Group(things, extent, count * pitch if moored else extent, on_water=True)


def tank_group(rng: np.random.Generator, scale: float, budget: int) -> Group:
    """A tank farm: a grid of storage tanks of one size on a pad, sometimes inside a berm wall."""
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    diameter = rng.uniform(14, 60) * scale
    pitch = diameter * rng.uniform(1.2, 1.6)
    colour = object_colour(rng)
    things = []
    for i in range(rows):
        for j in range(cols):
            if len(things) < budget:
                d = diameter * rng.uniform(0.94, 1.06)
                x, y = (j + 0.5 - cols / 2) * pitch, (i + 0.5 - rows / 2) * pitch
                things.append(_object("storage-tank", tank_parts(rng, d, jitter(colour, rng, 12)), x, y, size=(d, d),
                                      angle=0.0, height=d * rng.uniform(0.25, 0.6)))  # fmt: skip
    length, width = cols * pitch + 0.3 * diameter, rows * pitch + 0.3 * diameter
    pad: list[Part] = [(rect(length, width), jitter((rng.uniform(90, 190),) * 3, rng, 15))]
    if rng.random() < 0.5:
        wall, t = shade(pad[0][1], 0.7), max(1.0, 0.06 * diameter)
        pad += [(rect(length, t, 0, s * width / 2), wall) for s in (-1, 1)]
        pad += [(rect(t, width, s * length / 2), wall) for s in (-1, 1)]
    return Group([Thing(np.array([0.0, 0.0, length, width, 0.0]), pad, layer=1), *things], length, width)


def court_group(rng: np.random.Generator, scale: float, budget: int) -> Group:
    """1-4 tennis courts side by side (long sides adjacent), one surface colour for the block, maybe fenced."""
    count = int(min(budget, rng.integers(1, 5)))
    length = rng.uniform(55, 95) * scale
    width = length * rng.uniform(0.47, 0.55)
    pitch = width * rng.uniform(1.0, 1.12)
    surround, court = object_colour(rng), object_colour(rng)
    things = []
    for i in range(count):
        parts = court_parts(rng, length, width, surround, court)
        things.append(
            _object(
                "tennis-court", parts, 0.0, (i + 0.5 - count / 2) * pitch, size=(length, width), angle=0.0, height=0.0
            )
        )
    block_l, block_w = length * 1.08, count * pitch + 0.08 * length
    if rng.random() < 0.5:
        fence, t = (45.0, 50.0, 45.0), max(0.9, 0.012 * length)
        outline = [(rect(block_l, t, 0, s * block_w / 2), fence) for s in (-1, 1)]
        outline += [(rect(t, block_w, s * block_l / 2), fence) for s in (-1, 1)]
        things.insert(0, Thing(np.array([0.0, 0.0, block_l, block_w, 0.0]), outline, layer=1))
    return Group(things, block_l, block_w)
