"""Occupancy-grid updates of ray-marched fields (spec neural_fields.md §3) as a training Strategy.

Every ``update_every`` steps the scene's ``OccupancyGrid`` is refreshed with the EMA rule
``occ <- max(0.95 occ, occ_new)`` (all cells during the first ``warmup_steps`` steps, then a quarter of the cells
uniformly plus as many occupied ones), where ``occ_new = scene.occupancy_eval(x)`` at a point jittered inside each
cell: ``sigma(x) * step_size`` for a density field, the NeuS section opacity for an SDF field. The binary mask is
``occ > min(mean(occ), scene.occupancy_threshold)``.

The strategy talks to the scene through a typed protocol, ``OccupancyScene`` (checked before training): ``occupancy_grid``
(``recon.renderers.volume.OccupancyGrid``), ``occupancy_eval(points) -> (N,)``, ``occupancy_threshold`` and
``set_step(step, fraction)`` (training progress for schedules such as NeuS's cosine annealing).
"""

from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import torch
from torch import Tensor

from recon.core import MissingRenderOutput
from recon.renderers.volume import OccupancyGrid
from recon.scenes.base import Scene
from recon.train import distributed
from recon.train.strategy import Strategy, StrategyContext

__all__ = ["OccupancyConfig", "OccupancyScene", "OccupancyStrategy"]


@runtime_checkable
class OccupancyScene(Protocol):
    """What ``OccupancyStrategy`` needs from a scene."""

    occupancy_grid: OccupancyGrid
    occupancy_threshold: float

    def occupancy_eval(self, points: Tensor) -> Tensor: ...

    def set_step(self, step: int, fraction: float | None = None) -> None: ...


@dataclass(frozen=True)
class OccupancyConfig:
    """Occupancy-grid update schedule (spec §3; nerfacc ``OccGridEstimator.update_every_n_steps``)."""

    update_every: int = 16
    """Steps between grid updates."""
    warmup_steps: int = 256
    """Steps during which every cell is re-evaluated."""
    ema_decay: float = 0.95
    """Decay of the running occupancy."""


class OccupancyStrategy(Strategy):
    """Updates the scene's occupancy grid and tells the scene the training step.

    ``before_backward`` of step ``k`` (after its render, so the render of step ``k`` used the grid as it was)
    updates the grid when ``k % update_every == 0``; the first render uses the all-occupied initial grid.
    ``after_backward`` hands the scene the next step index and the budget fraction (``set_step(k + 1, fraction)``)
    for step- and progress-dependent rendering.

    Args:
        config: the update schedule.
        seed: seed of the cell jitter and the cell draws.
    """

    def __init__(self, config: OccupancyConfig = OccupancyConfig(), *, seed: int = 0) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def check_scene(self, scene: Scene) -> None:
        """The scene must implement the ``OccupancyScene`` protocol (grid, evaluation, threshold, set_step)."""
        super().check_scene(scene)
        if not isinstance(scene, OccupancyScene):
            raise MissingRenderOutput(
                f"{type(self).__name__} needs a scene with an occupancy grid (the OccupancyScene protocol: "
                f"occupancy_grid, occupancy_eval, occupancy_threshold, set_step); {type(scene).__name__} has none"
            )

    def before_backward(self, ctx: StrategyContext) -> None:
        # check_scene verified the OccupancyScene protocol; the casts tell static type checkers.
        self.update(cast(OccupancyScene, ctx.scene), ctx.step.step)

    def after_backward(self, ctx: StrategyContext) -> None:
        cast(OccupancyScene, ctx.scene).set_step(ctx.step.step + 1, ctx.step.fraction)

    def update(self, scene: OccupancyScene, step: int) -> bool:
        """Update ``scene.occupancy_grid`` at training step ``step`` when the schedule says so; returns whether."""
        cfg = self.config
        updated = scene.occupancy_grid.update_every_n_steps(
            step=step, occ_eval_fn=scene.occupancy_eval, n=cfg.update_every, occ_thre=scene.occupancy_threshold,
            ema_decay=cfg.ema_decay, warmup_steps=cfg.warmup_steps, generator=self.generator,
        )  # fmt: skip
        if updated:
            # Data parallel: every rank updated from the same parameters and generator state; rank 0's grid is
            # broadcast so that non-deterministic device arithmetic cannot make the ranks' masks drift apart.
            distributed.broadcast_tensors_(list(scene.occupancy_grid.buffers()))
        return updated

    def state_tensors(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if "generator" in tensors:
            self.generator.set_state(tensors["generator"])
