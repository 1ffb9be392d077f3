"""box_iou_rotated (kernel and pure-PyTorch twin) against shapely, identities, hand-computed cases and edge cases."""

import math

import numpy as np
import pytest
import shapely
import torch
import torchvision

from rotated_ddetr.boxes import rboxes_to_corners
from rotated_ddetr.ops import box_iou_rotated, box_iou_rotated_reference, has_kernel

IMPLEMENTATIONS = {"dispatch": box_iou_rotated, "reference": box_iou_rotated_reference}
needs_cpu_kernel = pytest.mark.skipif(
    not has_kernel("box_iou_rotated", "cpu"), reason="rotated_ddetr._C is not built (pure-PyTorch twins only)"
)


def random_pairs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 5) float64 pairs that mostly overlap: tiny, regular, elongated and huge boxes, centres in [0, 1000],
    angles in [-4 pi, 4 pi]; a quarter of the pairs are near-parallel (where clipping is least well conditioned)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    kind = torch.randint(0, 4, (count,), generator=g)
    low = torch.tensor([0.05, 5.0, 1.0, 200.0], dtype=torch.float64)[kind]
    high = torch.tensor([1.0, 100.0, 8.0, 1000.0], dtype=torch.float64)[kind]
    h = low + (high - low) * torch.rand(count, generator=g, dtype=torch.float64)
    w = torch.where(kind == 2, uniform(50.0, 500.0, count), low + (high - low) * uniform(0, 1, count))
    centres = uniform(0, 1000, count, 2)
    first = torch.cat((centres, w[:, None], h[:, None], uniform(-4 * math.pi, 4 * math.pi, count, 1)), 1)
    size = torch.maximum(w, h)[:, None]
    offset = uniform(-0.3, 0.3, count, 2) * size
    scale = torch.exp(uniform(-0.7, 0.7, count, 2))
    angle = uniform(-4 * math.pi, 4 * math.pi, count)
    parallel = torch.rand(count, generator=g) < 0.25
    angle = torch.where(parallel, first[:, 4] + uniform(-1e-3, 1e-3, count), angle)
    second = torch.cat((first[:, :2] + offset, first[:, 2:4] * scale, angle[:, None]), 1)
    return first, second


def shapely_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> np.ndarray:
    """Aligned IoU of the exact float64 polygons of the given boxes (whatever their dtype), by shapely."""
    b1, b2 = boxes1.double(), boxes2.double()
    polygons1 = shapely.polygons(rboxes_to_corners(b1).numpy())
    polygons2 = shapely.polygons(rboxes_to_corners(b2).numpy())
    inter = shapely.area(shapely.intersection(polygons1, polygons2))
    union = (b1[:, 2] * b1[:, 3] + b2[:, 2] * b2[:, 3]).numpy() - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def axis_aligned_rboxes(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=g, dtype=torch.float64) * 100
    sizes = torch.rand(count, 2, generator=g, dtype=torch.float64) * 40 + 0.5
    return torch.cat((centres, sizes, torch.zeros(count, 1, dtype=torch.float64)), 1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-6), (torch.float32, 2e-4)])
def test_matches_shapely_on_random_pairs(impl, dtype, tolerance):
    first, second = random_pairs(3000, seed=1)
    first, second = first.to(dtype), second.to(dtype)
    expected = shapely_iou(first, second)
    ious = IMPLEMENTATIONS[impl](first, second, aligned=True)
    assert ious.dtype == dtype
    assert (expected > 0.05).mean() > 0.5  # the pairs really overlap
    np.testing.assert_allclose(ious.double().numpy(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-6), (torch.float32, 2e-4)])
def test_far_from_origin(impl, dtype, tolerance):
    first, second = random_pairs(500, seed=2)
    expected = shapely_iou(first, second)  # near the origin: shapely's own rounding is negligible
    shift = torch.tensor([1e5, -7e4, 0, 0, 0], dtype=torch.float64)
    # Shift in float64 and round once: the shapely answer is then recomputed on the rounded boxes, shifted back
    # exactly (Sterbenz), so it is the exact IoU of the boxes the implementation receives.
    far1, far2 = (first + shift).to(dtype), (second + shift).to(dtype)
    if dtype == torch.float32:
        expected = shapely_iou(far1.double() - shift, far2.double() - shift)
    ious = IMPLEMENTATIONS[impl](far1, far2, aligned=True)
    np.testing.assert_allclose(ious.double().numpy(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_geometric_identities(impl):
    iou = IMPLEMENTATIONS[impl]
    first, second = random_pairs(1000, seed=3)
    base = iou(first, second, aligned=True)
    turned = second.clone()
    turned[:, 4] += math.pi
    swapped = second[:, [0, 1, 3, 2, 4]].clone()
    swapped[:, 4] += math.pi / 2
    wound = second.clone()
    wound[:, 4] += 2 * math.pi * 1000  # angles of any magnitude
    torch.testing.assert_close(iou(first, turned, aligned=True), base, rtol=0, atol=1e-9)
    torch.testing.assert_close(iou(first, swapped, aligned=True), base, rtol=0, atol=1e-9)
    torch.testing.assert_close(iou(first, wound, aligned=True), base, rtol=0, atol=1e-9)
    torch.testing.assert_close(iou(second, first, aligned=True), base, rtol=0, atol=1e-12)  # symmetry


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_identical_and_near_identical_boxes(impl):
    iou = IMPLEMENTATIONS[impl]
    boxes, _ = random_pairs(1000, seed=4)
    ones = torch.ones(1000, dtype=torch.float64)
    torch.testing.assert_close(iou(boxes, boxes, aligned=True), ones, rtol=0, atol=1e-6)
    single = boxes.float()
    torch.testing.assert_close(iou(single, single, aligned=True), torch.ones(1000), rtol=0, atol=1e-6)
    # A few ulps of noise in float32, where detectron2/mmcv give 0.33..0.6: still the exact IoU, close to 1.
    noise = 1 + 2e-7 * torch.randn(single.shape, generator=torch.Generator().manual_seed(5))
    near = iou(single, single * noise, aligned=True)
    np.testing.assert_allclose(near.double().numpy(), shapely_iou(single, single * noise), rtol=0, atol=2e-4)
    assert near.min().item() > 0.98


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_float32_pairs_reported_against_detectron2_and_mmcv(impl):
    # Near-identical float32 pairs from detectron2 issues #2167 (it gave 0.5848) and #2154 (0.6002), an identical
    # pair from mmcv issue #2621 (0.3333) and one from rotated_maskrcnn issue #46 (0.3333): the exact IoU is ~1.
    first = torch.tensor(
        [
            [2563.74462890625, 1436.7901611328125, 2174.703369140625, 214.09500122070312, 115.11834716796875],
            [296.6620178222656, 458.73883056640625, 23.515729904174805, 47.677001953125, 0.08795166015625],
            [0.0, 0.0, 180.6422271729, 136.3633728027, 0.9559648633],
            [672.4067, 290.7776, 791.0275, 38.9333, 34.1454],
        ]
    )
    second = first.clone()
    second[0] = torch.tensor([2563.74462890625, 1436.790283203125, 2174.702880859375, 214.09495544433594, 115.1183548])
    second[1] = torch.tensor([296.66201, 458.73882000000003, 23.51573, 47.67702, 0.087951])
    ious = IMPLEMENTATIONS[impl](first, second, aligned=True)
    np.testing.assert_allclose(ious.double().numpy(), shapely_iou(first, second), rtol=0, atol=2e-4)
    assert ious.min().item() > 0.9999


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_angle_zero_equals_torchvision_box_iou(impl):
    first, second = axis_aligned_rboxes(60, seed=6), axis_aligned_rboxes(50, seed=7)

    def to_xyxy(rboxes: torch.Tensor) -> torch.Tensor:
        return torch.cat((rboxes[:, :2] - rboxes[:, 2:4] / 2, rboxes[:, :2] + rboxes[:, 2:4] / 2), 1)

    expected = torchvision.ops.box_iou(to_xyxy(first), to_xyxy(second))
    assert (expected > 0).sum() > 100
    torch.testing.assert_close(IMPLEMENTATIONS[impl](first, second), expected, rtol=0, atol=1e-12)


SQRT2 = math.sqrt(2.0)
HAND_CASES = [
    # A square and itself turned 45 deg about its centre: the intersection is a regular octagon of inradius s/2,
    # area 8 tan(pi/8) (s/2)^2 = 2 (sqrt2 - 1) s^2; union 2 s^2 - that; IoU = (sqrt2 - 1) / (2 - sqrt2) = sqrt2 / 2.
    ((10, 20, 4, 4, 0.0), (10, 20, 4, 4, math.pi / 4), SQRT2 / 2),
    # Unit squares shifted by half a side along their (turned) width: intersection 1/2, union 3/2.
    ((0, 0, 1, 1, 0.0), (0.5, 0, 1, 1, 0.0), 1 / 3),
    ((0, 0, 1, 1, math.pi / 6), (0.5 * math.cos(math.pi / 6), 0.5 * math.sin(math.pi / 6), 1, 1, math.pi / 6), 1 / 3),
    # A 2x1 and a 1x2 box with the same centre cross in a 1x1 square: 1 / (2 + 2 - 1).
    ((3, 3, 2, 1, 0.0), (3, 3, 1, 2, 0.0), 1 / 3),
    # The same cross, both turned by 1 rad, and as (w,h,a) -> (h,w,a+pi/2) of the first: identical boxes.
    ((3, 3, 2, 1, 1.0), (3, 3, 1, 2, 1.0), 1 / 3),
    ((3, 3, 2, 1, 1.0), (3, 3, 1, 2, 1.0 + math.pi / 2), 1.0),
    # A 1x1 box at any angle inside a 4x4 box: 1/16.
    ((5, 5, 4, 4, 0.3), (5.2, 4.9, 1, 1, -1.1), 1 / 16),
    # Sharing an edge, and disjoint: 0.
    ((0, 0, 2, 2, 0.0), (2, 0, 2, 2, 0.0), 0.0),
    ((0, 0, 2, 2, 0.7), (50, 50, 2, 2, 0.1), 0.0),
    # A 4x2 box and the same turned by 90 deg: a 2x2 square, IoU 4 / (8 + 8 - 4).
    ((0, 0, 4, 2, 0.25), (0, 0, 4, 2, 0.25 + math.pi / 2), 1 / 3),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_computed_cases(impl, dtype):
    first = torch.tensor([case[0] for case in HAND_CASES], dtype=dtype)
    second = torch.tensor([case[1] for case in HAND_CASES], dtype=dtype)
    expected = torch.tensor([case[2] for case in HAND_CASES], dtype=dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(IMPLEMENTATIONS[impl](first, second, aligned=True), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_zero_area_and_degenerate_boxes_give_zero(impl):
    boxes = torch.tensor(
        [[5, 5, 0, 3, 0.2], [5, 5, 3, 0, 0.2], [5, 5, 0, 0, 0.0], [5, 5, 4, 3, 0.2], [5, 5, -4, 3, 0.2]],
        dtype=torch.float64,
    )
    ious = IMPLEMENTATIONS[impl](boxes, boxes)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[3, 3] = 1.0
    torch.testing.assert_close(ious, expected, rtol=0, atol=0)
    huge = torch.tensor([[0, 0, 1e30, 1e30, 0.0], [0, 0, float("inf"), 1, 0.0]])
    assert not torch.isnan(IMPLEMENTATIONS[impl](huge, huge)).any()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_aligned_is_the_diagonal(impl):
    first, second = random_pairs(40, seed=8)
    matrix = IMPLEMENTATIONS[impl](first, second)
    assert matrix.shape == (40, 40)
    torch.testing.assert_close(IMPLEMENTATIONS[impl](first, second, aligned=True), matrix.diagonal(), rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_empty_inputs(impl):
    iou = IMPLEMENTATIONS[impl]
    none, three = torch.zeros(0, 5), torch.rand(3, 5)
    assert iou(none, three).shape == (0, 3)
    assert iou(three, none).shape == (3, 0)
    assert iou(none, none, aligned=True).shape == (0,)
    assert iou(none, three).dtype == torch.float32


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(impl, dtype):
    first, second = random_pairs(200, seed=9)
    first, second = first.to(dtype), second.to(dtype)
    ious = IMPLEMENTATIONS[impl](first, second, aligned=True)
    assert ious.dtype == dtype
    expected = IMPLEMENTATIONS[impl](first.float(), second.float(), aligned=True).to(dtype)
    torch.testing.assert_close(ious, expected, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_invalid_inputs_raise_clear_errors(impl):
    iou = IMPLEMENTATIONS[impl]
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(N, 5\)"):
        iou(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(TypeError, match="boxes2 must be a floating-point tensor"):
        iou(torch.zeros(3, 5), torch.zeros(3, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="aligned=True needs as many"):
        iou(torch.zeros(3, 5), torch.zeros(2, 5), aligned=True)


@needs_cpu_kernel
def test_kernel_matches_reference_in_float64():
    first, second = random_pairs(150, seed=10)
    boxes1, boxes2 = torch.cat((first, second[:50])), torch.cat((second, first[:70]))
    kernel = torch.ops.rotated_ddetr.box_iou_rotated(boxes1, boxes2, False)
    torch.testing.assert_close(kernel, box_iou_rotated_reference(boxes1, boxes2), rtol=0, atol=1e-10)


@needs_cpu_kernel
def test_kernel_checks_its_inputs():
    with pytest.raises(RuntimeError, match=r"boxes1 must have shape \(N, 5\)"):
        torch.ops.rotated_ddetr.box_iou_rotated(torch.zeros(3, 4), torch.zeros(3, 5), False)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        torch.ops.rotated_ddetr.box_iou_rotated(torch.zeros(3, 5).half(), torch.zeros(3, 5).half(), False)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.rotated_ddetr.box_iou_rotated(torch.zeros(3, 5), torch.zeros(3, 5).double(), False)


@needs_cpu_kernel
@pytest.mark.parametrize("aligned", [False, True])
def test_opcheck_registrations(aligned):
    first, second = random_pairs(8, seed=11)
    torch.library.opcheck(torch.ops.rotated_ddetr.box_iou_rotated.default, (first, second), {"aligned": aligned})


@pytest.mark.cuda
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_cuda_matches_cpu(dtype, tolerance):
    first, second = random_pairs(700, seed=12)
    boxes1, boxes2 = first.to(dtype), torch.cat((second, first[:300])).to(dtype)
    expected = box_iou_rotated(boxes1, boxes2)
    result = box_iou_rotated(boxes1.cuda(), boxes2.cuda())
    torch.testing.assert_close(result.cpu(), expected, rtol=0, atol=tolerance)
    aligned = box_iou_rotated(boxes1.cuda(), boxes2[:700].cuda(), aligned=True)
    torch.testing.assert_close(aligned.cpu(), expected.diagonal(), rtol=0, atol=tolerance)
    ones = box_iou_rotated(boxes1.cuda(), boxes1.cuda(), aligned=True)
    torch.testing.assert_close(ones.cpu(), torch.ones(700, dtype=dtype), rtol=0, atol=1e-6)


def test_matches_mmcv_where_installed():
    mmcv_ops = pytest.importorskip("mmcv.ops")
    first, second = random_pairs(500, seed=13)
    expected = box_iou_rotated(first.float(), second.float(), aligned=True)
    mmcv_ious = mmcv_ops.box_iou_rotated(first.float(), second.float(), aligned=True)
    # mmcv loses precision on nearly parallel pairs (its known weakness), so compare the well-conditioned ones.
    angle_gap = torch.remainder(first[:, 4] - second[:, 4], math.pi / 2)
    conditioned = (angle_gap > 0.05) & (angle_gap < math.pi / 2 - 0.05)
    torch.testing.assert_close(mmcv_ious[conditioned], expected[conditioned], rtol=0, atol=1e-3)
