"""OccupancyStrategy: update cadence, warm-up, EMA rule and pruning, step hand-off, checkpointed RNG."""

import torch

from recon.renderers.volume import OccupancyGrid
from recon.scenes.base import StepContext
from recon.scenes.neus import NeusScene, NeusSceneConfig
from recon.train.occupancy import OccupancyConfig, OccupancyStrategy
from recon.train.strategy import StrategyContext
from tests.typecheck import typecheck_disabled


class BallScene:
    """A field that is dense (occupancy `inside`) in a ball of radius 0.5 and `outside` elsewhere."""

    def __init__(self, *, inside: float = 0.5, outside: float = 0.0, resolution: int = 8) -> None:
        self.occupancy_grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=resolution)
        self.occupancy_threshold = 0.01
        self.inside, self.outside = inside, outside
        self.calls: list[int] = []
        self.steps: list[int] = []

    def occupancy_eval(self, points: torch.Tensor) -> torch.Tensor:
        self.calls.append(points.shape[0])
        return torch.where(points.norm(dim=-1) < 0.5, self.inside, self.outside)

    def set_step(self, step: int, fraction: float | None = None) -> None:
        self.steps.append(step)


def _cell_centers(grid: OccupancyGrid) -> torch.Tensor:
    """(X^3, 3) centres of the level-0 cells in the flat order ``(ix * X + iy) * X + iz``."""
    res = grid.resolution
    axis = (torch.arange(res) + 0.5) / res
    u = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return grid.aabb[0] + u * (grid.aabb[1] - grid.aabb[0])


def _ctx(scene, step: int) -> StrategyContext:
    # A fake scene and no camera, image or optimizer (OccupancyStrategy reads none of them): built without the
    # runtime type checks, which would reject the placeholders.
    with typecheck_disabled():
        return StrategyContext(StepContext(step, 1000, None, None, None), scene, None)


def test_update_cadence_and_warmup():
    scene = BallScene()
    strategy = OccupancyStrategy(OccupancyConfig(update_every=4, warmup_steps=8), seed=0)
    for step in range(13):
        strategy.before_backward(_ctx(scene, step))
        strategy.after_backward(_ctx(scene, step))
    # updates at steps 0, 4 (warm-up: every cell, 8^3 = 512) and 8, 12 (a quarter uniformly + a quarter occupied)
    assert scene.calls == [512, 512, 256, 256]
    assert scene.steps == list(range(1, 14))  # the scene learns the index of the next step


def test_grid_prunes_empty_space_and_keeps_the_ball():
    scene = BallScene()
    strategy = OccupancyStrategy(OccupancyConfig(update_every=1, warmup_steps=100), seed=0)
    strategy.update(scene, 0)
    grid = scene.occupancy_grid
    centers = _cell_centers(grid)
    binaries = grid.binaries.reshape(-1)
    assert bool(binaries[centers.norm(dim=-1) < 0.3].all())  # cells well inside the ball
    assert not bool(binaries[centers.norm(dim=-1) > 0.8].any())  # cells well outside


def test_ema_decay_rule():
    scene = BallScene(inside=0.5, outside=0.0)
    strategy = OccupancyStrategy(OccupancyConfig(update_every=1, warmup_steps=100, ema_decay=0.95), seed=0)
    strategy.update(scene, 0)
    occ0 = scene.occupancy_grid.occs.clone()
    scene.inside = 0.0  # the field empties: occupancy decays by 0.95 per update (max(0.95 occ, 0))
    strategy.update(scene, 1)
    torch.testing.assert_close(scene.occupancy_grid.occs, 0.95 * occ0)
    scene.inside = 1.0  # a larger new value replaces the decayed one
    strategy.update(scene, 2)
    grid = scene.occupancy_grid
    centers = _cell_centers(grid)
    inside = centers.norm(dim=-1) < 0.25  # whole cell inside the ball (cell half-diagonal 0.22): jitter-proof
    torch.testing.assert_close(grid.occs.reshape(-1)[inside], torch.ones(int(inside.sum())))


def test_generator_state_round_trip():
    a, b = OccupancyStrategy(seed=3), OccupancyStrategy(seed=9)
    b.load_state_tensors(a.state_tensors())
    assert torch.equal(torch.rand(4, generator=a.generator), torch.rand(4, generator=b.generator))


def test_neus_grid_from_sdf_marks_the_shell_and_interior():
    config = NeusSceneConfig(grid_levels=2, grid_log2_size=8, grid_min_resolution=4, grid_max_resolution=8,
                             occupancy_resolution=16, render_step_size=0.05)  # fmt: skip
    scene = NeusScene(
        config, torch.tensor([[-1.0] * 3, [1.0] * 3]), generator=torch.Generator().manual_seed(0)
    )
    OccupancyStrategy(OccupancyConfig(update_every=1), seed=0).update(scene, 0)
    grid = scene.occupancy_grid
    centers = _cell_centers(grid)
    binaries = grid.binaries.reshape(-1)
    r = centers.norm(dim=-1)
    # the init is a sphere of radius 0.5 with s ~ 20: the shell around it is occupied, far space is not
    assert bool(binaries[(r - 0.5).abs() < 0.05].float().mean() > 0.9)
    assert not bool(binaries[r > 1.2].any())
