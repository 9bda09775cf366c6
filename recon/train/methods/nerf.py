"""``recon train nerf``: the Instant-NGP radiance field (spec neural_fields.md §2-§4) with the sampler's strategy.

The strategy follows the scene type the scene decided (``NerfScene.scene_type``, docs/nerf.md): bounded scenes
are ray-marched through an occupancy grid that ``OccupancyStrategy`` updates; unbounded and forward-facing scenes
are sampled by proposal networks whose gradient gating and weight annealing ``ProposalStrategy`` schedules by the
budget fraction. ``SceneTypeStrategy`` picks one of the two when the trainer checks the scene, before any step.
"""

from torch import Tensor

from recon.core import MissingRenderOutput
from recon.scenes.base import Scene
from recon.scenes.nerf import NerfScene, NerfSceneConfig
from recon.scenes.scene_type import SceneKind, SceneTypeDecision
from recon.train.capacity import NERF_RAYS
from recon.train.config import TrainConfig
from recon.train.footprint import NERF_FINEST
from recon.train.methods import Method
from recon.train.neural_configs import NerfTrainConfig
from recon.train.occupancy import OccupancyConfig, OccupancyStrategy
from recon.train.proposal import NerfStrategyConfig, ProposalStrategy
from recon.train.strategy import Strategy, StrategyContext
from recon.train.table_growth import NERF_TABLE


def occupancy_strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    """The occupancy-grid strategy of the ray-marched fields over a box (neus, and nerf's bounded scenes)."""
    return OccupancyStrategy(cfg.strategy, seed=cfg.seed)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it


def strategy_for_scene_type(kind: SceneKind, config: OccupancyConfig, *, seed: int) -> Strategy:
    """``OccupancyStrategy`` for ``bounded`` scenes, ``ProposalStrategy`` for ``unbounded`` and ``forward`` ones."""
    if kind == "bounded":
        return OccupancyStrategy(config, seed=seed)
    if kind in ("unbounded", "forward"):
        if not isinstance(config, NerfStrategyConfig):
            raise TypeError(f"a {kind} scene needs a NerfStrategyConfig, got {type(config).__name__}")
        return ProposalStrategy(config)
    raise ValueError(f"kind must be bounded, unbounded or forward, got {kind!r}")


class SceneTypeStrategy(Strategy):
    """nerf's strategy: the one ``strategy_for_scene_type`` gives for the scene's recorded scene type, chosen in
    ``check_scene`` (which the trainer calls once, before training and before restoring strategy state).

    Args:
        config: the schedules of both samplers.
        seed: seed of the occupancy strategy's draws.
    """

    def __init__(self, config: NerfStrategyConfig, *, seed: int = 0) -> None:
        ProposalStrategy(config)  # validate the proposal fields now, whatever the scene turns out to be
        self.config, self.seed = config, seed
        self.chosen: Strategy | None = None

    def check_scene(self, scene: Scene) -> None:
        decision = getattr(scene, "scene_type", None)
        if not isinstance(decision, SceneTypeDecision):
            raise MissingRenderOutput(
                f"{type(self).__name__} needs a scene that records its scene type (NerfScene.scene_type); "
                f"{type(scene).__name__} has none"
            )
        self.chosen = strategy_for_scene_type(decision.kind, self.config, seed=self.seed)
        self.chosen.check_scene(scene)

    def _inner(self) -> Strategy:
        if self.chosen is None:
            raise RuntimeError("SceneTypeStrategy: call check_scene(scene) before training")
        return self.chosen

    @property
    def needs_stats(self) -> bool:
        return self.chosen is not None and self.chosen.needs_stats

    def before_backward(self, ctx: StrategyContext) -> None:
        self._inner().before_backward(ctx)

    def after_backward(self, ctx: StrategyContext) -> None:
        self._inner().after_backward(ctx)

    def reduce_statistics(self, *, for_checkpoint: bool = False) -> None:
        self._inner().reduce_statistics(for_checkpoint=for_checkpoint)

    def state_tensors(self) -> dict[str, Tensor]:
        return self._inner().state_tensors()

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._inner().load_state_tensors(tensors)


def _strategy(cfg: TrainConfig, num_views: int) -> Strategy:
    return SceneTypeStrategy(cfg.strategy, seed=cfg.seed)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it


METHOD = Method(
    "nerf",
    NerfTrainConfig,
    NerfSceneConfig,
    NerfStrategyConfig,
    NerfScene,
    _strategy,
    capacity=(NERF_RAYS,),
    footprint=(NERF_FINEST,),
    tables=(NERF_TABLE,),
)
