"""``recon train sparseflex``: sparse-voxel FlexiCubes surfaces fitted to masked images (spec sparseflex.md)."""

from dataclasses import dataclass, field

import torch

from recon.scenes.base import Scene
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.train.config import BackgroundMode, TrainConfig
from recon.train.footprint import SPARSEFLEX_COLOR_FINEST
from recon.train.losses import LossConfig
from recon.train.methods import Method
from recon.train.sparseflex_init import scene_from_run
from recon.train.sparseflex_strategy import SparseFlexStrategy, SparseFlexStrategyConfig
from recon.train.strategy import Strategy

__all__ = ["METHOD", "SparseFlexTrainConfig"]

# Spec section 5: L1 (+ 0.2 (1 - SSIM), optional) on the image; the mask, sign-flip, L_dev and weight terms come
# from the scene's regularisers. No depth-normal consistency term: the mesh renders exact normals.
SPARSEFLEX_LOSS = LossConfig(ssim_weight=0.2, normal_weight=0.0, distortion_weight=0.0)


@dataclass(frozen=True)
class SparseFlexTrainConfig(TrainConfig):
    """``recon train sparseflex``: FlexiCubes on a sparse voxel band around the visual hull (spec sections 4-5)."""

    steps: int = 5000
    """Optimisation steps (spec section 5: 5000; one training view per step)."""
    background: BackgroundMode = "random"
    """Random background per step (spec section 5: forces the mask to be explained by geometry)."""
    loss: LossConfig = field(default_factory=lambda: SPARSEFLEX_LOSS)
    """Photometric loss on the image (mask and FlexiCubes terms come from the scene's regularisers)."""
    init_from: str = ""
    """A trained nerf or neus run directory: the initial band surrounds its field's level set (neus: SDF sign;
    nerf: the density it exports its mesh at) instead of the visual hull of the masks. Same dataset required."""
    scene: SparseFlexSceneConfig = field(default_factory=SparseFlexSceneConfig)
    strategy: SparseFlexStrategyConfig = field(default_factory=SparseFlexStrategyConfig)


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    assert isinstance(cfg, SparseFlexTrainConfig)  # the registry calls it with this method's config
    return SparseFlexStrategy(cfg.strategy, base_resolution=cfg.scene.resolution)


def _init_scene(cfg: TrainConfig, dataset, generator: torch.Generator) -> Scene:
    """The band around the visual hull, or around the level set of the ``--init-from`` run's field."""
    assert isinstance(cfg, SparseFlexTrainConfig)
    if cfg.init_from:
        return scene_from_run(cfg.scene, dataset, cfg.init_from, generator=generator)
    return SparseFlexScene.from_dataset(cfg.scene, dataset, generator=generator)


METHOD = Method(
    "sparseflex",
    SparseFlexTrainConfig,
    SparseFlexSceneConfig,
    SparseFlexStrategyConfig,
    SparseFlexScene,
    _strategy,
    footprint=(SPARSEFLEX_COLOR_FINEST,),
    init_scene=_init_scene,
)
