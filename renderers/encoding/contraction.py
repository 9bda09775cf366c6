"""Scene contraction for unbounded captures (Mip-NeRF 360 Eq. 10; nerfacc ``contract_to_unisphere``, nerfstudio
``SceneContraction``).

The box ``aabb`` is first mapped affinely to ``y in [-1, 1]^3``; points with ``|y| <= 1`` stay where they are, the
rest of space is squeezed into the shell ``1 < |y| < 2``; the result is scaled into ``[0, 1]^3`` so a hash grid can
encode it. Two norms (``ContractionNorm``):

* ``"linf"`` (nerfstudio's nerfacto default): the identity region is the whole box, so a hash grid sees the box
  un-distorted and a marching-cubes export of the box needs no inverse; infinity maps to the cube surface.
* ``"l2"`` (nerfacc ``contract_to_unisphere``, spec section 2): the identity region is the box's inscribed ball;
  infinity maps to the sphere of radius 1/2 about the cube centre.

Torch only: the contraction is a handful of elementwise ops fused into the field's input, not a hot spot next to the
hash-grid encoding and the MLPs (no Warp twin).
"""

from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["ContractionNorm", "contract_to_unisphere", "uncontract_from_unisphere"]

ContractionNorm = Literal["l2", "linf"]
NORM_EPS = 1e-12  # floor of |y| in the radial division (points at the box centre are inside anyway)
INVERSE_EDGE = 1e-6  # inverse: |y| is kept below 2 - INVERSE_EDGE (|y| = 2 is infinity)


def _norm(y: Tensor, norm: ContractionNorm) -> Tensor:
    if norm == "l2":
        return y.norm(dim=-1, keepdim=True)
    if norm == "linf":
        return y.abs().amax(dim=-1, keepdim=True)
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")


def _check_box(aabb: Tensor) -> None:
    if aabb.shape != (2, 3):
        raise ValueError(f"aabb must have shape (2, 3) ([min, max]), got {tuple(aabb.shape)}")


def contract_to_unisphere(
    x: Float[Tensor, "*batch 3"], aabb: Float[Tensor, "2 3"], *, norm: ContractionNorm = "l2"
) -> Float[Tensor, "*batch 3"]:
    """Map all of space into ``[0, 1]^3`` (spec section 2, Mip-NeRF 360 Eq. 10).

    .. math:: y = 2 (x - a_{min}) / (a_{max} - a_{min}) - 1;\\;
        \\|y\\| > 1 \\Rightarrow y \\leftarrow (2 - 1/\\|y\\|)\\, y / \\|y\\|;\\; \\text{out} = y / 4 + 1/2

    With ``norm="l2"`` the box's inscribed ball maps affinely onto the ball of radius 1/4 about
    ``(1/2, 1/2, 1/2)`` and infinity maps to the sphere of radius 1/2; with ``norm="linf"`` the whole box maps
    affinely onto ``[1/4, 3/4]^3`` and infinity maps to the surface of ``[0, 1]^3``.

    Args:
        x: (..., 3) world points.
        aabb: (2, 3) ``[min, max]`` box.
        norm: ``"l2"`` (nerfacc) or ``"linf"`` (nerfstudio nerfacto).

    Returns:
        (..., 3) contracted points in ``[0, 1]^3``.

    Differentiable w.r.t.: ``x`` (continuous everywhere; C^1 across ``|y| = 1`` for ``l2``, and along rays for
    ``linf``).

    Example:
        >>> contract_to_unisphere(torch.tensor([[0.0, 0.0, 0.0], [1e9, 0.0, 0.0]]), torch.tensor([[-1.0] * 3, [1.0] * 3]))
        tensor([[0.5000, 0.5000, 0.5000],
                [1.0000, 0.5000, 0.5000]])
    """
    _check_box(aabb)
    if x.shape[-1] != 3:
        raise ValueError(f"x must have shape (..., 3), got {tuple(x.shape)}")
    y = 2.0 * (x - aabb[0]) / (aabb[1] - aabb[0]) - 1.0
    n = _norm(y, norm)
    safe = n.clamp_min(NORM_EPS)
    y = torch.where(n > 1.0, (2.0 - 1.0 / safe) * (y / safe), y)
    return y / 4.0 + 0.5


def uncontract_from_unisphere(
    u: Float[Tensor, "*batch 3"], aabb: Float[Tensor, "2 3"], *, norm: ContractionNorm = "l2"
) -> Float[Tensor, "*batch 3"]:
    """Inverse of ``contract_to_unisphere`` (mesh extraction, proposal-free debugging).

    .. math:: y = 4 (u - 1/2);\\; \\|y\\| > 1 \\Rightarrow y \\leftarrow y / (\\|y\\| (2 - \\|y\\|));\\;
        x = (y + 1)/2 \\, (a_{max} - a_{min}) + a_{min}

    Points on the limit surface (``|y| = 2``, infinity) come back at a finite but huge distance (``|y|`` is kept
    below ``2 - 1e-6``).

    Args:
        u: (..., 3) contracted points.
        aabb: (2, 3) the box of the contraction.
        norm: the norm of the contraction.

    Returns:
        (..., 3) world points.

    Differentiable w.r.t.: ``u``.

    Example:
        >>> uncontract_from_unisphere(torch.tensor([[0.875, 0.5, 0.5]]), torch.tensor([[-1.0] * 3, [1.0] * 3]))
        tensor([[2., 0., 0.]])
    """
    _check_box(aabb)
    if u.shape[-1] != 3:
        raise ValueError(f"u must have shape (..., 3), got {tuple(u.shape)}")
    y = (u - 0.5) * 4.0
    n = _norm(y, norm)
    safe = n.clamp_min(NORM_EPS)
    # |y_out| = 2 - 1/|y_in|  =>  |y_in| = 1 / (2 - |y_out|)
    radius = 1.0 / (2.0 - n).clamp_min(INVERSE_EDGE)
    y = torch.where(n > 1.0, radius * y / safe, y)
    return (y + 1.0) * 0.5 * (aabb[1] - aabb[0]) + aabb[0]
