"""``recon train triangles``: triangle splats (spec triangle_splats.md) with the TriangleMCMC strategy."""

from recon.export.splat_ply import write_splat_ply
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.capacity import TRIANGLE_CAP
from recon.train.config import TrainConfig, TrianglesTrainConfig
from recon.train.methods import Method
from recon.train.strategy import Strategy
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    return TriangleMCMC(cfg.strategy, num_views=num_views, max_sh_degree=cfg.scene.sh_degree)


METHOD = Method(
    "triangles", TrianglesTrainConfig, TriangleSceneConfig, TriangleMCMCConfig, TriangleSplatScene, _strategy,
    write_splat_ply, capacity=(TRIANGLE_CAP,),
)  # fmt: skip
