"""Layout of the synthetic aerial scenes: where the ground cover, water, roads, object groups, buildings and trees go.

Options, a seed and an image index in; a `ScenePlan` out (every polygon and colour, no pixels yet), which
`synthetic.py` renders window by window and turns into DOTA labels. Objects are placed as groups (parking lots,
aprons, tank farms, court blocks, moored ships, road traffic) on a coarse occupancy grid so that they never overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from rotated_ddetr import boxes
from rotated_ddetr.data import synthetic_objects as objects
from rotated_ddetr.data import synthetic_terrain as terrain
from rotated_ddetr.data.synthetic_objects import SYNTHETIC_CLASSES, Group
from rotated_ddetr.data.synthetic_paint import Thing, ValueNoise, rect, to_scene

_REFERENCE = 512.0  # densities are per 512 x 512 pixels
_CELL = 4  # occupancy grid cell in pixels
_GROUPS = {  # group kind: (classes it can bring, relative frequency)
    "parking": (("small-vehicle",), 0.22),
    "traffic": (("small-vehicle", "large-vehicle"), 0.08),
    "trucks": (("large-vehicle",), 0.16),
    "apron": (("plane",), 0.15),
    "harbour": (("ship",), 0.22),
    "tanks": (("storage-tank",), 0.11),
    "courts": (("tennis-court",), 0.11),
}


@dataclass(frozen=True)
class SyntheticOptions:
    """What the generated scenes hold. Densities are per 512 x 512 pixels (scaled by area for larger scenes).

    Attributes:
        objects: (min, max) labelled objects per 512 x 512 pixels; the generator stops early when space runs out.
        scale: (min, max) object size factor drawn once per image; at 1.0 objects span about 15-110 px.
        classes: the classes to generate (a subset of SYNTHETIC_CLASSES).
        water: chance of a water body per 512 x 512 pixels (ships appear only on water).
        distractors: density factor of unlabelled buildings and tree clumps.
        tiny: share of vehicles drawn at 0.6x size (most then fall below `difficult_below`).
        occlusion: share of objects on land partly covered by a tree clump.
        cut_keep: objects cut by the border keep their difficult flag when at least this share is visible, else 2.
        difficult_below: objects whose rectangle's short side is below this many pixels are difficult 1.
        stripe: rows rendered at a time (bounds memory for large scenes; part of the seeded output).
    """

    objects: tuple[int, int] = (5, 40)
    scale: tuple[float, float] = (0.8, 1.25)
    classes: tuple[str, ...] = SYNTHETIC_CLASSES
    water: float = 0.55
    distractors: float = 1.0
    tiny: float = 0.04
    occlusion: float = 0.05
    cut_keep: float = 0.7
    difficult_below: float = 6.0
    stripe: int = 512

    def __post_init__(self) -> None:
        unknown = set(self.classes) - set(SYNTHETIC_CLASSES)
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {SYNTHETIC_CLASSES}, got {self.classes}")
        if not 0 <= self.objects[0] <= self.objects[1] or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"need 0 <= objects[0] <= objects[1] and 0 < scale[0] <= scale[1]: {self}")
        if self.stripe < 1:
            raise ValueError(f"stripe must be >= 1 row, got {self.stripe}")


@dataclass
class ScenePlan:
    """Everything about one scene except its pixels; `synthetic.render` paints any window of it.

    Attributes:
        width, height: scene size in pixels.
        seeds: (dataset seed, image index) it was planned from (also seeds the per-window sensor grain).
        scale: the object size factor of this scene.
        sun: shadow offset in pixels per unit of a thing's height (x, y).
        shadow_strength: how much a shadow darkens the ground (0..1).
        ground, ripple, fields, water: the scenery (ground noise, water ripple noise, crop fields, water bodies).
        things: roads, pads, objects, buildings and trees, sorted by layer (draw order).
    """

    width: int
    height: int
    seeds: tuple[int, int]
    scale: float
    sun: tuple[float, float]
    shadow_strength: float
    ground: terrain.Ground
    ripple: ValueNoise
    fields: list[terrain.Field]
    water: list[terrain.Water]
    things: list[Thing] = field(default_factory=list)


class _Occupancy:
    """Coarse masks (one cell per 4 x 4 px) of what is already taken, water and roads, to place groups."""

    def __init__(self, width: int, height: int, water: list[terrain.Water], roads: list[Thing]):
        shape = (math.ceil(height / _CELL), math.ceil(width / _CELL))
        self.taken, self.water, self.road = (np.zeros(shape, np.uint8) for _ in range(3))
        for body in water:
            cv2.fillPoly(self.water, [np.round(body.polygon / _CELL).astype(np.int32)], 1)
        for road in roads:
            cv2.fillPoly(self.road, [np.round(to_scene(road.parts[0][0], road.rbox) / _CELL).astype(np.int32)], 1)
        self.water_cells = np.flatnonzero(self.water)

    def _patch(self, polygon: np.ndarray):
        """(rows, cols) slices of the grid under `polygon` and its mask there, or None when off the grid."""
        cells = polygon / _CELL
        x0, y0 = np.maximum(np.floor(cells.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(cells.max(0)).astype(int) + 1, self.taken.shape[::-1])
        if x0 >= x1 or y0 >= y1:
            return None
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(cells - [x0, y0]).astype(np.int32)], 1)
        return (slice(y0, y1), slice(x0, x1)), mask.astype(bool)

    def free(self, polygon: np.ndarray, where: str) -> bool:
        """Whether `polygon` (scene px) is clear of taken cells and lies on `where`: "land", "water" or "road"."""
        patch = self._patch(polygon)
        if patch is None:
            return False
        cells, mask = patch
        if (self.taken[cells][mask]).any():
            return False
        water, road = self.water[cells][mask], self.road[cells][mask]
        if where == "water":
            return bool(water.all())
        return not water.any() and (bool(road.all()) if where == "road" else not road.any())

    def take(self, polygon: np.ndarray) -> None:
        """Marks the cells under `polygon` as taken."""
        patch = self._patch(polygon)
        if patch is not None:
            self.taken[patch[0]] |= patch[1].astype(np.uint8)

    def random_water_point(self, rng: np.random.Generator) -> np.ndarray | None:
        """A random scene point on water, or None without water."""
        if len(self.water_cells) == 0:
            return None
        row, col = np.divmod(int(rng.choice(self.water_cells)), self.water.shape[1])
        return (np.array([col, row]) + rng.random(2)) * _CELL


def _place(rng: np.random.Generator, group: Group, occupancy: _Occupancy, size: tuple[int, int], margin: float):
    """Tries positions for `group`; returns its things in the scene, or None when no free place was found."""
    for _ in range(12):
        angle = rng.uniform(-math.pi, math.pi) if rng.random() < 0.6 else rng.integers(4) * math.pi / 2
        if group.on_water:
            centre = occupancy.random_water_point(rng)
            if centre is None:
                return None
        else:
            centre = rng.uniform(0.02, 0.98, 2) * size
        footprint = to_scene(rect(group.length + margin, group.width + margin), np.array([*centre, 0, 0, angle]))
        if occupancy.free(footprint, "water" if group.on_water else "land"):
            occupancy.take(footprint)
            things = [thing.moved(centre[0], centre[1], angle) for thing in group.things]
            for thing in things:
                if thing.name == "storage-tank":
                    thing.rbox[4] = 0.0  # tanks are labelled by axis-aligned squares, as in DOTA
            return things
    return None


def _traffic(rng, roads: list[Thing], occupancy: _Occupancy, size, scale: float, budget: int, options) -> list[Thing]:
    """1-6 vehicles (of the allowed classes; a quarter large) in the lanes of a random road, on free road surface."""
    names = [name for name in _GROUPS["traffic"][0] if name in options.classes]
    road = roads[int(rng.integers(len(roads)))]
    direction = np.array([math.cos(road.rbox[4]), math.sin(road.rbox[4])])
    along = float((rng.uniform(0, 1, 2) * size - road.rbox[:2]) @ direction)
    lane = (road.rbox[3] - 2) / 4
    things = []
    for _ in range(int(min(budget, rng.integers(1, 7)))):
        side = rng.choice([-1.0, 1.0])
        name = names[-1] if rng.random() < 0.25 else names[0]
        centre = road.rbox[:2] + along * direction + side * lane * np.array([-direction[1], direction[0]])
        angle = road.rbox[4] + (math.pi if side < 0 else 0.0) + rng.normal(0, 0.02)
        car = objects.vehicle(rng, name, *centre, angle=angle, scale=scale, tiny=rng.random() < options.tiny)
        footprint = to_scene(rect(car.rbox[2] + 2, car.rbox[3] + 1), car.rbox)
        if occupancy.free(footprint, "road"):
            occupancy.take(footprint)
            things.append(car)
        along += car.rbox[2] * rng.uniform(1.6, 4.0) * rng.choice([-1, 1])
    return things


def _group(rng, kind: str, scale: float, budget: int, options: SyntheticOptions, water_colour) -> Group:
    """A freshly built group of the given kind (in its own frame)."""
    if kind in ("parking", "trucks"):
        return objects.parking_group(rng, scale, budget, options.tiny, large=kind == "trucks")
    if kind == "apron":
        return objects.apron_group(rng, scale, budget)
    if kind == "harbour":
        return objects.harbour_group(rng, scale, budget, water_colour)
    if kind == "tanks":
        return objects.tank_group(rng, scale, budget)
    return objects.court_group(rng, scale, budget)


def _plan_objects(rng, plan: ScenePlan, roads: list[Thing], occupancy: _Occupancy, options: SyntheticOptions):
    """Places labelled groups until the drawn object count is reached or space runs out."""
    area = plan.width * plan.height / _REFERENCE**2
    target = int(round(rng.integers(options.objects[0], options.objects[1] + 1) * area))
    kinds = [k for k, (names, _) in _GROUPS.items() if set(names) & set(options.classes)]
    kinds = [k for k in kinds if (k != "harbour" or plan.water) and (k != "traffic" or roads)]
    if not kinds:
        return
    weights = np.array([_GROUPS[k][1] for k in kinds])
    size, count, failures = np.array([plan.width, plan.height]), 0, 0
    water_colour = plan.water[0].colour if plan.water else (0.0, 0.0, 0.0)
    while count < target and failures < 30 + target // 10:
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind == "traffic":
            placed = _traffic(rng, roads, occupancy, size, plan.scale, target - count, options)
        else:
            group = _group(rng, kind, plan.scale, target - count, options, water_colour)
            placed = _place(rng, group, occupancy, size, 4 * plan.scale) or []
        labelled = sum(thing.name is not None for thing in placed)
        failures += labelled == 0
        count += labelled
        plan.things.extend(placed)


def _plan_scenery(rng: np.random.Generator, plan: ScenePlan, occupancy: _Occupancy, options: SyntheticOptions):
    """Unlabelled buildings and tree clumps on free land."""
    area, size = plan.width * plan.height / _REFERENCE**2, np.array([plan.width, plan.height])
    for _ in range(rng.poisson(5 * options.distractors * area)):
        group = Group([terrain.building(rng, plan.scale)], 0, 0)
        group.length, group.width = group.things[0].rbox[2:4]
        plan.things.extend(_place(rng, group, occupancy, size, 6 * plan.scale) or [])
    for _ in range(rng.poisson(6 * options.distractors * area)):
        tree = terrain.tree_cluster(rng, plan.scale)
        plan.things.extend(_place(rng, Group([tree], *tree.rbox[2:4]), occupancy, size, 0) or [])


def _occlude(rng: np.random.Generator, plan: ScenePlan, options: SyntheticOptions) -> None:
    """Covers a share of the objects on land partly with trees; >= 35% hidden is difficult, >= 85% unlabelled."""
    for thing in [t for t in plan.things if t.name not in (None, "ship") and rng.random() < options.occlusion]:
        length, breadth = thing.rbox[2:4]
        offset = rng.uniform(0.15, 0.5) * length * rng.choice([-1, 1])
        tree = terrain.tree_cluster(rng, plan.scale, radius=rng.uniform(0.4, 0.9) * breadth)
        tree = tree.moved(*to_scene(np.array([[offset, 0.0]]), thing.rbox)[0], rng.uniform(-math.pi, math.pi))
        box = np.floor(thing.bounds()[:2]).astype(int) - 1
        shape = (np.ceil(thing.bounds()[3:1:-1] - box[::-1]).astype(int) + 2).tolist()
        body, cover = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        cv2.fillPoly(body, [np.round(boxes.rboxes_to_corners(thing.rbox) - box).astype(np.int32)], 1)
        for poly, _ in tree.scene_parts():
            cv2.fillPoly(cover, [np.round(poly - box).astype(np.int32)], 1)
        hidden = (body & cover).sum() / max(body.sum(), 1)
        if hidden >= 0.85:
            thing.name = None
        elif hidden >= 0.35:
            thing.difficult = 1
        plan.things.append(tree)


def plan_scene(width: int, height: int, seed: int, index: int, options: SyntheticOptions) -> ScenePlan:
    """Plans scene `index` of the dataset with `seed`: everything but the pixels (deterministic in its arguments)."""
    rng = np.random.default_rng([seed, index])
    scale = float(rng.uniform(*options.scale))
    sun_angle, sun_length = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 1.0)
    plan = ScenePlan(
        width, height, (seed, index), scale,
        (sun_length * math.cos(sun_angle), sun_length * math.sin(sun_angle)), rng.uniform(0.3, 0.55),
        terrain.plan_ground(rng, width, height), ValueNoise(rng, width, height, 5.0),
        terrain.plan_fields(rng, width, height, scale), terrain.plan_water(rng, width, height, options.water),
    )  # fmt: skip
    roads = terrain.plan_roads(rng, width, height, scale)
    occupancy = _Occupancy(width, height, plan.water, roads)
    plan.things.extend(roads)
    _plan_objects(rng, plan, roads, occupancy, options)
    _plan_scenery(rng, plan, occupancy, options)
    _occlude(rng, plan, options)
    plan.things.sort(key=lambda thing: thing.layer)  # stable: draw order within a layer is kept
    return plan
