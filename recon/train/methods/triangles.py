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
    return TriangleMCMC(cfg.strategy, num_views=num_views, max_sh_degree=cfg.scene.sh_degree)


def write_native(scene: Scene, folder: Path) -> Path:
    """Every triangle with all its attributes as recon's splat PLY ``folder/splats_normalized.ply``, in the
    normalised training frame (``recon export --format native``; ``--format splat-ply`` offers other frames)."""
    if not isinstance(scene, TriangleSplatScene):
        raise TypeError(f"write_native needs a TriangleSplatScene, got {type(scene).__name__}")
    return write_splat_ply(scene, Path(folder) / "splats_normalized.ply")


METHOD = Method(
    "triangles", TrianglesTrainConfig, TriangleSceneConfig, TriangleMCMCConfig, TriangleSplatScene, _strategy,
    write_native,
)  # fmt: skip
