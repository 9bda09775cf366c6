"""``recon train superquadrics``: Differentiable Blocks World (spec superquadrics.md) with its curriculum strategy.

The photometric term is the published MSE (``loss.l2``, no D-SSIM, no depth-normal term); parsimony, TV, overlap
and the optional LPIPS term come from ``SuperquadricScene.regularizers``. ``write_native`` writes
``primitives.json`` and the textured ``mesh``/``mesh_full`` OBJ and GLB files (spec 11) in the dataset's original
world frame.
"""

from dataclasses import dataclass, field
from pathlib import Path

from recon.scenes.base import ExportOptions, Scene
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.export import export_blocks
from recon.scenes.superquadrics.scene import SuperquadricScene
from recon.train.config import TrainConfig
from recon.train.losses import LossConfig
from recon.train.methods import Method
from recon.train.strategy import Strategy
from recon.train.superquadrics_strategy import CurriculumConfig, SuperquadricsCurriculum


def _mse() -> LossConfig:
    return LossConfig(ssim_weight=0.0, l2=True, normal_weight=0.0, normal_from_fraction=1.0)


@dataclass(frozen=True)
class SuperquadricsTrainConfig(TrainConfig):
    """``recon train superquadrics``: superquadric blocks (spec superquadrics.md)."""

    scene: SuperquadricsConfig = field(default_factory=SuperquadricsConfig)
    strategy: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=_mse)


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    return SuperquadricsCurriculum(seed=cfg.seed)


def write_native(scene: Scene, path: Path, options: ExportOptions | None = None) -> Path:
    """Write ``primitives.json``, ``mesh.{obj,glb}`` and ``mesh_full.{obj,glb}`` into the folder ``path`` in the
    dataset's original world frame (``T_world_canon`` of primitives.json maps canonical -> original world);
    returns the path of ``primitives.json``. ``mesh`` holds the opaque blocks and the reduced ground, or the
    blocks alone with ``options.objects_only`` (``recon export --format native --objects-only``)."""
    if not isinstance(scene, SuperquadricScene):
        raise TypeError(f"write_native needs a SuperquadricScene, got {type(scene).__name__}")
    T_original_canon = scene.T_original_world @ scene.T_world_canon
    objects_only = options is not None and options.objects_only
    paths = export_blocks(scene.export_block_set(), path, cfg=scene.config, T_world_canon=T_original_canon,
                          ground=not objects_only)  # fmt: skip
    return paths.primitives


METHOD = Method(
    "superquadrics", SuperquadricsTrainConfig, SuperquadricsConfig, CurriculumConfig, SuperquadricScene, _strategy,
    write_native,
)  # fmt: skip
