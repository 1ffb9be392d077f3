"""Post-processing: `DetectorOutput` (last decoder layer) -> per-image `Detections` in canonical pixel rboxes.

Runs after the detector at inference; tiled inference then shifts, merges and NMS-es these per-tile detections.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from rotated_ddetr.boxes import canonicalize_rboxes, denormalize_rboxes
from rotated_ddetr.model.detector import DetectorOutput
from rotated_ddetr.ops import batched_nms_rotated


@dataclass
class Detections:
    """The detections of one image.

    Attributes:
        rboxes: (K, 5) float canonical (le90) pixel rboxes (cx, cy, w, h, angle in radians).
        scores: (K,) float sigmoid scores in [0, 1], decreasing.
        labels: (K,) int64 class indices.
    """

    rboxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def check_postprocess_options(
    top_k: int | None = None,
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuses post-processing options before any work: top_k >= 1, score_threshold in [0, 1] (scores are sigmoids:
    above 1 would silently drop everything), nms_iou in [0, 1) (0 = no NMS; 1 would suppress nothing either). None
    skips an option (a caller that leaves it to the config).

    Args:
        top_k, score_threshold, nms_iou: as `postprocess`.
        names: how messages name each option, by parameter name; a tool passes its flags ({"top_k": "--top-k"}).

    Raises:
        ValueError: one line naming the first bad option and its value.
    """
    name = {"top_k": "top_k", "score_threshold": "score_threshold", "nms_iou": "nms_iou", **(names or {})}
    if top_k is not None and not top_k >= 1:
        raise ValueError(f"{name['top_k']} must be >= 1, got {top_k}")
    if score_threshold is not None and not 0 <= score_threshold <= 1:
        raise ValueError(f"{name['score_threshold']} must be in [0, 1], got {score_threshold}")
    if nms_iou is not None and not 0 <= nms_iou < 1:
        raise ValueError(f"{name['nms_iou']} must be in [0, 1), got {nms_iou}")


@torch.no_grad()
def postprocess(
    outputs: DetectorOutput,
    image_sizes: torch.Tensor | None = None,
    top_k: int = 500,
    score_threshold: float = 0.0,
    nms_iou: float = 0.0,
) -> list[Detections]:
    """Turns the final decoder layer's predictions into detections (Deformable DETR's PostProcess, rotated).

    Every (query, class) pair is a candidate scored by sigmoid(logit); the `top_k` best per image are kept, so one
    query may yield several classes. Boxes are denormalised and canonicalised; scores below the threshold dropped.

    Args:
        outputs: the detector's output.
        image_sizes: (B, 2) (height, width) to scale the normalised rboxes to; defaults to `outputs.image_sizes`, the
            valid area the model saw. Only an isotropic rescaling of that size keeps rotated boxes exact.
        top_k: candidates kept per image before thresholding (capped at Q * C), >= 1. DOTA tiles hold hundreds of
            objects.
        score_threshold: minimum score kept, in [0, 1].
        nms_iou: class-wise rotated NMS of the kept detections at this IoU (0 = none). A converged one-to-one
            decoder needs none; a briefly trained one still marks some objects twice.

    Returns:
        One `Detections` per image, sorted by decreasing score.

    Raises:
        ValueError: an option out of range (`check_postprocess_options`).
    """
    sizes = outputs.image_sizes if image_sizes is None else image_sizes
    return postprocess_raw(outputs.logits[-1], outputs.rboxes[-1], sizes, top_k, score_threshold, nms_iou)


@torch.no_grad()
def postprocess_raw(
    logits: torch.Tensor,
    rboxes: torch.Tensor,
    image_sizes: torch.Tensor,
    top_k: int = 500,
    score_threshold: float = 0.0,
    nms_iou: float = 0.0,
) -> list[Detections]:
    """`postprocess` of the last layer's raw outputs: what an exported model (`rotated_ddetr.export`: ONNX, pt2)
    returns, or `RotatedDETR.forward_raw`.

    Args:
        logits: (B, Q, C) class logits (a tensor or a numpy array, e.g. ONNX Runtime's output).
        rboxes: (B, Q, 5) normalised rboxes.
        image_sizes: (B, 2) (height, width) in pixels that the rboxes are normalised by: the images' size for an
            exported model, which sees no padding.
        top_k, score_threshold, nms_iou: as `postprocess`.

    Returns:
        One `Detections` per image, sorted by decreasing score.
    """
    check_postprocess_options(top_k, score_threshold, nms_iou)
    logits, rboxes = torch.as_tensor(logits), torch.as_tensor(rboxes)
    sizes = torch.as_tensor(image_sizes, device=rboxes.device)
    b, q, c = logits.shape
    scores, index = logits.float().sigmoid().flatten(1).topk(min(top_k, q * c), dim=1)  # (B, k)
    queries, labels = torch.div(index, c, rounding_mode="floor"), index % c
    boxes = rboxes.float().gather(1, queries[..., None].expand(-1, -1, 5))  # (B, k, 5) normalised
    boxes = canonicalize_rboxes(denormalize_rboxes(boxes, sizes[:, None]))  # each image's pixels
    detections = []
    for i in range(b):
        keep = scores[i] >= score_threshold
        dets = Detections(boxes[i][keep], scores[i][keep], labels[i][keep])
        if nms_iou > 0:
            kept = batched_nms_rotated(dets.rboxes, dets.scores, dets.labels, nms_iou)  # by decreasing score
            dets = Detections(dets.rboxes[kept], dets.scores[kept], dets.labels[kept])
        detections.append(dets)
    return detections
