"""The box convention (rotated_ddetr.boxes): hand-computed cases, identities and round trips."""

import math

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from rotated_ddetr import boxes as B


def random_rboxes(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g, dtype=dtype) * 1000
    size = torch.rand(n, 2, generator=g, dtype=dtype) * 200 + 1
    angle = (torch.rand(n, 1, generator=g, dtype=dtype) - 0.5) * 20  # several turns either way
    return torch.cat((centre, size, angle), dim=1)


def same_rectangles(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    """Two rbox sets describe the same rectangles when their corner sets coincide (in any cyclic order)."""
    ca, cb = B.rboxes_to_corners(a), B.rboxes_to_corners(b)
    dist = torch.cdist(ca, cb)  # (N, 4, 4)
    return bool((dist.amin(-1).amax() < atol) and (dist.amin(-2).amax() < atol))


def test_corners_hand_computed():
    # w-axis turned clockwise on screen by 90 deg: it points down (+y).
    rbox = torch.tensor([10.0, 20.0, 4.0, 2.0, math.pi / 2], dtype=torch.float64)
    expected = torch.tensor([[11.0, 18.0], [11.0, 22.0], [9.0, 22.0], [9.0, 18.0]], dtype=torch.float64)
    torch.testing.assert_close(B.rboxes_to_corners(rbox), expected, atol=1e-12, rtol=0)
    axis_aligned = torch.tensor([10.0, 20.0, 4.0, 2.0, 0.0])
    expected = torch.tensor([[8.0, 19.0], [12.0, 19.0], [12.0, 21.0], [8.0, 21.0]])
    torch.testing.assert_close(B.rboxes_to_corners(axis_aligned), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("rbox", "expected"),
    [
        ((50, 40, 10, 30, 0.0), (50, 40, 30, 10, -math.pi / 2)),
        ((50, 40, 30, 10, 3 * math.pi / 4), (50, 40, 30, 10, -math.pi / 4)),
        ((50, 40, 30, 10, math.pi / 2), (50, 40, 30, 10, -math.pi / 2)),
        ((50, 40, 30, 10, -math.pi / 2), (50, 40, 30, 10, -math.pi / 2)),
        ((50, 40, 30, 10, 7 * math.pi + 0.25), (50, 40, 30, 10, 0.25)),
    ],
)
def test_canonicalize_hand_computed(rbox, expected):
    out = B.canonicalize_rboxes(torch.tensor(rbox, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_canonicalize_keeps_rectangles_and_range():
    rboxes = random_rboxes(2000)
    canon = B.canonicalize_rboxes(rboxes)
    assert (canon[:, 2] >= canon[:, 3]).all()
    assert (canon[:, 4] >= -math.pi / 2).all() and (canon[:, 4] < math.pi / 2).all()
    assert same_rectangles(rboxes, canon, atol=1e-9)
    torch.testing.assert_close(B.canonicalize_rboxes(canon), canon, atol=1e-12, rtol=0)  # idempotent


def test_corners_round_trip():
    rboxes = random_rboxes(500)
    back = B.corners_to_rboxes(B.rboxes_to_corners(rboxes))
    torch.testing.assert_close(B.canonicalize_rboxes(back), B.canonicalize_rboxes(rboxes), atol=1e-9, rtol=0)


def test_polygons_round_trip_in_any_vertex_order():
    rboxes = B.canonicalize_rboxes(random_rboxes(500))
    polygons = B.rboxes_to_polygons(rboxes)
    torch.testing.assert_close(B.polygons_to_rboxes(polygons), rboxes, atol=1e-8, rtol=0)
    # DOTA annotators start at any corner and go either way round.
    reordered = polygons.unflatten(-1, (4, 2))[:, [2, 1, 0, 3]].flatten(-2)
    assert same_rectangles(B.polygons_to_rboxes(reordered), rboxes, atol=1e-8)


def test_polygons_to_rboxes_matches_cv2_min_area_rect():
    rng = np.random.default_rng(3)
    quads = rng.uniform(0, 300, size=(300, 8))  # arbitrary quadrilaterals, convex or not
    ours = B.polygons_to_rboxes(quads)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64
    for quad, rbox in zip(quads, ours, strict=True):
        # The minimal area is unique; the rectangle need not be (random quads can tie), so compare areas and check
        # that the rectangle encloses every vertex.
        _, (w, h), _ = cv2.minAreaRect(quad.reshape(4, 2).astype(np.float32))
        assert abs(w * h - rbox[2] * rbox[3]) <= 1e-4 * max(1.0, w * h)
        local = _to_box_frame(quad.reshape(4, 2), rbox)
        assert (np.abs(local) <= rbox[2:4] / 2 + 1e-6).all()


def _to_box_frame(points: np.ndarray, rbox: np.ndarray) -> np.ndarray:
    cos, sin = math.cos(rbox[4]), math.sin(rbox[4])
    d = points - rbox[:2]
    return np.stack((d[:, 0] * cos + d[:, 1] * sin, -d[:, 0] * sin + d[:, 1] * cos), axis=1)


def test_numpy_and_torch_agree():
    rboxes = random_rboxes(50)
    np.testing.assert_allclose(B.rboxes_to_polygons(rboxes.numpy()), B.rboxes_to_polygons(rboxes).numpy(), atol=1e-12)
    as_float32 = B.rboxes_to_corners(rboxes.numpy().astype(np.float32))
    assert as_float32.dtype == np.float32 and as_float32.shape == (50, 4, 2)


def test_normalize_round_trip():
    rboxes = random_rboxes(100)
    norm = B.normalize_rboxes(rboxes, (600, 800))
    assert (norm[:, 0] <= 1.25).all() and (norm[:, 1] <= 1.67).all()
    torch.testing.assert_close(norm[0, :4], rboxes[0, :4] / torch.tensor([800, 600, 800, 600.0], dtype=torch.float64))
    torch.testing.assert_close(B.denormalize_rboxes(norm, (600, 800)), rboxes, atol=1e-12, rtol=0)


def test_torchvision_cxcywhr_conversion_describes_the_same_corners():
    rboxes = random_rboxes(100, dtype=torch.float32)
    tv = tv_tensors.BoundingBoxes(B.rboxes_to_tv_cxcywhr(rboxes), format="CXCYWHR", canvas_size=(2000, 2000))
    tv_corners = TF.convert_bounding_box_format(tv, new_format="XYXYXYXY").as_subclass(torch.Tensor)
    torch.testing.assert_close(tv_corners.unflatten(-1, (4, 2)), B.rboxes_to_corners(rboxes), atol=2e-3, rtol=0)
    back = B.tv_cxcywhr_to_rboxes(B.rboxes_to_tv_cxcywhr(rboxes))
    torch.testing.assert_close(back, rboxes, atol=1e-5, rtol=0)
    # 30 degrees counter-clockwise in torchvision is -pi/6 (counter-clockwise) here.
    one = B.tv_cxcywhr_to_rboxes(torch.tensor([0.0, 0.0, 2.0, 1.0, 30.0]))
    assert one[4].item() == pytest.approx(-math.pi / 6)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"rboxes must have shape \(\.\.\., 5\)"):
        B.rboxes_to_corners(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"polygons must have shape \(\.\.\., 8\)"):
        B.polygons_to_rboxes(np.zeros((2, 6)))
    with pytest.raises(TypeError, match="floating point"):
        B.canonicalize_rboxes(torch.zeros(2, 5, dtype=torch.int64))
