"""Triangle splats (Held et al. 2025; spec triangle_splats.md §1, §8-§10, §13): a soup of smooth-edged triangles.

Stored per triangle (spec §1): ``vertices`` (N, 3, 3), ``sh_dc`` (N, 1, 3), ``sh_rest`` (N, 15, 3),
``logit_opacities`` (N,) with ``o = sigmoid(raw)``, ``raw_sigmas`` (N,) with ``σ = 0.01 + exp(raw)``. Colour is
evaluated once per triangle and view from the direction centroid - camera centre, up to the active SH degree.
Rendering goes through ``recon.renderers.splat`` only.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from recon.core import Camera, Mesh, PrimitiveStats, RenderCapabilities, RenderOutput
from recon.renderers.splat import eval_sh, rasterize_triangles
from recon.renderers.splat.sh import num_sh_coeffs, rgb_to_sh
from recon.scenes.base import (
    ConstantLr,
    ExponentialDecayLr,
    ExportOptions,
    ParamGroup,
    RenderOptions,
    Scene,
    StepContext,
)
from recon.scenes.triangle_init import dome_points, seed_points_from_dataset, triangles_from_points

SIGMA_OFFSET = 0.01  # spec §1: sigma = 0.01 + exp(raw) keeps the window exponent strictly positive
MAX_SH_DEGREE = 3
AREA_EPS = 1e-12  # guards the reciprocal of the mean area when all triangles collapse


@dataclass(frozen=True)
class TriangleSceneConfig:
    """Triangle-splat scene: initialisation, learning rates and regulariser weights (spec §1, §8-§10)."""

    sh_degree: int = 3
    """Maximum SH degree (0-3); the active degree follows the strategy's schedule."""
    init_opacity: float = 0.28
    """Initial opacity of every triangle (spec §9.4)."""
    init_sigma: float = 1.16
    """Initial window exponent sigma (spec §9.4)."""
    init_scale: float = 2.23
    """Triangle radius as a multiple of the RMS distance to the 3 nearest seed points (spec §9.2)."""
    max_init_points: int = 0
    """Cap on the number of seed points (0: all SfM points; visual hull then uses random_init_points)."""
    random_init_points: int = 100_000
    """Number of seed points when no SfM points exist (visual hull or random in the scene box)."""
    hull_resolution: int = 64
    """Voxel grid resolution of the visual-hull initialisation (masked datasets without SfM points)."""
    dome: bool = True
    """Add a white Fibonacci dome of 5% extra points around SfM seed points (spec §9.1)."""
    dome_fraction: float = 0.05
    """Size of the dome relative to the number of SfM points."""
    lr_vertices: float = 0.0018
    """Vertex learning rate (not scaled by scene extent, spec §10)."""
    lr_vertices_final_ratio: float = 0.01
    """Vertex learning rate at the end of the step budget relative to the start (log-linear decay)."""
    lr_scale: float = 1.0
    """Multiplier of every learning rate below (short step budgets need larger steps than the 30k recipe)."""
    lr_scale_decay: bool = False
    """Let the learning rates other than the vertices' decay log-linearly from ``lr_scale`` times their value to
    their value over the budget (without it they stay at ``lr_scale`` times their value). On in the CPU preset:
    the constant 4x rates kept the soup of a 128-px object scene small and made it worse the longer it trained."""
    lr_sh_dc: float = 0.0025
    lr_sh_rest: float = 0.0025 / 20
    lr_opacity: float = 0.014
    lr_sigma: float = 0.0008
    opacity_weight: float = 0.0055
    """lambda_o: weight of mean(opacity) in the loss (spec §8)."""
    opacity_on_objects: bool = True
    """Apply the opacity term on object captures (``capture: object``); outdoor captures always get it. Off, the
    soup of a low-resolution object scene grows with the budget, but on the chair it then fills the cap and a
    20-minute run gets too few steps (docs/budget.md); every preset keeps it on."""
    area_weight: float = 1e-8
    """lambda_s: weight of 1 / mean(area) while densification runs (spec §8)."""
    area_until_fraction: float = 25_000 / 30_000
    """Fraction of the step budget after which the area term stops (the spec's densify_until)."""
    supersample: int = 1
    """Raster resolution factor k: every render rasterises the triangles at k times the camera's width and height
    and box-filters each k x k block into one output pixel. The 1-px inradius cull (spec §5) then applies to
    raster pixels, so triangles down to 1/k output pixel survive: on low-resolution images (the soup's size is
    bounded by the image resolution at k = 1) a longer budget can buy a larger soup. Costs ~k^2 per render. An
    option: no capacity rule chooses it yet (measurements in docs/budget.md)."""
    incenter_grad: bool = False
    """Differentiate through the incenter and inradius (False reproduces the published gradient)."""
    capture: Literal["auto", "object", "outdoor"] = "auto"
    """Kind of capture (recon.train.methods.triangles): object (image-size pruning, L1) | outdoor (no image-size
    pruning; L2 when the camera extent > 300, spec §8, §12) | auto (outdoor for unbounded and forward-facing scenes,
    else object), resolved from the dataset before training and recorded resolved in the run's config.yaml."""


class TriangleSplatScene(Scene):
    """A soup of ``N`` triangle splats.

    Args:
        config: scene configuration.
        vertices: (N, 3, 3) initial vertices.
        colors: (N, 3) initial RGB in [0, 1] (stored as the SH DC term).
    """

    capabilities = RenderCapabilities(
        depth=True, normals=True, depth_median=True, distortion=True, stats=True
    )

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    active_sh_degree: Tensor
    init_source: str  # where the initial points came from (set by from_dataset)

    def __init__(
        self, config: TriangleSceneConfig, vertices: Float[Tensor, "N 3 3"], colors: Float[Tensor, "N 3"]
    ):
        super().__init__()
        if not 0 <= config.sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"scene.sh_degree must be in [0, {MAX_SH_DEGREE}], got {config.sh_degree}")
        if config.supersample < 1:
            raise ValueError(f"scene.supersample must be a positive integer, got {config.supersample}")
        self.config = config
        n = vertices.shape[0]
        rest = num_sh_coeffs(config.sh_degree) - 1
        self.vertices = nn.Parameter(vertices.detach().float().clone())
        self.sh_dc = nn.Parameter(rgb_to_sh(colors.detach().float())[:, None, :].clone())
        self.sh_rest = nn.Parameter(torch.zeros(n, rest, 3))
        logit = math.log(config.init_opacity / (1.0 - config.init_opacity))
        self.logit_opacities = nn.Parameter(torch.full((n,), logit))
        self.raw_sigmas = nn.Parameter(torch.full((n,), math.log(config.init_sigma - SIGMA_OFFSET)))
        self.register_buffer("active_sh_degree", torch.zeros((), dtype=torch.int64))

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(
        cls, config: TriangleSceneConfig, dataset, *, generator: torch.Generator
    ) -> "TriangleSplatScene":
        """Seed points of the dataset (SfM, else visual hull, else random; spec §9) -> one triangle each."""
        seeds = seed_points_from_dataset(
            dataset,
            max_points=config.max_init_points,
            hull_resolution=config.hull_resolution,
            random_points=config.random_init_points,
            generator=generator,
        )
        points, colors = seeds.points.float(), seeds.colors.float()
        if seeds.source == "sfm" and config.dome:
            dome = dome_points(points, config.dome_fraction)
            points, colors = torch.cat([points, dome.points]), torch.cat([colors, dome.colors])
        vertices = triangles_from_points(points, scale=config.init_scale, generator=generator)
        scene = cls(config, vertices, colors)
        scene.init_source = seeds.source
        return scene

    @classmethod
    def from_points(
        cls,
        config: TriangleSceneConfig,
        points: Tensor,
        colors: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> "TriangleSplatScene":
        """One triangle per seed point (spec §9.2-3)."""
        return cls(
            config,
            triangles_from_points(points.float(), scale=config.init_scale, generator=generator),
            colors,
        )

    @classmethod
    def empty(cls, config: TriangleSceneConfig) -> "TriangleSplatScene":
        return cls(config, torch.zeros(0, 3, 3), torch.zeros(0, 3))

    # --- activations ----------------------------------------------------------------------------------------
    def opacities(self) -> Float[Tensor, " N"]:
        return torch.sigmoid(self.logit_opacities)

    def sigmas(self) -> Float[Tensor, " N"]:
        return SIGMA_OFFSET + torch.exp(self.raw_sigmas)

    def areas(self) -> Float[Tensor, " N"]:
        v = self.vertices
        return 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)

    def sh(self) -> Float[Tensor, "N K 3"]:
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    def colors(
        self, directions: Float[Tensor, "M 3"], degree: int | None = None, rows: Tensor | None = None
    ) -> Float[Tensor, "M 3"]:
        """RGB of the triangles ``rows`` (all if None) seen along ``directions`` (SH up to ``degree``, default the
        active degree)."""
        deg = int(self.active_sh_degree) if degree is None else degree
        deg = min(deg, self.config.sh_degree)
        sh = self.sh() if rows is None else self.sh()[rows]
        return eval_sh(deg, sh, directions)

    def num_primitives(self) -> int:
        return self.vertices.shape[0]

    # --- Scene interface ------------------------------------------------------------------------------------
    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        """Render the triangles into ``camera`` (spec §2-§6).

        Args:
            camera: C pinhole cameras.
            options: background, backend and which auxiliary outputs to return.
            pixels: optional (C, R, 2) integer pixel indices; the full image is rendered and gathered.

        Returns:
            RenderOutput with rgb/alpha (C, H, W, ·), expected depth (z), world-space normals when requested,
            median depth and distortion when requested and the per-triangle statistics (``stats``: max
            blending weight, radii, visibility, (C, N)) when ``options.stats``. With ``scene.supersample`` k > 1
            the per-pixel outputs are k x k box-filtered raster pixels and the statistics are in raster pixels.

        Differentiable w.r.t. all parameters (statistics are detached).
        """
        camera = camera.to(device=self.vertices.device, dtype=self.vertices.dtype)
        k = self.config.supersample
        if k > 1:
            camera = camera.scaled(1.0 / k, width=camera.width * k, height=camera.height * k)
        centroids = self.vertices.mean(dim=1)
        dirs = centroids[None] - camera.centers()[:, None, :]  # (C, N, 3): spec §1 view direction
        colors = torch.stack([self.colors(dirs[c]) for c in range(len(camera))])
        out = rasterize_triangles(  # the only renderer triangle splats use
            self.vertices,
            colors,
            self.opacities(),
            self.sigmas(),
            camera,
            background=options.background.to(self.vertices) if options.background is not None else None,
            backend=options.backend,
            incenter_grad=self.config.incenter_grad,
            compute_distortion=options.distortion,
        )
        normals = None
        if options.normals:
            R_cam_world = camera.T_cam_world[:, :3, :3]
            # n_world = R_world_cam n_view = R_cam_world^T n_view; as row vectors: n_view @ R_cam_world
            normals = torch.einsum("chwi,cij->chwj", out.normals, R_cam_world)
        stats = None
        if options.stats:
            stats = PrimitiveStats(
                max_blending=out.stats.max_blending, radius_px=out.stats.radius_px,
                inradius_px=out.stats.inradius_px, visible=out.stats.visible,
            )  # fmt: skip
        result = RenderOutput(
            rgb=out.rgb,
            alpha=out.alpha,
            depth=out.depth if options.depth else None,
            normals=normals,
            depth_median=out.depth_median if options.median_depth else None,
            distortion=out.distortion if options.distortion else None,
            stats=stats,
            producer=type(self).__name__,
        )
        if k > 1:
            result = result.map_pixels(lambda t: _box_filter(t, k))
        return _gather(result, pixels) if pixels is not None else result

    def param_groups(self) -> list[ParamGroup]:
        cfg, k = self.config, self.config.lr_scale
        decay = ExponentialDecayLr(cfg.lr_vertices_final_ratio)
        rest = ExponentialDecayLr(1.0 / k) if cfg.lr_scale_decay and k > 1.0 else ConstantLr()
        return [
            ParamGroup("vertices", self.vertices, k * cfg.lr_vertices, decay),
            ParamGroup("sh_dc", self.sh_dc, k * cfg.lr_sh_dc, rest),
            ParamGroup("sh_rest", self.sh_rest, k * cfg.lr_sh_rest, rest),
            ParamGroup("logit_opacities", self.logit_opacities, k * cfg.lr_opacity, rest),
            ParamGroup("raw_sigmas", self.raw_sigmas, k * cfg.lr_sigma, rest),
        ]

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """Opacity term (unless ``opacity_on_objects`` is off on an object capture) and area term (before
        ``area_until_fraction``), spec §8; already weighted."""
        cfg = self.config
        terms: dict[str, Tensor] = {}
        if self.num_primitives() == 0:
            return terms
        if cfg.opacity_weight > 0 and (cfg.opacity_on_objects or cfg.capture != "object"):
            terms["opacity"] = cfg.opacity_weight * self.opacities().mean()
        if cfg.area_weight > 0 and ctx.fraction < cfg.area_until_fraction:
            terms["area"] = cfg.area_weight / self.areas().mean().clamp_min(AREA_EPS)
        return terms

    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """The raw soup (spec §13.1): one face per triangle with opacity >= ``min_opacity``, exact duplicate
        vertices merged, face colour from the SH seen by a viewer at the origin (direction ``normalize(x̄)``),
        face alpha = opacity."""
        keep = self.opacities() >= options.min_opacity
        verts = self.vertices[keep].detach()
        centroids = verts.mean(dim=1)
        colors = self.colors(centroids, degree=self.config.sh_degree, rows=keep).clamp(0.0, 1.0)
        flat = verts.reshape(-1, 3)
        unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
        faces = inverse.reshape(-1, 3)
        return Mesh(
            vertices=unique, faces=faces, face_colors=colors, face_alpha=self.opacities()[keep].detach()
        )


def _box_filter(t: Tensor, k: int) -> Tensor:
    """(C, kH, kW, D) -> (C, H, W, D): the mean of each k x k block (``scene.supersample``)."""
    c, h, w, d = t.shape
    return t.reshape(c, h // k, k, w // k, k, d).mean(dim=(2, 4))


def _gather(out: RenderOutput, pixels: Tensor) -> RenderOutput:
    """Select (C, R, 2) integer pixels ``(i, j)`` = (column, row) from full-image outputs."""
    c = torch.arange(pixels.shape[0], device=pixels.device)[:, None]
    i, j = pixels[..., 0], pixels[..., 1]
    return out.map_pixels(lambda t: t[c, j, i])
