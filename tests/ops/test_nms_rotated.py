"""nms_rotated / batched_nms_rotated (kernel and twins) against a plain greedy loop, ties, labels and edge cases;
the chunked twin (the CUDA kernel's structure) against the plain greedy CPU kernel at up to 50k boxes."""

import math

import pytest
import torch

from rotated_ddetr.ops import (
    batched_nms_rotated,
    batched_nms_rotated_reference,
    box_iou_rotated,
    has_kernel,
    nms_rotated,
    nms_rotated_reference,
)
from rotated_ddetr.ops.nms_rotated import _nms_reference

NMS = {"dispatch": nms_rotated, "reference": nms_rotated_reference}
BATCHED = {"dispatch": batched_nms_rotated, "reference": batched_nms_rotated_reference}
needs_cpu_kernel = pytest.mark.skipif(
    not has_kernel("nms_rotated", "cpu"), reason="rotated_ddetr._C is not built (pure-PyTorch twins only)"
)


def clustered_detections(objects: int, per_object: int, seed: int, extent: float = 1000.0) -> torch.Tensor:
    """(objects * per_object, 5) float64 rboxes jittered around `objects` random boxes, as a detector outputs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=g, dtype=torch.float64) * extent
    sizes = torch.rand(objects, 2, generator=g, dtype=torch.float64) * 60 + 5
    angles = (torch.rand(objects, 1, generator=g, dtype=torch.float64) - 0.5) * math.pi
    objects_rboxes = torch.cat((centres, sizes, angles), 1).repeat_interleave(per_object, 0)
    jitter = torch.randn(objects_rboxes.shape, generator=g, dtype=torch.float64)
    jitter *= torch.tensor([4.0, 4.0, 4.0, 4.0, 0.15], dtype=torch.float64)
    return objects_rboxes + jitter


def greedy_oracle(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, threshold: float) -> list:
    """The definition, as a plain Python loop over a precomputed IoU matrix."""
    ious = box_iou_rotated(boxes, boxes).tolist()
    label_list = labels.tolist() if labels is not None else [0] * len(scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i].item())  # sorted() is stable: ties by index
    kept: list[int] = []
    for i in order:
        if all(label_list[k] != label_list[i] or ious[k][i] <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("impl", NMS)
@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_greedy_loop(impl, threshold, dtype):
    boxes = clustered_detections(objects=40, per_object=8, seed=1).to(dtype)
    scores = torch.rand(len(boxes), generator=torch.Generator().manual_seed(2), dtype=dtype)
    kept = NMS[impl](boxes, scores, threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == greedy_oracle(boxes, scores, None, threshold)
    assert 40 <= len(kept) < len(boxes)  # the set exercises suppression
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])


@pytest.mark.parametrize("impl", NMS)
def test_equal_scores_keep_lower_index_first(impl):
    boxes = torch.tensor([[0, 0, 10, 10, 0.0], [100, 0, 10, 10, 0.0], [0, 0, 10, 10, 0.0], [100, 0, 10, 10, 0.0]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert NMS[impl](boxes, scores, 0.5).tolist() == [0, 1]
    many = clustered_detections(objects=20, per_object=10, seed=3)
    tied = torch.randint(0, 3, (len(many),), generator=torch.Generator().manual_seed(4)).double()
    first = NMS[impl](many, tied, 0.3)
    assert first.tolist() == greedy_oracle(many, tied, None, 0.3)
    assert torch.equal(NMS[impl](many, tied, 0.3), first)


@pytest.mark.parametrize("impl", NMS)
def test_iou_equal_to_threshold_is_kept(impl):
    # Unit squares half a side apart: IoU exactly 1/3 (0.5 / 1.5), so 1/3 keeps both and 0.33 suppresses.
    boxes = torch.tensor([[0, 0, 1, 1, 0.0], [0.5, 0, 1, 1, 0.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert NMS[impl](boxes, scores, 1 / 3).tolist() == [0, 1]
    assert NMS[impl](boxes, scores, 0.33).tolist() == [0]


@pytest.mark.parametrize("impl", BATCHED)
def test_batched_scene_coordinates_and_many_classes(impl):
    boxes = clustered_detections(objects=60, per_object=6, seed=5, extent=50000.0).float()
    g = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 30, (len(boxes),), generator=g)
    scores = torch.rand(len(boxes), generator=g)
    kept = BATCHED[impl](boxes, scores, labels, 0.3)
    assert kept.tolist() == greedy_oracle(boxes, scores, labels, 0.3)
    # Class by class with plain nms_rotated, merged by score: the same boxes, exactly.
    per_class = [torch.nonzero(labels == c).squeeze(1) for c in labels.unique()]
    merged = torch.cat([idx[nms_rotated(boxes[idx], scores[idx], 0.3)] for idx in per_class])
    assert sorted(kept.tolist()) == sorted(merged.tolist())
    # Identical boxes of different classes never suppress each other; int32 labels are accepted.
    twins = torch.tensor([[40000.5, 30000.25, 20, 8, 0.4]] * 3)
    twin_labels = torch.tensor([1, 2, 1], dtype=torch.int32)
    assert BATCHED[impl](twins, torch.tensor([0.9, 0.8, 0.7]), twin_labels, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("impl", NMS)
def test_empty_input(impl):
    kept = NMS[impl](torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert kept.dtype == torch.int64 and kept.shape == (0,)
    batched = BATCHED[impl](torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert batched.dtype == torch.int64 and batched.shape == (0,)


@pytest.mark.parametrize("impl", NMS)
def test_half_inputs(impl):
    boxes = clustered_detections(objects=10, per_object=5, seed=7)
    scores = torch.rand(len(boxes), generator=torch.Generator().manual_seed(8))
    kept = NMS[impl](boxes.half(), scores.half(), 0.4)
    assert kept.tolist() == NMS[impl](boxes.half().float(), scores.half().float(), 0.4).tolist()


def test_invalid_inputs_raise_clear_errors():
    boxes, scores = torch.zeros(4, 5), torch.zeros(4)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 5\)"):
        nms_rotated(torch.zeros(4, 8), scores, 0.5)
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \(4,\)"):
        nms_rotated(boxes, torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        nms_rotated(boxes, torch.zeros(4, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        batched_nms_rotated(boxes, scores, torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"labels must be a tensor of shape \(4,\)"):
        batched_nms_rotated(boxes, scores, torch.zeros(5, dtype=torch.int64), 0.5)


def scene_detections(objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """20 float64 detections per object on a scene grown with the object count (constant density), random scores
    and 3 labels."""
    boxes = clustered_detections(objects, per_object=20, seed=seed, extent=1000.0 * math.sqrt(objects / 500))
    g = torch.Generator().manual_seed(seed + 1)
    return (
        boxes,
        torch.rand(len(boxes), generator=g, dtype=torch.float64),
        torch.randint(0, 3, (len(boxes),), generator=g),
    )


@needs_cpu_kernel
@pytest.mark.parametrize("chunk_boxes", [7, 64, 500, 4096])
def test_chunked_twin_equals_plain_greedy_for_any_chunk_size(chunk_boxes):
    # The CPU kernel is the plain greedy loop; chunk sizes that do not divide N = 1200 leave a partial last chunk.
    boxes, scores, labels = scene_detections(objects=60, seed=17)
    for threshold, chunk_labels in ((0.5, None), (0.3, labels)):
        expected = torch.ops.rotated_ddetr.nms_rotated(boxes, scores, chunk_labels, threshold)
        kept = _nms_reference(boxes, scores, chunk_labels, threshold, chunk_boxes=chunk_boxes)
        assert 60 <= len(kept) < len(boxes) // 2
        assert torch.equal(kept, expected)


@needs_cpu_kernel
@pytest.mark.slow
@pytest.mark.parametrize("objects", [1000, 2500])  # 20k and 50k boxes: 5 and 13 chunks of 4096
def test_twin_equals_kernel_at_many_chunks(objects):
    boxes, scores, labels = scene_detections(objects, seed=19)
    kept = nms_rotated(boxes, scores, 0.5)
    assert torch.equal(nms_rotated_reference(boxes, scores, 0.5), kept)
    assert objects <= len(kept) < len(boxes) // 2
    kept = batched_nms_rotated(boxes, scores, labels, 0.3)
    assert torch.equal(batched_nms_rotated_reference(boxes, scores, labels, 0.3), kept)


@needs_cpu_kernel
def test_kernel_checks_its_inputs():
    op = torch.ops.rotated_ddetr.nms_rotated
    with pytest.raises(RuntimeError, match=r"scores must have shape \(4,\)"):
        op(torch.zeros(4, 5), torch.zeros(3), None, 0.5)
    with pytest.raises(RuntimeError, match="labels must be int64"):
        op(torch.zeros(4, 5), torch.zeros(4), torch.zeros(4, dtype=torch.int32), 0.5)


@needs_cpu_kernel
def test_opcheck_registrations():
    boxes = clustered_detections(objects=4, per_object=4, seed=9)
    scores = torch.rand(len(boxes), generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    labels = torch.arange(len(boxes)) % 2
    op = torch.ops.rotated_ddetr.nms_rotated.default
    torch.library.opcheck(op, (boxes, scores, None, 0.3))
    torch.library.opcheck(op, (boxes, scores, labels, 0.3))


@pytest.mark.slow
def test_torch_compile_fullgraph_with_dynamic_shapes():
    def postprocess(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor):
        return box_iou_rotated(boxes, boxes).amax(1), batched_nms_rotated(boxes, scores, labels, 0.3)

    compiled = torch.compile(postprocess, fullgraph=True, dynamic=True)
    for objects in (6, 9):  # a second size reuses the dynamic graph
        boxes = clustered_detections(objects=objects, per_object=5, seed=15).float()
        g = torch.Generator().manual_seed(16)
        scores, labels = torch.rand(len(boxes), generator=g), torch.randint(0, 3, (len(boxes),), generator=g)
        (ious, kept), (expected_ious, expected_kept) = (
            compiled(boxes, scores, labels),
            postprocess(boxes, scores, labels),
        )
        torch.testing.assert_close(ious, expected_ious, rtol=0, atol=1e-6)
        assert torch.equal(kept, expected_kept)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    boxes = clustered_detections(objects=150, per_object=12, seed=11).to(dtype)  # 1800 boxes: 29 blocks of 64
    g = torch.Generator().manual_seed(12)
    scores = torch.randint(0, 50, (len(boxes),), generator=g).to(dtype)  # many ties
    labels = torch.randint(0, 5, (len(boxes),), generator=g)
    for threshold in (0.1, 0.5):
        expected = nms_rotated(boxes, scores, threshold)
        assert torch.equal(nms_rotated(boxes.cuda(), scores.cuda(), threshold).cpu(), expected)
        expected = batched_nms_rotated(boxes, scores, labels, threshold)
        assert torch.equal(batched_nms_rotated(boxes.cuda(), scores.cuda(), labels.cuda(), threshold).cpu(), expected)
    assert nms_rotated(boxes[:0].cuda(), scores[:0].cuda(), 0.5).shape == (0,)


@pytest.mark.cuda
def test_cuda_many_chunks_match_cpu_in_bounded_memory():
    boxes, scores, labels = scene_detections(objects=2500, seed=23)  # 50k boxes: 13 chunks of 4096
    expected = nms_rotated(boxes, scores, 0.5)
    assert torch.equal(nms_rotated(boxes.cuda(), scores.cuda(), 0.5).cpu(), expected)
    expected = batched_nms_rotated(boxes, scores, labels, 0.3)
    assert torch.equal(batched_nms_rotated(boxes.cuda(), scores.cuda(), labels.cuda(), 0.3).cpu(), expected)
    # 100k boxes: an unchunked N x N/64-word mask would take 1.25 GB; the chunked kernel needs a 2 MiB mask plus
    # O(N) buffers (sorted copies, keep, removed, sort workspace).
    boxes, scores, _ = scene_detections(objects=5000, seed=24)
    boxes, scores = boxes.float().cuda(), scores.float().cuda()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    kept = nms_rotated(boxes, scores, 0.5)
    torch.cuda.synchronize()
    assert (torch.cuda.max_memory_allocated() - base) / 2**20 < 64
    assert 5000 <= len(kept) < len(boxes) // 2


def test_matches_mmcv_where_installed():
    mmcv_ops = pytest.importorskip("mmcv.ops")
    boxes = clustered_detections(objects=30, per_object=6, seed=13).float()
    scores = torch.rand(len(boxes), generator=torch.Generator().manual_seed(14))
    _, mmcv_kept = mmcv_ops.nms_rotated(boxes, scores, 0.3)
    assert sorted(mmcv_kept.tolist()) == sorted(nms_rotated(boxes, scores, 0.3).tolist())
