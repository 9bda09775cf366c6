"""The shared block template: base tessellation, fixed angles and UV atlas, built once from the config.

Every block shares one base mesh; only the exponents and the pose differ between blocks, so the scene (and the
exporter) precompute the angles ``(η, ω)`` and the atlas here.
"""

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.geometry import base_angles
from recon.scenes.superquadrics.tessellation import BaseMesh, icosphere, uv_sphere
from recon.scenes.superquadrics.uv import UVAtlas, build_atlas

__all__ = ["BlockTemplate", "block_template"]


@dataclass(frozen=True)
class BlockTemplate:
    """Base tessellation of a block with its fixed angles and UV atlas.

    Attributes:
        base: unit base mesh (V vertices, F faces).
        eta: (V,) float64 latitudes ``asin(u_y)``.
        omega: (V,) float64 longitudes ``atan2(u_x, u_z)``.
        atlas: the spherical UV atlas (seam and pole fixes, padding for the texture size).
    """

    base: BaseMesh
    eta: Float[Tensor, " V"]
    omega: Float[Tensor, " V"]
    atlas: UVAtlas


def block_template(cfg: SuperquadricsConfig, *, level: int | None = None) -> BlockTemplate:
    """The template of ``cfg.tessellation`` at the trained resolution, or refined for export.

    Args:
        cfg: tessellation kind, icosphere level or UV-sphere size, texture size.
        level: None for the trained resolution; otherwise an icosphere level (icosphere), or for the UV sphere
            ``2^(level - icosphere_level)`` times the trained latitude/longitude counts (level >= icosphere_level).

    Raises:
        ValueError: a UV-sphere level below the trained one.
    """
    if cfg.tessellation == "icosphere":
        base = icosphere(cfg.icosphere_level if level is None else level)
    else:
        refine = 0 if level is None else level - cfg.icosphere_level
        if refine < 0:
            raise ValueError(
                f"level must be >= icosphere_level ({cfg.icosphere_level}) for the UV sphere, got {level}"
            )
        base = uv_sphere(cfg.uv_sphere_lat * 2**refine, cfg.uv_sphere_lon * 2**refine)
    eta, omega = base_angles(base)
    return BlockTemplate(base, eta, omega, build_atlas(base, texture_size=cfg.texture_size))
