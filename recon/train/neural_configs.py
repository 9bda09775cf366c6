"""Run configs of the ray-batched neural-field methods ``nerf`` and ``neus`` (spec neural_fields.md §4, §5).

The dataclass defaults are the published recipes (nerfacc occupancy-grid NeRF, instant-nsr-pl NeuS) as far as the
generic trainer supports them; ``configs/{nerf,neus}.yaml`` hold overrides and ``configs/{nerf,neus}_cpu.yaml`` the
CPU-budget presets. ``batch``, ``rays_per_batch`` and ``images_per_batch`` are ray-batch fields of the generic
``TrainConfig`` (default ``batch="image"``); these classes set ``batch="rays"``.
"""

from dataclasses import dataclass, field
from typing import Literal

from recon.scenes.nerf import NerfSceneConfig
from recon.scenes.neus import NeusSceneConfig
from recon.train.config import BackgroundMode, TrainConfig
from recon.train.losses import LossConfig
from recon.train.occupancy import OccupancyConfig
from recon.train.proposal import NerfStrategyConfig

__all__ = ["NERF_LOSS", "RAY_LOSS", "NerfTrainConfig", "NeusTrainConfig", "RayTrainConfig"]

BatchKind = Literal["image", "rays"]

# Ray batches have no image neighbourhoods: no D-SSIM, no depth-normal term. NeRF: spec §4's smooth-L1 (beta 1) is
# 0.5 x^2 for |x| < 1, i.e. everywhere for colour errors, so it is L2 up to a factor Adam ignores. NeuS: L1.
NERF_LOSS = LossConfig(ssim_weight=0.0, l2=True, normal_weight=0.0, distortion_weight=0.0)
RAY_LOSS = LossConfig(ssim_weight=0.0, normal_weight=0.0, distortion_weight=0.0)


@dataclass(frozen=True)
class RayTrainConfig(TrainConfig):
    """Overrides shared by the ray-batched field methods (the base of ``NerfTrainConfig``, ``NeusTrainConfig``)."""

    steps: int = 20_000
    """Optimisation steps (one ray batch per step)."""
    batch: BatchKind = "rays"
    """Batches of rays drawn across the training images."""
    images_per_batch: int = 0
    """0: every ray draws its own training image; C > 0: C images with rays_per_batch / C rays each."""


@dataclass(frozen=True)
class NerfTrainConfig(RayTrainConfig):
    """``recon train nerf``: Instant-NGP radiance field (spec §2-§4) with occupancy-grid sampling for bounded scenes
    and proposal sampling of a contracted field for unbounded / forward-facing ones (``scene.scene_type``,
    docs/nerf.md)."""

    background: BackgroundMode = "random"
    """Random per-ray background behind targets and renders (RGBA data; opaque images are used as they are).
    Unbounded and forward scenes render their own background (alpha = 1), so it has no effect on them."""
    rays_per_batch: int = 4096
    """Rays per step (nerfacc starts at 1024 and adapts to ~2^18 samples; fixed here)."""
    loss: LossConfig = field(default_factory=lambda: NERF_LOSS)
    """Photometric loss on the ray colours."""
    scene: NerfSceneConfig = field(default_factory=NerfSceneConfig)
    strategy: NerfStrategyConfig = field(default_factory=NerfStrategyConfig)
    """Occupancy-grid updates (bounded scenes) and proposal schedules (unbounded / forward scenes)."""


@dataclass(frozen=True)
class NeusTrainConfig(RayTrainConfig):
    """``recon train neus``: hash-grid NeuS SDF with eikonal and mask losses (spec §5 fast variant)."""

    background: BackgroundMode = "random"
    """Random per-ray background: with masks (RGBA) the SDF must leave the background empty."""
    rays_per_batch: int = 2048
    """Rays per step (instant-nsr-pl adapts 256-8192; fixed here)."""
    loss: LossConfig = field(default_factory=lambda: RAY_LOSS)
    """Photometric loss on the ray colours (eikonal and mask terms come from the scene's regularisers)."""
    scene: NeusSceneConfig = field(default_factory=NeusSceneConfig)
    strategy: OccupancyConfig = field(default_factory=OccupancyConfig)
