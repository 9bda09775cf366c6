"""Tile splat rasteriser (``recon.renderers.splat``): triangle splats with reference and Warp backends.

Importing this package loads torch only; Warp is imported (and kernels compiled, cached) on the first Warp call.
"""

from recon.renderers.splat.api import bin_tiles, project_triangles, rasterize_projected, rasterize_triangles
from recon.renderers.splat.sh import eval_sh
from recon.renderers.splat.types import (
    PrimitiveStats,
    ProjectedTriangles,
    RasterOutput,
    SplatOutput,
    TileBins,
)

__all__ = [
    "PrimitiveStats",
    "ProjectedTriangles",
    "RasterOutput",
    "SplatOutput",
    "TileBins",
    "bin_tiles",
    "eval_sh",
    "project_triangles",
    "rasterize_projected",
    "rasterize_triangles",
]
