"""Tile binning and depth sort, torch twin of the Warp kernels (spec triangle_splats.md section 5).

Key packing: ``key = (tile_id << 32) | bits_u32(zbar)`` in one int64. ``zbar > 0.2`` after culling, so the IEEE
bits of the float32 depth order like the floats, and one stable sort orders by tile, then depth, then triangle index.
Tiles here are the raster tiles (``RASTER_TILE``): the spec's 16x16 footprint rectangle, refined to the sub-tiles
that the triangle's pixel bounding box touches (exact: the window is 0 outside the triangle).
"""

import torch
from jaxtyping import Int
from torch import Tensor

from recon.renderers.splat.constants import BBOX_MARGIN_PX, RASTER_TILE, TILE_SIZE
from recon.renderers.splat.project import tile_grid
from recon.renderers.splat.types import ProjectedTriangles, TileBins

__all__ = ["bin_tiles_torch", "depth_key_bits", "raster_rects", "tile_ranges_from_sorted"]

SUBTILES = TILE_SIZE // RASTER_TILE  # raster tiles per footprint tile along each axis


def depth_key_bits(zbar: Tensor) -> Int[Tensor, " N"]:
    """The IEEE-754 bits of ``float32(zbar)`` as non-negative int64 (valid sort keys for ``zbar > 0``)."""
    return zbar.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def raster_rects(proj: ProjectedTriangles) -> Int[Tensor, "N 4"]:
    """Half-open raster-tile rectangles ``(x0, y0, x1, y1)``: footprint tiles intersected with the pixel bbox."""
    tx, ty = tile_grid(proj.width, proj.height, RASTER_TILE)
    rect = proj.rect.to(torch.int64) * SUBTILES
    box = proj.bbox.detach()
    # Pixel i (centre i + 0.5) can be inside the triangle only if x_min <= i + 0.5 <= x_max.
    lo = torch.floor((torch.ceil(box[:, :2] - 0.5) - BBOX_MARGIN_PX) / RASTER_TILE)
    hi = torch.floor((torch.floor(box[:, 2:] - 0.5) + BBOX_MARGIN_PX) / RASTER_TILE) + 1
    limit = torch.tensor([tx, ty], device=box.device)
    lo = torch.nan_to_num(lo, nan=0.0).clamp(min=0).to(torch.int64).minimum(limit)
    hi = torch.nan_to_num(hi, nan=0.0).clamp(min=0).to(torch.int64).minimum(limit)
    x0 = torch.maximum(rect[:, 0], lo[:, 0])
    y0 = torch.maximum(rect[:, 1], lo[:, 1])
    x1 = torch.minimum(torch.minimum(rect[:, 2], hi[:, 0]), limit[0])
    y1 = torch.minimum(torch.minimum(rect[:, 3], hi[:, 1]), limit[1])
    empty = (x1 <= x0) | (y1 <= y0) | ~proj.visible
    out = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where(empty[:, None], torch.zeros_like(out), out).to(torch.int32)


def tile_ranges_from_sorted(sorted_tiles: Tensor, num_tiles: int) -> Int[Tensor, "T 2"]:
    """Half-open ``[start, end)`` per tile id from a sorted tile-id list (``[0, 0)`` for empty tiles)."""
    tiles = torch.arange(num_tiles, device=sorted_tiles.device, dtype=sorted_tiles.dtype)
    start = torch.searchsorted(sorted_tiles, tiles, right=False)
    end = torch.searchsorted(sorted_tiles, tiles, right=True)
    empty = start == end
    start = torch.where(empty, torch.zeros_like(start), start)
    end = torch.where(empty, torch.zeros_like(end), end)
    return torch.stack([start, end], dim=-1).to(torch.int32)


def bin_tiles_torch(proj: ProjectedTriangles) -> TileBins:
    """Bin triangles into raster tiles and sort by (tile, depth, index).

    Args:
        proj: projected triangles of one camera.

    Returns:
        TileBins (integer data, not differentiable).
    """
    tiles_x, tiles_y = tile_grid(proj.width, proj.height, RASTER_TILE)
    device = proj.zbar.device
    rect = raster_rects(proj).to(torch.int64)
    widths = rect[:, 2] - rect[:, 0]
    counts = widths * (rect[:, 3] - rect[:, 1])
    tri = torch.repeat_interleave(torch.arange(len(proj), device=device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    local = torch.arange(tri.shape[0], device=device) - offsets[tri]
    w = widths[tri]
    tile = (rect[tri, 1] + local // w) * tiles_x + rect[tri, 0] + local % w
    keys = (tile << 32) | depth_key_bits(proj.zbar)[tri]
    sorted_keys, order = torch.sort(keys, stable=True)
    return TileBins(
        point_list=tri[order].to(torch.int32),
        tile_ranges=tile_ranges_from_sorted(sorted_keys >> 32, tiles_x * tiles_y),
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        tile_size=RASTER_TILE,
    )
