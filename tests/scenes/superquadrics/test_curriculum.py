"""Curriculum stages by training fraction, σ conversion, learning-rate multiplier and config defaults (spec 7-8)."""

import ast
import inspect
import re
from dataclasses import FrozenInstanceError, fields

import pytest

from recon.scenes.superquadrics import config as config_module
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.curriculum import lr_multiplier, sigma_ndc_to_px2, stage_at

CFG = SuperquadricsConfig()
TINY = 1e-9


def test_stages_switch_at_the_published_fractions():
    d, c = 750 / 1800, 1500 / 1800
    assert stage_at(0.0, CFG).name == "coarse_decimated"
    assert stage_at(d - TINY, CFG).name == "coarse_decimated"
    assert stage_at(d, CFG).name == "coarse"  # a milestone belongs to the later stage
    assert stage_at(c - TINY, CFG).name == "coarse"
    assert stage_at(c, CFG).name == "fine"
    assert stage_at(1.0, CFG).name == "fine"


def test_stage_contents():
    first, second, fine = stage_at(0.1, CFG), stage_at(0.5, CFG), stage_at(0.9, CFG)
    assert first.decimate_textures and not second.decimate_textures and not fine.decimate_textures
    assert first.coarse and second.coarse and not fine.coarse
    assert first.opacity_noise and second.opacity_noise and not fine.opacity_noise
    assert fine.opaque_only and not second.opaque_only
    assert (first.sigma_ndc, fine.sigma_ndc) == (1e-4, 5e-6)
    assert (second.perceptual_factor, second.coarse_factor, second.tv_factor) == (1.0, 1.0, 1.0)
    assert (fine.perceptual_factor, fine.coarse_factor, fine.tv_factor) == (0.1, 0.0, 0.1)
    assert not stage_at(0.1, SuperquadricsConfig(opacity_noise_std=0.0)).opacity_noise


def test_custom_milestones():
    cfg = SuperquadricsConfig(decimate_until=0.2, coarse_until=0.6, lr_decay_at=0.8)
    assert [stage_at(f, cfg).name for f in (0.19, 0.2, 0.59, 0.6)] == [
        "coarse_decimated",
        "coarse",
        "coarse",
        "fine",
    ]
    no_decimation = SuperquadricsConfig(decimate_until=0.0)
    assert stage_at(0.0, no_decimation).name == "coarse"


def test_learning_rate_multiplier():
    at = 1700 / 1800
    assert lr_multiplier(at - TINY, CFG) == 1.0 and lr_multiplier(at, CFG) == 0.1
    assert stage_at(at - TINY, CFG).lr_multiplier == 1.0
    assert stage_at(0.99, CFG).lr_multiplier == 0.1


def test_sigma_in_pixels():
    # DTU 300x400: (150)^2 * 1e-4 = 2.25 px², (150)^2 * 5e-6 = 0.1125 px² ; non-square uses the shorter side
    assert sigma_ndc_to_px2(1e-4, 300, 400) == pytest.approx(2.25)
    assert stage_at(0.95, CFG).sigma_px2(300, 400) == pytest.approx(0.1125)
    assert sigma_ndc_to_px2(1e-4, 800, 600) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="image size"):
        sigma_ndc_to_px2(1e-4, 0, 10)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stage_at(fraction, CFG)


def test_config_defaults_are_the_spec_values():
    c = CFG
    assert (c.n_blocks, c.icosphere_level, c.texture_size, c.z_far, c.ratio_block_scene, c.scale_min) == (
        10, 1, 256, 10.0, 0.25, 0.2
    )  # fmt: skip
    assert (c.background_level, c.ground_subdivisions, c.decimate_factor, c.faces_per_pixel) == (2, 3, 8, 10)
    assert (c.kill_threshold, c.opaque_threshold, c.opacity_init, c.opacity_noise_std) == (
        0.01,
        0.5,
        0.5,
        1.0,
    )
    assert (c.rgb_weight, c.perceptual_weight, c.parsimony_weight, c.tv_weight, c.overlap_weight) == (
        1.0, 0.1, 0.01, 0.1, 1.0
    )  # fmt: skip
    assert (c.overlap_points, c.overlap_temperature, c.overlap_max_blocks) == (1000, 0.005, 1.95)
    assert (c.lr_geometry, c.lr_texture, c.lr_decay_factor) == (5e-3, 5e-2, 0.1)
    with pytest.raises(FrozenInstanceError):
        c.n_blocks = 3  # type: ignore[misc]


def test_every_config_field_has_a_docstring():
    tree = ast.parse(inspect.getsource(config_module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SuperquadricsConfig")
    documented = set()
    for prev, node in zip(cls.body, cls.body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
        ):
            documented.add(prev.target.id)  # type: ignore[union-attr]
    assert {f.name for f in fields(SuperquadricsConfig)} == documented


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_blocks": 0}, "n_blocks"),
        ({"texture_size": 100}, "decimate_factor"),
        ({"decimate_until": 0.9, "coarse_until": 0.5}, "decimate_until"),
        ({"lr_decay_at": 1.5}, "lr_decay_at"),
        ({"kill_threshold": 0.6}, "kill_threshold"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SuperquadricsConfig(**kwargs)


def test_config_round_trips_through_the_project_config_loader():
    from recon.config import config_from_dict, dump_config

    cfg = SuperquadricsConfig(n_blocks=6, tessellation="uv_sphere", translation_range=(1.0, 0.5, 2.0))
    data = dump_config(cfg)
    assert data["translation_range"] == [1.0, 0.5, 2.0] and data["export_tessellation_level"] is None
    assert config_from_dict(SuperquadricsConfig, data) == cfg


def test_config_is_a_tyro_cli_with_docstring_help(capsys):
    tyro = pytest.importorskip("tyro")
    cfg = tyro.cli(SuperquadricsConfig, args=["--n-blocks", "4", "--translation-range", "1", "2", "3"])
    assert cfg.n_blocks == 4 and cfg.translation_range == (1.0, 2.0, 3.0)
    with pytest.raises(SystemExit):
        tyro.cli(SuperquadricsConfig, args=["--help"])
    # drop the box drawing and line wrapping of the terminal-width dependent layout
    help_text = " ".join(re.sub(r"[^A-Za-z0-9()]+", " ", capsys.readouterr().out).split())
    assert "Number of superquadric blocks N" in help_text
