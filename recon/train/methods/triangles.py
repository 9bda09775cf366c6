"""``recon train triangles``: triangle splats (spec triangle_splats.md) with the TriangleMCMC strategy.

Settings of real captures (``scene.capture``, resolved from the dataset by ``adapt_to_dataset`` before training and
written resolved into the run's config.yaml):

* ``object`` (bounded scenes: the synthetic renders, object-centric captures): the spec's defaults, with the
  image-size pruning rule and the L1 photometric term.
* ``outdoor`` (unbounded and forward-facing captures; spec §12 ``m360_outdoor`` / ``tnt``): ``strategy.outdoor``
  (no image-size pruning: the background and the dome are legitimately large on screen) and, when the camera
  extent exceeds ``L2_EXTENT`` (300) original units (spec §8), the L2 photometric term (``loss.l2``).
* ``auto``: ``object`` or ``outdoor`` from the scene type of ``recon.scenes.scene_type.detect_scene_type`` (the
  rule nerf uses). A room and a garden cannot be told apart from cameras and points reliably, so the
  ``m360_indoor`` protocol's weights are not chosen automatically (docs/datasets.md lists them as flags).

The camera extent is 3DGS's ``cameras_extent``: 1.1 times the largest distance of a training camera centre from
their mean, in the dataset's original units. The seed points (SfM points plus the white dome, spec §9.1) and the
background (the dataset's: no forced colour for opaque captures) need no setting here.
"""

import logging
from dataclasses import replace
from pathlib import Path

import torch

from recon.datasets.base import camera_centers
from recon.export.splat_ply import write_splat_ply
from recon.scenes.base import ExportOptions, Scene
from recon.scenes.scene_type import detect_scene_type
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.capacity import TRIANGLE_CAP
from recon.train.config import TrainConfig, TrianglesTrainConfig
from recon.train.methods import Method
from recon.train.strategy import Strategy
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig

log = logging.getLogger(__name__)

L2_EXTENT = 300.0  # spec §8: outdoor scenes with a camera extent above 300 (original units) use L2
EXTENT_MARGIN = 1.1  # 3DGS getNerfppNorm: radius = 1.1 x the largest camera distance from the mean centre


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    assert isinstance(cfg, TrianglesTrainConfig)  # the registry calls it with this method's config
    return TriangleMCMC(cfg.strategy, num_views=num_views, max_sh_degree=cfg.scene.sh_degree)


def camera_extent(dataset) -> float:
    """3DGS ``cameras_extent`` of the training cameras in the dataset's original units (see the module docstring)."""
    centres = camera_centers(dataset.splits["train"]).to(torch.float64)
    return EXTENT_MARGIN * float((centres - centres.mean(0)).norm(dim=-1).max())


def adapt_to_dataset(cfg: TrainConfig, dataset) -> tuple[TrainConfig, str]:
    """``cfg`` with ``scene.capture`` resolved from ``dataset`` and its settings applied, and a one-line note.

    Idempotent: a resolved config (a resumed run's) comes back unchanged. Explicit ``--strategy.outdoor`` and
    ``--loss.l2`` are kept (a capture only switches them on).
    """
    if not isinstance(cfg, TrianglesTrainConfig):
        raise TypeError(f"adapt_to_dataset needs a TrianglesTrainConfig, got {type(cfg).__name__}")
    capture, why = cfg.scene.capture, "set by the config"
    if capture == "auto":
        decision = detect_scene_type(dataset.cameras("train"), dataset.points3d)
        capture = "object" if decision.kind == "bounded" else "outdoor"
        why = f"scene type {decision.kind}: {decision.reason}"
    elif capture not in ("object", "outdoor"):
        raise ValueError(f"scene.capture must be one of auto|object|outdoor, got {capture!r}")
    extent = camera_extent(dataset)
    l2 = cfg.loss.l2 or (capture == "outdoor" and extent > L2_EXTENT)
    out = replace(
        cfg,
        scene=replace(cfg.scene, capture=capture),
        strategy=replace(cfg.strategy, outdoor=cfg.strategy.outdoor or capture == "outdoor"),
        loss=replace(cfg.loss, l2=l2),
    )
    note = (
        f"triangles capture {capture} ({why}); camera extent {extent:.3g} original units: "
        f"{'L2' if l2 else 'L1'} photometric term, image-size pruning {'off' if out.strategy.outdoor else 'on'}"
    )
    log.info(note)
    return out, note


def write_native(scene: Scene, folder: Path, options: ExportOptions | None = None) -> Path:
    """Every triangle with all its attributes as recon's splat PLY ``folder/splats_normalized.ply``, in the
    normalised training frame (``recon export --format native``; ``--format splat-ply`` offers other frames).
    ``options`` change nothing: a triangle soup has no environment parts, and every triangle is kept."""
    if not isinstance(scene, TriangleSplatScene):
        raise TypeError(f"write_native needs a TriangleSplatScene, got {type(scene).__name__}")
    return write_splat_ply(scene, Path(folder) / "splats_normalized.ply")


METHOD = Method(
    "triangles", TrianglesTrainConfig, TriangleSceneConfig, TriangleMCMCConfig, TriangleSplatScene, _strategy,
    write_native, capacity=(TRIANGLE_CAP,), adapt_to_dataset=adapt_to_dataset,
)  # fmt: skip
