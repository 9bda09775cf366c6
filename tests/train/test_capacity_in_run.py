"""In-run capacity rules (recon.train.capacity_in_run): the fields' rays per step are chosen from the run's own
step times once the occupancy grid has settled; monotone in the budget; recorded; explicit values win."""

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
import yaml

from recon.cli import train as train_cli
from recon.core import ReconError
from recon.train.capacity import NERF_RAYS, NEUS_RAYS, CapacityInputs, StepCost, choose
from recon.train.capacity_in_run import SETTLE_FRACTION, InRunCapacity, settle_steps
from recon.train.methods import get_method
from recon.train.neural_configs import NerfTrainConfig, NeusTrainConfig

# The cow (128 px, 60 views) on the 2-core CPU, nerf, one thread: the step times the rule measured at steps
# 257-288 of a 40-minute run (the fixed part, the grid updates and the optimiser, is ~0.039 s).
COW = CapacityInputs(budget_seconds=1200.0, train_views=60, train_pixels=60 * 128 * 128, device="cpu")
COW_COST = StepCost(sizes=(512, 1024), seconds=(0.0548, 0.0706))
BUDGET_MINUTES = (1, 2, 5, 10, 20, 40, 60, 120)


@dataclass
class FakeTrainer:
    """The clock and step of a trainer whose step time follows a cost line (and the size the hook set)."""

    cost: StepCost
    size: int
    budget_seconds: float = COW.budget_seconds
    finals: list = field(default_factory=list)
    step: int = 0
    train_seconds: float = 0.0

    def progress(self) -> float:
        return self.train_seconds / self.budget_seconds

    def run(self, hook: InRunCapacity, steps: int) -> None:
        for _ in range(steps):
            hook.before_step(self)
            self.train_seconds += self.cost.at(self.size)
            self.step += 1
            hook.after_step(self, {}, False)

    def set_size(self, size: int, final: bool = True) -> None:
        self.size = size
        self.finals.append(final)


def _decide(inputs=COW, cost=COW_COST, rule=NERF_RAYS, start=256) -> tuple[InRunCapacity, FakeTrainer, list]:
    trainer, reports = FakeTrainer(cost, size=rule.cpu.low, budget_seconds=inputs.budget_seconds), []
    hook = InRunCapacity(rule, inputs, start_step=start, apply=trainer.set_size, report=reports.append)
    while not reports:  # the decision comes after a tenth of the budget and 256 steps
        trainer.run(hook, 1)
    assert trainer.progress() >= SETTLE_FRACTION and trainer.step >= start + 2 * hook.window
    return hook, trainer, reports


def test_waits_for_the_grid_then_times_both_sizes_and_decides_once():
    trainer, reports = FakeTrainer(COW_COST, size=512), []
    hook = InRunCapacity(NERF_RAYS, COW, start_step=100, apply=trainer.set_size, report=reports.append, window=4,
                         start_fraction=0.0)  # fmt: skip
    sizes = []
    for _ in range(120):
        trainer.run(hook, 1)
        sizes.append(trainer.size)
    assert sizes[:99] == [512] * 99  # nothing changes before the start step
    small, large = NERF_RAYS.cpu.calibrate
    assert sizes[99:103] == [small] * 4 and sizes[103:107] == [large] * 4  # 4 timed steps at each size ...
    (choice,) = reports  # ... then one decision, applied from the next step on
    assert choice.decided_at_step == 108 and sizes[107:] == [choice.value] * 13
    assert trainer.finals == [False, False, True]  # only the choice is what checkpoints keep
    assert choice.cost.seconds == pytest.approx(
        (COW_COST.at(small), COW_COST.at(large))
    )  # the run's step times
    left = COW.budget_seconds - trainer_seconds_at(108, hook)
    assert choice.inputs.budget_seconds == pytest.approx(left)
    assert choice.field == "rays_per_batch" and choice.line().startswith(
        f"capacity: rays_per_batch {choice.value:,} rays (at step 108, budget left "
    )


def test_waits_for_a_tenth_of_the_budget_too():
    trainer, reports = FakeTrainer(COW_COST, size=512, budget_seconds=600.0), []
    hook = InRunCapacity(NERF_RAYS, replace(COW, budget_seconds=600.0), start_step=10, apply=trainer.set_size,
                         report=reports.append, window=4)  # fmt: skip
    first = None
    while not reports:
        trainer.run(hook, 1)
        if first is None and hook.measuring is not None:
            first = trainer.step
    assert first == math.ceil(0.1 * 600.0 / COW_COST.at(512))  # the first step at a tenth of the budget
    assert reports[0].decided_at_step == first + 8


def trainer_seconds_at(step: int, hook: InRunCapacity) -> float:
    """Training seconds after ``step`` steps of the timeline of the test above (512 until the second size)."""
    at_512 = step - hook.window
    return at_512 * COW_COST.at(512) + hook.window * COW_COST.at(hook.sizes[1])


def test_monotone_in_budget_preset_at_20_and_larger_at_40_minutes():
    values = [_decide(replace(COW, budget_seconds=60.0 * m))[2][0].value for m in BUDGET_MINUTES]
    assert values == sorted(values), values
    by_minutes = dict(zip(BUDGET_MINUTES, values, strict=True))
    # 30 000 steps: the CPU preset's 512 rays up to 20 minutes on this machine, more rays at 40 and 60
    assert by_minutes[2] == by_minutes[20] == NERF_RAYS.cpu.low == 512
    assert 1024 <= by_minutes[40] <= 1536 < by_minutes[60]
    for m, value in by_minutes.items():
        assert value % NERF_RAYS.quantum == 0 and NERF_RAYS.cpu.low <= value <= NERF_RAYS.cpu.high, (m, value)


def test_non_increasing_in_step_time_and_the_budget_left_buys_the_steps():
    slow = [_decide(replace(COW, budget_seconds=3600.0), replace(COW_COST, seconds=(f * 0.054, f * 0.092)))
            for f in (0.25, 0.5, 1.0, 2.0)]  # fmt: skip
    values = [reports[0].value for _, _, reports in slow]
    assert values == sorted(values, reverse=True) and values[0] > values[-1], values
    for _, _, (choice,) in slow:
        if choice.limited_by == "budget":  # the steps done plus those the rest buys reach S_min
            assert choice.decided_at_step + choice.expected_steps >= NERF_RAYS.min_steps


def test_explicit_step_bound_and_cuda_bounds():
    hook, _, (choice,) = _decide(replace(COW, budget_seconds=3600.0, max_steps=1000))
    assert choice.value == NERF_RAYS.cpu.low and choice.limited_by == "low"  # 1000 steps cannot be 30 000
    gpu = replace(COW, device="cuda:0", budget_seconds=3600.0)
    _, _, (fast,) = _decide(gpu, StepCost(sizes=(1024, 4096), seconds=(0.004, 0.008)))
    assert fast.value == NERF_RAYS.cuda.high


def test_bounds_are_the_cpu_presets_and_the_published_recipes():
    root = Path(__file__).resolve().parents[2] / "configs"
    for rule, cls, preset in (
        (NERF_RAYS, NerfTrainConfig, "nerf_cpu"),
        (NEUS_RAYS, NeusTrainConfig, "neus_cpu"),
    ):
        assert rule.cuda.high == cls().rays_per_batch  # published
        assert rule.cpu.low == yaml.safe_load((root / f"{preset}.yaml").read_text())["rays_per_batch"]
        assert rule.min_steps == 1.5 * cls().steps == 30_000  # 1.5 x the published steps
        assert get_method(cls.__name__.removesuffix("TrainConfig").lower()).capacity == (rule,)
    assert settle_steps(NERF_RAYS, NerfTrainConfig()) == 4 * NerfTrainConfig().strategy.warmup_steps
    with pytest.raises(ValueError, match="in-run rule"):
        InRunCapacity(replace(NERF_RAYS, in_run_after=""), COW, start_step=0, apply=print, report=print)


def test_choice_matches_the_rule_with_the_budget_left():
    hook, trainer, (choice,) = _decide(replace(COW, budget_seconds=2400.0))
    again = choose(replace(NERF_RAYS, min_steps=NERF_RAYS.min_steps - choice.decided_at_step),
                   replace(COW, budget_seconds=choice.inputs.budget_seconds), choice.cost)  # fmt: skip
    assert again.value == choice.value and trainer.size == choice.value


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=4, test_views=1, resolution=16
    )


# warm-up 1 step: the rule starts at step 4, times steps 5-20 at 512 rays and 21-36 at 2048, decides at step 36
# (coarse marching and a small grid: the first steps march the all-occupied grid, 2048 rays of them)
TINY = ["--strategy.warmup-steps", "1", "--no-progress", "--threads", "1", "--no-final-eval",
        "--checkpoint-minutes", "0", "--logger", "none", "--scene.render-step-size", "0.25",
        "--scene.grid-log2-size", "12", "--scene.occupancy-resolution", "16"]  # fmt: skip


def test_cli_nerf_run_decides_records_and_checkpoints_its_rays(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # --steps bounds the run (40 steps, whatever the machine's speed); 40 steps cannot buy 30 000: the low bound
    argv = [
        "nerf",
        "--data",
        str(data),
        "--max-minutes",
        "10",
        "--steps",
        "40",
        "--run-dir",
        str(run_dir),
        *TINY,
    ]
    assert train_cli.main(argv) == 0
    err = capsys.readouterr().err
    finest, record = json.loads(
        (run_dir / "capacity.json").read_text()
    )  # the finest level (footprint), the rays
    assert finest["field"] == "scene.grid_max_resolution" and finest["rule"] == "footprint"
    assert record["field"] == "rays_per_batch" and record["decided_at_step"] == 4 + 2 * 16
    assert record["value"] == 512 and record["limited_by"] == "low"
    assert record["cost"]["sizes"] == list(NERF_RAYS.cpu.calibrate) and all(
        s > 0 for s in record["cost"]["seconds"]
    )
    assert record["inputs"]["train_pixels"] == 4 * 16 * 16 and record["inputs"]["max_steps"] == 40 - 36
    assert "capacity: rays_per_batch 512 rays (at step 36, budget left" in err
    (checkpoint,) = sorted((run_dir / "checkpoints").glob("*.safetensors"))
    from safetensors.torch import load_file

    assert int(load_file(checkpoint)["trainer.rays_per_rank"]) == 512


def test_a_resumed_trainer_goes_on_with_the_checkpointed_rays(data, tmp_path):
    from recon.datasets import load_dataset
    from recon.runs import RunDir
    from recon.scenes.nerf import NerfSceneConfig
    from recon.train.proposal import NerfStrategyConfig
    from recon.train.trainer import Trainer

    method, dataset, cpu = get_method("nerf"), load_dataset(data), torch.device("cpu")
    cfg = NerfTrainConfig(data=str(data), steps=2, rays_per_batch=64, final_eval=False,
                          scene=NerfSceneConfig(grid_log2_size=10, occupancy_resolution=16),
                          strategy=NerfStrategyConfig(warmup_steps=1))  # fmt: skip
    trainer = Trainer(cfg, method, dataset, RunDir(tmp_path / "run"), device=cpu)
    trainer.set_rays_per_batch(96)  # as if the in-run rule had chosen 96 ...
    trainer.set_rays_per_batch(128, False)  # ... and then a stop came while it timed 128
    trainer.train()
    assert trainer.sampler.next().pixels.shape[0] == 128
    resumed = Trainer.from_checkpoint(cfg, method, dataset, RunDir(tmp_path / "run"), device=cpu)
    assert resumed.step == 2 and resumed.sampler.rays_per_batch == 96


def test_cli_explicit_rays_and_steps_only_keep_the_batch(data, tmp_path, capsys):
    explicit, steps_only = tmp_path / "explicit", tmp_path / "steps"
    base = ["nerf", "--data", str(data), *TINY]
    assert train_cli.main([*base, "--max-minutes", "10", "--steps", "40", "--rays-per-batch", "300",
                           "--run-dir", str(explicit)]) == 0  # fmt: skip
    assert train_cli.main([*base, "--steps", "40", "--run-dir", str(steps_only)]) == 0
    assert "capacity: rays_per_batch" not in capsys.readouterr().err
    (finest,) = json.loads((explicit / "capacity.json").read_text())  # the footprint rule alone
    assert finest["field"] == "scene.grid_max_resolution" and not (steps_only / "capacity.json").exists()
    assert yaml.safe_load((explicit / "config.yaml").read_text())["rays_per_batch"] == 300


def test_trainer_on_views_has_no_rays_per_batch():
    from types import SimpleNamespace

    from recon.train.trainer import Trainer

    on_views = SimpleNamespace(sampler=object(), method=SimpleNamespace(name="triangles"), world=1)
    with pytest.raises(ReconError, match="triangles trains on views, not ray batches"):
        Trainer.set_rays_per_batch(on_views, 512)  # pyright: ignore[reportArgumentType]
