"""Instant-NGP radiance field rendered with occupancy-grid ray marching or proposal networks (spec §1-§4, §6).

The kind of capture (``recon.scenes.scene_type``: ``bounded``, ``unbounded``, ``forward``) is decided once, in
``from_dataset`` (``scene_type="auto"`` detects it from the cameras and SfM points; any other value overrides), and
recorded in the scene's state: the buffers ``scene_kind`` (0 bounded, 1 unbounded, 2 forward) and
``scene_type_reason`` (the reason, UTF-8 bytes) travel in every checkpoint, so evaluation and export see the same
decision (``NerfScene.scene_type``).

* ``bounded`` (object-centric): the field lives in the box (zero density outside) and is sampled by the occupancy
  grid, as below.
* ``unbounded`` / ``forward``: the field encodes contracted coordinates (``recon.scenes.nerf_unbounded``), rays are
  sampled by two proposal density fields (256 -> 96 -> 48 samples per ray by default) in ``lindisp`` spacing from
  ``0.2`` to ``1e3`` box half-sizes, and the background is the field's own: the remaining transmittance takes the
  colour of the last sample (nerfstudio's ``last_sample`` background), so ``alpha = 1`` and no background colour
  is composited (``RenderOptions.background`` is not used). The proposal fields learn from the interlevel loss and
  the final weights from the distortion loss, both returned by ``regularizers``. Such a scene has no occupancy
  grid; its schedules (``recon.train.proposal.ProposalStrategy``: proposal gradients every few steps, annealed
  resampling weights) arrive through ``set_proposal_schedule`` and are kept in the buffers ``proposal_anneal``
  and ``proposal_update`` (checkpointed). A new scene starts with the schedule of step 0 (anneal 0: uniform
  resampling; no proposal gradient).

Bounded rendering: rays from ``Camera.generate_rays`` -> ``OccupancyGrid.sampling`` (no-grad marching through occupied
cells, then a no-grad density pass dropping samples after ``T < 1e-4``) -> density and colour with gradients on
the surviving packed samples -> ``recon.renderers.volume.composite``. Full images are rendered in chunks of rays;
``pixels=(C, R, 2)`` renders ray subsets (training batches). The occupancy grid is a buffer of the scene, updated
by ``recon.train.occupancy.OccupancyStrategy`` through ``occupancy_eval``.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, RenderCapabilities
from recon.core.render import RenderOutput
from recon.renderers.encoding.contraction import ContractionNorm
from recon.renderers.volume import OccupancyGrid, composite
from recon.renderers.volume.api import Spacing
from recon.renderers.volume.proposal import ProposalSamples, proposal_distortion_loss, proposal_loss
from recon.scenes.base import ExportOptions, RenderOptions, StepContext
from recon.scenes.field_scene import (
    FieldScene,
    HashGridSceneConfig,
    RayJitter,
    closed_mesh,
    depth_deviation,
    median_depth,
    render_camera,
    stratified_generator,
    vertex_normals,
)
from recon.scenes.fields import NGPField
from recon.scenes.nerf_unbounded import (
    ContractedNGPField,
    ProposalNetworks,
    near_camera_gradient_scale,
    proposal_config,
    scale_gradients,
)
from recon.scenes.scene_type import (
    SCENE_KINDS,
    SceneKind,
    SceneTypeDecision,
    SceneTypeSetting,
    foreground_box,
    resolve_scene_type,
)

__all__ = [
    "NerfScene",
    "NerfSceneConfig",
    "median_depth",
    "render_camera",
    "stratified_generator",
    "vertex_normals",
]

log = logging.getLogger(__name__)

OCC_THRESHOLD = 0.01  # occupancy threshold on sigma * step_size (spec §3)
MESH_DENSITY_RULE = (
    0.01  # sigma_thr = 0.01 / step_size: the density the occupancy rule calls occupied (spec §6)
)
MESH_COLOR_OFFSET_STEPS = 4  # vertex-colour rays start this many marching steps outside the exported surface
# below this opacity a vertex-colour ray saw nothing: the field's colour at the vertex
MESH_COLOR_MIN_ALPHA = 1e-3


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
    mesh_min_component: float = 0.01
    """``export_mesh`` drops connected components with fewer faces than this fraction of the largest one (the
    density floaters a level set picks up; 0 keeps all)."""
    scene_type: SceneTypeSetting = "auto"
    """auto: detect bounded / unbounded / forward from the cameras and SfM points (recon.scenes.scene_type);
    bounded: occupancy grid over the box; unbounded or forward: contracted field with proposal sampling."""
    contraction_norm: ContractionNorm = "linf"
    """Norm of the scene contraction (linf: the whole foreground cube stays un-contracted; l2: its inner ball)."""
    proposal_samples: tuple[int, ...] = (256, 96)
    """Samples per ray of each proposal level (unbounded / forward; spec §3)."""
    num_samples: int = 48
    """Final samples per ray evaluated by the radiance field (unbounded / forward)."""
    proposal_max_resolutions: tuple[int, ...] = (128, 256)
    """Finest hash-grid resolution of each proposal field."""
    proposal_grid_levels: int = 5
    """Hash-grid levels of the proposal fields."""
    proposal_grid_log2_size: int = 17
    """log2 of the hash-table entries per level of the proposal fields."""
    proposal_hidden_dim: int = 64
    """Hidden width of the proposal fields' MLPs."""
    proposal_near: float = 0.2
    """Near plane of proposal sampling, in foreground-cube half sizes."""
    proposal_far: float = 1e3
    """Far plane of proposal sampling, in foreground-cube half sizes."""
    proposal_spacing: Spacing = "lindisp"
    """Initial spacing of the proposal samples (lindisp: uniform in 1/t)."""
    interlevel_weight: float = 1.0
    """Weight of the proposal (interlevel) loss, mean over rays (nerfstudio interlevel_loss_mult)."""
    distortion_weight: float = 0.002
    """Weight of the distortion loss of the final samples on normalised ray distance (nerfstudio)."""
    gradient_scaling: float = 1.0
    """Unbounded scenes: while training, the gradients of each final sample's density and colour are multiplied by
    ``min(1, (t / d)^2)`` with ``d`` = this many foreground-cube half sizes (the half size is the farthest
    training camera's distance from the look-at centre), against near-camera floaters (Philip & Deschaintre
    2023; ``recon.scenes.nerf_unbounded.near_camera_gradient_scale``). 0: off. Not used by bounded and forward
    scenes."""


class NerfScene(FieldScene):
    """Instant-NGP radiance field with an occupancy grid (bounded) or proposal networks (unbounded, forward).

    Args:
        config: scene configuration.
        scene_box: (2, 3) box of the scene (forced to a cube); the foreground cube of contracted scenes.
        kind: the kind of capture (``from_dataset`` decides it; see the module docstring).
        reason: why ``kind`` (recorded with it).
        generator: RNG of the initialisation.
    """

    config: NerfSceneConfig
    capabilities = RenderCapabilities(depth=True, depth_median=True, pixel_subsets=True, depth_deviation=True)
    proposal: ProposalNetworks | None

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    scene_kind: Tensor
    scene_type_reason: Tensor
    proposal_anneal: Tensor
    proposal_update: Tensor

    def __init__(
        self,
        config: NerfSceneConfig,
        scene_box: Float[Tensor, "2 3"],
        *,
        kind: SceneKind = "bounded",
        reason: str = "set by the caller",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(config, scene_box)
        self.register_buffer("scene_kind", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scene_type_reason", torch.zeros(0, dtype=torch.uint8))
        # proposal schedule of the next training render (module docstring): step 0's until a strategy sets it
        self.register_buffer("proposal_anneal", torch.zeros((), dtype=torch.float32))
        self.register_buffer("proposal_update", torch.zeros((), dtype=torch.bool))
        self._proposal_host: tuple[float, bool] | None = (0.0, False)  # host copy (None: re-read the buffers)
        self._proposal_cache: list[tuple[ProposalSamples, Tensor]] = []
        self._build(SceneTypeDecision(kind, reason), generator)

    def _build(self, decision: SceneTypeDecision, generator: torch.Generator | None) -> None:
        """(Re)create the field and sampler of ``decision.kind`` and record the decision in the buffers."""
        if decision.kind not in SCENE_KINDS:
            raise ValueError(f"kind must be one of {SCENE_KINDS}, got {decision.kind!r}")
        cfg, box = self.config, self.aabb
        self.scene_kind.fill_(SCENE_KINDS.index(decision.kind))
        self._kind_host: SceneKind = decision.kind
        self.scene_type_reason = torch.tensor(list(decision.reason.encode()), dtype=torch.uint8)
        if decision.kind == "bounded":
            self.field = NGPField(box, grid=cfg.grid(), hidden_dim=cfg.hidden_dim, generator=generator)
            self.occupancy_grid = OccupancyGrid(
                box, resolution=cfg.occupancy_resolution, levels=cfg.occupancy_levels
            )
            self.proposal = None
            return
        self.field = ContractedNGPField(
            box, norm=cfg.contraction_norm, grid=cfg.grid(), hidden_dim=cfg.hidden_dim, generator=generator
        )
        self.proposal = ProposalNetworks(box, proposal_config(
            proposal_samples=cfg.proposal_samples, num_samples=cfg.num_samples,
            max_resolutions=cfg.proposal_max_resolutions, grid_levels=cfg.proposal_grid_levels,
            grid_log2_size=cfg.proposal_grid_log2_size, hidden_dim=cfg.proposal_hidden_dim, near=cfg.proposal_near,
            far=cfg.proposal_far, spacing=cfg.proposal_spacing, norm=cfg.contraction_norm,
        ), generator=generator)  # fmt: skip
        if "occupancy_grid" in self._modules:  # rebuilt from a bounded scene: proposal scenes have no grid
            del self._modules["occupancy_grid"]

    @property
    def scene_type(self) -> SceneTypeDecision:
        """The recorded kind of capture and the reason for it."""
        reason = bytes(self.scene_type_reason.tolist()).decode()
        return SceneTypeDecision(SCENE_KINDS[int(self.scene_kind)], reason)

    @classmethod
    def from_dataset(cls, config: NerfSceneConfig, dataset, *, generator: torch.Generator) -> "NerfScene":
        """A new field for ``dataset``: decides the kind of capture (``config.scene_type``) and its box.

        Bounded scenes cover ``dataset.scene_box``; unbounded and forward scenes keep
        ``recon.scenes.scene_type.foreground_box`` un-contracted.
        """
        cameras = dataset.cameras("train")
        decision = resolve_scene_type(config.scene_type, cameras, dataset.points3d)
        box = foreground_box(decision.kind, cameras, dataset.points3d, dataset.scene_box)
        log.info("nerf scene type: %s (%s)", decision.kind, decision.reason)
        return cls(config, box, kind=decision.kind, reason=decision.reason, generator=generator)

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        """Restore a checkpoint, first rebuilding the field and sampler of the stored kind of capture.

        Checkpoints written before the proposal schedule existed load as trained then: anneal 1, proposal
        gradients on every step, and their proposal scenes' one-cell placeholder grid is dropped."""
        state = dict(state)
        state.setdefault("proposal_anneal", torch.ones(()))
        state.setdefault("proposal_update", torch.ones((), dtype=torch.bool))
        if int(state.get("scene_kind", 0)) != 0:
            state = {k: v for k, v in state.items() if not k.startswith("occupancy_grid.")}
        self._proposal_host = None
        if "scene_kind" in state and int(state["scene_kind"]) != int(self.scene_kind):
            reason = bytes(
                state.get("scene_type_reason", torch.zeros(0, dtype=torch.uint8)).tolist()
            ).decode()
            self._build(SceneTypeDecision(SCENE_KINDS[int(state["scene_kind"])], reason), None)
            self.to(self.aabb.device)
        super().load_state_dict_resizing(state)

    # --- proposal schedule (used by recon.train.proposal) ----------------------------------------------------
    def set_proposal_schedule(self, *, anneal: float, update: bool) -> None:
        """Schedule of the next training renders of a proposal scene: the resampling exponent ``anneal`` in
        [0, 1] and whether the proposal fields get gradients (``update``); ignored by bounded scenes."""
        if not 0.0 <= anneal <= 1.0:
            raise ValueError(f"anneal must be in [0, 1], got {anneal}")
        self.proposal_anneal.fill_(anneal)
        self.proposal_update.fill_(update)
        # the float32 value the buffer holds (a CPU tensor: no device sync), so a restored scene samples alike
        self._proposal_host = (torch.tensor(anneal, dtype=torch.float32).item(), bool(update))

    def proposal_schedule(self) -> tuple[float, bool]:
        """``(anneal, update)`` of the next training render (one host read after a checkpoint load)."""
        if self._proposal_host is None:
            self._proposal_host = (float(self.proposal_anneal), bool(self.proposal_update))
        return self._proposal_host

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

    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        self._proposal_cache = []  # the interlevel loss of ``regularizers`` is that of this render's rays
        return super().render(camera, options, pixels=pixels)

    def _render_rays(
        self,
        origins: Tensor,
        directions: Tensor,
        options: RenderOptions,
        jitter: RayJitter | None,
        depth_target: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``rgb``, ``alpha`` and ``depth`` (expected distance along the unit ray) of a chunk of rays; no normals;
        ``depth_deviation`` (``field_scene.depth_deviation``) when given per-ray target distances."""
        if self.proposal is not None:
            return self._render_rays_proposal(origins, directions, options, jitter, depth_target)
        cfg, backend = self.config, options.backend
        samples = self.occupancy_grid.sampling(
            origins, directions, render_step_size=cfg.render_step_size,
            sigma_fn=self._sigma_fn(origins, directions, backend), near_plane=cfg.near_plane,
            cone_angle=cfg.cone_angle, alpha_thre=cfg.alpha_threshold,
            t_offsets=None if jitter is None else jitter.offsets, backend=backend,
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
        if depth_target is not None:
            result["depth_deviation"] = depth_deviation(
                samples.t_starts, samples.t_ends, out.weights, ri, depth_target
            )
        return result

    def _render_rays_proposal(
        self,
        origins: Tensor,
        directions: Tensor,
        options: RenderOptions,
        jitter: RayJitter | None,
        depth_target: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Proposal sampling, the radiance field on the final samples, the last sample's colour as background."""
        assert self.proposal is not None
        backend, n_rays = options.backend, origins.shape[0]
        requires_grad = self.training and torch.is_grad_enabled()
        anneal, update = self.proposal_schedule()
        generator = None if jitter is None else jitter.generator
        samples = self.proposal.sample(origins, directions, stratified=generator is not None, generator=generator,
                                       requires_grad=requires_grad and update, anneal=anneal,
                                       backend=backend)  # fmt: skip
        packed = samples.packed()
        ri = packed.ray_indices
        d = directions[ri]
        density = self.field.density(origins[ri] + d * ((packed.t_starts + packed.t_ends) * 0.5)[:, None],
                                     backend=backend)  # fmt: skip
        colors, sigmas = self.field.color(d, density.geometry), density.sigmas
        if requires_grad and self._kind_host == "unbounded" and self.config.gradient_scaling > 0:
            half = 0.5 * (self.aabb[1, 0] - self.aabb[0, 0])  # a tensor: no host sync per chunk
            scale = near_camera_gradient_scale(
                (packed.t_starts + packed.t_ends) * 0.5, self.config.gradient_scaling * half
            )
            colors, sigmas = scale_gradients(colors, scale), scale_gradients(sigmas, scale)
        out = composite(
            packed.t_starts, packed.t_ends, colors, sigmas=sigmas, ray_indices=ri, n_rays=n_rays,
            background=None, backend=backend,
        )  # fmt: skip
        last = colors.reshape(n_rays, samples.samples_per_ray, 3)[:, -1]
        result = {"rgb": out.rgb + (1.0 - out.opacity) * last, "alpha": torch.ones_like(out.opacity),
                  "depth": out.depth}  # fmt: skip
        if options.median_depth:
            result["depth_median"] = median_depth(packed, out.weights, out.transmittance)
        if depth_target is not None:
            result["depth_deviation"] = depth_deviation(
                packed.t_starts, packed.t_ends, out.weights, ri, depth_target
            )
        if requires_grad:
            self._proposal_cache.append((samples, out.weights.reshape(n_rays, -1)))
        return result

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """Proposal scenes: ``interlevel`` (trains the proposal fields) and ``distortion`` of this step's render.

        Both are means over the rays rendered since the last ``render`` call in training mode (empty otherwise).
        ``interlevel`` carries a gradient only on the steps the proposal schedule updates the proposal fields
        (``set_proposal_schedule``); on the others it is logged without one.
        """
        cache, self._proposal_cache = self._proposal_cache, []
        if self.proposal is None or not cache:
            return {}
        cfg = self.config
        terms = {
            "interlevel": cfg.interlevel_weight * torch.cat([proposal_loss(s, w) for s, w in cache]).mean()
        }
        if cfg.distortion_weight > 0:
            dist = torch.cat([proposal_distortion_loss(s, w) for s, w in cache]).mean()
            terms["distortion"] = cfg.distortion_weight * dist
        return terms

    # --- export ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """Marching cubes of ``sigma = sigma_thr`` over the cube (spec §6), in the scene's normalised frame.

        For unbounded and forward scenes the cube is the un-contracted foreground region (the whole cube with
        the ``linf`` contraction), so the surface of the region of interest is exported and the background is not.

        Vertex colours are what a camera looking straight at the surface sees (``_surface_colors``). Density
        meshes are rough (spec §6); the level is ``mesh_density`` or ``0.01 / render_step_size``. Components
        smaller than ``mesh_min_component`` of the largest are dropped (floaters).
        """
        cfg = self.config
        level = cfg.mesh_density if cfg.mesh_density > 0 else MESH_DENSITY_RULE / cfg.render_step_size
        mesh = closed_mesh(
            lambda x: self.field.density(x).sigmas, self.aabb, cfg.mesh_resolution, level=level, outside=0.0,
            inside="above",
        )  # fmt: skip
        if mesh.num_vertices == 0:
            return mesh
        mesh = mesh.without_small_components(cfg.mesh_min_component)
        colors = self._surface_colors(mesh.vertices.to(self.aabb), vertex_normals(mesh).to(self.aabb))
        return Mesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors)

    def _surface_colors(self, x: Float[Tensor, "V 3"], normals: Float[Tensor, "V 3"]) -> Float[Tensor, "V 3"]:
        """Colours of surface points ``x`` with outward unit ``normals`` as a camera looking straight at them sees
        them: the volume render of a ray that starts ``MESH_COLOR_OFFSET_STEPS`` marching steps outside the point
        (beyond ``near_plane``) and points along ``-n``, its colour over black divided by its opacity. The level
        set of a density field lies in the low-density fringe of the surface, where the colour network was hardly
        trained: read there, the cow of benchmarks/README.md got 14.3 dB mesh PSNR, rendered like this 22.9 dB.
        Where the ray collects less than ``MESH_COLOR_MIN_ALPHA`` opacity, and in unbounded and forward scenes
        (their proposal sampler starts a ray 0.2 box half-sizes out, beyond the point), the colour network at the
        point seen along ``-n`` is used."""
        cfg = self.config
        offset = MESH_COLOR_OFFSET_STEPS * cfg.render_step_size + cfg.near_plane
        options = RenderOptions(background=torch.zeros(3, device=x.device))
        out = []
        for p, n in zip(x.split(cfg.render_chunk), normals.split(cfg.render_chunk), strict=True):
            if self.proposal is None:
                ray = self._render_rays(p + offset * n, -n, options, None)
                colour = ray["rgb"] / ray["alpha"].clamp_min(MESH_COLOR_MIN_ALPHA)
                unseen = (ray["alpha"][:, 0] <= MESH_COLOR_MIN_ALPHA).nonzero()[:, 0]
            else:
                colour, unseen = torch.empty_like(p), torch.arange(p.shape[0], device=p.device)
            if unseen.numel():
                q, m = p[unseen], n[unseen]
                colour[unseen] = self.field.color(-m, self.field.density(q).geometry).to(colour)
            out.append(colour)
        return torch.cat(out).clamp(0.0, 1.0)
