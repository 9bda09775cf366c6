"""``recon train superquadrics`` on real-capture-like datasets: the region of interest framed on the subject's SfM
points (``adapt_to_dataset``), its use by the scene and its record in the run. Each test writes a tiny COLMAP text
model."""

from dataclasses import replace

import torch
import yaml

from recon.cli import train as train_cli
from recon.datasets import load_dataset
from recon.scenes.superquadrics.scene import SuperquadricScene
from recon.train.methods.superquadrics import SuperquadricsTrainConfig, adapt_to_dataset
from tests.train.methods.helpers import write_colmap
from tests.typecheck import assert_rejected


def test_roi_from_points_on_a_room_capture(tmp_path):
    """An orbit with a quarter of its points on far walls: the region holds the subject's cube, not the room."""
    ds = load_dataset(write_colmap(tmp_path / "d", kind="orbit", points=60, far_points=20))
    cfg, note = adapt_to_dataset(SuperquadricsTrainConfig(), ds)
    sc = cfg.scene
    assert sc.roi == "points" and sc.roi_center is not None and sc.ground_height is not None
    assert "region of interest from 60 SfM points" in note
    box_radius = 0.5 * float((ds.scene_box[1] - ds.scene_box[0]).max())
    assert sc.roi_radius < 0.5 * box_radius  # the scene box spans the walls
    # the subject: 60 points uniform in a cube of side 1 (original units) about the origin
    cube = ds.normalization[:3, :3].diagonal().abs().max().item()
    centre = ds.normalization[:3, 3].double()
    assert float((torch.tensor(sc.roi_center, dtype=torch.float64) - centre).norm()) < 0.25 * cube
    assert 0.6 * cube < sc.roi_radius < 1.4 * cube  # 1.25 x the half diagonal (0.87) of the points' box
    assert -1.6 < sc.ground_height < -0.7  # the cube's bottom: 0.5 below its centre, 2 * 0.5 / (1.25 * 0.87)
    assert adapt_to_dataset(cfg, ds)[0] == cfg  # idempotent: a resumed run's resolved config is kept
    scene = SuperquadricScene.from_dataset(cfg.scene, ds, generator=torch.Generator().manual_seed(0))
    origin = scene.T_world_canon.double() @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert float((origin[:3] - torch.tensor(sc.roi_center, dtype=torch.float64)).norm()) < 1e-9
    assert float(scene.ground_translation.detach()[1]) == float(
        torch.tensor(sc.ground_height, dtype=torch.float32)
    )


def test_roi_falls_back_to_the_box_and_explicit_points_fail(tmp_path):
    ds = load_dataset(write_colmap(tmp_path / "d", kind="forward"))
    cfg, note = adapt_to_dataset(SuperquadricsTrainConfig(), ds)
    assert cfg.scene.roi == "box" and cfg.scene.roi_center is None and "scene box" in note
    base = SuperquadricsTrainConfig()
    points = replace(base, scene=replace(base.scene, roi="points"))
    assert_rejected(lambda: adapt_to_dataset(points, ds), match="scene.roi points", argument="roi")
    boxed = replace(base, scene=replace(base.scene, roi="box"))
    orbit = load_dataset(write_colmap(tmp_path / "o", kind="orbit", points=60, far_points=20))
    assert adapt_to_dataset(boxed, orbit)[0] == boxed  # an explicit box is kept


def test_train_cli_records_the_resolved_roi(tmp_path, capsys):
    data = write_colmap(tmp_path / "d", kind="orbit", points=60, far_points=20)
    run_dir = tmp_path / "run"
    argv = ["superquadrics", "--data", str(data), "--steps", "2", "--run-dir", str(run_dir), "--no-final-eval",
            "--no-progress", "--threads", "1", "--backend", "torch", "--logger", "none",
            "--scene.texture-size", "16", "--scene.decimate-factor", "2"]  # fmt: skip
    assert train_cli.main(argv) == 0
    assert (
        "settings from the dataset: superquadrics region of interest from 60 SfM points"
        in capsys.readouterr().err
    )
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["scene"]["roi"] == "points" and len(stored["scene"]["roi_center"]) == 3
