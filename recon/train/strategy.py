"""Strategy plugins: representation-specific schedule logic the generic trainer calls at fixed hooks.

A strategy reads the step's render statistics, changes primitives through the ParamOptimizer (the only place
for row edits) and steps representation schedules (e.g. the SH degree). It never sees the loss or gradients as
side channels: everything it needs is in the ``StrategyContext``.
"""

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from recon.core import Camera, RenderCapabilities, require_capabilities
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


@runtime_checkable
class ViewCrop(Protocol):
    """A pixel window of each of the step's C views that is rendered and supervised instead of the full images."""

    def camera(self, camera: Camera) -> Camera:
        """The cameras of the windows (``K`` shifted by the window offsets, the window size)."""
        ...

    def image(self, images: Tensor) -> Tensor:
        """The windows of per-view images (C, H, W, ...) -> (C, h, w, ...)."""
        ...


class Strategy:
    """Base strategy: does nothing. Subclasses override hooks and state (tensors only, for checkpoints)."""

    needs: ClassVar[RenderCapabilities] = RenderCapabilities(depth=False)
    """What the scene must render for this strategy (checked by ``check_scene`` before training)."""

    @property
    def needs_stats(self) -> bool:
        """Whether every training render must carry per-primitive statistics."""
        return self.needs.stats

    def check_scene(self, scene: Scene) -> None:
        """Raise ``MissingRenderOutput`` (a ReconError) if ``scene`` cannot serve this strategy.

        The default checks ``needs`` against ``scene.capabilities``; strategies that need more of the scene (a
        typed protocol such as ``OccupancyScene``) extend it.
        """
        require_capabilities(type(scene).__name__, scene.capabilities, self.needs, by=type(self).__name__)

    def view_crop(self, scene: Scene, camera: Camera, generator: torch.Generator) -> ViewCrop | None:
        """The window of the step's views to render and supervise (image batches; e.g. the crop frusta of
        sparseflex, spec sparseflex.md section 3); None (the default): the full images."""
        return None

    def before_backward(self, ctx: StrategyContext) -> None:
        """Called after rendering and loss computation, before ``backward``."""

    def after_backward(self, ctx: StrategyContext) -> None:
        """Called after ``backward`` and the optimiser step; may edit rows through ``ctx.optimizer``."""

    def reduce_statistics(self, *, for_checkpoint: bool = False) -> None:
        """Data parallel: combine the ranks' statistics before a decision or a checkpoint (a collective every rank
        calls at the same step); nothing to combine by default."""

    def state_tensors(self) -> dict[str, Tensor]:
        """Strategy state as named tensors (checkpointed without pickle)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``state_tensors`` returned."""
