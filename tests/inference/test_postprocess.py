"""Post-processing: top-k over queries x classes, canonical pixel rboxes, score threshold."""

import math

import pytest
import torch

from rotated_ddetr.inference import Detections, Predictor, postprocess
from rotated_ddetr.inference.postprocess import check_postprocess_options
from rotated_ddetr.model.detector import DetectorOutput


def test_canonical_pixel_boxes_by_hand():
    rboxes = torch.tensor([[[0.5, 0.5, 0.1, 0.4, 0.0], [0.25, 0.75, 0.2, 0.1, 0.3]]])  # (B=1, Q=2, 5)
    logits = torch.tensor([[[3.0, -5.0], [-5.0, 1.0]]])  # (1, 2, C=2)
    outputs = DetectorOutput(logits[None], rboxes[None], None, None, torch.tensor([[100, 200]]))
    (dets,) = postprocess(outputs, top_k=4, score_threshold=0.1)
    assert isinstance(dets, Detections)
    # Query 0: (100, 50, 20, 40, 0) px is tall -> (100, 50, 40, 20, -pi/2). Query 1: (50, 75, 40, 10, 0.3).
    expected = torch.tensor([[100.0, 50.0, 40.0, 20.0, -math.pi / 2], [50.0, 75.0, 40.0, 10.0, 0.3]])
    torch.testing.assert_close(dets.rboxes, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(dets.scores, torch.sigmoid(torch.tensor([3.0, 1.0])), atol=1e-6, rtol=0)
    assert dets.labels.tolist() == [0, 1]
    # Other image sizes (an isotropic rescale) scale the boxes; a high threshold drops the weak detection.
    (big,) = postprocess(outputs, image_sizes=torch.tensor([[200, 400]]), top_k=4, score_threshold=0.9)
    torch.testing.assert_close(big.rboxes, expected[:1] * torch.tensor([2, 2, 2, 2, 1.0]), atol=1e-5, rtol=0)


def test_optional_classwise_nms():
    # Queries 0 and 1 mark the same object (IoU 0.9), query 2 the same place in another class, query 3 elsewhere.
    rboxes = torch.tensor([[[0.50, 0.5, 0.2, 0.2, 0.0], [0.51, 0.5, 0.2, 0.2, 0.0], [0.5, 0.5, 0.2, 0.2, 0.0],
                            [0.10, 0.1, 0.1, 0.1, 0.0]]])  # fmt: skip
    logits = torch.tensor([[[4.0, -9.0], [3.0, -9.0], [-9.0, 2.0], [1.0, -9.0]]])
    outputs = DetectorOutput(logits[None], rboxes[None], None, None, torch.tensor([[100, 100]]))
    (plain,) = postprocess(outputs, top_k=4)
    assert plain.labels.tolist() == [0, 0, 1, 0]
    (suppressed,) = postprocess(outputs, top_k=4, nms_iou=0.5)
    torch.testing.assert_close(suppressed.scores, torch.sigmoid(torch.tensor([4.0, 2.0, 1.0])), atol=1e-6, rtol=0)
    assert suppressed.labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(suppressed.rboxes[:, 0], torch.tensor([50.0, 50.0, 10.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"top_k": 0}, "top_k must be >= 1, got 0"),
        ({"score_threshold": -0.1}, r"score_threshold must be in \[0, 1\], got -0.1"),
        ({"score_threshold": 1.5}, r"score_threshold must be in \[0, 1\], got 1.5"),  # would drop every sigmoid
        ({"nms_iou": 1.0}, r"nms_iou must be in \[0, 1\), got 1.0"),
        ({"nms_iou": math.nan}, r"nms_iou must be in \[0, 1\), got nan"),
    ],
)
def test_bad_options_are_refused_before_any_work(options, message):
    outputs = DetectorOutput(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 5), 0.5), None, None, torch.tensor([[8, 8]]))
    with pytest.raises(ValueError, match=f"^{message}$"):
        postprocess(outputs, **options)
    with pytest.raises(ValueError, match=f"^{message}$"):
        Predictor(torch.nn.Identity(), ("a", "b"), **options)  # at construction, before a tile is seen
    key = next(iter(options))
    with pytest.raises(ValueError, match=f"^--{key.replace('_', '-')} must"):
        check_postprocess_options(**options, names={key: f"--{key.replace('_', '-')}"})
    check_postprocess_options(top_k=1, score_threshold=1.0, nms_iou=0.0)  # the bounds are accepted
    check_postprocess_options()  # None: left to the config
