"""``TriangleMCMC``: densification and pruning of triangle splats (spec §11) plus the SH degree schedule (§10).

Schedules are fractions of the budget (``StepContext.fraction``: of the steps, or of the training time under
``--max-minutes``, see ``recon.train.budget``), so one configuration serves the published 30 000-step recipe (the
defaults reproduce its step numbers) and time budgets of any length on any machine alike. An event fires when the
fraction enters a new event period (``every_fraction``), at least ``min_every_steps`` steps after the previous one.
"""

import logging
import math
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from recon.core import RenderCapabilities
from recon.scenes.triangles import TriangleSplatScene
from recon.train import distributed
from recon.train.schedules import active_sh_degree
from recon.train.strategy import Strategy, StrategyContext
from recon.train.triangles_finish import OpaqueFinish, OpaqueFinishConfig

logger = logging.getLogger(__name__)

OPACITY_EPS = 1e-6  # keeps o' = 1 - sqrt(1 - o) strictly inside (0, 1) before the logit
SIGMA_PROB_EPS = 1e-6  # epsilon of the 1 / (sigma + eps) sampling distribution
PERIOD_EPS = (
    1e-9  # fraction / every_fraction lands exactly on integers in step budgets: count those as reached
)
VISIBLE_INRADIUS_PX = 1.0  # a view counts as "seen" when the inradius exceeds 1 px (spec §11)

# Counting-pass states (spec §11: visible_count is counted over the first full pass that starts after an event).
WAITING, COUNTING, COUNTED = 0, 1, 2


@dataclass(frozen=True)
class TriangleMCMCConfig:
    """Densify/prune schedule and rules of spec §11; step numbers are fractions of the step budget."""

    every_fraction: float = 500 / 30_000
    """Event period (500 of 30 000 steps in the reference)."""
    min_every_steps: int = 100
    """Lower bound of the event period in steps: statistics (max over views) need many views per event, and
    clones halve opacity, so events every few steps of a short budget would empty the scene."""
    start_fraction: float = 500 / 30_000
    """Densification runs for steps strictly after this fraction ..."""
    until_fraction: float = 25_000 / 30_000
    """... and strictly before this one; afterwards events only prune."""
    importance_threshold: float = 0.022
    """tau_imp: triangles whose max blending weight stays below it are dead."""
    dead_opacity: float = 0.014
    """Triangles with opacity at or below this are dead."""
    growth: float = 1.3
    """Target growth factor per densification event."""
    cap: int = 4_000_000
    """Maximum number of triangles."""
    limit_growth: bool = False
    """In-run growth rule (off in the recipe, on in the CPU preset): a densification event grows the soup only as
    far as the rest of the budget still buys ``min_steps`` steps in all, at the step rate measured since the
    previous event with a step cost taken as proportional to the soup size (the calibration times a fresh soup; a
    grown one can cost several times more). Without ``min_steps`` (no time budget) it does nothing."""
    min_steps: int = 0
    """The steps the schedules need (``limit_growth``); set under ``--max-minutes`` by the capacity rule
    (``capacity.json``: 110 passes over the training views, or what the budget buys at the low bound)."""
    growth_floor: int = 0
    """``limit_growth`` never holds the soup below this size (set under ``--max-minutes`` to the capacity rule's
    low bound for the device, 5000 on CPUs: a budget that cannot buy ``min_steps`` at any size still gets the
    smallest soup the rule allows, as the capacity rule itself chooses)."""
    big_size_px: float = 24.0
    """Sampled triangles with image size above this are split into 4 (cost 3); others are cloned (cost 1)."""
    max_image_size_px: float = 1400.0
    """Triangles larger than this on screen are pruned (not for outdoor scenes)."""
    min_visible_views: int = 2
    """Triangles seen with inradius > 1 px in fewer views (during the counting pass) are pruned as floaters."""
    many_views: int = 250
    """With at least this many training views, only the opacity rule applies during a counting pass."""
    outdoor: bool = False
    """Outdoor scenes skip the image-size rule."""
    clone_offset_scale: float = 1.5
    """Clone offset: U(-1/2, 1/2)^3 times this times the triangle's bounding-box extent, projected into its plane."""
    sh_degree_interval_fraction: float = 1000 / 30_000
    """The active SH degree rises by one every this fraction of the budget (1000 of 30 000 steps)."""
    seed: int = 0
    """Seed of the strategy's own random draws (sampling, clone offsets)."""
    finish: str = "none"
    """none | opaque: end with the opaque finish (``recon.train.triangles_finish``): sharpen the windows, push
    opacities to {0, 1}, prune the transparent triangles, so the exported soup renders in a standard rasteriser."""
    finish_fraction: float = 0.15
    """Opaque finish: the last fraction of the budget it takes (densification events become relocations in it)."""
    finish_sigma: float = 0.02
    """Opaque finish: window sharpness sigma reached at the threshold."""
    finish_threshold_at: float = 0.5
    """Opaque finish: progress through the phase at which opacities are thresholded and frozen."""
    finish_threshold: float = 0.5
    """Opaque finish: triangles below this opacity are pruned at the threshold."""
    finish_push: str = "binary"
    """Opaque finish: binary (opacities pushed towards {0, 1} around the threshold) | up (a floor rising to 1)."""
    finish_relocate: bool = True
    """Opaque finish: move transparent and hidden triangles to high-error regions instead of pruning them."""


class TriangleMCMC(Strategy):
    """Spec §11 densify/prune with statistics from the renderer (``options.stats``)."""

    needs = RenderCapabilities(depth=False, stats=True)

    def __init__(self, config: TriangleMCMCConfig, *, num_views: int, max_sh_degree: int) -> None:
        if config.every_fraction <= 0:
            raise ValueError(f"strategy.every_fraction must be positive, got {config.every_fraction}")
        for name in ("min_steps", "growth_floor"):
            if getattr(config, name) < 0:
                raise ValueError(f"strategy.{name} must be >= 0, got {getattr(config, name)}")
        self.config = config
        self.num_views = num_views
        self.max_sh_degree = max_sh_degree
        self.generator = torch.Generator().manual_seed(config.seed)
        self.importance = torch.zeros(0)
        self.image_size = torch.zeros(0)
        self.visible_count = torch.zeros(0)
        self.counting = WAITING
        self.events = 0
        self.last_event_period = 0  # floor(fraction / every_fraction) when the last event fired
        self.last_event_step = 0  # 1-based iteration of the last event (none before min_every_steps)
        self.last_event_fraction = 0.0  # budget fraction at the last event
        # step rate between the last two events, in steps per unit of fraction
        self.steps_per_fraction = math.inf
        self.growth_limited = 0  # densification events whose growth the in-run rule limited
        self.finish = _finish(config)

    # --- schedule ------------------------------------------------------------------------------------------
    def next_event(self, it: int, fraction: float) -> str | None:
        """ "densify", "prune" or None after the 1-based iteration ``it`` at ``fraction`` of the budget.

        An event fires when ``fraction`` has entered a new period of ``every_fraction`` since the last event and
        at least ``min_every_steps`` steps have passed (statistics need many views per event); it densifies
        strictly between ``start_fraction`` and ``until_fraction`` and only prunes afterwards, never at the end.
        Firing (even a period outside both windows) consumes the period.
        """
        cfg = self.config
        period = math.floor(fraction / cfg.every_fraction + PERIOD_EPS)
        if (
            period <= self.last_event_period
            or it - self.last_event_step < cfg.min_every_steps
            or fraction >= 1.0
        ):
            return None
        elapsed = fraction - self.last_event_fraction
        self.steps_per_fraction = (it - self.last_event_step) / elapsed if elapsed > 0 else math.inf
        self.last_event_period, self.last_event_step, self.last_event_fraction = period, it, fraction
        if cfg.start_fraction < fraction < cfg.until_fraction:
            return "densify"
        if fraction >= cfg.until_fraction:
            return "prune"
        return None

    # --- hooks ---------------------------------------------------------------------------------------------
    def after_backward(self, ctx: StrategyContext) -> None:
        scene, step = _triangles(ctx), ctx.step
        n = scene.num_primitives()
        self._ensure_size(n, scene.vertices.device)
        if step.pass_start:
            if self.counting == WAITING:
                self.counting = COUNTING
                self.visible_count.zero_()
            elif self.counting == COUNTING:
                self.counting = COUNTED
        if step.render is None:
            raise ValueError("TriangleMCMC.after_backward needs the step's render (StepContext.render)")
        stats = step.render.require_stats(by="TriangleMCMC densification")
        self.importance = torch.maximum(self.importance, stats.max_blending.detach().amax(0).float())
        # image sizes in output pixels (the size rules' unit); visibility in raster pixels (what the cull saw)
        raster_per_px = float(scene.config.supersample)
        self.image_size = torch.maximum(
            self.image_size, stats.radius_px.detach().amax(0).float() / raster_per_px
        )
        if self.counting == COUNTING:
            seen = (stats.inradius_px.detach() > VISIBLE_INRADIUS_PX).sum(0)
            self.visible_count += seen.float()
        it, fraction = step.step + 1, step.fraction
        scene.active_sh_degree.fill_(
            active_sh_degree(
                fraction, interval=self.config.sh_degree_interval_fraction, max_degree=self.max_sh_degree
            )
        )
        kind = self.next_event(it, fraction)  # the same on every rank: same step, fraction and state
        if kind is not None:
            self.reduce_statistics()
        if kind == "densify" and self.finish is not None and self.finish.progress(fraction) >= 0.0:
            kind = "prune"  # no clones (which halve opacities) once the opaque finish has begun
        if self.finish is not None:
            self.finish.observe(scene, step)
        if kind == "densify":
            self.densify_and_prune(ctx, fraction)
        elif kind == "prune" and self.finish is not None and self.finish.relocates(fraction):
            dead = self.dead_mask(scene.opacities().detach(), 1.0, size_rule=False)
            self.finish.relocate(scene, ctx.optimizer, dead, self)
            self.events += 1
            self._reset_stats(scene.num_primitives(), scene.vertices.device)
        elif kind == "prune":
            self.prune(ctx)
        if self.finish is not None and self.finish.after_step(scene, ctx.optimizer, fraction, strategy=self):
            self._reset_stats(scene.num_primitives(), scene.vertices.device)

    def reduce_statistics(self, *, for_checkpoint: bool = False) -> None:
        """Data parallel: combine the ranks' statistics (a collective: every rank calls it at the same step).

        ``importance`` and ``image_size`` become the maxima over all ranks' views, ``visible_count`` the sum, so
        the event that follows decides on every rank from the same numbers one process would have, and draws
        from the same generator state: identical rows everywhere. ``for_checkpoint`` leaves the summed count on
        rank 0 only (zeros elsewhere), so later sums stay right and rank 0's checkpoint holds the total.
        """
        if distributed.world_size() == 1:
            return
        distributed.all_reduce_(self.importance, "max")
        distributed.all_reduce_(self.image_size, "max")
        distributed.all_reduce_(self.visible_count, "sum")
        if for_checkpoint and not distributed.is_rank0():
            self.visible_count.zero_()

    def _ensure_size(self, n: int, device: torch.device) -> None:
        if self.importance.shape[0] != n:
            # Only at the start or after loading: edits below keep the statistics aligned with the rows.
            self.importance = torch.zeros(n, device=device)
            self.image_size = torch.zeros(n, device=device)
            self.visible_count = torch.zeros(n, device=device)

    def _reset_stats(self, n: int, device: torch.device) -> None:
        self.importance = torch.zeros(n, device=device)
        self.image_size = torch.zeros(n, device=device)
        self.visible_count = torch.zeros(n, device=device)
        self.counting = WAITING

    # --- rules ---------------------------------------------------------------------------------------------
    def dead_mask(
        self, opacities: Float[Tensor, " N"], fraction: float, *, size_rule: bool
    ) -> Bool[Tensor, " N"]:
        """Rows to remove at an event at ``fraction`` of the budget (spec §11)."""
        cfg = self.config
        low_opacity = opacities <= cfg.dead_opacity
        if self.counting == COUNTING and self.num_views >= cfg.many_views:
            dead = low_opacity
        else:
            dead = (self.importance < cfg.importance_threshold) | low_opacity
        if fraction > 2 * cfg.every_fraction and self.counting == COUNTED:
            dead |= self.visible_count < cfg.min_visible_views
        if size_rule and not cfg.outdoor:
            dead |= self.image_size > cfg.max_image_size_px
        return dead

    @torch.no_grad()
    def prune(self, ctx: StrategyContext) -> None:
        """Prune-only event after densification ends."""
        scene = _triangles(ctx)
        dead = self.dead_mask(scene.opacities().detach(), 1.0, size_rule=False)
        if bool(dead.all()):
            dead = torch.zeros_like(dead)  # never remove every triangle: an empty scene cannot recover
        ctx.optimizer.select_rows(~dead)
        self.events += 1
        self._reset_stats(scene.num_primitives(), scene.vertices.device)

    @torch.no_grad()
    def densify_and_prune(self, ctx: StrategyContext, fraction: float) -> None:
        """One densify/prune event: sample, split big, clone small, remove parents and dead rows."""
        cfg, scene = self.config, _triangles(ctx)
        n = scene.num_primitives()
        opac = scene.opacities().detach()
        size_rule = fraction > 2 * cfg.every_fraction and self.counting == COUNTED
        dead = self.dead_mask(opac, fraction, size_rule=size_rule)
        if bool(dead.all()):
            dead = torch.zeros_like(dead)
        n_add = max(0, self.growth_target(n, ctx.step.step + 1, fraction) - n) + int(dead.sum())
        self.events += 1
        if self.events % 2 == 1:
            prob = opac.clone()
        else:
            prob = 1.0 / (scene.sigmas().detach() + SIGMA_PROB_EPS)
        prob[dead] = 0.0
        chosen = self._sample(prob, n_add)
        big_rows = chosen[self.image_size[chosen] > cfg.big_size_px]
        small_rows = chosen[self.image_size[chosen] <= cfg.big_size_px]
        new_rows = self._children(scene, big_rows, small_rows)
        remove = dead.clone()
        remove[chosen] = True
        ctx.optimizer.select_rows(~remove)
        if new_rows["vertices"].shape[0] > 0:
            ctx.optimizer.extend_rows(new_rows)
        self._reset_stats(scene.num_primitives(), scene.vertices.device)

    def growth_target(self, n: int, it: int, fraction: float) -> int:
        """Soup size a densification event at 1-based iteration ``it`` and ``fraction`` aims for: ``growth x n``
        within the cap and, with ``limit_growth``, no larger than the size ``m`` at which the rest of the budget still
        buys ``min_steps`` steps in all: ``it + (1 - fraction) r n / m >= min_steps``, ``r`` the steps per unit of
        fraction measured since the previous event (a step cost proportional to the size; re-measured at every
        event), and never below ``growth_floor``. Below ``n`` the event does not grow the soup (dead rows are still
        replaced)."""
        cfg = self.config
        target = min(cfg.cap, math.floor(cfg.growth * n))
        remaining = cfg.min_steps - it
        limited = cfg.limit_growth and cfg.min_steps > 0
        if not limited or remaining <= 0 or not math.isfinite(self.steps_per_fraction):
            return target
        affordable = max(
            cfg.growth_floor, math.floor(n * (1.0 - fraction) * self.steps_per_fraction / remaining)
        )
        if affordable < target:
            if self.growth_limited == 0:
                logger.info(
                    "densification limits the soup to %d triangles at step %d: the rest of the budget buys ~%d "
                    "more steps at this size, the schedules need %d in all (strategy.min_steps)",
                    max(n, affordable),
                    it,
                    round((1.0 - fraction) * self.steps_per_fraction),
                    cfg.min_steps,
                )
            self.growth_limited += 1
            return max(n, affordable)
        return target

    def _sample(self, prob: Float[Tensor, " N"], n_add: int) -> Tensor:
        """Rows drawn without replacement ∝ ``prob`` until the accumulated cost (3 big, 1 small) reaches n_add."""
        available = int((prob > 0).sum())
        if n_add <= 0 or available == 0:
            return torch.zeros(0, dtype=torch.long, device=prob.device)
        draws = torch.multinomial(
            prob.cpu().double(), min(n_add, available), replacement=False, generator=self.generator
        )
        draws = draws.to(prob.device)
        cost = torch.where(self.image_size[draws] > self.config.big_size_px, 3, 1).cumsum(0)
        # stop once cost >= n_add: keep draws up to and including the first one reaching it
        stop = int((cost < n_add).sum()) + 1
        return draws[:stop]

    def _children(self, scene, big: Tensor, small: Tensor) -> dict[str, Tensor]:
        """New rows: 4 midpoint-subdivision children per big triangle, 2 opacity-corrected copies per small."""
        v = scene.vertices.detach()
        rows = {
            "vertices": [],
            "sh_dc": [],
            "sh_rest": [],
            "logit_opacities": [],
            "raw_sigmas": [],
        }
        params = {
            "sh_dc": scene.sh_dc.detach(),
            "sh_rest": scene.sh_rest.detach(),
            "logit_opacities": scene.logit_opacities.detach(),
            "raw_sigmas": scene.raw_sigmas.detach(),
        }
        if len(big):
            rows["vertices"].append(subdivide(v[big]).reshape(-1, 3, 3))
            for name, p in params.items():
                rows[name].append(p[big].repeat_interleave(4, dim=0))
        if len(small):
            tri = v[small]
            offset = self._plane_offsets(tri)
            rows["vertices"].append(torch.cat([tri, tri + offset[:, None, :]]))
            o = torch.sigmoid(params["logit_opacities"][small])
            o_new = (1.0 - torch.sqrt((1.0 - o).clamp_min(0.0))).clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
            logit_new = torch.log(o_new / (1.0 - o_new))
            for name, p in params.items():
                rows[name].append(
                    torch.cat([logit_new, logit_new])
                    if name == "logit_opacities"
                    else p[small].repeat(2, *([1] * (p.ndim - 1)))
                )
        return {
            name: (torch.cat(parts) if parts else params.get(name, v)[:0]) for name, parts in rows.items()
        }

    def _plane_offsets(self, tri: Float[Tensor, "M 3 3"]) -> Float[Tensor, "M 3"]:
        """δ = U(-½, ½)³ ⊙ 1.5 · bbox extent, minus its component along the triangle normal (spec §11)."""
        extent = tri.amax(dim=1) - tri.amin(dim=1)
        u = torch.rand(tri.shape[0], 3, generator=self.generator).to(tri) - 0.5
        delta = u * self.config.clone_offset_scale * extent
        normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return delta - (delta * normal).sum(-1, keepdim=True) * normal

    # --- state ---------------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "importance": self.importance.clone(),
            "image_size": self.image_size.clone(),
            "visible_count": self.visible_count.clone(),
            "counting": torch.tensor(self.counting),
            "events": torch.tensor(self.events),
            "last_event": torch.tensor([self.last_event_period, self.last_event_step]),
            "last_event_fraction": torch.tensor(self.last_event_fraction, dtype=torch.float64),
            "growth_limited": torch.tensor(self.growth_limited),
            "generator": self.generator.get_state(),
        } | (
            {} if self.finish is None else {f"finish.{k}": v for k, v in self.finish.state_tensors().items()}
        )

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.importance = tensors["importance"].clone()
        self.image_size = tensors["image_size"].clone()
        self.visible_count = tensors["visible_count"].clone()
        if not distributed.is_rank0():
            self.visible_count.zero_()  # the checkpoint's count is a total: rank 0 carries it (reduce_statistics)
        self.counting = int(tensors["counting"])
        self.events = int(tensors["events"])
        if "last_event" in tensors:  # checkpoints written before time-driven schedules have none
            self.last_event_period, self.last_event_step = (int(v) for v in tensors["last_event"])
        if "last_event_fraction" in tensors:  # checkpoints written before the in-run growth rule have none
            self.last_event_fraction = float(tensors["last_event_fraction"])
            self.growth_limited = int(tensors["growth_limited"])
        self.generator.set_state(tensors["generator"].to(torch.uint8))
        if self.finish is not None and "finish.done" in tensors:
            self.finish.load_state_tensors(
                {k[len("finish.") :]: v for k, v in tensors.items() if k.startswith("finish.")}
            )


def _finish(config: TriangleMCMCConfig) -> OpaqueFinish | None:
    """The opaque finish asked for by ``config.finish`` (None for "none")."""
    if config.finish == "none":
        return None
    if config.finish != "opaque":
        raise ValueError(f"strategy.finish must be 'none' or 'opaque', got {config.finish!r}")
    return OpaqueFinish(OpaqueFinishConfig(fraction=config.finish_fraction, sigma_end=config.finish_sigma,
                                           threshold_at=config.finish_threshold_at,
                                           threshold=config.finish_threshold, push=config.finish_push,
                                           relocate=config.finish_relocate))  # fmt: skip


def subdivide(tri: Float[Tensor, "M 3 3"]) -> Float[Tensor, "M 4 3 3"]:
    """Midpoint subdivision of each triangle into 4 with the parent's orientation."""
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]
    m01, m12, m20 = (v0 + v1) / 2, (v1 + v2) / 2, (v2 + v0) / 2
    return torch.stack(
        [
            torch.stack([v0, m01, m20], 1),
            torch.stack([m01, v1, m12], 1),
            torch.stack([m20, m12, v2], 1),
            torch.stack([m01, m12, m20], 1),
        ],
        dim=1,
    )


def _triangles(ctx: StrategyContext) -> TriangleSplatScene:
    """``ctx.scene`` as the triangle-splat scene it is (``check_scene``), for static type checkers."""
    return cast(TriangleSplatScene, ctx.scene)
