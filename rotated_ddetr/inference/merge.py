"""Merging tiles: per-tile `Detections` (tile pixels) -> one scene's `Detections` (scene pixels), after postprocess.

Each tile's boxes are moved to the scene (shifted by the tile's corner, divided by its rate), flagged when they
touch an inner tile edge (possibly cut), then merged by class-wise rotated NMS (`batched_nms_rotated`, IoU 0.1 as
the DOTA toolkits), preferring boxes that no tile edge cuts. Greedy NMS runs separately on groups of boxes that can
overlap (connected components of a grid of box extents): the same result as one global call, without its
quadratic cost over a whole scene.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rotated_ddetr.boxes import rboxes_to_corners
from rotated_ddetr.inference.postprocess import Detections
from rotated_ddetr.ops import batched_nms_rotated, box_iou_rotated
from rotated_ddetr.tiles import Tile

_NMS_CHUNK = 4096  # boxes per NMS call: greedy NMS visits all later boxes for each kept one


def empty_detections() -> Detections:
    """No detections: (0, 5) float32 rboxes, (0,) float32 scores, (0,) int64 labels."""
    return Detections(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64))


def touches_inner_edge(rboxes: torch.Tensor, tile: Tile, margin: float = 4.0) -> torch.Tensor:
    """(K,) bool: boxes reaching within `margin` pixels of (or past) an edge of `tile` that lies inside the scene.

    Args:
        rboxes: (K, 5) rboxes in the tile's pixels.
        tile: the tile; its `inner_edges` say which edges are not the scene border.
        margin: distance in tile pixels.
    """
    corners = rboxes_to_corners(rboxes.double())  # (K, 4, 2)
    low, high = corners.amin(dim=1), corners.amax(dim=1)  # (K, 2) extents (x, y)
    left, top, right, bottom = tile.inner_edges
    near = torch.zeros(len(rboxes), dtype=torch.bool)
    near |= left & (low[:, 0] <= margin)
    near |= top & (low[:, 1] <= margin)
    near |= right & (high[:, 0] >= tile.width - margin)
    near |= bottom & (high[:, 1] >= tile.height - margin)
    return near


def tile_to_scene(detections: Detections, tile: Tile) -> Detections:
    """Tile-pixel detections -> scene pixels: centres shifted by the tile's corner, then everything in pixels divided
    by the tile's rate; angles unchanged (a uniform scale keeps the canonical form). Returned on the CPU, rboxes
    float32 (computed in float64)."""
    rboxes = detections.rboxes.detach().cpu().double().clone()
    rboxes[:, 0] += tile.left
    rboxes[:, 1] += tile.up
    rboxes[:, :4] /= tile.rate
    return Detections(rboxes.float(), detections.scores.detach().cpu().float(), detections.labels.detach().cpu().long())


def overlap_pairs(rboxes: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) of same-label boxes whose axis-aligned extents meet: every pair that may overlap.

    The extents are hashed into a grid of cells about twice the median box extent; only boxes sharing a cell are
    compared, so the cost follows the local density, not the square of the scene's box count.

    Returns:
        (P,) int64 arrays i and j, each pair once.
    """
    count = len(rboxes)
    if count < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    corners = rboxes_to_corners(rboxes.double()).numpy()
    low, high = corners.min(axis=1), corners.max(axis=1)  # (K, 2)
    cell = float(np.clip(2 * np.median(high - low), 16.0, 4096.0))
    c0, c1 = np.floor(low / cell).astype(np.int64), np.floor(high / cell).astype(np.int64)
    spans = c1 - c0 + 1  # (K, 2) cells covered along x and y
    per_box = spans[:, 0] * spans[:, 1]
    box = np.repeat(np.arange(count), per_box)
    k = np.arange(len(box)) - np.repeat(np.cumsum(per_box) - per_box, per_box)  # index of the cell within the box
    cx, cy = c0[box, 0] + k % spans[box, 0], c0[box, 1] + k // spans[box, 0]
    order = np.lexsort((box, cy, cx, labels.numpy()[box]))
    box, keys = box[order], np.stack((labels.numpy()[box], cx, cy), axis=1)[order]
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], len(box)]
    group_end = np.repeat(ends, ends - starts)
    later = group_end - np.arange(len(box)) - 1  # entries after each one in its cell
    first = np.repeat(np.arange(len(box)), later)
    second = first + 1 + (np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later))
    i, j = box[first], box[second]
    i, j = np.minimum(i, j), np.maximum(i, j)
    unique = np.unique(i * count + j)
    i, j = unique // count, unique % count
    meet = (low[i] <= high[j]).all(axis=1) & (low[j] <= high[i]).all(axis=1)
    return i[meet], j[meet]


def grouped_nms(rboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """`batched_nms_rotated` with the same result, run per group of possibly overlapping boxes.

    Greedy NMS only suppresses overlapping boxes, so connected components of `overlap_pairs` are independent: boxes
    alone in theirs are kept, the others go to the kernel in chunks of whole components, with the component as label.

    Args:
        rboxes: (N, 5) CPU rboxes; scores: (N,) floating; labels: (N,) int64.
        iou_threshold: IoU above which the lower-scored box of a label is suppressed, in [0, 1].

    Returns:
        (K,) int64 indices of the kept boxes by decreasing score (equal scores: lower index first).
    """
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    count = len(rboxes)
    i, j = overlap_pairs(rboxes, labels)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(count, count))
    components = connected_components(graph, directed=False)[1] if count else np.zeros(0, np.int64)
    sizes = np.bincount(components, minlength=1)
    kept = [np.flatnonzero(sizes[components] == 1)]
    grouped = np.flatnonzero(sizes[components] > 1)
    grouped = grouped[np.argsort(components[grouped], kind="stable")]
    bounds = np.flatnonzero(np.r_[True, np.diff(components[grouped]) != 0, True])  # component starts + end
    start = 0
    while start < len(grouped):
        ends = bounds[bounds > start]
        fitting = ends[ends - start <= _NMS_CHUNK]
        stop = int(fitting[-1]) if len(fitting) else int(ends[0])  # whole components; a huge one alone
        chunk = torch.from_numpy(grouped[start:stop])
        keep = batched_nms_rotated(rboxes[chunk], scores[chunk], torch.from_numpy(components)[chunk], iou_threshold)
        kept.append(chunk[keep].numpy())
        start = stop
    kept_all = torch.from_numpy(np.concatenate(kept)).long()
    order = np.lexsort((kept_all.numpy(), -scores[kept_all].double().numpy()))
    return kept_all[torch.from_numpy(order)]


def _covered_cut(rboxes: torch.Tensor, labels: torch.Tensor, cut: torch.Tensor, cover: float) -> torch.Tensor:
    """(N,) bool: cut boxes of which at least `cover` of the area lies inside an uncut box of the same label."""
    i, j = overlap_pairs(rboxes, labels)
    keep = cut.numpy()[i] != cut.numpy()[j]
    i, j = torch.from_numpy(i[keep]), torch.from_numpy(j[keep])
    cut_box, whole = torch.where(cut[i], i, j), torch.where(cut[i], j, i)
    covered = torch.zeros(len(rboxes), dtype=torch.bool)
    if len(cut_box):
        a, b = rboxes[cut_box].double(), rboxes[whole].double()
        iou = box_iou_rotated(a, b, aligned=True)
        area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
        inter = iou * (area_a + area_b) / (1 + iou)  # from IoU = I / (A + B - I)
        covered[cut_box[inter >= cover * area_a]] = True
    return covered


def check_merge_options(
    iou_threshold: float, max_detections: int | None, names: Mapping[str, str] | None = None
) -> None:
    """Refuses merge options before any work: iou_threshold in [0, 1], max_detections >= 1 or None.

    An IoU threshold of 0 suppresses every box overlapping a better one of its class at all (not "no merge"); 1
    suppresses none (cut views covered by a whole box are still dropped, see `merge_detections`). A cap of 0 would
    return nothing, which no caller means (some tools read 0 as "no cap"): None is the way to ask for no cap.

    Args:
        iou_threshold, max_detections: as `merge_detections`.
        names: how messages name each option, by parameter name; a caller passes its own names
            ({"iou_threshold": "--nms-iou", "max_detections": "--max-dets"}). Default: the parameter names.

    Raises:
        ValueError: one line naming the first bad option and its value.
    """
    name = {"iou_threshold": "iou_threshold", "max_detections": "max_detections", **(names or {})}
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"{name['iou_threshold']} must be in [0, 1], got {iou_threshold}")
    if max_detections is not None and not max_detections >= 1:
        raise ValueError(f"{name['max_detections']} must be >= 1, got {max_detections}")


def merge_detections(
    detections: list[Detections],
    cut: list[torch.Tensor] | None = None,
    iou_threshold: float = 0.1,
    prefer_whole: bool = True,
    cover_threshold: float = 0.4,
    max_detections: int | None = None,
) -> Detections:
    """Merges the scene-pixel detections of all tiles into one scene's detections.

    Class-wise greedy rotated NMS at `iou_threshold`. With `prefer_whole`, boxes that do not touch an inner tile
    edge rank before those that do (so an object seen whole by one tile suppresses its cut views, whatever their
    scores), and a surviving cut box is dropped when at least `cover_threshold` of it lies inside a kept uncut box
    of its class. Cut boxes that no tile sees whole are kept (objects larger than the tile overlap).

    Args:
        detections: per tile, scene-pixel `Detections` (e.g. from `tile_to_scene`).
        cut: per tile, (K_t,) bool from `touches_inner_edge`; None: no box is cut.
        iou_threshold: NMS IoU threshold in [0, 1] (0.1 as the DOTA toolkits' merge): a box overlapping a kept one of
            its class by more is dropped.
        prefer_whole: prefer the tile where an object is not cut (see above).
        cover_threshold: share of a cut box's area inside an uncut box that drops it. A corner piece of a diagonal
            object is a triangle whose box is about half outside the object, hence well below 0.5.
        max_detections: keep at most this many (the highest scores), >= 1; None: no cap.

    Returns:
        The scene's `Detections` by decreasing score: rboxes (K, 5) float32 canonical scene pixels, scores, labels.

    Raises:
        ValueError: iou_threshold outside [0, 1] or max_detections < 1 (`check_merge_options`), even with no
            detections.
    """
    check_merge_options(iou_threshold, max_detections)
    if not detections:
        return empty_detections()
    rboxes = torch.cat([d.rboxes for d in detections]).float()
    scores = torch.cat([d.scores for d in detections]).float()
    labels = torch.cat([d.labels for d in detections]).long()
    flags = torch.cat(cut) if cut is not None and prefer_whole else torch.zeros(len(rboxes), dtype=torch.bool)
    lift = float(scores.max() - scores.min()) + 1.0 if len(scores) else 0.0
    priority = scores.double() + lift * (~flags).double()  # every uncut box ranks before every cut one
    kept = grouped_nms(rboxes, priority, labels, iou_threshold)
    if flags[kept].any():
        kept = kept[~_covered_cut(rboxes[kept], labels[kept], flags[kept], cover_threshold)]
    kept = kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    if max_detections is not None:
        kept = kept[:max_detections]
    return Detections(rboxes[kept], scores[kept], labels[kept])
