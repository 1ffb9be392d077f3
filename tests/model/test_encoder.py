"""Encoder token references and two-stage proposals: hand-computed boxes, padded tokens never proposed."""

import torch

from rotated_ddetr.model.attention import MultiScaleLayout
from rotated_ddetr.model.encoder import TwoStageProposals, token_rboxes


def _layout(valid_wh, padded_wh, shapes):
    shapes = torch.tensor(shapes)
    starts = torch.cat((torch.zeros(1, dtype=torch.int64), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]))
    tokens = int((shapes[:, 0] * shapes[:, 1]).sum())
    image_wh = torch.tensor(valid_wh, dtype=torch.float32)
    ratios = image_wh / torch.tensor(padded_wh, dtype=torch.float32)
    padding = torch.zeros(len(valid_wh), tokens, dtype=torch.bool)
    return MultiScaleLayout(tuple(map(tuple, shapes.tolist())), shapes, starts, padding, image_wh.flip(-1), ratios)


def test_token_rboxes_by_hand():
    # A 64 x 32 (W x H) valid image padded to 64 x 64; levels of stride 16 (4 x 4) and 32 (2 x 2).
    layout = _layout([[64.0, 32.0]], [64.0, 64.0], [[4, 4], [2, 2]])
    boxes = token_rboxes(layout, (16, 32), side_in_strides=2.0)
    assert boxes.shape == (1, 20, 5)
    # Token (row 1, col 2) of level 0: centre (40, 24) px -> (40/64, 24/32); side 32 px -> (0.5, 1.0); angle 0.
    torch.testing.assert_close(boxes[0, 1 * 4 + 2], torch.tensor([40 / 64, 24 / 32, 0.5, 1.0, 0.0]))
    # Token (0, 1) of level 1: centre (48, 16) px; side 64 px.
    torch.testing.assert_close(boxes[0, 16 + 1], torch.tensor([48 / 64, 16 / 32, 1.0, 2.0, 0.0]))


def test_proposals_skip_padded_tokens():
    torch.manual_seed(0)
    proposals = TwoStageProposals(d_model=32, num_classes=3, num_queries=4)
    memory = torch.randn(1, 10, 32)
    base = torch.rand(1, 10, 5) * 0.5 + 0.25
    padding = torch.zeros(1, 10, dtype=torch.bool)
    padding[0, 4:] = True
    logits, rboxes, dense_logits, dense_rboxes = proposals(memory, base, padding, torch.tensor([[32.0, 64.0]]))
    assert logits.shape == (1, 4, 3) and rboxes.shape == (1, 4, 5)
    assert dense_logits.shape == (1, 10, 3) and dense_rboxes.shape == (1, 10, 5)
    # Zero-initialised box head: the proposals are exactly the base boxes of the 4 valid tokens.
    order = rboxes[0, :, 0].argsort()
    expected = base[0, :4][base[0, :4, 0].argsort()]
    torch.testing.assert_close(rboxes[0, order], expected, atol=1e-5, rtol=0)


def test_proposal_nms_defers_duplicates_behind_distinct_boxes():
    proposals = TwoStageProposals(d_model=8, num_classes=1, num_queries=3, nms_iou=0.5)
    # Zero-initialised box head: each token proposes its base box. Tokens 0-2 overlap (IoU > 0.5), 3 and 4 are apart.
    base = torch.tensor([[[0.30, 0.5, 0.2, 0.2, 0.0], [0.31, 0.5, 0.2, 0.2, 0.0], [0.32, 0.5, 0.2, 0.2, 0.0],
                          [0.70, 0.5, 0.2, 0.2, 0.0], [0.70, 0.9, 0.1, 0.1, 0.0]]])  # fmt: skip
    with torch.no_grad():
        proposals.class_head.weight.zero_()
        proposals.class_head.bias.zero_()
        proposals.class_head.weight[0, 0] = 1.0  # the score follows memory channel 0 (after the projection)
        proposals.proj.weight.copy_(torch.eye(8))
        proposals.proj.bias.zero_()
    proposals.norm = torch.nn.Identity()  # so that the scores are memory channel 0 as given
    memory = torch.zeros(1, 5, 8)
    memory[0, :, 0] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])  # scores: token 0 best ... token 4 worst
    padding = torch.zeros(1, 5, dtype=torch.bool)
    _, rboxes, _, _ = proposals(memory, base, padding, torch.tensor([[100.0, 100.0]]))
    # Survivors 0, 3, 4 come first and fill all three slots; without NMS the three duplicates would.
    torch.testing.assert_close(rboxes[0], base[0, [0, 3, 4]], atol=1e-5, rtol=0)
    proposals.nms_iou = 0.0
    _, rboxes, _, _ = proposals(memory, base, padding, torch.tensor([[100.0, 100.0]]))
    torch.testing.assert_close(rboxes[0], base[0, [0, 1, 2]], atol=1e-5, rtol=0)
    # Fewer survivors than slots: the deferred duplicates fill the rest, best first.
    proposals.nms_iou, proposals.num_queries = 0.5, 4
    _, rboxes, _, _ = proposals(memory, base, padding, torch.tensor([[100.0, 100.0]]))
    torch.testing.assert_close(rboxes[0], base[0, [0, 3, 4, 1]], atol=1e-5, rtol=0)
