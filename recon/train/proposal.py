"""Proposal-network schedules of contracted fields (unbounded / forward nerf scenes) as a training Strategy.

Two schedules of nerfstudio's ``nerfacto`` / nerfacc's proposal recipe (spec neural_fields.md §3), as functions of
the budget fraction (``StepContext.fraction``, ``recon.train.budget``) so that they complete with any step or time
budget; the defaults put the published step numbers (1000 of 20 000 steps) at the same fraction:

* **Gradient gating** (nerfacc ``get_proposal_requires_grad_fn``): a step gives the proposal fields gradients (and
  so an optimiser step) only when the steps since the last such step exceed
  ``min(fraction / warmup_fraction, 1) * update_every``: every step at first, every ``update_every``-th step after
  the warm-up. The other steps sample the proposal fields under ``no_grad`` (cheaper).
* **Weight annealing** (nerfstudio ``ProposalNetworkSampler.set_anneal``): each proposal level's weights are raised
  to ``a = b x / ((b - 1) x + 1)`` before the next level resamples them, ``x = min(fraction / anneal_fraction, 1)``,
  ``b = anneal_slope``: uniform resampling at the start (``a = 0``), the plain weights once ``x = 1``.

The strategy hands the scene the schedule of its next step at the end of each step (``after_backward``), together
with the step and fraction (``set_step``); that schedule is computed from the fraction of the step just done (the
next step's fraction is not known under a time budget), one step behind nerfacc's on a step budget. A new scene starts with the schedule of step 0 (``a = 0``, no proposal
gradient), and the scene's buffers carry the current schedule through checkpoints.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from recon.core import MissingRenderOutput
from recon.scenes.base import Scene
from recon.train.occupancy import OccupancyConfig
from recon.train.strategy import Strategy, StrategyContext

__all__ = ["NerfStrategyConfig", "ProposalScene", "ProposalStrategy", "anneal_exponent", "update_interval"]

TIE_EPS = 1e-9  # step-budget fractions hit nerfacc's integer targets up to rounding: a tie is "not exceeded"


@runtime_checkable
class ProposalScene(Protocol):
    """What ``ProposalStrategy`` needs from a scene."""

    def set_proposal_schedule(self, *, anneal: float, update: bool) -> None: ...

    def set_step(self, step: int, fraction: float | None = None) -> None: ...


@dataclass(frozen=True)
class NerfStrategyConfig(OccupancyConfig):
    """Schedules of ``recon train nerf``: the occupancy-grid updates (bounded scenes, the fields inherited from
    ``OccupancyConfig``) and the proposal schedules (unbounded and forward scenes; fractions of the budget)."""

    proposal_update_every: float = 5.0
    """After the warm-up, the proposal fields get a gradient every this many steps (nerfacc target 5)."""
    proposal_warmup_fraction: float = 1000 / 20_000
    """Fraction of the budget over which the gradient interval grows from 1 step to ``proposal_update_every``."""
    proposal_anneal_slope: float = 10.0
    """Slope ``b`` of nerfstudio's weight-annealing bias curve."""
    proposal_anneal_fraction: float = 1000 / 20_000
    """Fraction of the budget after which the proposal weights are used unannealed (nerfstudio: 1000 steps)."""


def anneal_exponent(fraction: float, config: NerfStrategyConfig) -> float:
    """Resampling exponent ``a = b x / ((b - 1) x + 1)``, ``x = clip(fraction / anneal_fraction, 0, 1)``."""
    x = min(max(fraction / config.proposal_anneal_fraction, 0.0), 1.0)
    b = config.proposal_anneal_slope
    return b * x / ((b - 1.0) * x + 1.0)


def update_interval(fraction: float, config: NerfStrategyConfig) -> float:
    """Steps since the last proposal update that must be exceeded for the next one: ``min(f / w, 1) * every``."""
    return min(max(fraction, 0.0) / config.proposal_warmup_fraction, 1.0) * config.proposal_update_every


class ProposalStrategy(Strategy):
    """Drives the proposal schedules of the scene (module docstring) and tells it the training step.

    Args:
        config: the schedules.
    """

    def __init__(self, config: NerfStrategyConfig = NerfStrategyConfig()) -> None:
        for name in ("proposal_update_every", "proposal_warmup_fraction", "proposal_anneal_fraction"):
            if not getattr(config, name) > 0:
                raise ValueError(f"strategy.{name} must be positive, got {getattr(config, name)}")
        if not config.proposal_anneal_slope > 0:
            raise ValueError(
                f"strategy.proposal_anneal_slope must be positive, got {config.proposal_anneal_slope}"
            )
        self.config = config
        self.steps_since_update = 1  # step 0 (a new scene's schedule) did not update: one step since

    def check_scene(self, scene: Scene) -> None:
        """The scene must implement the ``ProposalScene`` protocol (set_proposal_schedule, set_step)."""
        super().check_scene(scene)
        if not isinstance(scene, ProposalScene):
            raise MissingRenderOutput(
                f"{type(self).__name__} needs a scene with proposal networks (the ProposalScene protocol: "
                f"set_proposal_schedule, set_step); {type(scene).__name__} has none"
            )

    def after_backward(self, ctx: StrategyContext) -> None:
        """Hand the scene step ``k + 1``, the budget fraction and the proposal schedule of that step."""
        fraction = ctx.step.fraction
        update = self.steps_since_update > update_interval(fraction, self.config) + TIE_EPS
        self.steps_since_update = 1 if update else self.steps_since_update + 1
        scene = ctx.scene
        assert isinstance(scene, ProposalScene)  # checked by check_scene before training
        scene.set_step(ctx.step.step + 1, fraction)
        scene.set_proposal_schedule(anneal=anneal_exponent(fraction, self.config), update=update)

    def state_tensors(self) -> dict[str, Tensor]:
        return {"steps_since_update": torch.tensor(self.steps_since_update, dtype=torch.int64)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if "steps_since_update" in tensors:
            self.steps_since_update = int(tensors["steps_since_update"])
