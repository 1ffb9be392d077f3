"""Augmentation keeps image and rboxes aligned: boxes painted into an image are found again after transforming both.

Each box is filled with its own grey level; after a transform, the pixels at each output box's centre and at its
corners pulled 30% toward the centre must still carry that level, and points 40% beyond its sides must not.
"""

import math

import pytest
import torch
from torchvision.transforms import v2

from rotated_ddetr import boxes
from rotated_ddetr.data.transforms import Augment, RandomRotate90, _augment, resize_sample

HEIGHT, WIDTH = 160, 224
# Well separated boxes (our convention: radians, clockwise on screen), one level each.
RBOXES = torch.tensor(
    [[50.0, 40.0, 50.0, 18.0, 0.4], [150.0, 45.0, 40.0, 24.0, -1.0], [70.0, 115.0, 44.0, 20.0, 1.3],
     [170.0, 118.0, 56.0, 22.0, 0.0]]
)  # fmt: skip
LEVELS = torch.tensor([60, 110, 160, 210], dtype=torch.uint8)


def _paint(rboxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) uint8 image: 0 background, LEVELS[i] where the pixel centre lies inside box i."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    image = torch.zeros(height, width, dtype=torch.uint8)
    for (cx, cy, w, h, a), level in zip(rboxes.tolist(), LEVELS, strict=True):
        u = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
        v = -(xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
        image[(u.abs() <= w / 2) & (v.abs() <= h / 2)] = level
    return image.expand(3, -1, -1).contiguous()


def _points(rboxes: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """(N, 2) image points at box-frame offsets (u * w/2, v * h/2) (the convention's mapping)."""
    cx, cy, w, h, a = rboxes.unbind(-1)
    du, dv = u * w / 2, v * h / 2
    return torch.stack((cx + du * a.cos() - dv * a.sin(), cy + du * a.sin() + dv * a.cos()), dim=-1)


def _level_at(image: torch.Tensor, points: torch.Tensor) -> list[int | None]:
    """The image level at each point (None outside the image)."""
    out = []
    for x, y in points.tolist():
        inside = 0 <= x < image.shape[-1] and 0 <= y < image.shape[-2]
        out.append(int(image[0, int(y), int(x)]) if inside else None)
    return out


def _check_aligned(image: torch.Tensor, rboxes: torch.Tensor, labels: torch.Tensor) -> int:
    """Asserts every output box sits on its own painted blob; returns the number of points checked."""
    checked = 0
    inner = [(0.0, 0.0), (0.7, 0.7), (-0.7, 0.7), (0.7, -0.7), (-0.7, -0.7)]
    outer = [(1.4, 0.0), (-1.4, 0.0), (0.0, 1.4), (0.0, -1.4)]
    for box, label in zip(rboxes, labels.tolist(), strict=True):
        level = int(LEVELS[label])
        for u, v in inner:
            found = _level_at(image, _points(box[None], u, v))[0]
            assert found in (level, None), (box, u, v, found, level)
            checked += found is not None
        for u, v in outer:
            found = _level_at(image, _points(box[None], u, v))[0]
            assert found != level, (box, u, v, found, level)
    return checked


def test_painting_matches_the_boxes_before_any_transform():
    image = _paint(RBOXES, HEIGHT, WIDTH)
    assert _check_aligned(image, RBOXES, torch.arange(4)) == 20


@pytest.mark.parametrize("seed", range(12))
def test_full_augmentation_keeps_alignment(seed):
    torch.manual_seed(seed)
    augment = Augment(hflip=0.5, vflip=0.5, rot90=0.7, rotate=0.8, degrees=180.0, scale_jitter=(0.7, 1.4))
    image, rboxes, labels = augment(_paint(RBOXES, HEIGHT, WIDTH), RBOXES, torch.arange(4))
    assert image.dtype == torch.uint8 and rboxes.shape[1] == 5 and len(labels) == len(rboxes)
    assert (rboxes[:, 2] >= rboxes[:, 3]).all()  # canonical output
    assert ((rboxes[:, 4] >= -math.pi / 2) & (rboxes[:, 4] < math.pi / 2)).all()
    assert _check_aligned(image, rboxes, labels) >= len(labels)


def test_exact_flip_and_quarter_turn_by_hand():
    box = torch.tensor([[50.0, 30.0, 40.0, 10.0, 0.3]])
    hflip = v2.RandomHorizontalFlip(1.0)
    _, out, _ = _augment(hflip, torch.zeros(3, 100, 200, dtype=torch.uint8), box, torch.tensor([0]))
    torch.testing.assert_close(out, torch.tensor([[150.0, 30.0, 40.0, 10.0, -0.3]]), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    turn = RandomRotate90(1.0)
    image, out, _ = _augment(turn, _paint(RBOXES, HEIGHT, WIDTH), RBOXES, torch.arange(4))
    turns = {(WIDTH, HEIGHT): 1, (HEIGHT, WIDTH): 2}[tuple(image.shape[-2:])]
    assert turns in (1, 2) and _check_aligned(image, out, torch.arange(4)) == 20
    # Box sizes are unchanged by quarter turns; the angles turn by multiples of pi/2 (counter-clockwise on screen).
    torch.testing.assert_close(out[:, 2:4], boxes.canonicalize_rboxes(RBOXES)[:, 2:4], atol=1e-4, rtol=0)


def test_centres_leaving_the_image_are_dropped():
    rboxes = torch.tensor([[5.0, 80.0, 30.0, 10.0, 0.0], [112.0, 80.0, 30.0, 10.0, 0.0]])
    rotation = v2.RandomRotation((90.0, 90.0))  # keeps the 224 x 160 canvas
    _, out, labels = _augment(rotation, torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8), rboxes, torch.tensor([3, 7]))
    assert labels.tolist() == [7]  # the box near the left edge turned to y = 80 - 107 < 0
    torch.testing.assert_close(out[0, :4], torch.tensor([112.0, 80.0, 30.0, 10.0]), atol=1e-4, rtol=0)


def test_resize_sample_scales_boxes_with_the_image():
    image, out, _ = resize_sample(_paint(RBOXES, HEIGHT, WIDTH), RBOXES, torch.arange(4), 0.75)
    assert tuple(image.shape[-2:]) == (120, 168)
    expected = boxes.canonicalize_rboxes(RBOXES * torch.tensor([0.75, 0.75, 0.75, 0.75, 1.0]))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert _check_aligned(image, out, torch.arange(4)) == 20


def test_no_augmentation_is_the_identity():
    image = _paint(RBOXES, HEIGHT, WIDTH)
    out_image, out, labels = Augment(hflip=0.0, vflip=0.0, rot90=0.0)(image, RBOXES, torch.arange(4))
    assert torch.equal(out_image, image) and labels.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(out, boxes.canonicalize_rboxes(RBOXES), atol=1e-5, rtol=0)
