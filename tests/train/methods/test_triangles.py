"""``recon train triangles`` on real-capture-like datasets: SfM seeds + dome, per-image intrinsics, the settings the
scene type picks (``adapt_to_dataset``) and their record in the run. Each test writes a tiny COLMAP text model."""

import math
from dataclasses import replace

import pytest
import torch
import yaml

from recon.cli import train as train_cli
from recon.core import Camera
from recon.datasets import load_dataset
from recon.scenes.base import RenderOptions
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.config import TrianglesTrainConfig
from recon.train.data import TrainViews
from recon.train.methods.triangles import L2_EXTENT, adapt_to_dataset, camera_extent
from tests.tolerances import assert_close, tol
from tests.train.methods.helpers import INTRINSICS, H, W, write_colmap
from tests.typecheck import assert_rejected


def test_each_view_renders_with_its_own_intrinsics(tmp_path):
    ds = load_dataset(write_colmap(tmp_path / "d"))
    views = TrainViews(ds)
    scene = TriangleSplatScene.from_dataset(TriangleSceneConfig(sh_degree=0), ds, generator=torch.Generator())
    # train views 0 and 1 are images 1 and 2: cameras 2 and 1 of the model
    camera, _ = views.views([0, 1])
    options = RenderOptions(background=torch.zeros(3), backend="torch", depth=False)
    batch = scene.render(camera, options).rgb
    for c, (fx, fy, cx, cy) in enumerate([INTRINSICS[1], INTRINSICS[0]]):
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        own = Camera(camera.T_cam_world[c : c + 1], K[None], W, H)
        assert_close(camera.K[c], K, **tol("loader", torch.float32))
        assert_close(batch[c], scene.render(own, options).rgb[0], **tol("splat_forward", torch.float32))
    # the two intrinsics differ enough to change the image: a shared K would have failed above
    swapped = Camera(camera.T_cam_world[:1], camera.K[1:2], W, H)
    assert float((scene.render(swapped, options).rgb[0] - batch[0]).detach().abs().max()) > 0.05


def test_sfm_seed_points_plus_dome(tmp_path):
    ds = load_dataset(write_colmap(tmp_path / "d", points=40))
    scene = TriangleSplatScene.from_dataset(TriangleSceneConfig(), ds, generator=torch.Generator())
    assert scene.init_source == "sfm"
    assert scene.num_primitives() == 40 + math.floor(0.05 * 40)  # spec §9.1: floor(0.05 N) dome points
    no_dome = TriangleSplatScene.from_dataset(
        TriangleSceneConfig(dome=False), ds, generator=torch.Generator()
    )
    assert no_dome.num_primitives() == 40


@pytest.mark.parametrize(
    ("kind", "far", "scale", "capture", "l2"),
    [
        ("forward", 0, 1.0, "outdoor", False),  # forward-facing
        ("orbit", 0, 1.0, "object", False),  # bounded: every point inside the camera ring
        ("orbit", 20, 1.0, "outdoor", False),  # unbounded: a third of the points on far walls
        ("forward", 0, 2000.0, "outdoor", True),  # camera extent > 300: L2
    ],
)
def test_capture_follows_scene_type_and_extent(tmp_path, kind, far, scale, capture, l2):
    ds = load_dataset(write_colmap(tmp_path / "d", kind=kind, scale=scale, far_points=far))
    assert (camera_extent(ds) > L2_EXTENT) == l2
    cfg, note = adapt_to_dataset(TrianglesTrainConfig(), ds)
    assert cfg.scene.capture == capture and cfg.loss.l2 == l2
    assert cfg.strategy.outdoor == (capture == "outdoor")
    assert capture in note and ("L2" if l2 else "L1") in note
    assert ("scene type unbounded" in note) == (far > 0)
    assert adapt_to_dataset(cfg, ds)[0] == cfg  # idempotent: a resumed run's resolved config is kept


def test_capture_override_and_explicit_flags_are_kept(tmp_path):
    ds = load_dataset(write_colmap(tmp_path / "d", kind="forward"))
    base = TrianglesTrainConfig()
    forced = adapt_to_dataset(replace(base, scene=replace(base.scene, capture="object")), ds)[0]
    assert forced.scene.capture == "object" and not forced.strategy.outdoor and not forced.loss.l2
    explicit = replace(base, scene=replace(base.scene, capture="object"), loss=replace(base.loss, l2=True))
    assert adapt_to_dataset(explicit, ds)[0].loss.l2
    assert_rejected(
        lambda: adapt_to_dataset(replace(base, scene=replace(base.scene, capture="indoors")), ds),
        match="scene.capture",
        argument="capture",
    )


def test_train_cli_records_the_resolved_capture(tmp_path, capsys):
    data = write_colmap(tmp_path / "d", kind="forward", points=30)
    run_dir = tmp_path / "run"
    argv = ["triangles", "--data", str(data), "--steps", "2", "--run-dir", str(run_dir), "--no-final-eval",
            "--no-progress", "--threads", "1", "--backend", "torch", "--logger", "none"]  # fmt: skip
    assert train_cli.main(argv) == 0
    assert (
        "settings from the dataset: triangles capture outdoor (scene type forward" in capsys.readouterr().err
    )
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["scene"]["capture"] == "outdoor" and stored["strategy"]["outdoor"] is True
    assert (
        stored["background"] == "dataset"
    )  # opaque capture: trained over the dataset's background, not forced
