"""The KLD loss (a differentiable rotated overlap): pixel rboxes -> Gaussians -> KL divergence -> loss, used by the
criterion (`loss.kld_weight`) and the matcher (`loss.match_kld_weight`). Pure PyTorch, any broadcastable shapes;
depends only on the rectangle, not its parameterisation (continuous across the angle boundary and for squares).
"""

import torch

# Smallest side, in pixels, before forming Gaussians: keeps log-determinants and inverses finite.
_MIN_SIDE = 1e-3


def kld(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL divergence D_KL(N_pred || N_target) between the Gaussians of two sets of pixel rboxes (broadcasting).

    A box becomes N(mu = (cx, cy), Sigma = R diag(w^2/4, h^2/4) R^T) (Yang et al., "Learning High-Precision Bounding
    Box for Rotated Object Detection via Kullback-Leibler Divergence", NeurIPS 2021, eq. 1). Then (their eq. 5)
        D = 1/2 [ d^T Sigma_t^-1 d + tr(Sigma_t^-1 Sigma_p) + ln(|Sigma_t| / |Sigma_p|) - 2 ],
    evaluated in closed form in the target's frame (theta = a_p - a_t, d' = R_t^T d). Sigma is the same for
    (w, h, a), (w, h, a + pi) and (h, w, a + pi/2), and isotropic for squares, so D is a function of the rectangles.
    It is invariant to any common affine change of both boxes (so to image scale).

    Args:
        pred: (..., 5) pixel rboxes (cx, cy, w, h, angle in radians).
        target: (..., 5) pixel rboxes, broadcastable against `pred`.

    Returns:
        (...) float, >= 0; 0 exactly when the rectangles coincide.
    """
    var_p = (pred[..., 2:4].clamp(min=_MIN_SIDE) / 2) ** 2  # (..., 2) the eigenvalues w^2/4, h^2/4
    var_t = (target[..., 2:4].clamp(min=_MIN_SIDE) / 2) ** 2
    theta = pred[..., 4] - target[..., 4]
    cos2, sin2 = torch.cos(theta) ** 2, torch.sin(theta) ** 2
    trace = (var_p[..., 0] * cos2 + var_p[..., 1] * sin2) / var_t[..., 0] + (
        var_p[..., 0] * sin2 + var_p[..., 1] * cos2
    ) / var_t[..., 1]
    dx, dy = pred[..., 0] - target[..., 0], pred[..., 1] - target[..., 1]
    cos_t, sin_t = torch.cos(target[..., 4]), torch.sin(target[..., 4])
    u, v = cos_t * dx + sin_t * dy, -sin_t * dx + cos_t * dy  # the centre offset in the target's frame
    mahalanobis = u**2 / var_t[..., 0] + v**2 / var_t[..., 1]
    log_det = torch.log(var_t[..., 0] * var_t[..., 1]) - torch.log(var_p[..., 0] * var_p[..., 1])
    return (0.5 * (mahalanobis + trace + log_det - 2.0)).clamp(min=0.0)


def kld_loss(pred: torch.Tensor, target: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    """The KLD loss 1 - 1 / (1 + ln(1 + D)) (Yang et al. 2021, eq. 11 with f = ln(1 + x), tau = 1).

    In [0, 1): 0 for identical rectangles, towards 1 for distant ones; smooth at D = 0 (zero gradient at a perfect
    match, where the sqrt variant would be singular).

    D is D_KL(pred || target), or with `symmetric` the mean of both directions (Jeffreys divergence / 2). The one-way
    divergence shortens elongated predictions whose angle is off: its trace term charges the predicted length
    against the target's width, (w_p / h_t)^2 sin^2(angle error): for a 4:1 box 6 degrees off the optimal prediction
    is 7% short. The reverse direction charges the predicted width instead and widens; with their mean the optimum
    is 4% short and 4% wide (`tests/training/test_kld.py`).

    Args:
        pred: (..., 5) pixel rboxes.
        target: (..., 5) pixel rboxes, broadcastable against `pred`.
        symmetric: use the symmetric divergence.

    Returns:
        (...) float loss per pair.
    """
    divergence = kld(pred, target)
    if symmetric:
        divergence = 0.5 * (divergence + kld(target, pred))
    return 1.0 - 1.0 / (1.0 + torch.log1p(divergence))
