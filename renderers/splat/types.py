"""Typed records of the splat op family: per-stage inputs/outputs and the public ``SplatOutput``."""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "PARAM_COLOR",
    "PARAM_INV_PHI_S",
    "PARAM_LINES",
    "PARAM_NORMAL",
    "PARAM_OPACITY",
    "PARAM_SIGMA",
    "PARAM_SIZE",
    "PARAM_ZBAR",
    "PrimitiveStats",
    "ProjectedTriangles",
    "RasterOutput",
    "SplatOutput",
    "TileBins",
]

# Column layout of the packed per-triangle raster parameters (ProjectedTriangles.packed()): one row of 19 floats
# per triangle, so the raster kernels read one contiguous row and write one gradient row per (pixel, triangle).
PARAM_LINES = slice(0, 9)  # (n_x, n_y, d) of edges 0, 1, 2: L_k(p) = n_k . p + d_k, outward normals
PARAM_INV_PHI_S = 9  # 1 / phi(s) = -1 / inradius (negative)
PARAM_SIGMA = 10  # window exponent sigma
PARAM_OPACITY = 11  # opacity o
PARAM_ZBAR = 12  # camera-frame z of the 3D centroid (sort and blend depth)
PARAM_COLOR = slice(13, 16)  # RGB
PARAM_NORMAL = slice(16, 19)  # view-space unit normal facing the camera
PARAM_SIZE = 19


@dataclass(frozen=True)
class ProjectedTriangles:
    """Screen-space triangles of ONE camera: the hand-off from projection (torch) to binning and rasterization.

    Differentiable fields (autograd reaches vertices, colours, opacities, sigmas through them): ``lines``,
    ``inv_phi_s``, ``sigmas``, ``opacities``, ``colors``, ``zbar``, ``normals``. The rest are integer/boolean
    bookkeeping or detached statistics.

    Attributes:
        lines: (N, 3, 3) edge lines ``(n_x, n_y, d)``; ``L_k(p) = n_k . p + d_k`` is negative inside (spec 3).
        inv_phi_s: (N,) ``1 / phi(s)`` (negative); detached unless ``incenter_grad``.
        sigmas: (N,) window exponents.
        opacities: (N,) opacities.
        colors: (N, 3) colours.
        zbar: (N,) camera-frame depth of the centroid.
        normals: (N, 3) unit view-space normals facing the camera.
        visible: (N,) False for culled triangles (spec 5); culled triangles touch no tile.
        rect: (N, 4) int32 footprint tile rectangle ``(x0, y0, x1, y1)``, half-open, all 0 when culled.
        bbox: (N, 4) ``(x_min, y_min, x_max, y_max)`` of the projected vertices in pixels (detached).
        means2d: (N, 2) projected 3D centroid in pixels (detached).
        radius_px: (N,) ``ceil(max_k |p_k - p_bar|)`` in pixels, 0 when culled (int32).
        inradius_px: (N,) inradius in pixels, 0 when culled (detached).
        width: image width in pixels.
        height: image height in pixels.
    """

    lines: Float[Tensor, "N 3 3"]
    inv_phi_s: Float[Tensor, " N"]
    sigmas: Float[Tensor, " N"]
    opacities: Float[Tensor, " N"]
    colors: Float[Tensor, "N 3"]
    zbar: Float[Tensor, " N"]
    normals: Float[Tensor, "N 3"]
    visible: Bool[Tensor, " N"]
    rect: Int[Tensor, "N 4"]
    bbox: Float[Tensor, "N 4"]
    means2d: Float[Tensor, "N 2"]
    radius_px: Int[Tensor, " N"]
    inradius_px: Float[Tensor, " N"]
    width: int
    height: int

    def __len__(self) -> int:
        return self.zbar.shape[0]

    def packed(self) -> Float[Tensor, "N 19"]:
        """The differentiable raster parameters as one (N, 19) tensor (column layout: ``PARAM_*``)."""
        return torch.cat(
            [
                self.lines.reshape(-1, 9),
                self.inv_phi_s[:, None],
                self.sigmas[:, None],
                self.opacities[:, None],
                self.zbar[:, None],
                self.colors,
                self.normals,
            ],
            dim=1,
        )


@dataclass(frozen=True)
class TileBins:
    """Triangles binned into raster tiles and sorted by (tile, depth).

    A triangle is listed in raster tile ``t`` iff ``t`` lies in one of its binned 16x16 footprint tiles
    (``ProjectedTriangles.rect``, spec 5) and touches its pixel bounding box (an exact refinement, see
    ``constants.RASTER_TILE``). ``point_list[tile_ranges[t, 0]:tile_ranges[t, 1]]`` are the triangle indices of
    raster tile ``t`` (``t = t_y * tiles_x + t_x``, tiles of ``tile_size`` pixels) front to back (ties broken by
    triangle index).

    Attributes:
        point_list: (M,) int32 triangle index per (tile, triangle) pair, sorted by key.
        tile_ranges: (tiles_y * tiles_x, 2) int32 half-open ``[start, end)`` into ``point_list`` (``[0, 0)`` empty).
        tiles_x: number of raster tile columns.
        tiles_y: number of raster tile rows.
        tile_size: raster tile edge in pixels.
    """

    point_list: Int[Tensor, " M"]
    tile_ranges: Int[Tensor, "T 2"]
    tiles_x: int
    tiles_y: int
    tile_size: int


@dataclass(frozen=True)
class RasterOutput:
    """Raw raster-stage buffers of ONE camera (before the expected-depth division).

    Attributes:
        rgb: (H, W, 3) colour composited over the background.
        alpha: (H, W, 1) ``1 - T_final``.
        depth_sum: (H, W, 1) ``sum w * zbar`` (not divided by alpha).
        depth_median: (H, W, 1) ``zbar`` of the last blended triangle with ``T_before > 0.5`` (0 if none).
        normals: (H, W, 3) ``sum w * n`` (view space, unnormalised).
        distortion: (H, W, 1) 2DGS distortion, or None when not requested.
        max_blending: (N,) max over pixels of the blending weight ``w`` (detached statistic).
    """

    rgb: Float[Tensor, "H W 3"]
    alpha: Float[Tensor, "H W 1"]
    depth_sum: Float[Tensor, "H W 1"]
    depth_median: Float[Tensor, "H W 1"]
    normals: Float[Tensor, "H W 3"]
    distortion: Float[Tensor, "H W 1"] | None
    max_blending: Float[Tensor, " N"]


@dataclass(frozen=True)
class PrimitiveStats:
    """Per-primitive, per-camera statistics for densification strategies (never carry gradients).

    Attributes:
        means2d: (C, N, 2) projected 3D centroid in pixels.
        radius_px: (C, N) int32 ``ceil(R)`` with ``R = max_k |p_k - p_bar|``; 0 when culled.
        inradius_px: (C, N) inradius ``rho`` in pixels; 0 when culled.
        max_blending: (C, N) max over pixels of the blending weight ``w = alpha * T``.
        visible: (C, N) bool, False for culled triangles.
    """

    means2d: Float[Tensor, "C N 2"]
    radius_px: Int[Tensor, "C N"]
    inradius_px: Float[Tensor, "C N"]
    max_blending: Float[Tensor, "C N"]
    visible: Bool[Tensor, "C N"]


@dataclass(frozen=True)
class SplatOutput:
    """Rendered images of ``C`` cameras plus per-primitive statistics.

    Attributes:
        rgb: (C, H, W, 3) colour composited over the background.
        alpha: (C, H, W, 1) accumulated opacity ``1 - T_final``.
        depth: (C, H, W, 1) expected depth ``sum w * zbar / alpha`` (0 where alpha is 0).
        depth_median: (C, H, W, 1) median depth (``zbar`` of the last blended triangle with ``T_before > 0.5``).
        normals: (C, H, W, 3) view-space normals ``sum w * n`` (unnormalised).
        distortion: (C, H, W, 1) 2DGS depth distortion, or None unless requested.
        stats: per-primitive statistics.
    """

    rgb: Float[Tensor, "C H W 3"]
    alpha: Float[Tensor, "C H W 1"]
    depth: Float[Tensor, "C H W 1"]
    depth_median: Float[Tensor, "C H W 1"]
    normals: Float[Tensor, "C H W 3"]
    distortion: Float[Tensor, "C H W 1"] | None
    stats: PrimitiveStats
