"""Capacity rules (recon.train.capacity): monotone in the budget, the pixels and the step time; clamps; explicit
values win; the choice is recorded; a short CLI run with --max-minutes uses it."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from recon.cli import train as train_cli
from recon.train.capacity import (
    TRIANGLE_CAP,
    Bounds,
    CapacityInputs,
    StepCost,
    apply_capacity,
    choose,
    explicit_fields,
    get_field,
    set_field,
)
from recon.train.config import TrianglesTrainConfig
from recon.train.methods import get_method
from recon.train.triangles_mcmc import TriangleMCMCConfig

# Step times measured by the calibration on the loaded 2-core CPU for the 200x200, 100-view chair (one thread):
# 0.038 s at 2 500 and 0.105 s at 10 000 triangles.
CHAIR_COST = StepCost(sizes=(2500, 10_000), seconds=(0.038, 0.105))
CHAIR = CapacityInputs(budget_seconds=1200.0, train_views=100, train_pixels=100 * 200 * 200, device="cpu")
BUDGET_MINUTES = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 600)


def _cap(inputs=CHAIR, cost=CHAIR_COST, rule=TRIANGLE_CAP) -> int:
    return choose(rule, inputs, cost).value


def _at(minutes: float, **changes) -> CapacityInputs:
    return replace(CHAIR, budget_seconds=60.0 * minutes, **changes)


def _slower(cost: StepCost, factor: float) -> StepCost:
    return replace(cost, seconds=tuple(factor * s for s in cost.seconds))


def test_monotone_in_budget_small_at_2_and_larger_at_60_minutes():
    caps = [_cap(_at(m)) for m in BUDGET_MINUTES]
    assert caps == sorted(caps), caps
    assert _cap(_at(2)) < _cap(_at(20)) < _cap(_at(60)), caps


def test_reproduces_the_preset_cap_at_20_minutes_on_this_cpu():
    # The preset's cap of 10 000 triangles is known to work on this scene and machine at 20 minutes.
    assert 8000 <= _cap(_at(20)) <= 12_000


@pytest.mark.parametrize("minutes", [5, 20, 60])
def test_non_increasing_in_training_pixels(minutes):
    caps = [_cap(_at(minutes, train_views=v, train_pixels=v * 40_000)) for v in (25, 50, 100, 200, 400)]
    assert caps == sorted(caps, reverse=True), caps
    assert caps[0] > caps[-1]  # more views need more steps: a smaller model fits the budget


@pytest.mark.parametrize("minutes", [2, 20, 60])
def test_non_increasing_in_step_time(minutes):
    caps = [_cap(_at(minutes), _slower(CHAIR_COST, f)) for f in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert caps == sorted(caps, reverse=True), caps


def test_clamps_and_cuda_bounds():
    cpu = TRIANGLE_CAP.cpu
    assert _cap(_at(0.1)) == cpu.low  # nothing feasible: the smallest model
    assert _cap(_at(10_000)) == cpu.high
    # On CUDA the largest size is the published cap, reached with a GPU-like step time.
    gpu_cost = StepCost(sizes=(100_000, 1_000_000), seconds=(0.004, 0.012))
    gpu = _at(30, device="cuda:0")
    assert TRIANGLE_CAP.cuda.high == TriangleMCMCConfig().cap
    assert _cap(gpu, gpu_cost) == TriangleMCMCConfig().cap
    assert choose(TRIANGLE_CAP, _at(0.1, device="cuda"), gpu_cost).limited_by == "low"


def test_step_bound_limits_the_steps_the_budget_buys():
    # An explicit --steps below the required passes leaves nothing feasible.
    assert _cap(_at(60, max_steps=500)) == TRIANGLE_CAP.cpu.low
    assert _cap(_at(60, max_steps=10**9)) == _cap(_at(60))


# A rule counting rays per step (per="ray"): a pass over the pixels takes N_px / s steps.
RAYS = replace(TRIANGLE_CAP, field="rays_per_batch", unit="rays per step", per="ray", min_passes=1.0,
               min_steps=2000, quantum=64, cpu=Bounds(low=128, high=4096, calibrate=(256, 1024)), linked=())  # fmt: skip
RAY_COST = StepCost(sizes=(256, 1024), seconds=(0.05, 0.12))


def test_ray_rule_monotone_in_budget_pixels_and_step_time():
    caps = [_cap(_at(m), RAY_COST, RAYS) for m in BUDGET_MINUTES]
    assert caps == sorted(caps) and caps[0] < caps[-1], caps
    by_pixels = [_cap(_at(20, train_pixels=p), RAY_COST, RAYS) for p in (10**5, 10**6, 10**7, 10**8)]
    assert by_pixels == sorted(by_pixels, reverse=True) and by_pixels[0] > by_pixels[-1], by_pixels
    by_speed = [_cap(_at(20), _slower(RAY_COST, f), RAYS) for f in (0.5, 1.0, 2.0, 4.0)]
    assert by_speed == sorted(by_speed, reverse=True) and by_speed[0] > by_speed[-1], by_speed
    # feasible sizes buy enough steps for P passes over the pixels
    choice = choose(RAYS, _at(10), RAY_COST)
    assert choice.limited_by == "budget"
    assert choice.expected_steps * choice.value >= RAYS.min_passes * CHAIR.train_pixels


def test_choice_reports_its_inputs():
    choice = choose(TRIANGLE_CAP, CHAIR, CHAIR_COST)
    assert choice.limited_by == "budget"
    # The steps it expects cover the required passes over the 100 views.
    assert choice.expected_steps >= TRIANGLE_CAP.min_passes * CHAIR.train_views
    line = choice.line()
    assert line.startswith(
        f"capacity: strategy.cap {choice.value:,} triangles (budget 20 min, 0.105 s/step at 10k"
    )
    assert "4.0 Mpx" in line
    record = json.loads(json.dumps(choice.record()))
    assert record["value"] == choice.value
    assert record["inputs"]["train_pixels"] == CHAIR.train_pixels
    assert record["cost"]["seconds"] == [0.038, 0.105]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="budget_seconds"):
        CapacityInputs(budget_seconds=0.0, train_views=1, train_pixels=1, device="cpu")
    with pytest.raises(ValueError, match="train_views"):
        CapacityInputs(budget_seconds=1.0, train_views=0, train_pixels=1, device="cpu")
    with pytest.raises(ValueError, match="strategy.nope"):
        get_field(TrianglesTrainConfig(), "strategy.nope")


def test_set_field_on_nested_frozen_configs():
    cfg = set_field(TrianglesTrainConfig(), "strategy.cap", 1234)
    assert cfg.strategy.cap == 1234 and get_field(cfg, "strategy.cap") == 1234
    assert set_field(cfg, "rays_per_batch", 7).rays_per_batch == 7


def test_explicit_fields_from_flags_and_files():
    rules = (TRIANGLE_CAP,)
    assert explicit_fields(rules, ["--strategy.cap", "9000"], []) == {"strategy.cap"}
    assert explicit_fields(rules, ["--strategy.cap=9000"], []) == {"strategy.cap"}
    assert explicit_fields(rules, ["--scene.random-init-points", "9"], []) == {"scene.random_init_points"}
    assert explicit_fields(rules, ["--steps", "9"], [{"scene": {"sh_degree": 1}}]) == frozenset()
    assert explicit_fields(rules, [], [{"strategy": {"cap": 5}}]) == {"strategy.cap"}
    assert explicit_fields(rules, ["--strategy.min-steps", "5"], []) == {
        "strategy.min_steps"
    }  # the in-run rule's
    assert explicit_fields(rules, ["--strategy.growth-floor", "5"], []) == {"strategy.growth_floor"}


class _Dataset:
    """What apply_capacity reads of a dataset: the training split and its camera size."""

    def __init__(self, views: int, size: int) -> None:
        self.splits = {"train": list(range(views))}
        self._size = size

    def cameras(self, split):
        from types import SimpleNamespace

        return SimpleNamespace(width=self._size, height=self._size)


def _model_cost(cfg) -> float:
    return 0.015 + 9e-6 * cfg.strategy.cap  # seconds per step of a cost model: the chair's


def test_apply_capacity_sets_the_cap_and_lowers_the_initial_count():
    method, dataset = get_method("triangles"), _Dataset(100, 200)
    base = TrianglesTrainConfig(method="triangles", steps=0, max_minutes=2.0)
    measured = []
    cfg, choices = apply_capacity(
        base, method, dataset, "cpu", measure=lambda c: measured.append(c) or _model_cost(c)
    )
    # calibration configs: the size in the cap and the initial count, a cheaper visual hull, nothing else
    assert [(c.strategy.cap, c.scene.random_init_points, c.scene.hull_resolution) for c in measured] == [
        (2500, 2500, 32),
        (10_000, 10_000, 32),
    ]
    assert replace(measured[0], strategy=base.strategy, scene=base.scene) == base
    assert [c.field for c in choices] == ["strategy.cap"]
    assert cfg.strategy.cap == choices[0].value
    assert choices[0].cost.sizes == TRIANGLE_CAP.cpu.calibrate
    assert cfg.scene.random_init_points <= 0.8 * cfg.strategy.cap + 1 < base.scene.random_init_points
    # the in-run growth rule gets the steps the schedules need (110 passes over 100 views), at most what the
    # budget buys at the chosen cap (a 2-minute budget cannot buy them at any size: the low bound's steps)
    assert cfg.strategy.min_steps == min(11_000, choices[0].expected_steps) > 0
    long, (long_choice,) = apply_capacity(
        replace(base, max_minutes=60.0), method, dataset, "cpu", measure=_model_cost
    )
    assert long.strategy.min_steps == 11_000 <= long_choice.expected_steps
    assert base.strategy.min_steps == 0  # off unless the rule sets it
    # ... and a floor: the device's low bound, never held below
    assert cfg.strategy.growth_floor == long.strategy.growth_floor == TRIANGLE_CAP.cpu.low
    assert base.strategy.growth_floor == 0
    on_gpu, _ = apply_capacity(base, method, dataset, "cuda:0", measure=_model_cost)
    assert on_gpu.strategy.growth_floor == TRIANGLE_CAP.cuda.low
    # explicit values win: the cap, and the initial count
    explicit = frozenset({"strategy.cap", "scene.random_init_points", "scene.max_init_points"})
    kept, none = apply_capacity(base, method, dataset, "cpu", explicit=explicit, measure=_model_cost)
    own_steps = frozenset({"strategy.min_steps", "strategy.growth_floor"})
    mine, _ = apply_capacity(replace(base, strategy=replace(base.strategy, min_steps=7, growth_floor=9)), method,
                             dataset, "cpu", explicit=own_steps, measure=_model_cost)  # fmt: skip
    assert (mine.strategy.min_steps, mine.strategy.growth_floor) == (7, 9)
    assert kept == base and none == []
    only_cap = frozenset({"scene.random_init_points"})
    cfg2, _ = apply_capacity(base, method, dataset, "cpu", explicit=only_cap, measure=_model_cost)
    assert cfg2.scene.random_init_points == base.scene.random_init_points
    # no time budget (--steps N alone): today's behaviour
    steps_only = replace(base, steps=100, max_minutes=0.0)
    assert apply_capacity(steps_only, method, dataset, "cpu", measure=_model_cost) == (steps_only, [])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=6, test_views=2, resolution=24
    )


TINY = ["--scene.hull-resolution", "24", "--no-progress", "--threads", "1", "--no-final-eval",
        "--checkpoint-minutes", "0", "--logger", "none"]  # fmt: skip


def test_cli_run_with_max_minutes_uses_and_records_the_rule(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["triangles", "--data", str(data), "--max-minutes", "0.01", "--run-dir", str(run_dir), *TINY]
    assert train_cli.main(argv) == 0
    err = capsys.readouterr().err
    (record,) = json.loads((run_dir / "capacity.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["strategy"]["cap"] == record["value"]
    needed = min(110 * 6, record["expected_steps"])  # the in-run growth rule's target
    assert config["strategy"]["min_steps"] == needed
    assert (
        config["strategy"]["growth_floor"] == 5000 and config["strategy"]["limit_growth"] is True
    )  # CPU preset
    assert record["field"] == "strategy.cap" and record["inputs"]["train_views"] == 6
    assert record["inputs"]["train_pixels"] == 6 * 24 * 24 and record["inputs"]["budget_seconds"] == 0.6
    assert all(s > 0 for s in record["cost"]["seconds"])
    assert f"capacity: strategy.cap {record['value']:,} triangles (budget 0.01 min" in err


def test_cli_explicit_cap_and_steps_only_keep_the_config(data, tmp_path, capsys):
    explicit = tmp_path / "explicit"
    config_file = tmp_path / "cap.yaml"  # a config file's value wins like a flag's
    config_file.write_text("strategy:\n  cap: 321\n")
    argv = ["triangles", "--data", str(data), "--max-minutes", "0.005", "--load-config", str(config_file),
            "--scene.random-init-points", "100", "--scene.max-init-points", "100", "--run-dir", str(explicit),
            *TINY]  # fmt: skip
    assert train_cli.main(argv) == 0
    steps_only = tmp_path / "steps"
    argv = ["triangles", "--data", str(data), "--steps", "2", "--scene.random-init-points", "100",
            "--scene.max-init-points", "100", "--run-dir", str(steps_only), *TINY]  # fmt: skip
    assert train_cli.main(argv) == 0
    assert "capacity:" not in capsys.readouterr().err
    assert yaml.safe_load((explicit / "config.yaml").read_text())["strategy"]["cap"] == 321
    assert not (explicit / "capacity.json").exists() and not (steps_only / "capacity.json").exists()
    preset_cap = get_method("triangles").config_cls().strategy.cap
    stored = yaml.safe_load((steps_only / "config.yaml").read_text())["strategy"]["cap"]
    assert stored in (preset_cap, 10_000)  # the preset's value (published on CUDA, the CPU preset's on CPU)
