"""Mesh rasterizer (``recon.renderers.raster``): K nearest faces per pixel, reference and Warp backends.

Importing this package loads torch only; Warp is imported (and kernels compiled, cached) on the first Warp call.
The shading ops (interpolate, texture sampling, soft compositing, silhouettes, antialiasing) live in
``shading_api`` and are re-exported here.
"""

from recon.renderers.raster.api import DEFAULT_Z_NEAR, PAD_DIST, rasterize
from recon.renderers.raster.types import Fragments

__all__ = ["DEFAULT_Z_NEAR", "PAD_DIST", "Fragments", "rasterize"]
