"""Tile binning and depth sort, torch twin of the Warp kernels (spec triangle_splats.md section 5).

Key packing: ``key = (tile_id << 32) | bits_u32(zbar)`` in one int64. ``zbar > 0.2`` after culling, so the IEEE
bits of the float32 depth order like the floats, and one stable sort orders by tile, then depth, then triangle index.
Tiles here are the raster tiles (``RASTER_TILE``): the spec's 16x16 footprint rectangle, refined to the sub-tiles
that the triangle's pixel bounding box touches (exact: the window is 0 outside the triangle), minus the raster
tiles that lie entirely outside one of the triangle's edge lines (:func:`subtile_outside`, also exact).
"""

import torch
from jaxtyping import Int
from torch import Tensor

from recon.renderers.splat.constants import (
    BBOX_MARGIN_PX,
    CULL_MARGIN_ABS_PX,
    CULL_MARGIN_REL,
    RASTER_TILE,
    TILE_SIZE,
)
from recon.renderers.splat.project import tile_grid
from recon.renderers.splat.types import ProjectedTriangles, TileBins

__all__ = [
    "bin_tiles_torch",
    "depth_key_bits",
    "raster_rects",
    "subtile_outside",
    "tile_ranges_from_sorted",
]

SUBTILES = TILE_SIZE // RASTER_TILE  # raster tiles per footprint tile along each axis


def depth_key_bits(zbar: Tensor) -> Int[Tensor, " N"]:
    """The IEEE-754 bits of ``float32(zbar)`` as non-negative int64 (valid sort keys for ``zbar > 0``)."""
    return zbar.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def raster_rects(proj: ProjectedTriangles) -> Int[Tensor, "N 4"]:
    """Half-open raster-tile rectangles ``(x0, y0, x1, y1)``: footprint tiles intersected with the pixel bbox.

    The Warp path computes the same rectangles inside ``warp_kernels.count_tiles`` (in float64, which equals this
    float32 arithmetic for ``|bbox| < 2^22`` px; visible triangles are within ~2 x MAX_RADIUS_PX of the image).
    """
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


def subtile_outside(lines: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
    """True where raster tile ``(sx, sy)`` lies entirely outside one edge line of its triangle (pair dropped).

    Edge culling of the (raster tile, triangle) pairs, torch twin of ``warp_kernels.subtile_outside``. The bbox
    refinement keeps every raster tile the triangle's bounding box touches; about 20% of them (the corners of the box
    for the benchmark's triangles) still contain no pixel inside the triangle. The window is exactly 0 where any
    ``L_k(p) > 0`` (spec 3-4: such a pixel is skipped before alpha is even formed), so a tile all of whose pixel
    centres satisfy ``L_k > 0`` for one ``k`` cannot change any output or gradient: dropping it is exact. The edge
    lines are the triangle's own, NOT the shrunk footprint's (spec 5 renders pixels with 1/255 <= alpha < 0.01 in a
    binned tile; culling on the shrunk lines would drop those). Conservative: the minimum of the linear ``L_k``
    over the tile's pixel centres (at its corner pixel ``(x_lo or x_hi, y_lo or y_hi)``, chosen by the signs of
    ``n_k``) is computed in float64 and must exceed a margin (``constants.CULL_MARGIN_*``) far above the float32
    rounding of the raster kernels' inside test; pixel centres beyond the image edge only make the test stricter.

    Args:
        lines: (P, 9) float64 edge lines ``(n_x, n_y, d)`` x 3 of each pair's triangle.
        sx, sy: (P,) int64 raster tile coordinates of each pair.

    Returns:
        (P,) bool, True to drop the pair.
    """
    x_lo = (sx * RASTER_TILE).to(torch.float64) + 0.5
    y_lo = (sy * RASTER_TILE).to(torch.float64) + 0.5
    x_hi = x_lo + float(RASTER_TILE - 1)
    y_hi = y_lo + float(RASTER_TILE - 1)
    drop = torch.zeros(sx.shape, dtype=torch.bool, device=sx.device)
    for k in range(3):
        nx, ny, d = lines[:, 3 * k], lines[:, 3 * k + 1], lines[:, 3 * k + 2]
        l_min = nx * torch.where(nx > 0, x_lo, x_hi) + ny * torch.where(ny > 0, y_lo, y_hi) + d
        margin = CULL_MARGIN_ABS_PX + CULL_MARGIN_REL * (d.abs() + x_hi + y_hi)
        drop |= l_min > margin
    return drop


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
    sx = rect[tri, 0] + local % w
    sy = rect[tri, 1] + local // w
    keep = ~subtile_outside(proj.lines.detach().reshape(-1, 9).to(torch.float64)[tri], sx, sy)
    tri, sx, sy = tri[keep], sx[keep], sy[keep]
    tile = sy * tiles_x + sx
    keys = (tile << 32) | depth_key_bits(proj.zbar)[tri]
    sorted_keys, order = torch.sort(keys, stable=True)
    return TileBins(
        point_list=tri[order].to(torch.int32),
        tile_ranges=tile_ranges_from_sorted(sorted_keys >> 32, tiles_x * tiles_y),
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        tile_size=RASTER_TILE,
    )
