"""Grid resolutions from the training views' pixel footprint (recon.train.footprint): the published recipes' finest
levels at 800 px, the CPU presets' at 200 px, monotone in the image resolution, recorded, explicit values win."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from recon.cli import train as train_cli
from recon.core import ReconError
from recon.core.camera import Camera
from recon.core.transforms import fibonacci_sphere, look_at
from recon.train.capacity import explicit_fields
from recon.train.footprint import (
    NERF_FINEST,
    NERF_SYNTHETIC_800_PX,
    NEUS_FINEST,
    SPARSEFLEX_COLOR_FINEST,
    FootprintRule,
    apply_footprint,
    choose_footprint,
    pixels_across,
)
from recon.train.methods import get_method
from recon.train.neural_configs import NerfTrainConfig, NeusTrainConfig

BLENDER_FOV = 0.6911112070083618  # camera_angle_x of the NeRF-synthetic scenes
BOX = torch.tensor([[-1.5] * 3, [1.5] * 3])


def ring(width: int, distance: float = 4.0311, views: int = 12, fov: float = BLENDER_FOV) -> Camera:
    """``views`` cameras on a sphere of radius ``distance`` looking at the origin, NeRF-synthetic intrinsics."""
    focal = 0.5 * width / math.tan(0.5 * fov)
    eyes = fibonacci_sphere(views, dtype=torch.float64) * distance
    T = torch.stack([look_at(e, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0],
                                                                                 dtype=torch.float64)) for e in eyes])  # fmt: skip
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, width / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return Camera(T_cam_world=T.float(), K=K.expand(views, 3, 3).float(), width=width, height=width)


def test_pixels_across_is_side_times_focal_over_distance():
    across = pixels_across(ring(800), BOX)
    assert across == pytest.approx(NERF_SYNTHETIC_800_PX, rel=1e-4)
    assert pixels_across(ring(200), BOX) == pytest.approx(NERF_SYNTHETIC_800_PX / 4, rel=1e-4)
    assert pixels_across(ring(200, distance=8.0622), BOX) == pytest.approx(
        NERF_SYNTHETIC_800_PX / 8, rel=1e-4
    )
    # the cube around the box: the largest extent counts, the box centre is where distances are measured
    flat = torch.tensor([[9.0, 9.0, 9.5], [12.0, 11.0, 10.5]])
    shifted = ring(200)
    shifted = replace(shifted, T_cam_world=shifted.T_cam_world @ torch.tensor(
        [[1.0, 0, 0, -10.5], [0, 1.0, 0, -10.0], [0, 0, 1.0, -10.0], [0, 0, 0, 1.0]]))  # fmt: skip
    assert pixels_across(shifted, flat) == pytest.approx(NERF_SYNTHETIC_800_PX / 4, rel=1e-4)


def test_published_values_at_800_px_and_the_cpu_presets_at_200_px():
    root = Path(__file__).resolve().parents[2] / "configs"
    for rule, cls, preset in (
        (NERF_FINEST, NerfTrainConfig, "nerf_cpu"),
        (NEUS_FINEST, NeusTrainConfig, "neus_cpu"),
    ):
        published = cls().scene.grid_max_resolution
        cpu = yaml.safe_load((root / f"{preset}.yaml").read_text())["scene"]["grid_max_resolution"]
        assert choose_footprint(rule, pixels_across(ring(800), BOX)).value == published == rule.high
        choice = choose_footprint(rule, pixels_across(ring(200), BOX))
        assert choice.value == cpu and choice.limited_by == "footprint" and choice.field == rule.field
        assert get_method(cls.__name__.removesuffix("TrainConfig").lower()).footprint == (rule,)
    sparseflex = get_method("sparseflex")
    cpu = yaml.safe_load((root / "sparseflex_cpu.yaml").read_text())["scene"]["color_grid"]["max_resolution"]
    assert sparseflex.footprint == (SPARSEFLEX_COLOR_FINEST,)
    assert choose_footprint(SPARSEFLEX_COLOR_FINEST, pixels_across(ring(200), BOX)).value == cpu
    published = sparseflex.config_cls().scene.color_grid.max_resolution
    assert choose_footprint(SPARSEFLEX_COLOR_FINEST, pixels_across(ring(800), BOX)).value == published


def test_monotone_in_resolution_and_distance_within_bounds():
    for rule in (NERF_FINEST, NEUS_FINEST):
        by_width = [choose_footprint(rule, pixels_across(ring(w), BOX)).value for w in (32, 64, 100, 128, 200,
                                                                                      256, 400, 800, 1600)]  # fmt: skip
        assert by_width == sorted(by_width) and by_width[0] == rule.low and by_width[-1] == rule.high, (
            by_width
        )
        assert all(v % rule.quantum == 0 for v in by_width)
        by_distance = [
            choose_footprint(rule, pixels_across(ring(400, d), BOX)).value for d in (3.0, 4.0, 6.0, 9.0)
        ]
        assert by_distance == sorted(by_distance, reverse=True), by_distance
    assert choose_footprint(NERF_FINEST, 10.0).limited_by == "low"
    assert choose_footprint(NERF_FINEST, 5000.0).limited_by == "high"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="pixels across"):
        choose_footprint(NERF_FINEST, float("nan"))
    with pytest.raises(ValueError, match="FootprintRule"):
        FootprintRule("scene.grid_max_resolution", "cells", cells_per_pixel=0.0, quantum=16, low=1, high=2)
    inside = ring(200, distance=0.0, views=1)
    with pytest.raises(ValueError, match="centre of the scene box"):
        pixels_across(inside, BOX)
    budget = replace(NerfTrainConfig(), max_minutes=20.0)
    with pytest.raises(ReconError, match=r"dataset /data/scene: .* set --scene.grid-max-resolution"):
        apply_footprint(budget, (NERF_FINEST,), _Dataset(inside))


class _Dataset:
    """What ``apply_footprint`` reads of a dataset."""

    def __init__(self, cameras: Camera) -> None:
        self._cameras, self.scene_box, self.points3d, self.root = cameras, BOX, None, Path("/data/scene")

    def cameras(self, split: str) -> Camera:
        assert split == "train"
        return self._cameras


def test_applies_under_a_budget_to_bounded_scenes_and_not_to_explicit_fields():
    data = _Dataset(ring(400))
    budget = replace(NerfTrainConfig(), max_minutes=20.0)
    cfg, (choice,) = apply_footprint(budget, (NERF_FINEST,), data)
    assert cfg.scene.grid_max_resolution == choice.value == 2048 and choice.pixels_across == pytest.approx(
        413.4, 1e-3
    )
    assert json.loads(json.dumps(choice.record()))["rule"] == "footprint"
    assert choice.line().startswith(
        "capacity: scene.grid_max_resolution 2,048 cells (the training views span 413 px"
    )
    # no budget, an explicit value, or a contracted (forward / unbounded) nerf scene: the preset's value stays
    assert apply_footprint(NerfTrainConfig(), (NERF_FINEST,), data) == (NerfTrainConfig(), [])
    assert apply_footprint(budget, (NERF_FINEST,), data, explicit=frozenset({NERF_FINEST.field})) == (
        budget,
        [],
    )
    forward = replace(budget, scene=replace(budget.scene, scene_type="forward"))
    assert apply_footprint(forward, (NERF_FINEST,), data) == (forward, [])
    neus = replace(NeusTrainConfig(), max_minutes=20.0)
    assert apply_footprint(neus, (NEUS_FINEST,), data)[0].scene.grid_max_resolution == 1024
    sparseflex = replace(get_method("sparseflex").config_cls(), max_minutes=20.0)  # a nested field
    colour = apply_footprint(sparseflex, (SPARSEFLEX_COLOR_FINEST,), data)[0].scene.color_grid
    assert colour.max_resolution == 1024 and colour.levels == sparseflex.scene.color_grid.levels
    # a flag (hyphens) or a config file's key makes a field explicit
    nested = explicit_fields((SPARSEFLEX_COLOR_FINEST,), ["--scene.color-grid.max-resolution", "300"], [])
    assert nested == {SPARSEFLEX_COLOR_FINEST.field}
    assert explicit_fields((NERF_FINEST,), [], [{"scene": {"grid_max_resolution": 9}}]) == {NERF_FINEST.field}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=4, test_views=1, resolution=24
    )


TINY = ["--steps", "2", "--no-progress", "--threads", "1", "--no-final-eval", "--checkpoint-minutes", "0",
        "--logger", "none", "--scene.render-step-size", "0.25", "--scene.grid-log2-size", "12",
        "--scene.occupancy-resolution", "16", "--rays-per-batch", "64"]  # fmt: skip


@pytest.mark.parametrize("method", ["nerf", "neus"])
def test_cli_run_records_the_finest_level_and_a_flag_wins(method, data, tmp_path, capsys):
    from recon.datasets import load_dataset

    rule = get_method(method).footprint[0]
    expected = choose_footprint(
        rule, pixels_across(load_dataset(data).cameras("train"), load_dataset(data).scene_box)
    )
    run = tmp_path / "run"
    assert (
        train_cli.main([method, "--data", str(data), "--max-minutes", "5", "--run-dir", str(run), *TINY]) == 0
    )
    records = json.loads((run / "capacity.json").read_text())
    (record,) = [r for r in records if r.get("rule") == "footprint"]
    assert record["value"] == expected.value and record["field"] == "scene.grid_max_resolution"
    assert yaml.safe_load((run / "config.yaml").read_text())["scene"]["grid_max_resolution"] == expected.value
    assert f"capacity: scene.grid_max_resolution {expected.value:,} cells" in capsys.readouterr().err
    explicit = tmp_path / "explicit"
    argv = [method, "--data", str(data), "--max-minutes", "5", "--run-dir", str(explicit), *TINY,
            "--scene.grid-max-resolution", "300"]  # fmt: skip
    assert train_cli.main(argv) == 0
    assert yaml.safe_load((explicit / "config.yaml").read_text())["scene"]["grid_max_resolution"] == 300
    assert not (explicit / "capacity.json").exists()  # no rule applied (the rays per step are explicit too)
