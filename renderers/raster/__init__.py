"""Mesh rasterizer (``recon.renderers.raster``): K nearest faces per pixel and the shading ops that read them.

``rasterize`` (``api.py``) turns a triangle mesh and C cameras into :class:`Fragments`; the shading ops
(``shading_api.py``: interpolate, texture sampling, soft compositing, silhouettes, antialiasing) consume them. Each
op has a torch reference and a Warp backend. Importing this package loads torch only; Warp is imported (and
kernels compiled, cached) on the first Warp call.
"""

from recon.renderers.raster.api import DEFAULT_Z_NEAR, PAD_DIST, rasterize
from recon.renderers.raster.shading_api import (
    CompositeMode,
    antialias,
    decoupled_composite,
    interpolate,
    sample_texture,
    silhouette,
    soft_composite,
)
from recon.renderers.raster.types import Fragments

__all__ = [
    "DEFAULT_Z_NEAR",
    "PAD_DIST",
    "CompositeMode",
    "Fragments",
    "antialias",
    "decoupled_composite",
    "interpolate",
    "rasterize",
    "sample_texture",
    "silhouette",
    "soft_composite",
]
