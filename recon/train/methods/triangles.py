"""``recon train triangles``: triangle splats (spec triangle_splats.md) with the TriangleMCMC strategy."""

from pathlib import Path

from recon.export.splat_ply import write_splat_ply
from recon.scenes.base import Scene
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.config import TrainConfig, TrianglesTrainConfig
from recon.train.methods import Method
from recon.train.strategy import Strategy
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    assert isinstance(cfg, TrianglesTrainConfig)  # the registry calls it with this method's config
    return TriangleMCMC(cfg.strategy, num_views=num_views, max_sh_degree=cfg.scene.sh_degree)


def write_native(scene: Scene, path: Path) -> Path:
    """The triangle-splat PLY of ``scene`` at ``path`` (:func:`recon.export.splat_ply.write_splat_ply`)."""
    if not isinstance(scene, TriangleSplatScene):
        raise TypeError(f"write_native needs a TriangleSplatScene, got {type(scene).__name__}")
    return write_splat_ply(scene, path)


METHOD = Method(
    "triangles", TrianglesTrainConfig, TriangleSceneConfig, TriangleMCMCConfig, TriangleSplatScene, _strategy,
    write_native,
)  # fmt: skip
