"""Instant-NGP radiance field rendered with occupancy-grid ray marching (spec neural_fields.md §1-§4, §6).

Rendering: rays from ``Camera.generate_rays`` -> ``OccupancyGrid.sampling`` (no-grad marching through occupied
cells, then a no-grad density pass dropping samples after ``T < 1e-4``) -> density and colour with gradients on
the surviving packed samples -> ``recon.renderers.volume.composite``. Full images are rendered in chunks of rays;
``pixels=(C, R, 2)`` renders ray subsets (training batches). The occupancy grid is a buffer of the scene, updated
by ``recon.train.occupancy.OccupancyStrategy`` through ``occupancy_eval``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Mesh, RenderCapabilities
from recon.renderers.volume import OccupancyGrid, composite
from recon.scenes.base import ExportOptions, RenderOptions, StepContext
from recon.scenes.field_scene import (
    FieldScene,
    HashGridSceneConfig,
    closed_mesh,
    median_depth,
    render_camera,
    stratified_generator,
    vertex_normals,
)
from recon.scenes.fields import NGPField

__all__ = [
    "NerfScene",
    "NerfSceneConfig",
    "median_depth",
    "render_camera",
    "stratified_generator",
    "vertex_normals",
]

OCC_THRESHOLD = 0.01  # occupancy threshold on sigma * step_size (spec §3)
MESH_DENSITY_RULE = (
    0.01  # sigma_thr = 0.01 / step_size: the density the occupancy rule calls occupied (spec §6)
)


@dataclass(frozen=True)
class NerfSceneConfig(HashGridSceneConfig):
    """Instant-NGP field, occupancy grid and sampling (defaults: the NeRF-synthetic recipe of spec §2-§4)."""

    hidden_dim: int = 64
    """Width of the density and colour MLPs."""
    occupancy_resolution: int = 128
    """Cells per side of the occupancy grid."""
    occupancy_levels: int = 1
    """Occupancy-grid levels (1 for bounded scenes)."""
    render_step_size: float = 5e-3
    """Marching step (world units of the normalised frame)."""
    near_plane: float = 0.0
    """Rays start at max(box entry, near_plane)."""
    cone_angle: float = 0.0
    """0: constant steps; > 0: steps grow with t (unbounded scenes)."""
    alpha_threshold: float = 0.0
    """Samples with alpha below this are dropped at sampling time."""
    lr: float = 1e-2
    """Adam learning rate of every parameter (spec §4)."""
    lr_final_ratio: float = 0.036
    """Final/initial learning rate of the log-linear decay (0.33^3: the spec's three x0.33 steps)."""
    render_chunk: int = 16_384
    """Rays per chunk when rendering full images."""
    mesh_resolution: int = 256
    """Marching-cubes grid resolution of ``export_mesh``."""
    mesh_density: float = 0.0
    """Density level of the exported surface (0: 0.01 / render_step_size, spec §6)."""


class NerfScene(FieldScene):
    """Instant-NGP radiance field with an occupancy grid.

    Args:
        config: scene configuration.
        scene_box: (2, 3) box of the scene (forced to a cube).
        generator: RNG of the initialisation.
    """

    config: NerfSceneConfig
    capabilities = RenderCapabilities(depth=True, depth_median=True, pixel_subsets=True)

    def __init__(
        self,
        config: NerfSceneConfig,
        scene_box: Float[Tensor, "2 3"],
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(config, scene_box)
        box = self.aabb
        self.field = NGPField(box, grid=config.grid(), hidden_dim=config.hidden_dim, generator=generator)
        self.occupancy_grid = OccupancyGrid(
            box, resolution=config.occupancy_resolution, levels=config.occupancy_levels
        )

    # --- occupancy-grid capability (used by recon.train.occupancy) ------------------------------------------
    occupancy_threshold: float = OCC_THRESHOLD

    @torch.no_grad()
    def occupancy_eval(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """Occupancy of points: ``sigma(x) * step_size`` (spec §3)."""
        return self.field.density(points).sigmas * self.config.render_step_size

    # --- rendering ------------------------------------------------------------------------------------------
    def _sigma_fn(self, origins: Tensor, directions: Tensor, backend) -> Callable:
        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            x = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
            return self.field.density(x, backend=backend).sigmas

        return sigma_fn

    def _render_rays(
        self, origins: Tensor, directions: Tensor, options: RenderOptions, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """``rgb``, ``alpha`` and ``depth`` (expected distance along the unit ray) of a chunk of rays; no normals."""
        cfg, backend = self.config, options.backend
        samples = self.occupancy_grid.sampling(
            origins, directions, render_step_size=cfg.render_step_size,
            sigma_fn=self._sigma_fn(origins, directions, backend), near_plane=cfg.near_plane,
            cone_angle=cfg.cone_angle, alpha_thre=cfg.alpha_threshold, stratified=generator is not None,
            generator=generator, backend=backend,
        )  # fmt: skip
        ri = samples.ray_indices
        t_mid = ((samples.t_starts + samples.t_ends) * 0.5)[:, None]
        d = directions[ri]
        density = self.field.density(origins[ri] + d * t_mid, backend=backend)
        colors = self.field.color(d, density.geometry)
        out = composite(
            samples.t_starts, samples.t_ends, colors, sigmas=density.sigmas, ray_indices=ri,
            n_rays=origins.shape[0], background=options.background, backend=backend,
        )  # fmt: skip
        result = {"rgb": out.rgb, "alpha": out.opacity, "depth": out.depth}
        if options.median_depth:
            result["depth_median"] = median_depth(samples, out.weights, out.transmittance)
        return result

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        return {}

    # --- export ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """Marching cubes of ``sigma = sigma_thr`` over the cube (spec §6), in the scene's normalised frame.

        Vertex colours are the field's colour seen along ``-n`` (looking at the surface from outside). Density
        meshes are rough (spec §6); the level is ``mesh_density`` or ``0.01 / render_step_size``.
        """
        cfg = self.config
        level = cfg.mesh_density if cfg.mesh_density > 0 else MESH_DENSITY_RULE / cfg.render_step_size
        mesh = closed_mesh(
            lambda x: self.field.density(x).sigmas, self.aabb, cfg.mesh_resolution, level=level, outside=0.0,
            inside="above",
        )  # fmt: skip
        if mesh.num_vertices == 0:
            return mesh
        normals = vertex_normals(mesh)
        x = mesh.vertices.to(self.aabb)
        colors = torch.cat([
            self.field.color(-n, self.field.density(p).geometry)
            for p, n in zip(x.split(cfg.render_chunk), normals.split(cfg.render_chunk), strict=True)
        ])  # fmt: skip
        return Mesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors.clamp(0.0, 1.0))
