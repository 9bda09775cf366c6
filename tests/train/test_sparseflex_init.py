"""``recon train sparseflex --init-from RUN_DIR``: the initial band from a (briefly) trained neus run."""

from dataclasses import replace

import pytest
import torch

from recon.cli import train as train_cli
from recon.core.errors import ReconError
from recon.renderers.encoding import HashGridConfig
from recon.runs import RunDir
from recon.scenes.base import ExportOptions
from recon.scenes.sparseflex.field_init import corner_points
from recon.train.methods import get_method
from recon.train.run_io import open_run_config
from recon.train.sparseflex_init import scene_from_run
from recon.train.trainer import Trainer, load_scene

NEUS_TINY = ["--scene.grid-levels", "4", "--scene.grid-log2-size", "12", "--scene.grid-max-resolution", "64",
             "--scene.occupancy-resolution", "16", "--scene.render-step-size", "0.05", "--scene.mesh-resolution",
             "40", "--strategy.warmup-steps", "4", "--rays-per-batch", "128", "--no-progress", "--threads", "1"]  # fmt: skip
R = 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("sfi") / "object", views=6, test_views=1, resolution=24
    )


@pytest.fixture(scope="module")
def neus_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sfi_runs") / "neus"
    argv = [
        "neus",
        "--data",
        str(data),
        "--steps",
        "3",
        "--run-dir",
        str(run_dir),
        "--no-final-eval",
        *NEUS_TINY,
    ]
    assert train_cli.main(argv) == 0
    return run_dir


def _config():
    base = get_method("sparseflex").config_cls()
    scene = replace(base.scene, resolution=R, color_hidden_dim=16,
                    color_grid=HashGridConfig(levels=4, log2_hashmap_size=10, max_resolution=32))  # fmt: skip
    return replace(base, scene=scene, method="sparseflex", threads=1, progress=False, checkpoint_minutes=0.0)


def test_band_covers_the_neus_level_set(data, neus_run):
    from recon.datasets import load_dataset

    dataset = load_dataset(data)
    cfg = _config()
    scene = scene_from_run(cfg.scene, dataset, str(neus_run), generator=torch.Generator())
    run, method, neus_cfg = open_run_config(neus_run)
    neus, _ = load_scene(method, neus_cfg, run)
    # s at the band's corners is the neus SDF in voxel units (clipped): its sign directly
    r, size = scene.grid().resolution, float(scene.box_size)
    dense = corner_points(r, scene.box_center, size)
    n = r + 1
    rows = (scene.grid().corners[:, 0] * n + scene.grid().corners[:, 1]) * n + scene.grid().corners[:, 2]
    with torch.no_grad():
        sdf = neus.field.sdf(dense[rows])
    expected = (sdf * r / size).clamp(-cfg.scene.sdf_clip, cfg.scene.sdf_clip)
    assert torch.allclose(scene.s.detach(), expected, atol=1e-4)
    # every point of the neus zero level set (its marching-cubes export) lies in an active voxel of the band
    level_set = neus.export_mesh(ExportOptions()).vertices
    assert level_set.shape[0] > 100
    unit = (level_set - scene.box_center) / size + 0.5
    voxel = (unit * r).floor().long().clamp(0, r - 1)
    keys = lambda v: (v[:, 0] * n + v[:, 1]) * n + v[:, 2]  # noqa: E731
    assert bool(torch.isin(keys(voxel), keys(scene.voxels)).all())
    assert scene.grid().num_voxels < 0.6 * r**3  # a band around the surface, not the box


def test_trainer_initialises_from_the_run(data, neus_run, tmp_path):
    from recon.datasets import load_dataset

    dataset = load_dataset(data)
    cfg = replace(_config(), init_from=str(neus_run), steps=2, log_every=2)
    method = get_method("sparseflex")
    trainer = Trainer(cfg, method, dataset, RunDir(tmp_path / "run"), device=torch.device("cpu"))
    direct = scene_from_run(cfg.scene, dataset, str(neus_run), generator=torch.Generator())
    assert torch.equal(trainer.scene.voxels, direct.voxels)
    hull = method.scene_cls.from_dataset(cfg.scene, dataset, generator=torch.Generator())
    assert not torch.equal(hull.voxels, direct.voxels)  # not the visual-hull band
    assert trainer.train().step == 2


def test_init_from_errors(data, neus_run, tmp_path, tmp_path_factory):
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_scene

    dataset = load_dataset(data)
    cfg = _config()
    gen = torch.Generator()
    with pytest.raises(ReconError, match="--init-from .*no such run directory"):
        scene_from_run(cfg.scene, dataset, str(tmp_path / "missing"), generator=gen)
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ReconError, match="--init-from .*not a run directory"):
        scene_from_run(cfg.scene, dataset, str(tmp_path / "not_a_run"), generator=gen)
    other = RunDir(tmp_path / "sparseflex_run")
    other.ensure_dirs()
    other.write_config(cfg)
    with pytest.raises(ReconError, match="--init-from .*a 'sparseflex' run; expected a run of nerf or neus"):
        scene_from_run(cfg.scene, dataset, str(other.path), generator=gen)
    elsewhere = load_dataset(write_scene("object", tmp_path_factory.mktemp("sfi2") / "o", views=5, test_views=1,
                                         resolution=24))  # fmt: skip
    with pytest.raises(ReconError, match="--init-from .*not the dataset run"):
        scene_from_run(cfg.scene, elsewhere, str(neus_run), generator=gen)
