"""Curriculum strategy of the blocks world (spec superquadrics.md 5 and 8), driven by the budget fraction.

After every step (``after_backward``) it:

1. applies the kill rule: blocks whose noise-free α fell below ``kill_threshold`` leave the scene for good
   (``scene.alive``), in the coarse stages;
2. moves the scene to the stage of ``stage_at(fraction)`` (coarse decimated -> coarse -> fine); entering the fine
   stage keeps only the opaque blocks. A switch takes effect from the next step (the render of a step happens
   before its hooks), which shifts each milestone by one step;
3. draws the opacity-logit noise ``N(0, std²)`` of the next step from its own generator (coarse stages; the first
   step of a run has none).

Whether the LPIPS term ran is recorded in the checkpoint (``strategy.lpips_active``) and a skipped term is logged
once as a warning. Its state (stage, the step of each switch, the generator) is checkpointed as tensors, and the scene's stage,
alive mask and noise are scene buffers, so a resumed run continues exactly.
"""

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from recon.scenes.superquadrics.curriculum import stage_at
from recon.scenes.superquadrics.scene import STAGES, SuperquadricScene
from recon.train.strategy import Strategy, StrategyContext

__all__ = ["CurriculumConfig", "SuperquadricsCurriculum"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurriculumConfig:
    """The curriculum strategy has no settings of its own: milestones, noise and thresholds live in the scene
    config (``SuperquadricsConfig``) so that the scene and its strategy cannot disagree."""


class SuperquadricsCurriculum(Strategy):
    """Stage switches, kill rule and opacity noise of the blocks world.

    Args:
        seed: seed of the opacity noise.
    """

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.stage = 0
        self.switch_steps = [0, -1, -1]  # step at which each stage began (-1: not reached)
        self.lpips_absent: str | None = None

    def check_scene(self, scene) -> None:
        super().check_scene(scene)
        if not isinstance(scene, SuperquadricScene):
            raise TypeError(f"SuperquadricsCurriculum needs a SuperquadricScene, got {type(scene).__name__}")

    def after_backward(self, ctx: StrategyContext) -> None:
        scene: SuperquadricScene = ctx.scene  # type: ignore[assignment]
        cfg = scene.config
        if scene.lpips_absent is not None and self.lpips_absent is None:
            logger.warning(
                "superquadrics: the LPIPS term is skipped (documented deviation): %s", scene.lpips_absent
            )
        self.lpips_absent = scene.lpips_absent
        with torch.no_grad():
            if scene.stage().coarse:
                scene.alive.mul_((scene.opacities() > cfg.kill_threshold).to(scene.alive))
            target = STAGES.index(stage_at(min(max(ctx.step.fraction, 0.0), 1.0), cfg).name)
            if target > self.stage:
                self.stage = target
                self.switch_steps[target] = ctx.step.step + 1
                scene.set_stage(target)
            noise = torch.zeros_like(scene.opacity_noise)
            if scene.stage().opacity_noise:
                n = scene.num_primitives()
                noise = cfg.opacity_noise_std * torch.randn(n, generator=self.generator)
            scene.opacity_noise.copy_(noise)

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "stage": torch.tensor(self.stage),
            "switch_steps": torch.tensor(self.switch_steps),
            "generator": self.generator.get_state(),
            "lpips_active": torch.tensor(self.lpips_absent is None),
        }

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.stage = int(tensors["stage"])
        self.switch_steps = [int(s) for s in tensors["switch_steps"]]
        self.generator.set_state(tensors["generator"])
        self.lpips_absent = None if bool(tensors.get("lpips_active", True)) else "recorded absent"
