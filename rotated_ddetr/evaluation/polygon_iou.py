"""IoU of DOTA quadrilaterals with the devkit's semantics: pairs of (K, 8) polygons in -> (K,) IoUs out (for the mAP).

`polygon_iou_pairs`: vectorised, with a bound on the devkit's own rounding; `devkit_polygon_iou`: a bit-identical
scalar port of the devkit's `polyiou.iou_poly`, for the few pairs where that rounding decides an outcome.
"""

from __future__ import annotations

import numpy as np

# Both compute inter = integral of w_P * w_Q, with w the winding number of each quadrilateral after it was turned
# to a positive signed area, and IoU = inter / (|area P| + |area Q| - inter): the intersection area for simple
# polygons (convex or not, either orientation), the devkit's own value for self-intersecting ones.

_EPS = 1e-8  # the devkit's sig() tolerance
DEVKIT_ROUNDING = 1e-12  # |polyiou - exact| <= this * (largest |coordinate|)^2 / union (measured: <= 3e-14)


def _sig(d: float) -> int:
    return (d > _EPS) - (d < -_EPS)


def _cross(o: tuple, a: tuple, b: tuple) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (b[0] - o[0]) * (a[1] - o[1])


def _area(ps: list) -> float:
    res = 0.0
    for i in range(len(ps)):
        p, q = ps[i], ps[(i + 1) % len(ps)]
        res += p[0] * q[1] - p[1] * q[0]
    return res / 2.0


def _same(p: tuple, q: tuple) -> bool:
    return _sig(p[0] - q[0]) == 0 and _sig(p[1] - q[1]) == 0


def _cut(p: list, a: tuple, b: tuple) -> list:
    """The devkit's polygon_cut: keeps the part of `p` left of the line a->b."""
    pp = []
    n = len(p)
    for i in range(n):
        ci, cj = _cross(a, b, p[i]), _cross(a, b, p[(i + 1) % n])
        if _sig(ci) > 0:
            pp.append(p[i])
        if _sig(ci) != _sig(cj):
            c, d = p[i], p[(i + 1) % n]
            s1, s2 = _cross(a, b, c), _cross(a, b, d)
            if _sig(s2 - s1) != 0 and not (_sig(s1) == 0 and _sig(s2) == 0):
                pp.append(((c[0] * s2 - d[0] * s1) / (s2 - s1), (c[1] * s2 - d[1] * s1) / (s2 - s1)))
    out = [q for i, q in enumerate(pp) if i == 0 or not _same(q, pp[i - 1])]
    while len(out) > 1 and _same(out[-1], out[0]):
        out.pop()
    return out


def _triangle_inter(a: tuple, b: tuple, c: tuple, d: tuple) -> float:
    """Signed intersection area of the triangles (o, a, b) and (o, c, d), o the origin."""
    o = (0.0, 0.0)
    s1, s2 = _sig(_cross(o, a, b)), _sig(_cross(o, c, d))
    if s1 == 0 or s2 == 0:
        return 0.0
    if s1 == -1:
        a, b = b, a
    if s2 == -1:
        c, d = d, c
    p = [o, a, b]
    p = _cut(p, o, c)
    p = _cut(p, c, d)
    p = _cut(p, d, o)
    res = abs(_area(p)) if p else 0.0
    return -res if s1 * s2 == -1 else res


def devkit_polygon_iou(p: np.ndarray, q: np.ndarray) -> float:
    """IoU of two quadrilaterals exactly as the devkit's `polyiou.iou_poly(p, q)` computes it (same rounding).

    Args:
        p: (8,) x1 y1 ... x4 y4 (pixels).
        q: (8,) the other quadrilateral.

    Returns:
        The devkit's IoU; nan when both quadrilaterals have zero area (the devkit divides 0 by 0).
    """
    ps1 = [(float(p[2 * i]), float(p[2 * i + 1])) for i in range(4)]
    ps2 = [(float(q[2 * i]), float(q[2 * i + 1])) for i in range(4)]
    area1, area2 = _area(ps1), _area(ps2)
    if area1 < 0:
        ps1.reverse()
    if area2 < 0:
        ps2.reverse()
    inter = 0.0
    for i in range(4):
        for j in range(4):
            inter += _triangle_inter(ps1[i], ps1[(i + 1) % 4], ps2[j], ps2[(j + 1) % 4])
    union = abs(_area(ps1)) + abs(_area(ps2)) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(inter) / np.float64(union))


_NEXT = [1, 2, 3, 0]  # index of the next vertex


def _rows_max(a: np.ndarray) -> np.ndarray:
    """(4, K) -> (K,) maximum over the 4 rows (faster than a reduction over a short axis)."""
    return np.maximum(np.maximum(a[0], a[1]), np.maximum(a[2], a[3]))


def _extent(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(4, K) vertices -> (K,) the larger side of their axis-aligned extent."""
    return np.maximum(_rows_max(x) + _rows_max(-x), _rows_max(y) + _rows_max(-y))


def _boundary_inside(ax, ay, bx, by, tol, own_edges: bool) -> np.ndarray:
    """Twice the signed area swept by the parts of polygon A's edges that lie inside polygon B (Green's theorem).

    Arrays put the K problems last, so that every operation runs over contiguous memory.

    Args:
        ax, ay: (4, K) vertices of A (convex, positive orientation; a triangle repeats a vertex).
        bx, by: (4, K) vertices of B (same kind).
        tol: (K,) slack (px^2) of the side tests.
        own_edges: A's edge lying along an edge of B counts when True; when False it counts only where the two
            run in opposite directions, so a shared boundary is counted once and a touching one cancels out.

    Returns:
        (K,) sum over A's edges of cross(start, end) of their clipped parts.
    """
    ex, ey = bx[_NEXT] - bx, by[_NEXT] - by  # (4, K) B's edge directions
    # d[i, j] > 0: vertex i of A lies left of (inside) edge j of B; (4 vertices, 4 edges, K)
    d = ex * ay[:, None] - ey * ax[:, None] - (ex * by - ey * bx)
    d_end = d[_NEXT]  # the other end of A's edge i is vertex i + 1
    in_start = d >= -tol
    in_end = in_start[_NEXT]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cross = d / (d - d_end)
    lo = np.where(in_end & ~in_start, t_cross, 0.0)  # where each half-plane of B lets A's edge i begin / end
    hi = np.where(in_start & ~in_end, t_cross, 1.0)
    out = in_start | in_end
    fx, fy = ax[_NEXT] - ax, ay[_NEXT] - ay  # (4, K) A's edge directions
    if not own_edges:
        near = np.abs(d) <= tol
        i, j, k = np.nonzero(near & near[_NEXT])  # A's edge i runs along B's edge j (rare: shared sides)
        out[i, j, k] &= fx[i, k] * ex[j, k] + fy[i, k] * ey[j, k] <= 0
    t_lo = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), np.maximum(lo[:, 2], lo[:, 3]))  # (4, K)
    t_hi = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), np.minimum(hi[:, 2], hi[:, 3]))
    keep = out[:, 0] & out[:, 1] & out[:, 2] & out[:, 3] & (t_lo < t_hi)
    # cross(start, end) of the kept part, start = A_i + t_lo * f, end = start + (t_hi - t_lo) * f
    swept = (t_hi - t_lo) * ((ax + t_lo * fx) * fy - (ay + t_lo * fy) * fx)
    return np.where(keep, swept, 0.0).sum(axis=0)


def _convex_inter_area(px, py, qx, qy) -> np.ndarray:
    """(4, K) vertices of convex polygons P and Q (positive orientation, local coordinates) -> (K,) |P ∩ Q|."""
    scale = np.maximum(_rows_max(np.abs(px)), _rows_max(np.abs(py)))
    scale = np.maximum(scale, np.maximum(_rows_max(np.abs(qx)), _rows_max(np.abs(qy)))) + 1.0
    tol = 1e-10 * scale * scale
    return 0.5 * (_boundary_inside(px, py, qx, qy, tol, True) + _boundary_inside(qx, qy, px, py, tol, False))


def _signed_areas(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(4, K) vertices -> (K,) signed shoelace areas (positive: the devkit keeps the order, negative: it reverses)."""
    return 0.5 * ((x[0] - x[2]) * (y[1] - y[3]) - (x[1] - x[3]) * (y[0] - y[2]))


def _convexity(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, K) vertices -> (K,) signed shoelace areas and (K,) True where strictly convex."""
    area = _signed_areas(x, y)
    prev = [3, 0, 1, 2]
    turns = (x - x[prev]) * (y[_NEXT] - y) - (y - y[prev]) * (x[_NEXT] - x)  # (4, K) turn at each vertex
    scale = np.maximum(_rows_max(np.abs(x)), _rows_max(np.abs(y))) + 1.0
    ok = turns * np.sign(area) > 1e-9 * scale * scale
    convex = ok[0] & ok[1] & ok[2] & ok[3]
    return area, convex


def _oriented(x: np.ndarray, y: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, K) vertices listed with positive orientation (reversed where `area` < 0)."""
    flip = area < 0
    return np.where(flip, x[[3, 2, 1, 0]], x), np.where(flip, y[[3, 2, 1, 0]], y)


def _pieces(x: np.ndarray, y: np.ndarray, area: np.ndarray, convex: np.ndarray) -> list:
    """Convex pieces of quadrilaterals whose weighted indicators sum to the devkit's winding number.

    Args:
        x, y: (4, K) vertices in local coordinates.
        area: (K,) their signed areas; convex: (K,) True where strictly convex.

    Returns:
        Two (x (4, K), y (4, K), weight (K,)) pieces with positive orientation (a triangle repeats its last vertex):
        a convex quadrilateral is one piece of weight 1, any other is its triangle fan from vertex 0, each
        triangle weighted by its sign (and negated where the devkit turns the quadrilateral around).
    """
    pieces = []
    for tri in ([0, 1, 2, 2], [0, 2, 3, 3]):
        tx, ty = x[tri], y[tri]
        t_area = _signed_areas(tx, ty)
        tx, ty = _oriented(tx, ty, t_area)
        pieces.append([tx, ty, np.sign(t_area) * np.where(area < 0, -1.0, 1.0)])
    qx, qy = _oriented(x, y, area)
    pieces[0] = [np.where(convex, qx, pieces[0][0]), np.where(convex, qy, pieces[0][1]), pieces[0][2]]
    pieces[0][2][convex], pieces[1][2][convex] = 1.0, 0.0
    return pieces


def _general_inter(px, py, p_area, p_convex, qx, qy, q_area, q_convex) -> np.ndarray:
    """(K,) integral of w_P * w_Q for any quadrilaterals: sum of weighted intersections of their convex pieces."""
    inter = np.zeros(px.shape[1])
    for ax, ay, wa in _pieces(px, py, p_area, p_convex):
        for bx, by, wb in _pieces(qx, qy, q_area, q_convex):
            w = wa * wb
            sel = np.nonzero(w)[0]
            inter[sel] += w[sel] * _convex_inter_area(ax[:, sel], ay[:, sel], bx[:, sel], by[:, sel])
    return inter


def _iou_chunk(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`polygon_iou_pairs` on one chunk: (K, 8), (K, 8) -> (K,) IoU and (K,) error bound."""
    ox, oy = p[:, 0:1], p[:, 1:2]  # local origin: the first vertex of p, so no digits are lost to the image offset
    px, py = (p[:, 0::2] - ox).T, (p[:, 1::2] - oy).T  # (4, K)
    qx, qy = (q[:, 0::2] - ox).T, (q[:, 1::2] - oy).T
    p_area, p_convex = _convexity(px, py)
    q_area, q_convex = _convexity(qx, qy)
    both = p_convex & q_convex
    if both.all():
        inter = _convex_inter_area(*_oriented(px, py, p_area), *_oriented(qx, qy, q_area))
    else:
        inter = np.empty(len(p))
        c, g = np.nonzero(both)[0], np.nonzero(~both)[0]
        inter[c] = _convex_inter_area(
            *_oriented(px[:, c], py[:, c], p_area[c]), *_oriented(qx[:, c], qy[:, c], q_area[c])
        )
        parts = [v[..., g] for v in (px, py, p_area, p_convex, qx, qy, q_area, q_convex)]
        inter[g] = _general_inter(*parts)
    area_p, area_q = np.abs(p_area), np.abs(q_area)
    union = area_p + area_q - inter
    extent_p, extent_q = _extent(px, py), _extent(qx, qy)
    # the devkit sums triangles fanned from the image origin: its rounding grows with the coordinates squared
    local = np.maximum(np.maximum(_rows_max(np.abs(px)), _rows_max(np.abs(py))), _rows_max(np.abs(qx)))
    reach = np.maximum(np.abs(ox[:, 0]), np.abs(oy[:, 0])) + np.maximum(local, _rows_max(np.abs(qy))) + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        err = 1e-9 + DEVKIT_ROUNDING * reach * reach / union
    thin = (area_p <= 1e-6 * extent_p * extent_p) | (area_q <= 1e-6 * extent_q * extent_q)
    err[thin | ~np.isfinite(iou) | ~(union > 0)] = np.inf
    return iou, err


def polygon_iou_pairs(p: np.ndarray, q: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """IoU of each pair of quadrilaterals with the devkit's semantics, vectorised.

    Exact geometry in float64 (convex clipping by Green's theorem on boundary segments; non-convex or
    self-intersecting quadrilaterals as signed triangle fans), in coordinates local to each pair.

    Args:
        p: (K, 8) quadrilaterals x1 y1 ... x4 y4 (pixels), e.g. ground truth.
        q: (K, 8) the other quadrilateral of each pair, e.g. detections.
        chunk: pairs per vectorised batch (sized to stay in cache).

    Returns:
        (K,) float64 IoUs, and (K,) a bound on |devkit's polyiou value - returned value|: inf where only the devkit's
        own arithmetic can tell (zero or near-zero areas); use `devkit_polygon_iou` there.
    """
    p, q = np.asarray(p, dtype=np.float64).reshape(-1, 8), np.asarray(q, dtype=np.float64).reshape(-1, 8)
    if len(p) != len(q):
        raise ValueError(f"polygon_iou_pairs needs as many p as q, got {len(p)} and {len(q)}")
    iou, err = np.empty(len(p)), np.empty(len(p))
    for s in range(0, len(p), chunk):
        iou[s : s + chunk], err[s : s + chunk] = _iou_chunk(p[s : s + chunk], q[s : s + chunk])
    return iou, err


def simple_quads(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas of quadrilaterals, and whether each is a simple (not self-intersecting), non-degenerate one.

    Args:
        polygons: (N, 8) x1 y1 ... x4 y4 (pixels).

    Returns:
        (N,) float64 absolute shoelace areas (px^2), and (N,) True where opposite edges clearly do not meet and the
        area is not negligible: then the devkit's intersection with anything is at most this area.
    """
    polygons = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    x, y = (polygons[:, 0::2] - polygons[:, 0:1]).T, (polygons[:, 1::2] - polygons[:, 1:2]).T  # (4, N) local

    def side(a: int, b: int, c: int) -> np.ndarray:
        return (x[b] - x[a]) * (y[c] - y[a]) - (y[b] - y[a]) * (x[c] - x[a])

    crossing = np.zeros(len(polygons), dtype=bool)
    for a, b, c, d in ((0, 1, 2, 3), (1, 2, 3, 0)):  # opposite edges ab and cd
        crossing |= (side(a, b, c) * side(a, b, d) <= 0) & (side(c, d, a) * side(c, d, b) <= 0)
    area = np.abs(_signed_areas(x, y))
    extent = _extent(x, y)
    return area, ~crossing & (area > 1e-6 * extent * extent)
