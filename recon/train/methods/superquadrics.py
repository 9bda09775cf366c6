"""``recon train superquadrics``: Differentiable Blocks World (spec superquadrics.md) with its curriculum strategy.

The photometric term is the published MSE (``loss.l2``, no D-SSIM, no depth-normal term); parsimony, TV, overlap
and the optional LPIPS term come from ``SuperquadricScene.regularizers``. ``write_native`` writes
``primitives.json`` and the textured ``mesh``/``mesh_full`` OBJ and GLB files (spec 11) in the dataset's original
world frame.
"""

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from recon.scenes.base import ExportOptions, Scene
from recon.scenes.scene_type import object_region
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.export import export_blocks
from recon.scenes.superquadrics.frame import CANONICAL_ROI_RADIUS
from recon.scenes.superquadrics.scene import SuperquadricScene
from recon.train.config import TrainConfig
from recon.train.losses import LossConfig
from recon.train.methods import Method
from recon.train.strategy import Strategy
from recon.train.superquadrics_strategy import CurriculumConfig, SuperquadricsCurriculum

log = logging.getLogger(__name__)


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


def adapt_to_dataset(cfg: TrainConfig, dataset) -> tuple[TrainConfig, str]:
    """``cfg`` with ``scene.roi`` resolved from ``dataset``, and a one-line note.

    ``points`` (or ``auto`` when ``object_region`` finds the subject) sets ``roi_center``, ``roi_radius`` and
    ``ground_height`` (the subject's bottom, canonical units) from the SfM points; ``auto`` without a region
    becomes ``box``. Idempotent: a resolved config (a resumed run's) comes back unchanged.

    Raises:
        ValueError: ``roi`` points on a dataset where the subject cannot be measured.
    """
    if not isinstance(cfg, SuperquadricsTrainConfig):
        raise TypeError(f"adapt_to_dataset needs a SuperquadricsTrainConfig, got {type(cfg).__name__}")
    sc = cfg.scene
    if sc.roi == "box" or sc.roi_center is not None:
        return cfg, f"superquadrics region of interest: {sc.roi}, set by the config"
    region = object_region(dataset.cameras("train"), dataset.points3d)
    if region is None:
        if sc.roi == "points":
            raise ValueError(
                "scene.roi points needs SfM points around a subject the cameras surround; this dataset has "
                f"{0 if dataset.points3d is None else len(dataset.points3d)} points (use --scene.roi box)"
            )
        return replace(cfg, scene=replace(sc, roi="box")), (
            "superquadrics region of interest: the scene box (no SfM points around a subject the cameras surround)"
        )
    radius = sc.roi_radius or region.radius
    ground = -CANONICAL_ROI_RADIUS * region.floor / radius
    out = replace(
        cfg,
        scene=replace(
            sc, roi="points", roi_radius=radius, roi_center=tuple(float(v) for v in region.centre),
            ground_height=sc.ground_height if sc.ground_height is not None else ground,
        ),
    )  # fmt: skip
    note = (
        f"superquadrics region of interest from {region.num_points} SfM points around the subject: centre "
        f"({', '.join(f'{v:.3g}' for v in region.centre.tolist())}), radius {radius:.3g} (normalised units); "
        f"ground starts at canonical height {out.scene.ground_height:.3g}"
    )
    log.info(note)
    return out, note


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
    write_native, adapt_to_dataset=adapt_to_dataset,
)  # fmt: skip
