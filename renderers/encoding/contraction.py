"""Scene contraction for unbounded captures (Mip-NeRF 360 / nerfacc ``contract_to_unisphere``)."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["contract_to_unisphere", "uncontract_from_unisphere"]

NORM_EPS = 1e-12  # floor of |y| in the radial division (points at the box centre are inside anyway)


def contract_to_unisphere(
    x: Float[Tensor, "*batch 3"], aabb: Float[Tensor, "2 3"]
) -> Float[Tensor, "*batch 3"]:
    """Map all of space into ``[0, 1]^3`` (spec section 2).

    .. math:: y = 2 (x - a_{min}) / (a_{max} - a_{min}) - 1;\\;
        \\|y\\| > 1 \\Rightarrow y \\leftarrow (2 - 1/\\|y\\|)\\, y / \\|y\\|;\\; \\text{out} = y / 4 + 1/2

    The box's inscribed ball maps affinely onto the ball of radius 1/4 about ``(1/2, 1/2, 1/2)``; infinity maps
    to the sphere of radius 1/2.

    Args:
        x: (..., 3) world points.
        aabb: (2, 3) ``[min, max]`` box.

    Returns:
        (..., 3) contracted points in ``[0, 1]^3``.

    Differentiable w.r.t.: ``x`` (continuous, C^1 across ``|y| = 1``).

    Example:
        >>> contract_to_unisphere(torch.tensor([[0.0, 0.0, 0.0], [1e9, 0.0, 0.0]]), torch.tensor([[-1.0] * 3, [1.0] * 3]))
        tensor([[0.5000, 0.5000, 0.5000],
                [1.0000, 0.5000, 0.5000]])
    """
    y = 2.0 * (x - aabb[0]) / (aabb[1] - aabb[0]) - 1.0
    norm = y.norm(dim=-1, keepdim=True)
    safe = norm.clamp_min(NORM_EPS)
    y = torch.where(norm > 1.0, (2.0 - 1.0 / safe) * (y / safe), y)
    return y / 4.0 + 0.5


def uncontract_from_unisphere(
    u: Float[Tensor, "*batch 3"], aabb: Float[Tensor, "2 3"]
) -> Float[Tensor, "*batch 3"]:
    """Inverse of ``contract_to_unisphere`` for points strictly inside the radius-1/2 sphere (mesh extraction).

    Differentiable w.r.t.: ``u``.
    """
    y = (u - 0.5) * 4.0
    norm = y.norm(dim=-1, keepdim=True)
    safe = norm.clamp_min(NORM_EPS)
    radius = 1.0 / (2.0 - norm).clamp_min(NORM_EPS)  # |y_out| = 2 - 1/|y_in|  =>  |y_in| = 1 / (2 - |y_out|)
    y = torch.where(norm > 1.0, radius * y / safe, y)
    return (y + 1.0) * 0.5 * (aabb[1] - aabb[0]) + aabb[0]
