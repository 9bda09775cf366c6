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

from recon.core import Camera, Mesh, RenderOutput
from recon.renderers.encoding import HashGridConfig
from recon.renderers.isosurface import marching_cubes, sample_grid
from recon.renderers.volume import OccupancyGrid, PackedSamples, composite
from recon.scenes.base import ExponentialDecayLr, ExportOptions, ParamGroup, RenderOptions, Scene, StepContext
from recon.scenes.fields import NGPField, cube_box

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
DEFAULT_BOX_HALF = 1.0  # box of an empty scene before a checkpoint restores the stored one
MEDIAN_TRANSMITTANCE = 0.5  # median depth: where the transmittance crosses 1/2 (2DGS surface depth)
STRATIFIED_SEED = 0x5EED  # stratified marching offsets of training step k come from seed STRATIFIED_SEED + k
RayRenderFn = Callable[[Tensor, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class NerfSceneConfig:
    """Instant-NGP field, occupancy grid and sampling (defaults: the NeRF-synthetic recipe of spec §2-§4)."""

    grid_levels: int = 16
    """Hash-grid levels L."""
    grid_features: int = 2
    """Features per level F."""
    grid_log2_size: int = 19
    """log2 of the hash-table entries per level T."""
    grid_min_resolution: int = 16
    """Coarsest grid resolution N_min."""
    grid_max_resolution: int = 4096
    """Finest grid resolution N_max."""
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

    def grid(self) -> HashGridConfig:
        return HashGridConfig(
            levels=self.grid_levels,
            features_per_level=self.grid_features,
            log2_hashmap_size=self.grid_log2_size,
            base_resolution=self.grid_min_resolution,
            max_resolution=self.grid_max_resolution,
        )


class NerfScene(Scene):
    """Instant-NGP radiance field with an occupancy grid.

    Args:
        config: scene configuration.
        scene_box: (2, 3) box of the scene (forced to a cube).
        generator: RNG of the initialisation.
    """

    aabb: Float[Tensor, "2 3"]

    def __init__(
        self,
        config: NerfSceneConfig,
        scene_box: Float[Tensor, "2 3"],
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        box = cube_box(scene_box.detach().float().cpu())
        self.register_buffer("aabb", box)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._host_step: int | None = None  # host copy of ``step`` (None until set_step or the first read)
        self.field = NGPField(box, grid=config.grid(), hidden_dim=config.hidden_dim, generator=generator)
        self.occupancy_grid = OccupancyGrid(
            box, resolution=config.occupancy_resolution, levels=config.occupancy_levels
        )

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, config: NerfSceneConfig, dataset, *, generator: torch.Generator) -> "NerfScene":
        """A new field covering ``dataset.scene_box`` (as a cube)."""
        return cls(config, dataset.scene_box, generator=generator)

    @classmethod
    def empty(cls, config: NerfSceneConfig) -> "NerfScene":
        """A field over a placeholder box; ``load_state_dict_resizing`` restores the stored box and weights."""
        half = DEFAULT_BOX_HALF
        return cls(config, torch.tensor([[-half] * 3, [half] * 3]))

    def param_groups(self) -> list[ParamGroup]:
        schedule = ExponentialDecayLr(final_ratio=self.config.lr_final_ratio)
        return [
            ParamGroup(name, p, self.config.lr, schedule, per_row=False)
            for name, p in self.named_parameters()
        ]

    # --- occupancy-grid capability (used by recon.train.occupancy) ------------------------------------------
    occupancy_threshold: float = OCC_THRESHOLD

    @torch.no_grad()
    def occupancy_eval(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """Occupancy of points: ``sigma(x) * step_size`` (spec §3)."""
        return self.field.density(points).sigmas * self.config.render_step_size

    def set_step(self, step: int) -> None:
        """Training-progress hook: the step seeds the stratified sample offsets (resume-exact training)."""
        self.step.fill_(step)
        self._host_step = step

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        """Render full images ``(C, H, W)`` or the ray subset ``pixels`` ``(C, R, 2)``.

        ``depth`` is the expected distance along the unit ray (``depth_kind="t"``); ``normals`` is None; with
        ``options.median_depth`` also ``extras["depth_median"]`` (same kind, see ``median_depth``).

        Differentiable w.r.t.: the field parameters (not the camera).
        """
        generator = stratified_generator(self._training_step()) if self.training else None
        return render_camera(
            lambda o, d: self._render_rays(o, d, options, generator), camera, pixels=pixels,
            chunk=self.config.render_chunk,
        )  # fmt: skip

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict_resizing(state)
        self._host_step = None  # re-read the restored step

    def _training_step(self) -> int:
        if self._host_step is None:  # restored from a checkpoint: one host read of the buffer
            self._host_step = int(self.step)
        return self._host_step

    def _sigma_fn(self, origins: Tensor, directions: Tensor, backend) -> Callable:
        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            x = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
            return self.field.density(x, backend=backend).sigmas

        return sigma_fn

    def _render_rays(
        self, origins: Tensor, directions: Tensor, options: RenderOptions, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
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
        values = sample_grid(lambda x: self.field.density(x).sigmas, self.aabb, cfg.mesh_resolution)
        mesh = marching_cubes(
            _closed_boundary(values, outside=0.0), level=level, bbox=self.aabb, inside="above"
        )
        if mesh.num_vertices == 0:
            return mesh
        normals = vertex_normals(mesh)
        x = mesh.vertices.to(self.aabb)
        colors = torch.cat([
            self.field.color(-n, self.field.density(p).geometry)
            for p, n in zip(x.split(cfg.render_chunk), normals.split(cfg.render_chunk), strict=True)
        ])  # fmt: skip
        return Mesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors.clamp(0.0, 1.0))


@torch.no_grad()
def median_depth(samples: PackedSamples, weights: Tensor, transmittance: Tensor) -> Float[Tensor, "R 1"]:
    """Per ray, the midpoint ``t`` of the sample where the transmittance falls below 1/2 (0 if it never does).

    ``T`` is monotone along a ray, so exactly one sample has ``T_before >= 1/2 > T_after = T_before - w``.
    Differentiable w.r.t.: nothing (the median is a selection).
    """
    t_mid = (samples.t_starts + samples.t_ends) * 0.5
    crossing = (transmittance >= MEDIAN_TRANSMITTANCE) & (transmittance - weights < MEDIAN_TRANSMITTANCE)
    out = torch.zeros(samples.n_rays, 1, dtype=t_mid.dtype, device=t_mid.device)
    out[samples.ray_indices[crossing], 0] = t_mid[crossing]
    return out


def stratified_generator(step: Tensor) -> torch.Generator:
    """The RNG of one training step's stratified sample offsets: a function of the step only, so a resumed run
    draws exactly the offsets of the uninterrupted one."""
    return torch.Generator().manual_seed(
        STRATIFIED_SEED + int(step)
    )  # host read of a CPU buffer: no device sync


def _closed_boundary(values: Tensor, *, outside: float) -> Tensor:
    """``values`` with the outer layer of grid nodes set to ``outside``: surfaces cut by the box are capped there,
    so the extracted mesh is always closed (watertight)."""
    out = values.clone()
    for dim in range(3):
        out.select(dim, 0).fill_(outside)
        out.select(dim, out.shape[dim] - 1).fill_(outside)
    return out


def vertex_normals(mesh: Mesh) -> Float[Tensor, "V 3"]:
    """Area-weighted unit vertex normals of a mesh (outward for counter-clockwise faces)."""
    v = mesh.vertices
    tri = v[mesh.faces]
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # |n| = 2 area
    acc = torch.zeros_like(v).index_add_(0, mesh.faces.reshape(-1), face_n.repeat_interleave(3, dim=0))
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-20)


def render_camera(
    render_rays: RayRenderFn, camera: Camera, *, pixels: Tensor | None, chunk: int
) -> RenderOutput:
    """Generate the rays of ``camera`` (all pixels or ``pixels``), render them in chunks, reshape.

    Args:
        render_rays: ``(origins (R, 3), directions (R, 3)) -> {"rgb": (R, 3), "alpha": (R, 1), "depth": (R, 1),
            optional "normals": (R, 3) and per-ray extras (R, K)}``.
        camera: C cameras.
        pixels: (C, R, 2) integer pixels or None (full images).
        chunk: rays per ``render_rays`` call.

    Returns:
        ``RenderOutput`` shaped (C, H, W, .) or (C, R, .), ``depth_kind="t"``.
    """
    rays = camera.generate_rays(pixels)
    shape = rays.shape
    origins = rays.origins.reshape(-1, 3).contiguous()
    directions = rays.directions.reshape(-1, 3).contiguous()
    parts = [render_rays(o, d) for o, d in zip(origins.split(chunk), directions.split(chunk), strict=True)]
    merged = {k: torch.cat([p[k] for p in parts]).reshape(*shape, -1) for k in parts[0]}
    main = ("rgb", "alpha", "depth", "normals")
    return RenderOutput(
        rgb=merged["rgb"], alpha=merged["alpha"], depth=merged["depth"], normals=merged.get("normals"),
        depth_kind="t", extras={k: v for k, v in merged.items() if k not in main},
    )  # fmt: skip
