"""FlexiCubes regularisers (spec sparseflex.md section 1; FlexiCubes ``examples/optimize.py``, ``loss.py``)."""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from recon.renderers.isosurface.flexicubes_ref import tables
from recon.renderers.isosurface.flexicubes_types import FlexiCubesOutput, SparseVoxelGrid

__all__ = ["grid_edges", "l_dev", "sign_flip_loss", "weight_regularizer"]


def grid_edges(grid: SparseVoxelGrid) -> Int[Tensor, "E 2"]:
    """(E, 2) unique grid edges of the active voxels as corner rows ``(lower, upper)``, sorted.

    Example:
        >>> from recon.renderers.isosurface.flexicubes_api import sparse_voxel_grid
        >>> grid_edges(sparse_voxel_grid(torch.tensor([[0, 0, 0], [1, 0, 0]]), 4)).shape
        torch.Size([20, 2])
    """
    edge_corners = tables(grid.voxels.device)["edge_corners"]
    pairs = grid.voxel_corners[:, edge_corners].reshape(-1, 2)
    keys = torch.unique(pairs[:, 0] * grid.num_corners + pairs[:, 1])
    return torch.stack([keys // grid.num_corners, keys % grid.num_corners], -1)


def sign_flip_loss(s: Float[Tensor, " N"], edges: Int[Tensor, "E 2"]) -> Float[Tensor, ""]:
    """Sign-flip BCE of nvdiffrec (Munkberg et al. 2022) over the edges whose ends have different signs.

    .. math:: L = \\mathrm{mean}_e\\, \\mathrm{BCE}(s_a, [s_b > 0]) + \\mathrm{mean}_e\\, \\mathrm{BCE}(s_b, [s_a > 0])

    with ``BCE`` on logits. It pushes both ends of a crossed edge towards zero, which removes internal floaters.

    Args:
        s: (N,) corner scalars.
        edges: (E, 2) corner rows (``grid_edges``).

    Returns:
        Scalar loss; 0 (with a graph to ``s``) when no edge changes sign.

    Differentiable w.r.t.: ``s``.

    Example:
        >>> float(sign_flip_loss(torch.tensor([-1.0, 1.0, 2.0]), torch.tensor([[0, 1], [1, 2]])))
        2.6265...
    """
    if edges.ndim != 2 or edges.shape[-1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {tuple(edges.shape)}")
    s_a, s_b = s[edges[:, 0]], s[edges[:, 1]]
    crossed = (s_a > 0) != (s_b > 0)
    if not bool(crossed.any()):
        return s.sum() * 0
    s_a, s_b = s_a[crossed], s_b[crossed]
    return F.binary_cross_entropy_with_logits(
        s_a, (s_b > 0).to(s.dtype)
    ) + F.binary_cross_entropy_with_logits(s_b, (s_a > 0).to(s.dtype))


def l_dev(output: FlexiCubesOutput) -> Float[Tensor, ""]:
    """Mean over dual vertices of the L_dev regulariser (paper Eq. 8); weight 0.5 in the reference recipe.

    Differentiable w.r.t.: whatever ``output.l_dev`` is (``s``, ``deform``, ``weights``).
    """
    if output.l_dev.numel() == 0:
        return output.vertices.sum() * 0
    return output.l_dev.mean()


def weight_regularizer(weights: Float[Tensor, "Nv 21"]) -> Float[Tensor, ""]:
    """``mean |raw beta, raw alpha|`` over the 20 non-gamma weights (weight 0.1 in the reference recipe).

    Example:
        >>> float(weight_regularizer(torch.full((2, 21), -0.5)))
        0.5
    """
    if weights.ndim != 2 or weights.shape[-1] != 21:
        raise ValueError(f"weights must have shape (Nv, 21), got {tuple(weights.shape)}")
    return weights[:, :20].abs().mean()
