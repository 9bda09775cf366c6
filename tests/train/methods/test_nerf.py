"""``recon train nerf``: the strategy follows the scene type (occupancy grid for bounded scenes, proposal schedules
for unbounded and forward ones), in isolation and through the command line on a tiny forward-facing capture."""

import json

import pytest
import torch
import yaml

from recon.cli import train as train_cli
from recon.core import MissingRenderOutput
from recon.datasets import load_dataset
from recon.runs import RunDir
from recon.scenes.nerf import NerfScene, NerfSceneConfig
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.methods import get_method
from recon.train.methods.nerf import SceneTypeStrategy, strategy_for_scene_type
from recon.train.neural_configs import NerfTrainConfig
from recon.train.occupancy import OccupancyConfig, OccupancyStrategy
from recon.train.proposal import NerfStrategyConfig, ProposalStrategy
from tests.train.methods.helpers import write_colmap

TINY = NerfSceneConfig(
    grid_levels=2, grid_log2_size=8, grid_max_resolution=32, hidden_dim=8, occupancy_resolution=8,
    proposal_samples=(8,), num_samples=4, proposal_max_resolutions=(16,), proposal_grid_levels=2,
    proposal_grid_log2_size=8, proposal_hidden_dim=8, mesh_resolution=16,
)  # fmt: skip
BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("bounded", OccupancyStrategy), ("unbounded", ProposalStrategy), ("forward", ProposalStrategy)],
)
def test_the_scene_type_picks_the_strategy(kind, expected):
    assert type(strategy_for_scene_type(kind, NerfStrategyConfig(), seed=0)) is expected
    scene = NerfScene(TINY, BOX, kind=kind, generator=torch.Generator().manual_seed(0))
    method = get_method("nerf")
    strategy = method.make_strategy(NerfTrainConfig(), 4)
    assert isinstance(strategy, SceneTypeStrategy)
    strategy.check_scene(scene)
    assert type(strategy.chosen) is expected
    # a proposal scene has no occupancy grid (no placeholder): the occupancy strategy refuses it
    assert hasattr(scene, "occupancy_grid") == (kind == "bounded")
    if kind != "bounded":
        with pytest.raises(MissingRenderOutput, match="occupancy grid"):
            OccupancyStrategy(OccupancyConfig()).check_scene(scene)


def test_a_scene_without_a_scene_type_and_bad_configs_are_refused():
    strategy = SceneTypeStrategy(NerfStrategyConfig())
    triangles = TriangleSplatScene.empty(TriangleSceneConfig())
    with pytest.raises(MissingRenderOutput, match="scene type"):
        strategy.check_scene(triangles)
    with pytest.raises(ValueError, match="proposal_update_every"):
        SceneTypeStrategy(NerfStrategyConfig(proposal_update_every=0.0))
    with pytest.raises(TypeError, match="NerfStrategyConfig"):
        strategy_for_scene_type("forward", OccupancyConfig(), seed=0)


def test_train_cli_forward_capture_runs_the_proposal_schedule(tmp_path, capsys):
    data = write_colmap(tmp_path / "d", kind="forward", points=30)
    run_dir = tmp_path / "run"
    argv = ["nerf", "--data", str(data), "--steps", "4", "--run-dir", str(run_dir), "--no-final-eval",
            "--no-progress", "--threads", "1", "--logger", "none", "--rays-per-batch", "64",
            "--scene.proposal-samples", "8", "--scene.num-samples", "4", "--scene.proposal-max-resolutions", "16",
            "--scene.grid-log2-size", "10", "--scene.proposal-grid-log2-size", "8",
            "--strategy.proposal-anneal-fraction", "0.5"]  # fmt: skip
    assert train_cli.main(argv) == 0
    tensors, meta = RunDir(run_dir).load_checkpoint()
    assert meta["step"] == 4 and int(tensors["scene.scene_kind"]) == 2  # forward
    assert "strategy.steps_since_update" in tensors and not any(
        k.startswith("scene.occupancy_grid") for k in tensors
    )
    # the last step (3 of 4: fraction 0.75 >= 0.5) handed on the unannealed weights
    assert float(tensors["scene.proposal_anneal"]) == pytest.approx(1.0)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["strategy"]["proposal_anneal_fraction"] == 0.5


def test_sfm_depth_term_pulls_the_rendered_depth_onto_the_sfm_points(tmp_path):
    """On a COLMAP capture whose points list the images that observe them, ``--loss.sfm-depth-weight`` adds the
    SfM depth term: it is logged at every logging step and the rendered depth at the points' pixels lands far closer to them
    than the same run without it (random images: nothing else constrains the depth)."""
    import json

    from recon.datasets import load_dataset
    from recon.scenes.base import RenderOptions
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene

    data = write_colmap(tmp_path / "d", kind="forward", points=60, seen_by_all=True)
    ds = load_dataset(data)

    def depth_error(weight: float) -> tuple[float, list]:
        run_dir = tmp_path / f"run_{weight}"
        argv = ["nerf", "--data", str(data), "--steps", "80", "--run-dir", str(run_dir), "--no-final-eval",
                "--no-progress", "--threads", "1", "--logger", "none", "--rays-per-batch", "64", "--log-every", "10",
                "--scene.proposal-samples", "8", "--scene.num-samples", "8", "--scene.proposal-max-resolutions", "16",
                "--scene.grid-log2-size", "10", "--scene.proposal-grid-log2-size", "8",
                "--loss.sfm-depth-weight", str(weight)]  # fmt: skip
        assert train_cli.main(argv) == 0
        run, method, cfg = open_run_config(str(run_dir))
        scene, _ = load_scene(method, cfg, run, device=torch.device("cpu"))
        errors = []
        for i in range(len(ds.splits["train"])):
            pixels, target = ds.sfm_depth("train", i)
            with torch.no_grad():
                render = scene.render(ds.camera("train", i), RenderOptions(depth=True), pixels=pixels[None])
            errors.append((render.depth[0, :, 0] - target).abs() / target)
        logged = [
            json.loads(line).get("sfm_depth") for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        return float(torch.cat(errors).mean()), logged

    without, logged_without = depth_error(0.0)
    with_term, logged = depth_error(1.0)
    assert all(v is None for v in logged_without) and all(v is not None for v in logged)
    assert with_term < 0.3 * without, (with_term, without)


def test_photos_train_with_exposure_compensation_on_ray_batches(tmp_path):
    """``--appearance auto`` on a capture without alpha: each training photo gets its affine exposure, trained
    through the ray batches and kept in the checkpoint (never in the scene: renders use the average exposure)."""
    data = write_colmap(tmp_path / "d", kind="forward", points=30)
    run_dir = tmp_path / "run"
    argv = ["nerf", "--data", str(data), "--steps", "4", "--run-dir", str(run_dir),
            "--no-progress", "--threads", "1", "--logger", "none", "--rays-per-batch", "64",
            "--scene.proposal-samples", "8", "--scene.num-samples", "4", "--scene.proposal-max-resolutions", "16",
            "--scene.grid-log2-size", "10", "--scene.proposal-grid-log2-size", "8", "--appearance", "auto"]  # fmt: skip
    assert train_cli.main(argv) == 0
    tensors, _ = RunDir(run_dir).load_checkpoint()
    train_views = len(load_dataset(data).splits["train"])
    assert tensors["appearance.log_gain"].shape == tensors["appearance.bias"].shape == (train_views, 3)
    assert tensors["appearance.log_gain"].abs().max() > 0 and tensors["appearance.bias"].abs().max() > 0
    assert not any(k.startswith("scene.appearance") for k in tensors)
    # the scores say how the test views were rendered (the average exposure, no per-view correction)
    protocol = json.loads((run_dir / "eval.json").read_text())["protocol"]
    assert "average exposure" in protocol["exposure"]
