"""The hash table follows the budget (recon.train.table_growth): growing a table keeps the encoding, folding it
back undoes the growth, the in-run rule keeps the grown table only when the budget left buys the rays rule's steps
with it (monotone in the budget), and runs, checkpoints and the CLI record and restore the size."""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
import yaml

from recon.cli import train as train_cli
from recon.core import ReconError
from recon.renderers.encoding import HashGridConfig, hash_grid_encode, log2_size_for_rows, table_growth_index
from recon.scenes.base import ParamGroup
from recon.train.capacity import NERF_RAYS, CapacityChoice, CapacityInputs, StepCost
from recon.train.capacity_in_run import InRunCapacity
from recon.train.methods import get_method
from recon.train.param_optimizer import ParamOptimizer
from recon.train.table_growth import NERF_TABLE, TableChoice, TableRule, TableTrial, apply_table_start

# levels of every kind for 2^9 -> 2^11 entries: dense in both (res 4-7), hashed -> dense (res 9-12), hashed in both
GRID = HashGridConfig(
    levels=8, features_per_level=2, log2_hashmap_size=9, base_resolution=4, max_resolution=48
)


def _grown(cfg: HashGridConfig = GRID, log2: int = 11) -> HashGridConfig:
    return replace(cfg, log2_hashmap_size=log2)


def _interior(cfg: HashGridConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """Points whose interpolation corners stay inside every level's res^3 cells (below the far-face band)."""
    limit = min((r - 1.5) / s for r, s in zip(cfg.layout.resolutions, cfg.layout.scales, strict=True))
    return torch.rand(n, 3, generator=generator, dtype=torch.float64).float() * limit


def test_growth_index_keeps_the_encoding_on_every_kind_of_level():
    old, new = GRID.layout, _grown().layout
    kinds = {(a, b) for a, b in zip(old.dense, new.dense, strict=True)}
    assert kinds == {(True, True), (False, True), (False, False)}  # the test covers all three
    g = torch.Generator().manual_seed(3)
    table = torch.randn(old.num_params, 2, generator=g)
    index = table_growth_index(old, new)
    assert index.shape == (new.num_params,) and index.dtype == torch.long
    assert int(index.min()) >= 0 and int(index.max()) < old.num_params
    x = _interior(GRID, 4096, g)
    for backend in ("torch", "warp"):
        before = hash_grid_encode(x, table, old, backend=backend)
        after = hash_grid_encode(x, table[index], new, backend=backend)
        assert torch.equal(before, after), backend  # the same rows, the same weights: bit for bit


def test_growth_index_refuses_other_grids_and_smaller_tables():
    with pytest.raises(ValueError, match="not .* with a larger table"):
        table_growth_index(_grown().layout, GRID.layout)
    with pytest.raises(ValueError, match="not .* with a larger table"):
        table_growth_index(GRID.layout, replace(_grown(), max_resolution=64).layout)


def test_log2_size_for_rows_finds_the_grown_size():
    assert log2_size_for_rows(GRID, _grown().layout.num_params) == 11
    assert log2_size_for_rows(GRID, GRID.layout.num_params) == 9
    with pytest.raises(ValueError, match="no hash-table size gives 7 rows"):
        log2_size_for_rows(GRID, 7)


def _optimizer(rows: int = 6):
    p = torch.nn.Parameter(torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2))
    opt = ParamOptimizer([ParamGroup("table", p, 0.1, per_row=False)])
    p.grad = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + 1
    opt.step()
    return p, opt


def test_fold_undoes_gather_exactly_and_averages_the_copies():
    p, opt = _optimizer()
    state = opt.adam.state[p]
    before = {"p": p.detach().clone(), **{k: state[k].clone() for k in ("exp_avg", "exp_avg_sq")}}
    index = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0])  # row 5 copied once, row 0 three times
    saved = opt.gather_group("table", index)
    assert torch.equal(p.detach(), before["p"][index]) and torch.equal(
        state["exp_avg"], before["exp_avg"][index]
    )
    opt.fold_group(
        "table", index, saved
    )  # right away: the state before (means of equal copies: up to rounding)
    assert torch.allclose(p.detach(), before["p"], rtol=1e-6, atol=0)
    assert torch.allclose(state["exp_avg_sq"], before["exp_avg_sq"], rtol=1e-6, atol=0)
    saved = opt.gather_group("table", index)
    with torch.no_grad():
        p[6] += 3.0  # a copy of row 0 learnt something: the fold keeps the mean of row 0's three copies
    opt.fold_group("table", index, saved)
    assert torch.allclose(p.detach()[0], before["p"][0] + 1.0, rtol=0, atol=1e-6)
    assert torch.equal(p.detach()[1:], before["p"][1:])
    now = p.detach().clone()
    saved = opt.gather_group("table", torch.tensor([1, 2]))  # rows 0, 3-5 not copied: they keep their values
    opt.fold_group("table", torch.tensor([1, 2]), saved)
    assert torch.equal(p.detach(), now) and p.shape == (6, 2)
    p.grad = torch.ones_like(p)
    opt.step()  # the optimiser still steps the same parameter object
    with pytest.raises(ValueError, match="index of shape"):
        opt.fold_group("table", torch.tensor([0]), saved)


# --- the in-run decision ----------------------------------------------------------------------------------------
CHAIR = CapacityInputs(budget_seconds=1200.0, train_views=100, train_pixels=100 * 200 * 200, device="cpu")
# the chair's settled steps (nerf, one thread, 2-core CPU), as the rule measured them at step 5 969 of a 40-minute
# run: 2^15 at 512 rays, 2^17 at 512 and 2 048 rays (the small table at 2 048: the same slope)
GROWN = StepCost(sizes=(512, 2048), seconds=(0.0270, 0.0704))
SMALL = StepCost(sizes=(512, 2048), seconds=(0.0229, 0.0229 + GROWN.per_unit * 1536))
BUDGET_MINUTES = (2, 5, 10, 20, 30, 40, 60, 120)


@dataclass
class FakeTable:
    """What ``InRunCapacity`` calls on a ``TableTrial``; records the calls."""

    rule: TableRule = NERF_TABLE
    log2_size: int = 15
    calls: list = field(default_factory=list)

    def grow(self) -> None:
        self.calls.append("grow")
        self.log2_size = 17

    def keep(self) -> None:
        self.calls.append("keep")

    def fold(self) -> None:
        self.calls.append("fold")
        self.log2_size = 15


@dataclass
class FakeTrainer:
    """A trainer clock whose step time follows the cost line of its table's current size."""

    table: FakeTable
    budget_seconds: float
    size: int = 512
    step: int = 0
    train_seconds: float = 0.0
    timeline: list = field(default_factory=list)

    def progress(self) -> float:
        return self.train_seconds / self.budget_seconds

    def set_size(self, size: int, final: bool = True) -> None:
        self.size = size

    def run(self, hook: InRunCapacity) -> None:
        hook.before_step(self)
        self.train_seconds += (GROWN if self.table.log2_size == 17 else SMALL).at(self.size)
        self.step += 1
        self.timeline.append((self.table.log2_size, self.size))
        hook.after_step(self, {}, False)


def _decide(minutes: float, *, max_steps: int = 0):
    table = FakeTable()
    inputs = replace(CHAIR, budget_seconds=60.0 * minutes, max_steps=max_steps)
    trainer, reports = FakeTrainer(table, inputs.budget_seconds), []
    hook = InRunCapacity(NERF_RAYS, inputs, start_step=256, apply=trainer.set_size, report=reports.append,
                         table=table)  # type: ignore[arg-type]  # fmt: skip
    while len(reports) < 2:
        trainer.run(hook)
    return table, trainer, reports


def test_times_the_small_table_then_the_grown_one_at_both_batches():
    table, trainer, (tchoice, rays) = _decide(40)
    grown = trainer.timeline.index((17, 512))  # the first step on the grown table
    assert set(trainer.timeline[:grown]) == {(15, 512)} and len(trainer.timeline) == grown + 2 * 16
    assert trainer.timeline[grown:] == [(17, 512)] * 16 + [(17, 2048)] * 16
    assert trainer.timeline[grown - 17] == (15, 512)  # the 16 steps before the growth were timed ...
    assert isinstance(tchoice, TableChoice) and isinstance(rays, CapacityChoice)
    assert tchoice.decided_at_step == grown + 32  # ... then the 32 on the grown table, then the choice
    assert tchoice.seconds_small == pytest.approx(SMALL.at(512)) and tchoice.seconds_grown == pytest.approx(
        GROWN.at(512)
    )
    assert table.calls == ["grow", "keep"] and tchoice.grown and tchoice.value == 17
    assert rays.cost.seconds == pytest.approx((GROWN.at(512), GROWN.at(2048)))  # the rays on the grown table
    assert tchoice.decided_at_step == rays.decided_at_step
    assert tchoice.line().startswith(
        "capacity: scene.grid_log2_size 17 (2^17 entries per level; kept the grown"
    )
    assert json.loads(json.dumps(tchoice.record()))["rule"] == "table_growth"


def test_short_budgets_fold_back_and_choose_the_rays_on_the_small_table():
    table, trainer, (tchoice, rays) = _decide(5)
    assert table.calls == ["grow", "fold"] and not tchoice.grown and tchoice.value == 15
    assert tchoice.expected_steps < tchoice.needed_steps
    slope = (GROWN.seconds[1] - GROWN.seconds[0]) / (2048 - 512)
    assert rays.cost.seconds == pytest.approx((SMALL.at(512), SMALL.at(512) + slope * 1536))
    trainer.run(InRunCapacity(NERF_RAYS, CHAIR, start_step=10**9, apply=print, report=print))  # one more step
    assert trainer.timeline[-1] == (15, rays.value) and "folded the table back" in tchoice.line()


def test_growth_is_monotone_in_the_budget_and_follows_the_steps_it_buys():
    grown = [_decide(m)[2][0].grown for m in BUDGET_MINUTES]
    assert grown == sorted(grown) and not grown[0] and grown[-1], grown  # never grown at 2, grown at 120 min
    by_minutes = dict(zip(BUDGET_MINUTES, grown, strict=True))
    # with these step times the crossover lies between 10 and 20 minutes (the 20-minute run, which measured slower
    # steps at its decision, 0.029 / 0.037 s, kept the grown table by a margin of 7 %)
    assert not by_minutes[10] and by_minutes[20]
    for m in BUDGET_MINUTES:  # the rule itself: grown exactly when the rest buys the steps still needed
        (tchoice, rays) = _decide(m)[2]
        assert tchoice.grown == (tchoice.expected_steps >= tchoice.needed_steps)
        assert tchoice.needed_steps == max(NERF_RAYS.min_steps - tchoice.decided_at_step, 1)
    assert not _decide(40, max_steps=20_000)[2][0].grown  # a step bound below 30 000 never buys the steps


def test_apply_table_start_only_under_a_budget_on_cpu_for_bounded_scenes(data):
    from recon.datasets import load_dataset
    from recon.train.neural_configs import NerfTrainConfig

    dataset, cfg = load_dataset(data), NerfTrainConfig(max_minutes=20.0)
    started, (start,), (rule,) = apply_table_start(cfg, (NERF_TABLE,), dataset, "cpu")
    assert (
        started.scene.grid_log2_size == 15 and rule is NERF_TABLE and start.record()["rule"] == "table_start"
    )
    assert "grown to 2^17 during the run" in start.line()
    assert apply_table_start(replace(cfg, max_minutes=0.0), (NERF_TABLE,), dataset, "cpu")[1:] == ([], [])
    assert apply_table_start(cfg, (NERF_TABLE,), dataset, "cuda:0")[1:] == ([], [])  # CUDA keeps 2^19
    explicit = frozenset({"scene.grid_log2_size"})
    assert apply_table_start(cfg, (NERF_TABLE,), dataset, "cpu", explicit=explicit)[1:] == ([], [])
    forward = replace(cfg, scene=replace(cfg.scene, scene_type="forward"))
    assert apply_table_start(forward, (NERF_TABLE,), dataset, "cpu")[1:] == ([], [])
    assert get_method("nerf").tables == (NERF_TABLE,) and get_method("neus").tables == ()
    root = Path(__file__).resolve().parents[2] / "configs"
    assert (
        NERF_TABLE.cpu[1] == yaml.safe_load((root / "nerf_cpu.yaml").read_text())["scene"]["grid_log2_size"]
    )
    assert NERF_TABLE.cuda == (NerfTrainConfig().scene.grid_log2_size,) * 2 == (19, 19)  # published


# --- a real trainer ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=4, test_views=1, resolution=16
    )


SMALL_RULE = TableRule(field="scene.grid_log2_size", module="field.encoding", cpu=(9, 11), cuda=(9, 11))


def _trainer(data, run_dir):
    from recon.datasets import load_dataset
    from recon.runs import RunDir
    from recon.scenes.nerf import NerfSceneConfig
    from recon.train.neural_configs import NerfTrainConfig
    from recon.train.proposal import NerfStrategyConfig
    from recon.train.trainer import Trainer

    cfg = NerfTrainConfig(data=str(data), steps=4, rays_per_batch=64, final_eval=False, checkpoint_minutes=0.0,
                          scene=NerfSceneConfig(grid_log2_size=9, grid_levels=8, grid_min_resolution=4,
                                                grid_max_resolution=48, occupancy_resolution=16),
                          strategy=NerfStrategyConfig(warmup_steps=1))  # fmt: skip
    method, dataset = get_method("nerf"), load_dataset(data)
    return cfg, method, dataset, Trainer(cfg, method, dataset, RunDir(run_dir), device=torch.device("cpu"))


def test_a_trainer_grows_its_table_exactly_trains_and_resumes_with_it(data, tmp_path):
    from recon.runs import RunDir
    from recon.train.trainer import Trainer, load_scene

    cfg, method, dataset, trainer = _trainer(data, tmp_path / "run")
    trainer.train_step()
    trainer.step += 1
    grid = trainer.scene.field.encoding
    x = _interior(grid.cfg, 512, torch.Generator().manual_seed(1))
    before = grid(x, backend="torch").detach()
    trial = TableTrial(SMALL_RULE, trainer)
    trial.grow()
    assert trial.log2_size == 11 and grid.table.shape[0] == grid.layout.num_params
    assert torch.equal(grid(x, backend="torch").detach(), before)  # the field is unchanged
    moments = trainer.optimizer.adam.state[grid.table]
    assert moments["exp_avg"].shape == grid.table.shape
    trial.keep()
    trainer.train()  # steps 2-4 on the grown table, then the final checkpoint
    resumed = Trainer.from_checkpoint(
        cfg, method, dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    rgrid = resumed.scene.field.encoding
    assert rgrid.cfg.log2_hashmap_size == 11 and torch.equal(rgrid.table.detach(), grid.table.detach())
    assert torch.equal(resumed.optimizer.adam.state[rgrid.table]["exp_avg"], moments["exp_avg"])
    scene, step = load_scene(method, cfg, RunDir(tmp_path / "run"))
    assert step == 4 and scene.field.encoding.layout.num_params == rgrid.layout.num_params
    broken = dict(resumed.scene.state_dict()) | {"field.encoding.table": torch.zeros(7, 2)}
    empty = method.scene_cls.empty(cfg.scene)  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(
        ReconError, match=r"the stored field.encoding.table has 7 rows, which no hash-table size"
    ):
        empty.load_state_dict_resizing(
            broken
        )  # a table no size gives (an edited config.yaml): one clear error


def test_a_trainer_folds_a_grown_table_back_and_goes_on(data, tmp_path):
    _, _, _, trainer = _trainer(data, tmp_path / "run")
    trainer.train_step()
    grid = trainer.scene.field.encoding
    small = grid.table.detach().clone()
    trial = TableTrial(SMALL_RULE, trainer)
    trial.grow()
    trial.fold()  # right away: the table it had (means of equal copies: up to rounding)
    assert trial.log2_size == 9 and torch.allclose(grid.table.detach(), small, rtol=1e-6, atol=0)
    trial.grow()
    trainer.train_step()  # one step on the grown table, then back: a table of the small size that has learnt
    trial.fold()
    assert grid.table.shape == small.shape and not torch.allclose(
        grid.table.detach(), small, rtol=1e-4, atol=0
    )
    trainer.train_step()
    with pytest.raises(RuntimeError, match="was not grown"):
        trial.fold()


def test_cli_nerf_run_starts_small_and_records_the_table_decision(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # 60 steps bound the run; the rule starts at a tenth of them (step 6), times steps 7-54 and cannot buy 30 000
    # steps: the table folds back
    argv = ["nerf", "--data", str(data), "--max-minutes", "10", "--steps", "60", "--run-dir", str(run_dir),
            "--strategy.warmup-steps", "1", "--no-progress", "--threads", "1", "--no-final-eval",
            "--checkpoint-minutes", "0", "--logger", "none", "--scene.render-step-size", "0.25",
            "--scene.occupancy-resolution", "16", "--scene.grid-levels", "8"]  # fmt: skip
    assert train_cli.main(argv) == 0
    err = capsys.readouterr().err
    records = json.loads((run_dir / "capacity.json").read_text())
    assert [r.get("rule") for r in records] == ["footprint", "table_start", "table_growth", None]
    start, decision, rays = records[1:]
    assert start["value"] == 15 and start["high"] == 17 and not decision["grown"] and decision["value"] == 15
    assert decision["decided_at_step"] == rays["decided_at_step"] == 6 + 3 * 16
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["scene"]["grid_log2_size"] == 15
    assert "capacity: scene.grid_log2_size 15 to start" in err and "folded the table back at step 54" in err
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene

    run, method, cfg = open_run_config(run_dir)
    scene, step = load_scene(method, cfg, run)
    assert step == 60 and scene.field.encoding.cfg.log2_hashmap_size == 15
