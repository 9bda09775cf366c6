"""Strategy plugins: representation-specific schedule logic the generic trainer calls at fixed hooks.

A strategy reads the step's render statistics, changes primitives through the ParamOptimizer (the only place
for row edits) and steps representation schedules (e.g. the SH degree). It never sees the loss or gradients as
side channels: everything it needs is in the ``StrategyContext``.
"""

from dataclasses import dataclass

from torch import Tensor

from recon.scenes.base import Scene, StepContext
from recon.train.param_optimizer import ParamOptimizer


@dataclass
class StrategyContext:
    """Inputs of a strategy hook.

    Attributes:
        step: the step's context (step index, budget, camera, render with statistics).
        scene: the scene being trained.
        optimizer: the ParamOptimizer owning the scene's parameters and all row edits.
    """

    step: StepContext
    scene: Scene
    optimizer: ParamOptimizer


class Strategy:
    """Base strategy: does nothing. Subclasses override hooks and state (tensors only, for checkpoints)."""

    needs_stats: bool = False
    """Whether the scene must render per-primitive statistics for this strategy."""

    def before_backward(self, ctx: StrategyContext) -> None:
        """Called after rendering and loss computation, before ``backward``."""

    def after_backward(self, ctx: StrategyContext) -> None:
        """Called after ``backward`` and the optimiser step; may edit rows through ``ctx.optimizer``."""

    def state_tensors(self) -> dict[str, Tensor]:
        """Strategy state as named tensors (checkpointed without pickle)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``state_tensors`` returned."""
