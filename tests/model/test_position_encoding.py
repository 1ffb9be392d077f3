"""Sine encodings: hand-checked values, independence from padding, continuity of the angle embedding."""

import math

import torch

from rotated_ddetr.model.position_encoding import PositionEmbeddingSine, rbox_sine_embedding


def test_sine_values_by_hand():
    encoding = PositionEmbeddingSine(4)(torch.zeros(1, 2, 4, dtype=torch.bool))  # (1, 8, 2, 4)
    # x of column j is (j + 1 - 0.5) / 4 * 2pi; channel 4 is sin(x), channel 5 cos(x) (frequency 1), 6/7 use 1/100.
    # Tolerance 1e-5: the normaliser carries an eps of 1e-6.
    x = (torch.arange(4) + 0.5) / 4 * 2 * math.pi
    torch.testing.assert_close(encoding[0, 4, 0], x.sin(), atol=1e-5, rtol=0)
    torch.testing.assert_close(encoding[0, 7, 1], (x / 100).cos(), atol=1e-5, rtol=0)
    y = (torch.arange(2) + 0.5) / 2 * 2 * math.pi
    torch.testing.assert_close(encoding[0, 0, :, 0], y.sin(), atol=1e-5, rtol=0)


def test_sine_ignores_padding():
    # The valid part of a padded map is encoded exactly as the same map without padding.
    padded = torch.ones(1, 6, 8, dtype=torch.bool)
    padded[0, :4, :5] = False
    unpadded = torch.zeros(1, 4, 5, dtype=torch.bool)
    module = PositionEmbeddingSine(8)
    torch.testing.assert_close(module(padded)[..., :4, :5], module(unpadded), atol=1e-6, rtol=0)


def test_rbox_embedding_angle_continuity():
    box = torch.tensor([0.3, 0.6, 0.2, 0.1, 0.0])
    before, after, turned = box.clone(), box.clone(), box.clone()
    before[4], after[4], turned[4] = math.pi / 2 - 1e-4, -math.pi / 2 + 1e-4, 0.4 + math.pi
    embed = rbox_sine_embedding(torch.stack((before, after)), 16)
    assert embed.shape == (2, 80)
    torch.testing.assert_close(embed[0], embed[1], atol=5e-3, rtol=0)  # 2e-4 rad apart, harmonics up to 16
    box[4] = 0.4
    torch.testing.assert_close(rbox_sine_embedding(turned, 16), rbox_sine_embedding(box, 16), atol=1e-5, rtol=0)
    # The angle does change the embedding away from a half turn.
    assert (rbox_sine_embedding(box, 16) - rbox_sine_embedding(before, 16)).abs().max() > 0.5
