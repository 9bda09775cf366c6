"""``recon train nerf``: the Instant-NGP radiance field (spec neural_fields.md §2-§4) with occupancy-grid updates."""

from recon.scenes.nerf import NerfScene, NerfSceneConfig
from recon.train.config import TrainConfig
from recon.train.methods import Method
from recon.train.neural_configs import NerfTrainConfig
from recon.train.occupancy import OccupancyConfig, OccupancyStrategy
from recon.train.strategy import Strategy


def occupancy_strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    """The occupancy-grid strategy of the ray-marched fields (nerf and neus)."""
    return OccupancyStrategy(cfg.strategy, seed=cfg.seed)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it


METHOD = Method("nerf", NerfTrainConfig, NerfSceneConfig, OccupancyConfig, NerfScene, occupancy_strategy)
