"""Pure-PyTorch hash-grid encoding (the oracle): gather + trilinear weights; autograd scatters to the table."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.renderers.encoding.layout import HASH_PRIMES, HashGridLayout

__all__ = ["grid_index", "hash_grid_encode"]

UINT32_MASK = 0xFFFFFFFF  # emulate uint32 wrap-around with int64 arithmetic

# The 8 corners of a cell, corner k = (k & 1, (k >> 1) & 1, (k >> 2) & 1) (x fastest, as tcnn).
CORNERS = torch.tensor([[(k >> d) & 1 for d in range(3)] for k in range(8)], dtype=torch.long)


def grid_index(
    coords: Int[Tensor, "*batch 3"], resolution: int, size: int, dense: bool
) -> Int[Tensor, "*batch"]:
    """Row of integer grid coordinates within a level (uint32 arithmetic, then ``mod size``).

    Dense: ``c0 + c1 res + c2 res^2``; hashed: ``c0 * 1 ^ c1 * 2654435761 ^ c2 * 805459861``.
    """
    c = coords.long() & UINT32_MASK
    if dense:
        idx = (c[..., 0] + ((c[..., 1] * resolution) & UINT32_MASK)) & UINT32_MASK
        idx = (idx + ((c[..., 2] * (resolution * resolution)) & UINT32_MASK)) & UINT32_MASK
    else:
        idx = c[..., 0] * HASH_PRIMES[0]
        idx = idx ^ ((c[..., 1] * HASH_PRIMES[1]) & UINT32_MASK)
        idx = idx ^ ((c[..., 2] * HASH_PRIMES[2]) & UINT32_MASK)
    return idx % size


def hash_grid_encode(
    x: Float[Tensor, "N 3"], table: Float[Tensor, "P F"], layout: HashGridLayout
) -> Float[Tensor, "N LF"]:
    """Concatenated trilinear features of all levels (see ``api.hash_grid_encode``)."""
    corners = CORNERS.to(x.device)
    feats = []
    for level in range(layout.levels):
        q = x * layout.scales[level] + 0.5
        floor = torch.floor(q)
        frac = q - floor  # d frac / d q = 1: the positional gradient comes out of autograd
        cell = floor.long()
        idx = grid_index(
            cell[:, None, :] + corners, layout.resolutions[level], layout.sizes[level], layout.dense[level]
        )
        w = torch.where(corners.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # (N, 8)
        # Autograd's backward of this gather is a scatter-add (index_add) into the table.
        feats.append((w[..., None] * table[idx + layout.offsets[level]]).sum(1))
    return torch.cat(feats, -1)
