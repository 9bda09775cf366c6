"""The opaque finish of triangle splats (``--strategy.finish opaque``; Triangle Splatting+'s idea).

During the last ``fraction`` of the budget (``StepContext.fraction``, so it is the same share of a step or a time
budget) the soup is turned into one that a standard rasteriser shows as trained: with ``p`` the progress through
the phase (0 at its start, 1 at the end of the budget) and ``p_h = threshold_at``,

* the window sharpness is capped: ``sigma <= exp((1 - s) log SIGMA_START + s log sigma_end)``, ``s = min(1,
  p / p_h)`` (small sigma: the window is ~1 over the whole triangle, its edges become hard);
* opacities are pushed towards {0, 1} (``push="binary"``, default: every step projects the logit out of an
  interval around the threshold's logit that widens with ``s`` to ``(-OPAQUE_LOGIT, OPAQUE_LOGIT)``, a proximal
  step of a penalty on ``o (1 - o)`` tightening with the progress) or up (``push="up"``: a floor
  ``o >= s sigmoid(OPAQUE_LOGIT)``; hidden triangles lose their blending weight and the importance rule prunes them);
* at ``p >= p_h`` (once): triangles with opacity below ``threshold`` are pruned, the others get opacity
  ``sigmoid(OPAQUE_LOGIT)`` and keep it (their logits are re-set after every step), and with ``view_independent``
  the view-dependent SH bands are zeroed and stay zero (the exported soup carries one colour per face);
* the rest of the phase trains positions and colours of the now opaque, sharp soup.

Implemented as a component of :class:`recon.train.triangles_mcmc.TriangleMCMC` (its ``after_backward`` calls
:meth:`OpaqueFinish.after_step` after its own events), so densification and pruning keep their schedule.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SIGMA_START = 2.0  # sigma cap at the start of the phase (above the initial 1.16: no effect yet)
PROGRESS_EPS = 1e-9  # fractions of step budgets land exactly on the threshold: count those as reached
OPAQUE_LOGIT = (
    9.0  # logit of a finished triangle: opacity sigmoid(9) = 0.99988 (the splat alpha clamps at 0.99)
)


@dataclass(frozen=True)
class OpaqueFinishConfig:
    """Schedule of the opaque finish (fractions of the budget).

    Attributes:
        fraction: length of the phase: the last ``fraction`` of the budget, in (0, 1).
        sigma_end: window sharpness sigma reached at the threshold, > 0.01 (the scene's sigma floor).
        threshold_at: progress through the phase at which opacities are thresholded, in (0, 1).
        threshold: opacity below which a triangle is pruned at the threshold, in (0, 1).
        view_independent: zero the view-dependent SH bands at the threshold.
        push: "binary": opacities pushed towards {0, 1} around ``threshold``, the transparent ones pruned at the
            threshold; "up": an opacity floor rising linearly to ``sigmoid(OPAQUE_LOGIT)`` at the threshold (every
            triangle becomes opaque; the strategy's importance rule prunes the ones left hidden).
    """

    fraction: float = 0.15
    sigma_end: float = 0.02
    threshold_at: float = 0.5
    threshold: float = 0.5
    view_independent: bool = True
    push: str = "binary"

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


class OpaqueFinish:
    """The phase's parameter edits; ``done`` records whether the threshold has been applied (checkpointed)."""

    def __init__(self, config: OpaqueFinishConfig) -> None:
        self.config = config
        self.done = False

    def progress(self, fraction: float) -> float:
        """Progress ``p`` through the phase at ``fraction`` of the budget (< 0 before it starts)."""
        start = 1.0 - self.config.fraction
        return (fraction - start) / self.config.fraction

    def sigma_cap(self, p: float) -> float:
        """The largest window sharpness allowed at progress ``p`` >= 0."""
        s = min(1.0, p / self.config.threshold_at + PROGRESS_EPS)
        return math.exp((1.0 - s) * math.log(SIGMA_START) + s * math.log(self.config.sigma_end))

    @torch.no_grad()
    def after_step(self, scene, optimizer, fraction: float) -> None:
        """Apply the phase's edits to ``scene`` (a TriangleSplatScene) after the optimiser step at ``fraction``;
        the threshold prunes rows through ``optimizer`` (a ParamOptimizer)."""
        from recon.scenes.triangles import SIGMA_OFFSET

        p = self.progress(fraction)
        if p < 0.0:
            return
        raw_cap = math.log(self.sigma_cap(p) - SIGMA_OFFSET)
        scene.raw_sigmas.clamp_(max=raw_cap)
        if not self.done:
            self._push(scene.logit_opacities, min(1.0, p / self.config.threshold_at + PROGRESS_EPS))
            if p >= self.config.threshold_at - PROGRESS_EPS:
                self._threshold(scene, optimizer)
        if self.done:
            scene.logit_opacities.fill_(OPAQUE_LOGIT)
            if self.config.view_independent:
                scene.sh_rest.zero_()

    def _push(self, logits: Tensor, s: float) -> None:
        """Opacities up to the floor ``s sigmoid(OPAQUE_LOGIT)`` ("up"), or ("binary") logits at or above the
        threshold's logit ``t`` up to at least ``t + s (OPAQUE_LOGIT - t)``, those below down to at most
        ``t - s (OPAQUE_LOGIT + t)``."""
        if self.config.push == "up":
            floor = s * (1.0 / (1.0 + math.exp(-OPAQUE_LOGIT)))
            if floor > 0.0:
                logits.clamp_(min=math.log(floor / (1.0 - floor)))
            return
        t = math.log(self.config.threshold / (1.0 - self.config.threshold))
        hi, lo = t + s * (OPAQUE_LOGIT - t), t - s * (OPAQUE_LOGIT + t)
        logits.copy_(torch.where(logits >= t, logits.clamp(min=hi), logits.clamp(max=lo)))

    def _threshold(self, scene, optimizer) -> None:
        keep = scene.opacities() >= self.config.threshold
        if not bool(keep.any()):  # never remove every triangle: keep the most opaque one
            keep[scene.opacities().argmax()] = True
        optimizer.select_rows(keep)
        self.done = True

    def state_tensors(self) -> dict[str, Tensor]:
        return {"done": torch.tensor(int(self.done))}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.done = bool(int(tensors["done"]))
