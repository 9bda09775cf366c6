"""NeuS signed-distance field rendered with the NeuS SDF-to-opacity rule (spec neural_fields.md §5, §6).

The fast variant of spec §5 (instant-nsr-pl): a hash-grid SDF with sphere initialisation, analytic gradients, an
occupancy grid built from the SDF (``occupancy_eval`` = section opacity at the current sharpness), constant marching
steps, the cosine-annealed section opacity, an eikonal regulariser on every sample and an optional mask loss.
There is no learned background field: the render is composited over ``RenderOptions.background`` (object captures
with masks or a known background colour).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from recon.core import Mesh, RenderCapabilities
from recon.renderers.volume import OccupancyGrid, accumulate_along_rays, composite
from recon.scenes.base import ExportOptions, RenderOptions, StepContext
from recon.scenes.field_scene import FieldScene, HashGridSceneConfig, RayJitter, closed_mesh, median_depth
from recon.scenes.fields import SDFField, unit_normals

__all__ = ["NeusScene", "NeusSceneConfig", "neus_alpha"]

# NeuS models/renderer.py: (p + 1e-5) / (c + 1e-5) keeps alpha defined where Phi_s(f_prev) -> 0
ALPHA_EPS = 1e-5
MASK_CLAMP = 1e-3  # opacity clamp inside the mask BCE (NeuS clips weight_sum to [1e-3, 1 - 1e-3])


def neus_alpha(
    sdf: Float[Tensor, " S"],
    gradients: Float[Tensor, "S 3"],
    directions: Float[Tensor, "S 3"],
    deltas: Float[Tensor, " S"],
    inv_s: Tensor,
    cos_anneal_ratio: float | Tensor,
) -> Float[Tensor, " S"]:
    """NeuS section opacity with the cosine annealing of ``models/renderer.py`` (spec §5).

    .. math::
        \\cos = d \\cdot \\nabla f,\\; c = -(\\mathrm{relu}(-\\cos/2 + 1/2)(1 - r) + \\mathrm{relu}(-\\cos) r),\\;
        f_{prev/next} = f \\mp c \\delta / 2,\\;
        \\alpha = \\mathrm{clip}\\Big(\\frac{\\Phi_s(f_{prev}) - \\Phi_s(f_{next}) + 10^{-5}}{\\Phi_s(f_{prev}) + 10^{-5}},
        0, 1\\Big)

    with ``Phi_s(u) = sigmoid(s u)``. At ``r = 1`` this is the discrete NeuS opacity (paper Eq. 13) with the
    section-end SDFs linearly extrapolated from the midpoint.

    Args:
        sdf: (S,) SDF at the section midpoints (world units).
        gradients: (S, 3) ``grad f`` at the midpoints.
        directions: (S, 3) unit ray directions.
        deltas: (S,) section lengths.
        inv_s: sharpness ``s`` (scalar tensor).
        cos_anneal_ratio: ``r = min(1, fraction / anneal_fraction)`` (fraction of the training budget).

    Returns:
        (S,) opacities in [0, 1].

    Differentiable w.r.t.: ``sdf``, ``gradients``, ``inv_s``.

    Example:
        >>> a = neus_alpha(torch.tensor([0.0]), torch.tensor([[-1.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]),
        ...                torch.tensor([0.1]), torch.tensor(64.0), 1.0)
        >>> round(float(a), 4)  # (sigmoid(3.2) - sigmoid(-3.2)) / sigmoid(3.2)
        0.9608
    """
    cos = (directions * gradients).sum(-1)
    r = cos_anneal_ratio
    iter_cos = -(F.relu(-cos * 0.5 + 0.5) * (1.0 - r) + F.relu(-cos) * r)
    prev_cdf = torch.sigmoid((sdf - iter_cos * deltas * 0.5) * inv_s)
    next_cdf = torch.sigmoid((sdf + iter_cos * deltas * 0.5) * inv_s)
    return ((prev_cdf - next_cdf + ALPHA_EPS) / (prev_cdf + ALPHA_EPS)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class NeusSceneConfig(HashGridSceneConfig):
    """NeuS fast variant (spec §5, instant-nsr-pl ``neus-dtu.yaml``): field, sampling, losses, learning rates."""

    grid_min_resolution: int = 32
    """Coarsest grid resolution N_min."""
    grid_max_resolution: int = 2048
    """Finest grid resolution (per-level scale 1.3195 with 16 levels)."""
    hidden_dim: int = 64
    """Width of the SDF MLP's hidden layer and of the colour MLP."""
    feature_dim: int = 13
    """Features passed from the SDF to the colour network."""
    init_radius: float = 0.5
    """Radius of the initial sphere as a fraction of the cube's half size."""
    init_variance: float = 0.3
    """Initial v of the sharpness s = exp(10 v)."""
    anneal_fraction: float = 1.0
    """Fraction of the training budget over which the cosine annealing ratio rises from 0 to 1 (instant-nsr-pl:
    20 000 of 20 000 steps; 0: no annealing, r = 1 from the start)."""
    occupancy_resolution: int = 128
    """Cells per side of the occupancy grid."""
    occupancy_threshold: float = 1e-3
    """Occupancy threshold on the section opacity."""
    render_step_size: float = 3.4e-3
    """Marching step (1.732 * 2 / 1024 for a unit-radius scene, as instant-nsr-pl)."""
    eikonal_weight: float = 0.1
    """Weight of mean((|grad f| - 1)^2) over the samples."""
    mask_weight: float = 0.1
    """Weight of BCE(opacity, mask) when the step provides target masks (0 disables it)."""
    lr: float = 1e-2
    """Learning rate of the hash grid and MLPs."""
    lr_variance: float = 1e-3
    """Learning rate of v."""
    lr_final_ratio: float = 0.1
    """Final/initial learning rate (exponential decay to 0.1x, spec §5 fast variant)."""
    render_chunk: int = 8_192
    """Rays per chunk when rendering full images."""
    mesh_resolution: int = 512
    """Marching-cubes grid resolution of ``export_mesh``."""


class NeusScene(FieldScene):
    """A NeuS SDF field with an occupancy grid.

    Buffers: ``aabb`` (2, 3) cube, ``cos_anneal_ratio`` () and ``step`` () set by ``set_step``, the grid's state.

    Args:
        config: scene configuration.
        scene_box: (2, 3) box of the scene (forced to a cube).
        generator: RNG of the initialisation.
    """

    config: NeusSceneConfig
    cos_anneal_ratio: Tensor
    capabilities = RenderCapabilities(
        depth=True, normals=True, depth_median=True, eikonal=True, pixel_subsets=True
    )

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    cos_anneal_ratio: Tensor

    def __init__(
        self,
        config: NeusSceneConfig,
        scene_box: Float[Tensor, "2 3"],
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(config, scene_box)
        box = self.aabb
        self.register_buffer("cos_anneal_ratio", torch.tensor(1.0 if config.anneal_fraction <= 0 else 0.0))
        self.field = SDFField(
            box, grid=config.grid(), hidden_dim=config.hidden_dim, feature_dim=config.feature_dim,
            color_hidden_dim=config.hidden_dim, init_radius=config.init_radius, init_variance=config.init_variance,
            generator=generator,
        )  # fmt: skip
        self.occupancy_grid = OccupancyGrid(box, resolution=config.occupancy_resolution)
        self.occupancy_threshold = config.occupancy_threshold

    def _lr(self, name: str) -> float:
        return self.config.lr_variance if name == "field.variance" else self.config.lr

    # --- occupancy-grid capability (used by recon.train.occupancy) ------------------------------------------
    @torch.no_grad()
    def occupancy_eval(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """Opacity of a step-long section through ``points`` facing the surface head-on (instant-nsr-pl)."""
        sdf = self.field.sdf(points)
        half = 0.5 * self.config.render_step_size
        prev_cdf = torch.sigmoid((sdf + half) * self.field.inv_s())
        next_cdf = torch.sigmoid((sdf - half) * self.field.inv_s())
        return ((prev_cdf - next_cdf + ALPHA_EPS) / (prev_cdf + ALPHA_EPS)).clamp(0.0, 1.0)

    def set_step(self, step: int, fraction: float | None = None) -> None:
        """Cosine annealing ratio ``r = min(1, fraction / anneal_fraction)`` for the next renders (``fraction`` of
        the training budget; None keeps r); the step also seeds the stratified sample offsets (resume-exact)."""
        super().set_step(step, fraction)
        end = self.config.anneal_fraction
        if fraction is not None:
            self.cos_anneal_ratio.fill_(1.0 if end <= 0 else min(1.0, fraction / end))

    # --- rendering ------------------------------------------------------------------------------------------
    def _render_rays(
        self, origins: Tensor, directions: Tensor, options: RenderOptions, jitter: RayJitter | None
    ) -> dict[str, Tensor]:
        """A chunk of rays: ``rgb``, ``alpha``, ``depth`` (distance along the unit ray), ``normals``
        (``sum_i w_i n_i``, world space, unnormalised) and per ray ``eikonal`` (sum over the ray's samples
        of ``(|grad f| - 1)^2``) and ``num_samples`` (samples per ray) for the eikonal regulariser (differentiable
        through the SDF gradient only in training mode with gradients enabled).

        Differentiable w.r.t.: the field parameters and ``v``; in training mode also through the SDF gradients
        (normals, eikonal).
        """
        cfg, backend, n_rays = self.config, options.backend, origins.shape[0]
        samples = self.occupancy_grid.sampling(
            origins, directions, render_step_size=cfg.render_step_size,
            t_offsets=None if jitter is None else jitter.offsets, backend=backend,
        )  # fmt: skip
        ri = samples.ray_indices
        d = directions[ri]
        t_mid = ((samples.t_starts + samples.t_ends) * 0.5)[:, None]
        create_graph = self.training and torch.is_grad_enabled()
        out = self.field.evaluate(origins[ri] + d * t_mid, create_graph=create_graph, backend=backend)
        assert out.gradients is not None
        normals = unit_normals(out.gradients)
        alphas = neus_alpha(
            out.sdf,
            out.gradients,
            d,
            samples.t_ends - samples.t_starts,
            self.field.inv_s(),
            self.cos_anneal_ratio,
        )
        colors = self.field.color(d, normals, out.features)
        comp = composite(
            samples.t_starts, samples.t_ends, colors, alphas=alphas, ray_indices=ri, n_rays=n_rays,
            background=options.background, backend=backend,
        )  # fmt: skip
        eikonal = (out.gradients.norm(dim=-1) - 1.0) ** 2
        packed: dict[str, Any] = dict(ray_indices=ri, n_rays=n_rays)
        extra = (
            {"depth_median": median_depth(samples, comp.weights, comp.transmittance)}
            if options.median_depth
            else {}
        )
        return extra | {
            "rgb": comp.rgb,
            "alpha": comp.opacity,
            "depth": comp.depth,
            "normals": accumulate_along_rays(comp.weights, normals, **packed),
            "eikonal": accumulate_along_rays(eikonal, None, **packed),
            "num_samples": accumulate_along_rays(torch.ones_like(eikonal), None, **packed),
        }

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """``eikonal_weight * mean((|grad f| - 1)^2)`` over the step's samples, plus
        ``mask_weight * BCE(opacity, mask)`` when the step context carries target masks (``target_alpha``)."""
        terms: dict[str, Tensor] = {}
        render = ctx.render
        if render is None:
            return terms
        cfg = self.config
        if cfg.eikonal_weight > 0:
            samples = render.require_eikonal(by=f"{type(self).__name__}'s eikonal regulariser")
            # a mean over the step's samples, whose number differs between data-parallel shards (step_mean)
            terms["eikonal"] = ctx.step_mean(
                cfg.eikonal_weight * samples.residual_sum.sum(), samples.num_samples.sum()
            )
        mask = getattr(ctx, "target_alpha", None)
        if cfg.mask_weight > 0 and mask is not None:
            opacity = render.alpha.clamp(MASK_CLAMP, 1.0 - MASK_CLAMP)
            terms["mask"] = cfg.mask_weight * F.binary_cross_entropy(opacity, (mask > 0.5).to(opacity))
        return terms

    # --- export ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """Marching cubes of the SDF zero level over the cube at ``mesh_resolution`` (spec §6), normalised frame.

        The outer layer of grid nodes is treated as outside, so the mesh is closed (watertight) even where the
        surface leaves the box. Faces are counter-clockwise seen from outside (outward = increasing f). Vertex
        colours: the colour network at the vertex with its analytic normal, seen along ``-n``.
        """
        cfg = self.config
        outside = float(self.field.half_size())
        mesh = closed_mesh(
            lambda x: self.field.sdf(x),
            self.aabb,
            cfg.mesh_resolution,
            level=0.0,
            outside=outside,
            inside="below",
        )
        if mesh.num_vertices == 0:
            return mesh
        colors = []
        for p in mesh.vertices.to(self.aabb).split(cfg.render_chunk):
            out = self.field.evaluate(p)
            assert out.gradients is not None
            n = unit_normals(out.gradients)
            colors.append(self.field.color(-n, n, out.features))
        return Mesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=torch.cat(colors).clamp(0.0, 1.0))
