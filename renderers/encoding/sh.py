"""Real spherical-harmonics direction encoding, degree 4 (16 coefficients), as tiny-cuda-nn's ``SphericalHarmonics``."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["SH_DEGREE", "spherical_harmonics"]

SH_DEGREE = 4  # bands 0..3: 16 outputs (spec section 2 colour MLP input)


def spherical_harmonics(
    directions: Float[Tensor, "*batch 3"], *, degree: int = SH_DEGREE
) -> Float[Tensor, "*batch K"]:
    """Real SH basis ``Y_k(d)`` for unit directions, ``K = degree^2`` (degree 1..4; tcnn's sign convention).

    tcnn feeds ``(d + 1) / 2`` and maps it back to ``d`` internally; this takes the unit ``d`` directly (same
    values).

    Args:
        directions: (..., 3) unit vectors.
        degree: number of bands (1..4).

    Returns:
        (..., degree^2) basis values.

    Differentiable w.r.t.: ``directions`` (polynomial).

    Example:
        >>> spherical_harmonics(torch.tensor([[0.0, 0.0, 1.0]]))[0, :3]
        tensor([0.2821, -0.0000, 0.4886])
    """
    if directions.shape[-1] != 3:
        raise ValueError(f"directions must have shape (..., 3), got {tuple(directions.shape)}")
    if not 1 <= degree <= 4:
        raise ValueError(f"degree must be in 1..4, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
        out += [
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * z2 - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * x2 - 0.54627421529603959 * y2,
        ]
        if degree > 3:
            out += [
                0.59004358992664352 * y * (-3.0 * x2 + y2),
                2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1.0 - 5.0 * z2),
                0.3731763325901154 * z * (5.0 * z2 - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * z2),
                1.4453057213202769 * z * (x2 - y2),
                0.59004358992664352 * x * (-x2 + 3.0 * y2),
            ]
    return torch.stack(out, -1)
