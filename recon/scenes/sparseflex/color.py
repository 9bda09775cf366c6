"""Colour field of SparseFlex scenes (spec sparseflex.md section 5, ``color_mode="field"``): hash grid + MLP.

Deferred shading: queried at the interpolated world position of every covered pixel (as nvdiffrec's volumetric
texture) and at the mesh vertices for export. Positions are given in the unit cube ``[0, 1]^3`` of the scene box.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn

from recon.core.shapes import Backend
from recon.renderers.encoding import HashGrid, HashGridConfig
from recon.scenes.fields import MLP

__all__ = ["ColorField"]


class ColorField(nn.Module):
    """``sigmoid(MLP(hash_grid(x)))``: view-independent RGB in [0, 1] (so it can be baked into vertex colours).

    Args:
        grid: hash-grid configuration (spec: 16 levels, 2 features, ``2^19`` entries, base 16, finest 2048).
        hidden_dim: width of the MLP's hidden layers (spec: 64).
        hidden_layers: number of hidden layers (spec: 2).
        generator: initialisation generator.

    Example:
        >>> field = ColorField(HashGridConfig(levels=2, log2_hashmap_size=8, max_resolution=8), 8, 1)
        >>> field(torch.rand(5, 3), backend="torch").shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        grid: HashGridConfig,
        hidden_dim: int,
        hidden_layers: int,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.encoding = HashGrid(grid, generator=generator)
        self.mlp = MLP(
            self.encoding.output_dim, 3, hidden_dim=hidden_dim, hidden_layers=hidden_layers, bias=True
        )

    def forward(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> Float[Tensor, "N 3"]:
        """RGB at ``x`` in ``[0, 1]^3`` (clamped there). Differentiable w.r.t. the table, the MLP and ``x``."""
        return torch.sigmoid(self.mlp(self.encoding(x.clamp(0.0, 1.0), backend=backend)))
