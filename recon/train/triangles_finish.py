"""The opaque finish of triangle splats (``--strategy.finish opaque``; the idea of Triangle Splatting+).

During the last ``fraction`` of the budget (``StepContext.fraction``, so it is the same share of a step or a time
budget) the soup is turned into one that a standard rasteriser shows as trained, while it keeps its size and its
coverage. With ``p`` the progress through the phase (0 at its start, 1 at the end of the budget) and
``s = min(1, p / threshold_at)``:

* the window sharpness is capped: ``sigma <= exp((1 - s) log SIGMA_START + s log sigma_end)`` (small sigma: the
  window is ~1 over the whole triangle, its edges become hard);
* opacities are pushed towards {0, 1} (``push="binary"``, default: every step projects the logit out of an
  interval around the threshold's logit that widens with ``s`` to ``(-OPAQUE_LOGIT, OPAQUE_LOGIT)``, a proximal
  step of a penalty on ``o (1 - o)`` tightening with the progress) or up (``push="up"``: a floor
  ``o >= s sigmoid(OPAQUE_LOGIT)``);
* at ``s = 1`` (once) the triangles with opacity below ``threshold`` leave their place, the others get opacity
  ``sigmoid(OPAQUE_LOGIT)`` and keep it (their logits are re-set after every step), and with ``view_independent``
  the view-dependent SH bands are zeroed and stay zero (the exported soup carries one colour per face);
* with ``relocate`` (default) a triangle that leaves its place is not deleted but moved (MCMC-style relocation):
  at the threshold and at each of the strategy's prune events in the phase (before ``relocate_until``), the rows
  that are transparent (threshold) or dead by the strategy's rules (hidden: max blending weight below
  ``importance_threshold``) are re-used as children of visible triangles drawn with probability proportional to
  the photometric error seen where they are: a parent is split into its 4 midpoint children (the image does not
  change; the children's colours then add detail and their vertices move where the error is). The soup size
  therefore stays within 2 rows per event of its size at the start of the phase; without ``relocate`` those rows
  are pruned, and at the strategy's events after ``relocate_until`` hidden rows are pruned;
* the rest of the phase trains positions and colours of the now opaque, sharp soup.

The error score of a triangle is the largest, over the views it was rendered in since the last row edit, of
``max_blending x`` the mean absolute RGB error of the render around its projected centroid (a box filter of
``ERROR_WINDOW`` of the image side, so triangles bordering an uncovered region see its error).

Implemented as a component of :class:`recon.train.triangles_mcmc.TriangleMCMC` (its ``after_backward`` calls
:meth:`OpaqueFinish.observe` and :meth:`OpaqueFinish.after_step` after its own events), so the schedule of events
is the strategy's.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool
from torch import Tensor

from recon.train import distributed

SIGMA_START = 2.0  # sigma cap at the start of the phase (above the initial 1.16: no effect yet)
PROGRESS_EPS = 1e-9  # fractions of step budgets land exactly on the threshold: count those as reached
OPAQUE_LOGIT = (
    9.0  # logit of a finished triangle: opacity sigmoid(9) = 0.99988 (the splat alpha clamps at 0.99)
)
ERROR_WINDOW = 1.0 / 16.0
SPLIT_ROUNDS = (
    4  # relocation splits children of earlier splits when too few rows have error (4^4 = 256 per row)
)
INCENTER_EPS = 1e-12  # perimeter guard of degenerate (collapsed) triangles  # box filter of the error map, as a share of the image side (odd size >= 3 px)


@dataclass(frozen=True)
class OpaqueFinishConfig:
    """Schedule of the opaque finish (fractions of the budget).

    Attributes:
        fraction: length of the phase: the last ``fraction`` of the budget, in (0, 1).
        sigma_end: window sharpness sigma reached at the threshold, > 0.01 (the scene's sigma floor).
        threshold_at: progress through the phase at which opacities are thresholded, in (0, 1).
        threshold: opacity below which a triangle leaves its place at the threshold, in (0, 1).
        view_independent: zero the view-dependent SH bands at the threshold.
        push: "binary": opacities pushed towards {0, 1} around ``threshold``; "up": an opacity floor rising
            linearly to ``sigmoid(OPAQUE_LOGIT)`` at the threshold (every triangle becomes opaque).
        relocate: move the rows that leave (transparent at the threshold, dead at the strategy's events) to
            high-error regions instead of pruning them.
        relocate_until: progress through the phase after which events only prune, in [0, 1] (the last
            relocated triangles need steps to settle).
    """

    fraction: float = 0.15
    sigma_end: float = 0.02
    threshold_at: float = 0.5
    threshold: float = 0.5
    view_independent: bool = True
    push: str = "binary"
    relocate: bool = True
    relocate_until: float = 0.85

    def __post_init__(self) -> None:
        if self.push not in ("up", "binary"):
            raise ValueError(f"strategy.finish_push must be 'up' or 'binary', got {self.push!r}")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"strategy.finish_fraction must lie in (0, 1), got {self.fraction}")
        if not self.sigma_end > 0.01:
            raise ValueError(
                f"strategy.finish_sigma must exceed 0.01 (the sigma floor), got {self.sigma_end}"
            )
        if not 0.0 < self.threshold_at < 1.0:
            raise ValueError(f"strategy.finish_threshold_at must lie in (0, 1), got {self.threshold_at}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"strategy.finish_threshold must lie in (0, 1), got {self.threshold}")
        if not 0.0 <= self.relocate_until <= 1.0:
            raise ValueError(
                f"OpaqueFinishConfig.relocate_until must lie in [0, 1], got {self.relocate_until}"
            )


class OpaqueFinish:
    """The phase's parameter edits. ``done`` records whether the threshold has been applied and ``error`` holds
    the per-triangle error scores since the last row edit (both checkpointed)."""

    def __init__(self, config: OpaqueFinishConfig) -> None:
        self.config = config
        self.done = False
        self.error = torch.zeros(0)

    def progress(self, fraction: float) -> float:
        """Progress ``p`` through the phase at ``fraction`` of the budget (< 0 before it starts)."""
        start = 1.0 - self.config.fraction
        return (fraction - start) / self.config.fraction

    def sigma_cap(self, p: float) -> float:
        """The largest window sharpness allowed at progress ``p`` >= 0."""
        s = min(1.0, p / self.config.threshold_at + PROGRESS_EPS)
        return math.exp((1.0 - s) * math.log(SIGMA_START) + s * math.log(self.config.sigma_end))

    def relocates(self, fraction: float) -> bool:
        """Whether a prune event at ``fraction`` relocates its dead rows (instead of removing them)."""
        p = self.progress(fraction)
        return self.config.relocate and 0.0 <= p < self.config.relocate_until

    # --- statistics ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, scene, step) -> None:
        """Raise the error scores of ``scene``'s triangles with the render of ``step`` (a StepContext holding the
        full-image render with statistics, its camera and target image). Only inside the phase, with relocate."""
        if not self.config.relocate or self.progress(step.fraction) < 0.0:
            return
        n = scene.num_primitives()
        if self.error.shape[0] != n:  # rows changed since the last step (an event): scores start over
            self.error = torch.zeros(n, device=scene.vertices.device)
        render = step.render
        if render is None or render.stats is None or render.rgb.shape != step.image.shape:
            raise ValueError("OpaqueFinish.observe needs the step's full-image render with statistics")
        err = (render.rgb.detach() - step.image).abs().mean(-1, keepdim=True).movedim(-1, 1)  # (C, 1, H, W)
        c, _, h, w = err.shape
        k = max(3, 2 * round(ERROR_WINDOW * min(h, w) / 2) + 1)
        err = F.avg_pool2d(err, k, stride=1, padding=k // 2, count_include_pad=False)[:, 0]
        centroids = scene.vertices.detach().mean(dim=1)
        uv, z = step.camera.to(device=centroids.device, dtype=centroids.dtype).project(
            centroids[None].expand(c, -1, -1)
        )
        i, j = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        inside = (z > 0) & (i >= 0) & (i < w) & (j >= 0) & (j < h)
        cam = torch.arange(c, device=err.device)[:, None]
        at = err[cam, j.clamp(0, h - 1), i.clamp(0, w - 1)] * inside
        score = (at * render.stats.max_blending.detach()).amax(0).float()
        self.error = torch.maximum(self.error, score)

    # --- edits ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def after_step(self, scene, optimizer, fraction: float, *, strategy=None) -> bool:
        """Apply the phase's edits to ``scene`` (a TriangleSplatScene) after the optimiser step at ``fraction``;
        the threshold edits rows through ``optimizer`` (a ParamOptimizer), relocating them when ``strategy`` (the
        TriangleMCMC, for its generator) is given and ``relocate`` is on, else pruning them.
        Returns whether rows were edited (the strategy's per-row statistics must start over)."""
        from recon.scenes.triangles import SIGMA_OFFSET

        p = self.progress(fraction)
        if p < 0.0:
            return False
        scene.raw_sigmas.clamp_(max=math.log(self.sigma_cap(p) - SIGMA_OFFSET))
        edited = False
        if not self.done:
            self._push(scene.logit_opacities, min(1.0, p / self.config.threshold_at + PROGRESS_EPS))
            if p >= self.config.threshold_at - PROGRESS_EPS:
                self._threshold(scene, optimizer, strategy)
                edited = True
        if self.done:
            scene.logit_opacities.fill_(OPAQUE_LOGIT)
            if self.config.view_independent:
                scene.sh_rest.zero_()
        return edited

    def _push(self, logits: Tensor, s: float) -> None:
        """Opacities up to the floor ``s sigmoid(OPAQUE_LOGIT)`` ("up"), or ("binary") logits at or above the
        threshold's logit ``t`` up to at least ``t + s (OPAQUE_LOGIT - t)``, those below down to at most
        ``t - s (OPAQUE_LOGIT + t)``."""
        if self.config.push == "up":
            floor = s * _sigmoid(OPAQUE_LOGIT)
            if floor > 0.0:
                logits.clamp_(min=_logit(floor))
            return
        t = _logit(self.config.threshold)
        hi, lo = t + s * (OPAQUE_LOGIT - t), t - s * (OPAQUE_LOGIT + t)
        logits.copy_(torch.where(logits >= t, logits.clamp(min=hi), logits.clamp(max=lo)))

    def _threshold(self, scene, optimizer, strategy) -> None:
        keep = ~_spare_one(scene.opacities() < self.config.threshold, scene.opacities())
        if strategy is not None and self.config.relocate:
            self.relocate(scene, optimizer, ~keep, strategy)
        else:
            optimizer.select_rows(keep)
        self.done = True

    @torch.no_grad()
    def relocate(self, scene, optimizer, leave: Bool[Tensor, " N"], strategy) -> None:
        """Re-use the rows ``leave`` as children of the other rows drawn ∝ their error score (module docstring).

        The rows leaving are removed; then, in up to ``SPLIT_ROUNDS`` rounds, parents drawn without replacement
        are replaced by their 4 midpoint children (3 rows more each; children inherit a quarter of the score, so a
        later round may split them again) until the rows added reach the number that left: the soup grows by at
        most 2 rows, and shrinks only when too few rows have a positive score (with none, the rows leaving are
        simply pruned).
        """
        leave = _spare_one(leave, scene.opacities())
        n_leave = int(leave.sum())
        score = self.error.to(leave.device) if self.error.shape[0] == leave.shape[0] else None
        if distributed.world_size() > 1:
            # data parallel: every rank draws from the same scores (a collective, at the same step everywhere)
            score = score if score is not None else torch.zeros(leave.shape, device=leave.device)
            distributed.all_reduce_(score, "max")
        optimizer.select_rows(~leave)
        if n_leave == 0 or score is None:
            self.error = torch.zeros(0)
            return
        if self.config.push == "binary":  # children copy their parent's opacity: only opaque-bound parents
            score = torch.where(
                scene.opacities() >= self.config.threshold, score[~leave], score.new_zeros(())
            )
        else:
            score = score[~leave]
        missing = n_leave
        for _ in range(SPLIT_ROUNDS):
            parents = _draw(score, -(-missing // 3), strategy.generator)
            if len(parents) == 0:
                break
            keep = torch.ones_like(score, dtype=torch.bool)
            keep[parents] = False
            children = self._children(scene, parents)
            optimizer.select_rows(keep)
            optimizer.extend_rows(children)
            score = torch.cat([score[keep], score[parents].repeat_interleave(4) / 4])
            missing -= 3 * len(parents)
            if missing <= 0:
                break
        self.error = score

    def _children(self, scene, parents: Tensor) -> dict[str, Tensor]:
        """The 4 midpoint children of each parent, with its colour, opacity and sharpness: together they paint
        what the parent painted, and their own colours can then add detail where the error was."""
        from recon.train.triangles_mcmc import subdivide

        rows = {"vertices": subdivide(scene.vertices.detach()[parents]).reshape(-1, 3, 3)}
        for name in ("sh_dc", "sh_rest", "logit_opacities", "raw_sigmas"):
            rows[name] = getattr(scene, name).detach()[parents].repeat_interleave(4, dim=0)
        return rows

    def state_tensors(self) -> dict[str, Tensor]:
        return {"done": torch.tensor(int(self.done)), "error": self.error.clone()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.done = bool(int(tensors["done"]))
        self.error = tensors["error"].clone() if "error" in tensors else torch.zeros(0)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(o: float) -> float:
    return math.log(o / (1.0 - o))


def _draw(score: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Up to ``n`` rows drawn without replacement ∝ ``score`` (only rows with a positive score)."""
    available = int((score > 0).sum())
    if n <= 0 or available == 0:
        return torch.zeros(0, dtype=torch.long, device=score.device)
    draws = torch.multinomial(score.cpu().double(), min(n, available), replacement=False, generator=generator)
    return draws.to(score.device)


def _spare_one(leave: Tensor, opacities: Tensor) -> Tensor:
    """``leave`` without its most opaque row when it holds every row: an empty soup cannot recover."""
    if not bool(leave.all()):
        return leave
    spared = leave.clone()
    spared[opacities.argmax()] = False
    return spared
