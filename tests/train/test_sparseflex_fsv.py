"""Crop frusta (FSV) in training: each step renders a window of its view and extracts only the voxels that reach
it; the per-step voxel count stays at the visibility target while the rendered image is unchanged."""

import math
from dataclasses import replace

import pytest
import torch

from recon.renderers.encoding import HashGridConfig
from recon.runs import RunDir
from recon.scenes.base import RenderOptions
from recon.train.methods import get_method
from recon.train.trainer import Trainer

R = 24
VISIBILITY = 0.5  # at R = 24 the face-reach margin (4 voxels) alone puts ~15% of the band in a thin crop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_scene

    folder = tmp_path_factory.mktemp("sfs_fsv") / "object"
    return load_dataset(write_scene("object", folder, resolution=48, views=6, test_views=1))


def _trainer(dataset, tmp_path, **strategy) -> Trainer:
    method = get_method("sparseflex")
    base = method.config_cls()
    scene = replace(base.scene, resolution=R, hull_tolerance=2, color_hidden_dim=8,
                    color_grid=HashGridConfig(levels=2, log2_hashmap_size=8, max_resolution=16))  # fmt: skip
    strategy_cfg = replace(base.strategy, subdivide_fractions=(), **strategy)
    cfg = replace(base, steps=6, scene=scene, strategy=strategy_cfg, threads=1, checkpoint_minutes=0.0,
                  progress=False, method="sparseflex")  # fmt: skip
    return Trainer(cfg, method, dataset, RunDir(tmp_path / "run"), device=torch.device("cpu"))


def test_training_steps_render_crops_with_bounded_voxels(dataset, tmp_path):
    trainer = _trainer(dataset, tmp_path, crop_from_resolution=R, crop_visibility=VISIBILITY, crop_min_size=4)
    scene, sizes, peak = trainer.scene, [], 0
    render = scene.render

    def recording_render(camera, options, **kw):
        sizes.append((camera.width, camera.height))
        return render(camera, options, **kw)

    scene.render = recording_render
    full = (dataset.camera("train", 0).width, dataset.camera("train", 0).height)
    for _ in range(5):
        total = scene.grid().num_voxels
        terms = trainer.train_step()
        trainer.step += 1
        assert torch.isfinite(terms["loss"])
        assert 0 < scene.rendered_voxels <= math.ceil(VISIBILITY * total), (scene.rendered_voxels, total)
        assert sizes[-1][0] < full[0] and sizes[-1][1] < full[1]  # a crop, of the image's aspect
        peak = max(peak, scene.rendered_voxels)
    # the strategy records the per-step peak (checkpointed with its state)
    assert trainer.strategy.peak_rendered_voxels == peak
    assert int(trainer.strategy.state_tensors()["peak_rendered_voxels"]) == peak


def test_rows_outside_the_crop_do_not_move(dataset, tmp_path):
    """A crop step leaves the corner and voxel rows it did not render unchanged (values and Adam moments)."""
    trainer = _trainer(dataset, tmp_path, crop_from_resolution=R, crop_visibility=VISIBILITY, crop_min_size=4,
                       band_every_fraction=1.0)  # fmt: skip
    scene = trainer.scene
    trainer.train_step()  # every row gets moments (the sign-flip and weight terms reach all rows)
    trainer.step += 1
    before = (scene.s.detach().clone(), scene.weights.detach().clone())
    moments = trainer.optimizer.adam.state[scene.s]["exp_avg"].clone()
    trainer.train_step()
    assert scene.rendered_rows is not None
    corner_rows, voxel_rows = scene.rendered_rows
    held_c = torch.ones(scene.s.shape[0], dtype=torch.bool)
    held_c[corner_rows] = False
    held_v = torch.ones(scene.weights.shape[0], dtype=torch.bool)
    held_v[voxel_rows] = False
    assert held_c.any() and held_v.any()
    assert torch.equal(scene.s.detach()[held_c], before[0][held_c])
    assert torch.equal(scene.weights.detach()[held_v], before[1][held_v])
    assert torch.equal(trainer.optimizer.adam.state[scene.s]["exp_avg"][held_c], moments[held_c])
    assert not torch.equal(scene.s.detach()[~held_c], before[0][~held_c])  # rendered rows are trained


def test_the_training_crop_renders_what_the_whole_band_renders(dataset, tmp_path):
    """The strategy's crop + the scene's culling: a superset of the voxels whose surface is seen in the crop."""
    trainer = _trainer(dataset, tmp_path, crop_from_resolution=R, crop_visibility=VISIBILITY, crop_min_size=4)
    scene = trainer.scene
    gen = torch.Generator().manual_seed(0)
    for view in range(3):
        camera = dataset.camera("train", view)
        window = trainer.strategy.view_crop(scene, camera, gen)
        assert window is not None
        crop = window.camera(camera)
        outs = []
        for culling in (True, False):
            scene.config = replace(scene.config, frustum_culling=culling)
            with torch.no_grad():
                outs.append((scene.render(crop, RenderOptions(backend="torch")), scene.rendered_voxels))
        (culled, n_culled), (whole, n_whole) = outs
        assert n_culled <= math.ceil(VISIBILITY * n_whole) and float(whole.alpha.max()) > 0.5
        torch.testing.assert_close(culled.alpha, whole.alpha, atol=1e-5, rtol=0)
        torch.testing.assert_close(culled.depth, whole.depth, atol=1e-5, rtol=0)


def test_no_crops_below_the_resolution(dataset, tmp_path):
    trainer = _trainer(dataset, tmp_path, crop_from_resolution=2 * R)
    assert trainer.strategy.view_crop(trainer.scene, dataset.camera("train", 0), torch.Generator()) is None
    trainer = _trainer(dataset, tmp_path, crop_from_resolution=0)
    assert trainer.strategy.view_crop(trainer.scene, dataset.camera("train", 0), torch.Generator()) is None
