"""Volume rendering: ray/box intersection, occupancy-grid marching, compositing on packed samples, samplers, distortion and proposal losses.

Importing this package does not import Warp; the first Warp-backed call does (kernels compile once, cached).
"""

from recon.renderers.volume.api import (
    EARLY_STOP_EPS,
    accumulate_along_rays,
    composite,
    importance_sampling,
    march_rays,
    pack_info,
    ray_aabb_intersect,
    render_visibility_from_alpha,
    render_visibility_from_density,
    render_weight_from_alpha,
    render_weight_from_density,
    uniform_intervals,
)
from recon.renderers.volume.losses import distortion_loss, interlevel_loss
from recon.renderers.volume.occupancy import OccupancyGrid
from recon.renderers.volume.types import (
    CompositeOutput,
    PackedSamples,
    RayAABBHits,
    WeightsFromAlpha,
    WeightsFromDensity,
)

__all__ = [
    "EARLY_STOP_EPS",
    "CompositeOutput",
    "OccupancyGrid",
    "PackedSamples",
    "RayAABBHits",
    "WeightsFromAlpha",
    "WeightsFromDensity",
    "accumulate_along_rays",
    "composite",
    "distortion_loss",
    "importance_sampling",
    "interlevel_loss",
    "march_rays",
    "pack_info",
    "ray_aabb_intersect",
    "render_visibility_from_alpha",
    "render_visibility_from_density",
    "render_weight_from_alpha",
    "render_weight_from_density",
    "uniform_intervals",
]
