"""Method registry: the one table mapping a method name to its config, scene and strategy classes.

The trainer and the CLI look methods up here and never branch on a concrete scene type.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recon.core.errors import NotAvailableYet, ReconError
from recon.export.splat_ply import write_splat_ply
from recon.scenes.base import Scene
from recon.scenes.nerf import NerfScene, NerfSceneConfig
from recon.scenes.neus import NeusScene, NeusSceneConfig
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.config import TrainConfig, TrianglesTrainConfig
from recon.train.neural_configs import NerfTrainConfig, NeusTrainConfig
from recon.train.occupancy import OccupancyConfig, OccupancyStrategy
from recon.train.strategy import Strategy
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig


@dataclass(frozen=True)
class Method:
    """A trainable representation.

    Attributes:
        name: CLI name.
        config_cls: its TrainConfig subclass (with ``scene``, ``strategy`` and ``loss`` fields).
        scene_config_cls: the scene's config dataclass.
        strategy_config_cls: the strategy's config dataclass.
        scene_cls: the Scene class (``from_dataset`` / ``empty`` constructors).
        make_strategy: builds the strategy from the run config and the number of training views.
        write_native: writes the representation's own file format (with every attribute) or is None.
    """

    name: str
    config_cls: type[TrainConfig]
    scene_config_cls: type
    strategy_config_cls: type
    scene_cls: type[Scene]
    make_strategy: Callable[[TrainConfig, int], Strategy]
    write_native: Callable[[Scene, Path], Path] | None = None


def _triangle_strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    return TriangleMCMC(
        cfg.strategy, max_steps=cfg.steps, num_views=num_views, max_sh_degree=cfg.scene.sh_degree
    )


def _occupancy_strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    return OccupancyStrategy(cfg.strategy, seed=cfg.seed)


METHODS: dict[str, Method] = {
    "triangles": Method(
        "triangles",
        TrianglesTrainConfig,
        TriangleSceneConfig,
        TriangleMCMCConfig,
        TriangleSplatScene,
        _triangle_strategy,
        write_splat_ply,
    ),
    "nerf": Method("nerf", NerfTrainConfig, NerfSceneConfig, OccupancyConfig, NerfScene, _occupancy_strategy),
    "neus": Method("neus", NeusTrainConfig, NeusSceneConfig, OccupancyConfig, NeusScene, _occupancy_strategy),
}

NOT_YET: dict[str, str] = {
    "superquadrics": "superquadric blocks (spec superquadrics.md) land with their own issue",
    "sparseflex": "sparse-voxel FlexiCubes (spec sparseflex.md) land with their own issue",
}


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        NotAvailableYet: a planned method whose issue has not landed.
        ReconError: an unknown method name.
    """
    if name in METHODS:
        return METHODS[name]
    if name in NOT_YET:
        raise NotAvailableYet(f"method {name!r} is not available yet: {NOT_YET[name]}")
    known = ", ".join([*METHODS, *NOT_YET])
    raise ReconError(f"METHOD {name!r} is unknown; expected one of: {known}")
