"""``recon train neus``: the NeuS signed-distance field (spec neural_fields.md §5) with occupancy-grid updates."""

from recon.scenes.neus import NeusScene, NeusSceneConfig
from recon.train.capacity import NEUS_RAYS
from recon.train.footprint import NEUS_FINEST
from recon.train.methods import Method
from recon.train.methods.nerf import occupancy_strategy
from recon.train.neural_configs import NeusTrainConfig
from recon.train.occupancy import OccupancyConfig

METHOD = Method(
    "neus",
    NeusTrainConfig,
    NeusSceneConfig,
    OccupancyConfig,
    NeusScene,
    occupancy_strategy,
    capacity=(NEUS_RAYS,),
    footprint=(NEUS_FINEST,),
)
