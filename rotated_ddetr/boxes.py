"""The one rotated-box convention of rotated_ddetr, and every conversion between box representations.

rboxes in, corners / DOTA polygons / normalised rboxes / torchvision CXCYWHR out (and back). Every other module
goes through these functions; nothing else canonicalises or converts angles.

The convention
--------------
`rboxes` are float tensors or arrays of shape (..., 5) = (cx, cy, w, h, angle): the centre, the side lengths and
the rotation, in pixels and **radians**. Image axes: x to the right, y down. A point (dx, dy) given in the box's own
frame maps to the image point

    (cx + dx * cos(a) - dy * sin(a),   cy + dx * sin(a) + dy * cos(a)),

so a positive angle turns the box's w-axis from +x toward +y, which is **clockwise on screen** (mmcv/mmrotate's
convention). `corners` (..., 4, 2) list the images of the offsets (-w/2,-h/2), (w/2,-h/2), (w/2,h/2), (-w/2,h/2)::

        x ->                                 a = +30 deg: the w-axis turns toward +y
    y  c0 -------- w -------- c1                 c0 .
    |  |                       |                   /   ` .
    v  h      (cx, cy)         h  a = 0           /        ` . c1
       |                       |                 c3 .         /
       c3 ------------------- c2                      ` .    /
                                                           ` c2

`polygons` (..., 8) = x1 y1 x2 y2 x3 y3 x4 y4 exist only at the DOTA file boundary. polygon -> rbox is the
minimum-area enclosing rectangle, then canonicalised.

Canonical form (le90): w >= h and angle in [-pi/2, pi/2). Every rbox has exactly one canonical form describing
the same rectangle (swap w and h while turning by pi/2; wrap the angle by pi). Worked examples:
    (50, 40, 10, 30, 0)        -> (50, 40, 30, 10, -pi/2)     (tall box: the long side is vertical)
    (50, 40, 30, 10, 3pi/4)    -> (50, 40, 30, 10, -pi/4)     (a rectangle is unchanged by a half turn)
    (50, 40, 30, 10, pi/2)     -> (50, 40, 30, 10, -pi/2)     (pi/2 is outside the half-open range)

Normalised rboxes divide cx and w by the image width and cy and h by the image height (`normalize_rboxes`,
`denormalize_rboxes`: the one conversion, batched over images; image sizes are (height, width), see
`rotated_ddetr.structures`). They are a representation only: any geometry (rotation, IoU, distances) must be done
on pixel rboxes, since rotating in coordinates where x and y were divided by different numbers distorts the box.

torchvision's `tv_tensors.BoundingBoxes(format="CXCYWHR")` measures the angle in degrees, counter-clockwise on
screen: `angle_ours = -radians(angle_tv)`; `rboxes_to_tv_cxcywhr`/`tv_cxcywhr_to_rboxes` are the only conversion.

Every function accepts numpy arrays or torch tensors and returns the same kind (numpy computes in float64 unless
given float32).
"""

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Box-frame offsets of the four corners in units of (w, h), in the order of the convention.
_CORNER_SIGNS = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))
# The 6 point pairs of a quadrilateral: the minimum-area rectangle has a side along one of its hull edges.
_QUAD_PAIRS = ((0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3))


def _numpy_or_torch(fn: Callable[..., torch.Tensor]) -> Callable:
    """Lets a torch implementation take and return numpy arrays as well (float64 unless given float32)."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return fn(x, *args, **kwargs)
        x = np.asarray(x)
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        return fn(torch.from_numpy(x.astype(dtype, copy=False)), *args, **kwargs).numpy()

    return wrapper


def _check_last_dim(x: torch.Tensor, size: int, name: str) -> None:
    if x.shape[-1:] != (size,):
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")


@_numpy_or_torch
def canonicalize_rboxes(rboxes: Array) -> Array:
    """Brings rboxes to the canonical le90 form: w >= h, angle in [-pi/2, pi/2). The rectangles are unchanged.

    Args:
        rboxes: (..., 5) (cx, cy, w, h, angle) pixels / radians. Angles of any magnitude.

    Returns:
        (..., 5) canonical rboxes, same dtype.
    """
    _check_last_dim(rboxes, 5, "rboxes")
    cx, cy, w, h, a = rboxes.unbind(-1)
    swap = w < h
    w, h = torch.where(swap, h, w), torch.where(swap, w, h)
    a = wrap_angle(torch.where(swap, a + math.pi / 2, a))
    return torch.stack((cx, cy, w, h, a), dim=-1)


@_numpy_or_torch
def rboxes_to_corners(rboxes: Array) -> Array:
    """(..., 5) rboxes -> (..., 4, 2) corners (x, y) in the order (-w/2,-h/2), (w/2,-h/2), (w/2,h/2), (-w/2,h/2)."""
    _check_last_dim(rboxes, 5, "rboxes")
    cx, cy, w, h, a = (t[..., None] for t in rboxes.unbind(-1))
    signs = torch.tensor(_CORNER_SIGNS, dtype=rboxes.dtype, device=rboxes.device)  # (4, 2)
    dx, dy = signs[:, 0] * w, signs[:, 1] * h  # (..., 4) offsets in the box frame
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack((cx + dx * cos - dy * sin, cy + dx * sin + dy * cos), dim=-1)


@_numpy_or_torch
def corners_to_rboxes(corners: Array) -> Array:
    """(..., 4, 2) corners of rectangles, in the convention's order -> (..., 5) rboxes (not canonicalised).

    Exact inverse of `rboxes_to_corners` for rectangles. For arbitrary quadrilaterals use `polygons_to_rboxes`.
    """
    if corners.shape[-2:] != (4, 2):
        raise ValueError(f"corners must have shape (..., 4, 2), got {tuple(corners.shape)}")
    centre = corners.mean(dim=-2)
    edge_w = corners[..., 1, :] - corners[..., 0, :]
    edge_h = corners[..., 2, :] - corners[..., 1, :]
    w = torch.linalg.vector_norm(edge_w, dim=-1)
    h = torch.linalg.vector_norm(edge_h, dim=-1)
    a = torch.atan2(edge_w[..., 1], edge_w[..., 0])
    return torch.stack((centre[..., 0], centre[..., 1], w, h, a), dim=-1)


@_numpy_or_torch
def rboxes_to_polygons(rboxes: Array) -> Array:
    """(..., 5) rboxes -> (..., 8) DOTA polygons x1 y1 ... x4 y4 (the corners in the convention's order)."""
    return rboxes_to_corners(rboxes).flatten(-2)


@_numpy_or_torch
def polygons_to_rboxes(polygons: Array) -> Array:
    """(..., 8) quadrilaterals -> (..., 5) canonical rboxes: each polygon's minimum-area enclosing rectangle.

    The minimum-area rectangle of a point set has a side along an edge of its convex hull, and the hull edges of four
    points are among their six connecting segments, so every candidate direction is tried at once (vectorised; the
    same result as cv2.minAreaRect up to the angle convention). For a rectangle this returns that rectangle.
    """
    _check_last_dim(polygons, 8, "polygons")
    points = polygons.unflatten(-1, (4, 2))  # (..., 4, 2)
    pairs = torch.tensor(_QUAD_PAIRS, device=polygons.device)
    edges = points[..., pairs[:, 1], :] - points[..., pairs[:, 0], :]  # (..., 6, 2)
    angles = torch.atan2(edges[..., 1], edges[..., 0])  # (..., 6)
    cos, sin = torch.cos(angles)[..., None], torch.sin(angles)[..., None]  # (..., 6, 1)
    x, y = points[..., None, :, 0], points[..., None, :, 1]  # (..., 1, 4)
    u = x * cos + y * sin  # coordinates along each candidate w-axis: (..., 6, 4)
    v = -x * sin + y * cos  # ... and along its h-axis
    u_min, u_max = u.amin(-1), u.amax(-1)
    v_min, v_max = v.amin(-1), v.amax(-1)
    best = ((u_max - u_min) * (v_max - v_min)).argmin(-1, keepdim=True)  # (..., 1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, best).squeeze(-1)

    a, cos, sin = pick(angles), pick(cos.squeeze(-1)), pick(sin.squeeze(-1))
    uc, vc = (pick(u_min) + pick(u_max)) / 2, (pick(v_min) + pick(v_max)) / 2
    w, h = pick(u_max) - pick(u_min), pick(v_max) - pick(v_min)
    cx, cy = uc * cos - vc * sin, uc * sin + vc * cos  # the centre back in image axes
    return canonicalize_rboxes(torch.stack((cx, cy, w, h, a), dim=-1))


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Angles (radians, any magnitude) wrapped to the half-open [-pi/2, pi/2): a rectangle is unchanged by a half turn.

    The one angle wrap of the package (canonicalisation, the model's box heads, losses). Gradient 1 everywhere.
    `remainder` can round up to exactly pi for tiny negative inputs; that case is folded back, so the result is
    never pi/2.
    """
    wrapped = torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2
    return torch.where(wrapped >= math.pi / 2, wrapped - math.pi, wrapped)


def _size_scale(image_size: tuple[int, int] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(..., 5) factors (W, H, W, H, 1) of image sizes (height, width): a (2,) pair or a (..., 2) tensor."""
    # A (height, width) tuple is copied to the device asynchronously (no wait for the GPU, as `device=` would).
    size = torch.as_tensor(image_size, dtype=like.dtype).to(like.device, non_blocking=True)
    if size.shape[-1:] != (2,):
        raise ValueError(f"image_size must be (height, width) or (..., 2), got shape {tuple(size.shape)}")
    height, width = size.unbind(-1)
    return torch.stack((width, height, width, height, torch.ones_like(width)), dim=-1)


@_numpy_or_torch
def normalize_rboxes(rboxes: Array, image_size: tuple[int, int] | torch.Tensor) -> Array:
    """Pixel rboxes -> normalised: cx, w divided by the image width, cy, h by its height; the angle unchanged.

    Args:
        rboxes: (..., 5) pixel rboxes.
        image_size: (height, width) in pixels, or a (..., 2) tensor of them broadcasting against rboxes' leading
            dimensions (e.g. (B, 1, 2) for (B, Q, 5) rboxes: one size per image of a batch).
    """
    _check_last_dim(rboxes, 5, "rboxes")
    return rboxes / _size_scale(image_size, rboxes)


@_numpy_or_torch
def denormalize_rboxes(rboxes: Array, image_size: tuple[int, int] | torch.Tensor) -> Array:
    """Inverse of `normalize_rboxes`: normalised (..., 5) rboxes -> pixels, for images of (height, width)."""
    _check_last_dim(rboxes, 5, "rboxes")
    return rboxes * _size_scale(image_size, rboxes)


@_numpy_or_torch
def rboxes_to_tv_cxcywhr(rboxes: Array) -> Array:
    """Our rboxes (radians, clockwise on screen) -> torchvision CXCYWHR (degrees, counter-clockwise on screen)."""
    _check_last_dim(rboxes, 5, "rboxes")
    return torch.cat((rboxes[..., :4], torch.rad2deg(-rboxes[..., 4:])), dim=-1)


@_numpy_or_torch
def tv_cxcywhr_to_rboxes(boxes: Array) -> Array:
    """torchvision CXCYWHR (degrees, counter-clockwise on screen) -> our rboxes (radians, clockwise); not canonical."""
    _check_last_dim(boxes, 5, "CXCYWHR boxes")
    return torch.cat((boxes[..., :4], -torch.deg2rad(boxes[..., 4:])), dim=-1)
