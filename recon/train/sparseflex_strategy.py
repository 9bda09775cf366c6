"""SparseFlex band maintenance and coarse-to-fine subdivision (spec sparseflex.md section 4, direct fitting).

Events are functions of the budget fraction (``StepContext.fraction``), never of raw steps:

* band maintenance every ``band_every_fraction``: surface voxels dilated by the scene's ``band_radius`` form the
  new band; voxels outside are pruned (their rows and Adam moments dropped), new voxels get zero weights and new
  corners ``s`` from their known 6-neighbours, with zero moments;
* subdivision at ``subdivide_fractions`` (until ``max_resolution``): every band voxel splits into 8, child ``s``
  trilinear and doubled, ``deform`` reset to 0, weights copied from the parent; all moments restart at zero; a
  band maintenance follows at once (the split band is twice the band radius wide in fine voxels);
* under a time budget alone, ``stage_min_steps`` (the stage rule, docs/budget.md): a subdivision happens only when
  the rest of the budget still buys that many steps on the finer grid, at the step rate measured on the current
  grid and a step cost ``SUBDIVISION_COST`` times higher; once one is refused, none follows;
* crop frusta (spec section 3, ``view_crop``) from ``crop_from_resolution`` on: each step renders and supervises a
  window of its view whose frustum holds about ``crop_visibility`` of the voxels; the scene extracts only those.

All row edits go through the ``ParamOptimizer``. The scene has two row spaces (corners: ``s``, ``deform``; voxels:
``weights``); each edit names the groups of one space (``select_rows(..., names=...)``, ``extend_rows``).
"""

import math
import sys
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from recon.core import Camera, RenderCapabilities
from recon.renderers.isosurface.flexicubes_types import SparseVoxelGrid
from recon.scenes.base import Scene, StepContext
from recon.scenes.sparseflex import (
    CORNER_GROUPS,
    VOXEL_GROUPS,
    SparseFlexScene,
    band_voxels,
    remap,
    subdivide,
    subdivide_deform,
)
from recon.scenes.sparseflex.frustum import CropWindow, choose_crop, voxel_spheres
from recon.scenes.sparseflex.grid_ops import surface_corner_s
from recon.train import distributed
from recon.train.param_optimizer import ParamOptimizer
from recon.train.strategy import Strategy, StrategyContext

__all__ = [
    "SparseFlexStrategy",
    "SparseFlexStrategyConfig",
    "maintain_band",
    "observed_voxels",
    "seen_voxels",
    "subdivide_band",
]

SubdivideInit = Literal["surface", "deform", "spec"]
SUBDIVIDE_INITS: tuple[str, ...] = ("surface", "deform", "spec")

SUBDIVISION_COST = 4.0
"""The stage rule's predicted cost of a step on the finer grid, relative to the current one: the band is a surface
layer, so a subdivision multiplies its voxels (and the extracted faces) by ~4 and the cost is taken as proportional
to them. Measured on a 128 px cow (CPU preset, one view per step): 43 -> 75 ms from 32 to 64 and 75 -> 190 ms from
64 to 128 (the fixed part of a step makes the real ratio smaller, so the rule errs towards fewer subdivisions)."""

VOXEL_SPHERE = (
    0.5 * 3**0.5
)  # radius of a voxel's bounding sphere in voxel sizes (spec section 3: conservative)


@dataclass(frozen=True)
class SparseFlexStrategyConfig:
    """When the band is rebuilt and subdivided (spec section 4.2-4.3)."""

    band_every_fraction: float = 0.05
    """Band maintenance every this fraction of the budget (spec: every 250 of 5000 steps)."""
    subdivide_fractions: tuple[float, ...] = (0.3, 0.55, 0.75)
    """Budget fractions of the subdivisions (spec: 64 -> 128 at 30%, 256 at 55%, 512 at 75%)."""
    max_resolution: int = 512
    """No subdivision beyond this resolution."""
    subdivide_init: SubdivideInit = "surface"
    """How a subdivision sets the fine parameters (``subdivide_band``): surface (signed distance to the coarse
    surface), deform (trilinear s, coarse displacements kept) or spec (trilinear s, deform reset to 0)."""
    stage_min_steps: int = 0
    """The stage rule, under a time budget alone (``--max-minutes`` without ``--steps``; docs/budget.md): a
    subdivision happens only when the rest of the budget still buys this many steps on the finer grid, predicted
    from the step rate since the last band update and a step ``SUBDIVISION_COST`` times costlier. A refused
    subdivision is final (later ones would get even fewer steps): the run trains on at the current resolution.
    0: every scheduled subdivision happens (so always with a step bound, where the steps of each stage are fixed)."""
    max_voxels: int = 4_000_000
    """A subdivision that would exceed this many voxels is skipped (memory guard)."""
    crop_from_resolution: int = 0
    """Crop frusta (FSV, spec section 3) from this grid resolution on: each step renders and supervises a window of
    its view holding about ``crop_visibility`` of the voxels (0, the default: always full images; see
    docs/sparseflex.md for why crops are opt-in)."""
    crop_visibility: float = 0.3
    """alpha_v: the fraction of the band's voxels a crop frustum should hold (spec: 0.1 and 0.3 in the ablations)."""
    crop_min_size: int = 32
    """Shorter side of the smallest crop in pixels (a crop never gets smaller, even above ``crop_visibility``)."""
    open_surfaces: bool = False
    """Prune band voxels that no training camera seen so far observes (spec section 4.4): the surface may stay open
    where the views do not reach. The cameras are those of the training steps (all views after one pass)."""
    occlusion_depth_side: int = 128
    """open_surfaces: a voxel counts as observed only where it is not hidden behind the current surface in every
    view (``observed_voxels``), tested against depth maps of this many pixels along their longer side; 0: in a
    frustum is enough (the surface then stays closed where the views see it only from behind, e.g. the underside
    of an object photographed from above)."""


def _apply(
    optimizer: ParamOptimizer, names: tuple[str, ...], source: Tensor, new_rows: dict[str, Tensor]
) -> None:
    """Make the rows of the groups ``names`` (one row space) follow ``source`` (old row per new row, -1: the next
    of ``new_rows``)."""
    old = optimizer.num_rows(names=names)
    fresh = source < 0
    index = source.clone()
    index[fresh] = old + torch.arange(int(fresh.sum()), device=source.device)
    if int(fresh.sum()) > 0:
        optimizer.extend_rows(new_rows, names=names)
    optimizer.select_rows(index, names=names)


def seen_voxels(scene: SparseFlexScene, voxels: Tensor, cameras: Camera) -> Tensor:
    """(K,) bool: the voxel's bounding sphere (radius ``sqrt(3)/2 h``) reaches the image of at least one camera,
    in front of it (conservative: a voxel partly in frame counts as seen)."""
    centres, radius = _voxel_spheres_world(scene, voxels)
    cameras = cameras.to(device=centres.device, dtype=centres.dtype)
    uv, z = cameras.project(centres[None].expand(len(cameras), -1, -1))
    return _in_frame(uv, z, cameras, radius).any(0)


def _voxel_spheres_world(scene: SparseFlexScene, voxels: Tensor) -> tuple[Tensor, float]:
    """(K, 3) world centres of the voxels (integer coordinates of the current grid) and their bounding radius."""
    h = 1.0 / scene.grid().resolution
    centres = scene.to_world((voxels.to(scene.s.dtype) + 0.5) * h - 0.5)
    return centres, VOXEL_SPHERE * h * float(scene.box_size)


def _in_frame(uv: Tensor, z: Tensor, cameras: Camera, radius: float) -> Tensor:
    """(C, K) bool: the spheres of radius ``radius`` projected to ``uv`` at depth ``z`` reach the image."""
    focal = cameras.K[:, 0, 0].to(uv)[:, None]
    margin = focal * radius / z.clamp_min(radius)  # projected radius in pixels
    w = torch.tensor([cameras.width, cameras.height], dtype=uv.dtype, device=uv.device)
    return (uv > -margin[..., None]).all(-1) & (uv < w + margin[..., None]).all(-1) & (z > -radius)


OCCLUSION_CAMERA_CHUNK = 8
"""Depth maps rasterised at once by ``observed_voxels`` (bounds its memory: chunk x voxels projections)."""


def observed_voxels(
    scene: SparseFlexScene, voxels: Tensor, cameras: Camera, *, depth_side: int = 128
) -> Tensor:
    """(K,) bool: ``seen_voxels`` and, in the same camera, not hidden behind the current surface.

    The current inference-mode surface is rasterised into every camera at ``depth_side`` pixels along the longer
    side (nearest-face depth; +inf where no face covers a pixel), and each depth map is max-filtered over 3x3
    pixels (conservative: a voxel next to a silhouette counts as observed). A voxel is hidden in a camera when the
    near side of its bounding sphere lies deeper than that depth plus the band's thickness (``band_radius``
    voxel diagonals, at least one), so the band on both sides of every visible surface is kept, and what only
    lies behind it (the far side of an object, a cavity no view looks into) is not. An empty surface observes
    nothing beyond the frustum test.
    """
    if depth_side <= 0:
        return seen_voxels(scene, voxels, cameras)
    extraction = scene.surface()
    if extraction.faces.shape[0] == 0:
        return seen_voxels(scene, voxels, cameras)
    from recon.renderers.raster import rasterize

    vertices = scene.to_world(extraction.vertices)
    centres, radius = _voxel_spheres_world(scene, voxels)
    tolerance = max(scene.config.band_radius, 1) * 2.0 * radius
    factor = max(1.0, max(cameras.width, cameras.height) / depth_side)
    observed = torch.zeros(voxels.shape[0], dtype=torch.bool, device=voxels.device)
    for start in range(0, len(cameras), OCCLUSION_CAMERA_CHUNK):
        full = cameras[start : start + OCCLUSION_CAMERA_CHUNK].to(device=centres.device, dtype=centres.dtype)
        small = full.scaled(factor)
        with torch.no_grad():
            frags = rasterize(vertices, extraction.faces, small, layers=1)
        depth = torch.where(frags.pix_to_face[..., 0] >= 0, frags.depth[..., 0], torch.inf)
        depth = torch.nn.functional.max_pool2d(depth[:, None], 3, stride=1, padding=1)[:, 0]  # (C, h, w)
        uv, z = full.project(centres[None].expand(len(full), -1, -1))  # (C, K, 2), (C, K)
        col = (uv[..., 0] * (small.width / full.width)).floor().clamp(0, small.width - 1).long()
        row = (uv[..., 1] * (small.height / full.height)).floor().clamp(0, small.height - 1).long()
        surface = depth.flatten(1).gather(1, row * small.width + col)  # (C, K)
        observed |= (_in_frame(uv, z, full, radius) & (z - radius <= surface + tolerance)).any(0)
    return observed


def maintain_band(
    scene: SparseFlexScene,
    optimizer: ParamOptimizer,
    *,
    cameras: Camera | None = None,
    occlusion_depth_side: int = 0,
) -> SparseVoxelGrid:
    """Rebuild the band around the current surface (spec section 4.2); with ``cameras``, voxels none of them sees
    are pruned too (``open_surfaces``, spec section 4.4): outside every frustum, or with ``occlusion_depth_side``
    also hidden behind the current surface in every view (``observed_voxels``). Returns the new grid (also set
    on the scene)."""
    grid = scene.grid()
    voxels = band_voxels(grid, scene.s, scene.config.band_radius)
    if cameras is not None and voxels.shape[0] > 0:
        if occlusion_depth_side > 0:
            voxels = voxels[observed_voxels(scene, voxels, cameras, depth_side=occlusion_depth_side)]
        else:
            voxels = voxels[seen_voxels(scene, voxels, cameras)]
    if voxels.shape[0] == 0:  # no surface left: keep the band as it is rather than delete everything
        return grid
    rm = remap(grid, scene.s, voxels)
    n_new_c = rm.new_corner_s.shape[0]
    _apply(optimizer, CORNER_GROUPS, rm.corner_source, {
        "s": rm.new_corner_s, "deform": torch.zeros(n_new_c, 3, device=scene.s.device),
    })  # fmt: skip
    n_new_v = int((rm.voxel_source < 0).sum())
    _apply(optimizer, VOXEL_GROUPS, rm.voxel_source, {
        "weights": torch.zeros(n_new_v, scene.weights.shape[1], device=scene.s.device),
    })  # fmt: skip
    scene.set_grid(rm.grid)
    return rm.grid


def subdivide_band(
    scene: SparseFlexScene, optimizer: ParamOptimizer, *, init: "SubdivideInit" = "surface"
) -> SparseVoxelGrid:
    """Split every voxel into 8 (spec section 4.3); every row is new, so every moment restarts at zero.

    ``init`` sets the fine parameters (docs/sparseflex.md):

    * ``"spec"``: child ``s`` trilinear and doubled, ``deform`` 0, weights copied (moves the surface by up to half a
      coarse voxel: the coarse deformations are dropped);
    * ``"deform"``: as ``spec`` but the fine corners keep the coarse displacements (``subdivide_deform``);
    * ``"surface"``: ``s`` is the signed distance to the coarse inference-mode surface (``surface_corner_s``),
      ``deform`` and weights 0: the fine grid starts on the surface the coarse one rendered.
    """
    grid = scene.grid()
    fine, s, weights, parent = subdivide(grid, scene.s, scene.weights)
    device = scene.s.device
    deform = torch.zeros(fine.num_corners, 3, device=device)
    if init == "deform":
        deform = subdivide_deform(grid, scene.deform, fine, parent).to(deform)
    elif init == "surface":
        coarse = scene.surface()
        s = surface_corner_s(fine, coarse.vertices, coarse.faces, s, clip=2.0 * scene.config.sdf_clip)
        weights = torch.zeros_like(weights)
    elif init != "spec":
        raise ValueError(f"init must be one of {SUBDIVIDE_INITS}, got {init!r}")
    _apply(optimizer, CORNER_GROUPS, torch.full((fine.num_corners,), -1, device=device), {
        "s": s.to(device), "deform": deform,
    })  # fmt: skip
    _apply(optimizer, VOXEL_GROUPS, torch.full((fine.num_voxels,), -1, device=device), {"weights": weights})
    scene.set_grid(fine)
    return fine


class SparseFlexStrategy(Strategy):
    """Band maintenance and subdivision on a budget-fraction schedule (see the module docstring).

    Args:
        config: the schedule.
        base_resolution: the scene's initial resolution (subdivision level = log2(R / base_resolution)).
    """

    needs = RenderCapabilities(depth=False)

    def __init__(self, config: SparseFlexStrategyConfig, *, base_resolution: int) -> None:
        if config.band_every_fraction <= 0:
            raise ValueError(f"strategy.band_every_fraction must be > 0, got {config.band_every_fraction}")
        if list(config.subdivide_fractions) != sorted(config.subdivide_fractions):
            raise ValueError(
                f"strategy.subdivide_fractions must be increasing, got {config.subdivide_fractions}"
            )
        if not 0 < config.crop_visibility <= 1:
            raise ValueError(f"strategy.crop_visibility must be in (0, 1], got {config.crop_visibility}")
        if config.crop_min_size < 1 or config.crop_from_resolution < 0:
            raise ValueError("strategy.crop_min_size must be >= 1 and strategy.crop_from_resolution >= 0")
        if config.stage_min_steps < 0:
            raise ValueError(f"strategy.stage_min_steps must be >= 0, got {config.stage_min_steps}")
        self.config = config
        self.base_resolution = base_resolution
        self.peak_rendered_voxels = 0  # most voxels one training render extracted (FSV bound; checkpointed)
        self._step_camera: Camera | None = None  # the step's uncropped cameras (open_surfaces records them)
        self._cropped = False  # whether this step renders a crop (its unrendered rows are held)
        self.band_events = 0  # maintenance events done (the schedule position; checkpointed)
        self.cameras: dict[int, Camera] = {}  # training cameras seen so far, by view index (open_surfaces)
        # the stage rule: the subdivisions it allows once it refused one (checkpointed), and the (step, fraction)
        # of the last band update, where the measured step rate starts
        self.level_cap: int | None = None
        self._mark: tuple[int, float] | None = None

    def check_scene(self, scene: Scene) -> None:
        super().check_scene(scene)
        if not isinstance(scene, SparseFlexScene):
            raise TypeError(f"SparseFlexStrategy needs a SparseFlexScene, got {type(scene).__name__}")

    def target_level(self, fraction: float) -> int:
        """Number of subdivisions due at ``fraction`` (capped by ``max_resolution``)."""
        due = sum(1 for f in self.config.subdivide_fractions if fraction >= f)
        cap = 0
        while self.base_resolution * 2 ** (cap + 1) <= self.config.max_resolution:
            cap += 1
        if self.level_cap is not None:
            cap = min(cap, self.level_cap)
        return min(due, cap)

    def stage_steps(self, step: int, fraction: float) -> float:
        """The stage rule's prediction: the steps the rest of the budget buys on the grid one subdivision finer,
        ``(1 - fraction) r / SUBDIVISION_COST`` with ``r`` the steps per unit of budget fraction since the last band
        update (inf before anything was measured: a fresh or resumed strategy at its first step)."""
        if self._mark is None:
            return math.inf
        mark_step, mark_fraction = self._mark
        elapsed = fraction - mark_fraction
        if elapsed <= 0 or step <= mark_step:
            return math.inf
        return (1.0 - fraction) * (step - mark_step) / elapsed / SUBDIVISION_COST

    def _affords_subdivision(self, step: StepContext, resolution: int) -> bool:
        """The stage rule (``stage_min_steps``; only under a time budget alone, ``max_steps == 0``). A refusal
        caps the level for the rest of the run and is printed once."""
        need = self.config.stage_min_steps
        if need <= 0 or step.max_steps > 0:
            return True
        predicted = self.stage_steps(step.step, step.fraction)
        if predicted >= need:
            return True
        self.level_cap = (resolution // self.base_resolution).bit_length() - 1
        if distributed.is_rank0():
            print(
                f"stage rule: the grid stays at {resolution}^3 from {100 * step.fraction:.0f}% of the budget: the "
                f"rest buys ~{predicted:,.0f} steps at {2 * resolution}^3, a stage needs {need:,} "
                "(strategy.stage_min_steps)",
                file=sys.stderr,
            )
        return False

    def view_crop(self, scene: Scene, camera: Camera, generator: torch.Generator) -> CropWindow | None:
        """Crop frusta (spec section 3) once the grid reaches ``crop_from_resolution``: a window centred on a random
        voxel in view, sized by bisection to hold about ``crop_visibility`` of the voxels; else None."""
        assert isinstance(scene, SparseFlexScene)
        self._step_camera, self._cropped = camera, False
        grid, c = scene.grid(), self.config
        if c.crop_from_resolution <= 0 or grid.resolution < c.crop_from_resolution or grid.num_voxels == 0:
            return None
        self._cropped = True
        centres, radius = voxel_spheres(grid, scene.box_center, scene.box_side())
        target = math.ceil(c.crop_visibility * grid.num_voxels)
        return choose_crop(
            centres, radius, camera, target=target, min_size=c.crop_min_size, generator=generator
        )

    def before_backward(self, ctx: StrategyContext) -> None:
        """With crops, rows the step did not render keep their values and moments through the optimiser step
        (Adam's momentum would move them with a zero gradient; measured: the band then grows spurious surface)."""
        scene = ctx.scene
        assert isinstance(scene, SparseFlexScene)
        if not self._cropped or scene.rendered_rows is None:
            return
        corner_rows, voxel_rows = scene.rendered_rows
        held_corners = torch.ones(scene.s.shape[0], dtype=torch.bool, device=scene.s.device)
        held_corners[corner_rows] = False
        held_voxels = torch.ones(scene.weights.shape[0], dtype=torch.bool, device=scene.s.device)
        held_voxels[voxel_rows] = False
        ctx.optimizer.hold_rows({"s": held_corners, "deform": held_corners, "weights": held_voxels})

    def after_backward(self, ctx: StrategyContext) -> None:
        scene = ctx.scene
        assert isinstance(scene, SparseFlexScene)
        fraction = ctx.step.fraction
        self.peak_rendered_voxels = max(self.peak_rendered_voxels, scene.rendered_voxels)
        if self.config.open_surfaces and ctx.step.view_indices is not None:
            step_camera = self._step_camera if self._step_camera is not None else ctx.step.camera
            for i, view in enumerate(ctx.step.view_indices.tolist()):  # host read: a few indices per step
                if view not in self.cameras:
                    self.cameras[view] = step_camera[i : i + 1]  # the whole view, not this step's crop
        if self._mark is None:
            self._mark = (ctx.step.step, fraction)
        level = scene.grid().resolution // self.base_resolution
        changed = False
        while level.bit_length() - 1 < self.target_level(fraction):
            if scene.grid().num_voxels * 8 > self.config.max_voxels:
                break
            if not self._affords_subdivision(ctx.step, scene.grid().resolution):
                break
            subdivide_band(scene, ctx.optimizer, init=self.config.subdivide_init)
            level *= 2
            changed = True
        due = int(fraction / self.config.band_every_fraction)
        if due > self.band_events or changed:  # a split band is 2 radii wide in fine voxels: trim it at once
            self.band_events = max(due, self.band_events)
            if self.config.open_surfaces:
                self.share_cameras()
            maintain_band(scene, ctx.optimizer, cameras=self._seen_cameras(),
                          occlusion_depth_side=self.config.occlusion_depth_side)  # fmt: skip
            self._mark = (ctx.step.step, fraction)

    def share_cameras(self) -> None:
        """Under data parallelism every rank records only the views it rendered; before a band update (on every
        rank at the same step) the ranks pool them, so all prune the same voxels (a no-op in one process)."""
        if distributed.world_size() == 1:
            return
        mine = {
            view: (cam.T_cam_world.cpu(), cam.K.cpu(), cam.width, cam.height)
            for view, cam in self.cameras.items()
        }
        device = next(iter(self.cameras.values())).T_cam_world.device if self.cameras else None
        for seen in distributed.gather_objects(mine):
            for view, (T, K, width, height) in seen.items():
                if view not in self.cameras:
                    dev = device if device is not None else T.device
                    self.cameras[view] = Camera(T.to(dev), K.to(dev), width, height)

    def _seen_cameras(self) -> Camera | None:
        if not self.config.open_surfaces or not self.cameras:
            return None
        return Camera.cat([self.cameras[k] for k in sorted(self.cameras)])

    def state_tensors(self) -> dict[str, Tensor]:
        out = {"band_events": torch.tensor(self.band_events, dtype=torch.int64),
               "peak_rendered_voxels": torch.tensor(self.peak_rendered_voxels, dtype=torch.int64)}  # fmt: skip
        if self.level_cap is not None:
            out["level_cap"] = torch.tensor(self.level_cap, dtype=torch.int64)
        cams = self._seen_cameras()
        if cams is not None:
            out |= {"cameras.index": torch.tensor(sorted(self.cameras)), "cameras.T_cam_world": cams.T_cam_world,
                    "cameras.K": cams.K, "cameras.size": torch.tensor([cams.width, cams.height])}  # fmt: skip
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if "band_events" in tensors:
            self.band_events = int(tensors["band_events"])
        if "peak_rendered_voxels" in tensors:
            self.peak_rendered_voxels = int(tensors["peak_rendered_voxels"])
        if "level_cap" in tensors:
            self.level_cap = int(tensors["level_cap"])
        if "cameras.index" in tensors:
            width, height = (int(v) for v in tensors["cameras.size"])
            T, K = tensors["cameras.T_cam_world"], tensors["cameras.K"]
            self.cameras = {
                int(view): Camera(T[i : i + 1], K[i : i + 1], width, height)
                for i, view in enumerate(tensors["cameras.index"].tolist())
            }
