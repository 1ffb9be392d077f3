"""KLD loss: hand-computed values, the rectangle identities, continuity and finiteness of gradients."""

import math

import pytest
import torch

from rotated_ddetr.training.kld import kld, kld_loss


def test_kld_by_hand():
    target = torch.tensor([50.0, 40.0, 20.0, 10.0, 0.3])
    # A pure shift of 3 px along the target's w-axis: D = 1/2 * 3^2 / (w^2 / 4) = 0.045.
    shifted = target.clone()
    shifted[0] += 3 * math.cos(0.3)
    shifted[1] += 3 * math.sin(0.3)
    torch.testing.assert_close(kld(shifted, target), torch.tensor(0.045), atol=1e-6, rtol=0)
    # Doubling w: D = 1/2 * (4 - 1 - ln 4) ~ 0.8069.
    wider = target.clone()
    wider[2] = 40.0
    torch.testing.assert_close(kld(wider, target), torch.tensor(0.5 * (3 - math.log(4))), atol=1e-6, rtol=0)
    assert float(kld(target, target)) == 0.0


def test_identities_and_continuity():
    target = torch.tensor([30.0, 20.0, 24.0, 8.0, 0.1])
    pred = torch.tensor([31.0, 19.0, 20.0, 9.0, math.pi / 2 - 1e-4])
    wrapped = pred.clone()
    wrapped[4] = -math.pi / 2 + 1e-4
    # Across the angle boundary: 2e-4 rad apart, the loss barely moves.
    torch.testing.assert_close(kld_loss(pred, target), kld_loss(wrapped, target), atol=1e-4, rtol=0)
    swapped = pred[[0, 1, 3, 2, 4]] + torch.tensor([0, 0, 0, 0, math.pi / 2])
    half_turn = pred + torch.tensor([0, 0, 0, 0, math.pi])
    for same in (swapped, half_turn):
        torch.testing.assert_close(kld_loss(same, target), kld_loss(pred, target), atol=1e-6, rtol=0)
    # Squares: the angle is irrelevant.
    square = torch.tensor([30.0, 20.0, 10.0, 10.0, 0.0])
    turned = square + torch.tensor([0, 0, 0, 0, 0.7])
    torch.testing.assert_close(kld_loss(square, target), kld_loss(turned, target), atol=1e-6, rtol=0)
    # Scale invariance: scaling both boxes about the origin leaves D unchanged.
    scale = torch.tensor([3.0, 3.0, 3.0, 3.0, 1.0])
    torch.testing.assert_close(kld(pred * scale, target * scale), kld(pred, target), atol=1e-5, rtol=1e-5)


def test_gradients_finite_at_match_and_degenerate():
    target = torch.tensor([[30.0, 20.0, 24.0, 8.0, 0.1], [5.0, 5.0, 1e-6, 0.0, 0.0]])
    pred = torch.tensor([[30.0, 20.0, 24.0, 8.0, 0.1], [6.0, 4.0, 0.0, 3.0, 1.0]], requires_grad=True)
    loss = kld_loss(pred, target)
    loss.sum().backward()
    loss = loss.detach()
    assert torch.isfinite(loss).all() and torch.isfinite(pred.grad).all()
    assert float(loss[0]) == 0.0 and float(pred.grad[0].abs().max()) == 0.0
    assert 0.0 < float(loss[1]) < 1.0


@pytest.mark.parametrize(("symmetric", "expected"), [(False, (0.927, 1.005)), (True, (0.960, 1.041))])
def test_optimal_sides_under_an_angle_error(symmetric, expected):
    """The (w, h) minimising the loss against a 40 x 10 target when the predicted angle is 6 degrees off: the one-way
    divergence shortens the prediction by 7%, the symmetric one by 4% (and widens it by 4%)."""
    target = torch.tensor([0.0, 0.0, 40.0, 10.0, 0.0])
    sides = torch.tensor([40.0, 10.0], requires_grad=True)
    optimizer = torch.optim.LBFGS([sides], max_iter=200)

    def closure():
        optimizer.zero_grad()
        pred = torch.cat((torch.zeros(2), sides, torch.tensor([math.radians(6.0)])))
        loss = kld_loss(pred, target, symmetric=symmetric)
        loss.backward()
        return loss

    optimizer.step(closure)
    ratios = (sides.detach() / torch.tensor([40.0, 10.0])).tolist()
    assert ratios == pytest.approx(expected, abs=2e-3)
