"""``recon train superquadrics`` end to end on a tiny tabletop scene: train (stage switches inside the trainer),
resume, eval, render, export (native mesh through the export service; primitives.json and textured OBJ/GLB)."""

import json
from pathlib import Path

import pytest
import torch
import trimesh

from recon.cli import eval as eval_cli
from recon.cli import export as export_cli
from recon.cli import render as render_cli
from recon.cli import train as train_cli
from recon.cli.view import scene_render_fn
from recon.config import load_config_yaml
from recon.core.errors import ReconError
from recon.datasets import load_dataset
from recon.metrics.image import lpips_unavailable_reason
from recon.runs import RunDir
from recon.scenes.superquadrics.export import load_primitives
from recon.train.methods import get_method
from recon.train.trainer import load_scene
from recon.viewer import ViewState

TINY = ["--scene.texture-size", "16", "--scene.decimate-factor", "4", "--scene.overlap-points", "50",
        "--log-every", "5", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "tabletop", tmp_path_factory.mktemp("data") / "tabletop", views=6, test_views=2, resolution=32
    )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_train_resume_eval_render_export(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert (
        train_cli.main(
            ["superquadrics", "--data", str(data), "--steps", "30", "--run-dir", str(run_dir), *TINY]
        )
        == 0
    )
    records = [r for r in _metrics(run_dir) if "l2" in r]
    # the curriculum inside the trainer: coarse stages carry parsimony, the fine stage (from 5/6 of the budget)
    # none; the published milestones are 0.417 and 0.833 of the budget
    assert records[0]["parsimony"] > 0 and records[-1]["parsimony"] == 0.0 and records[-1]["step"] == 30
    tensors, meta = RunDir(run_dir).load_checkpoint()
    assert int(tensors["scene.stage_index"]) == 2
    assert bool(tensors["strategy.lpips_active"]) == (
        lpips_unavailable_reason() is None
    )  # recorded in the run
    # a switch follows the first step at or past its milestone (steps 13 and 25 of 30)
    assert tensors["strategy.switch_steps"].tolist() == [0, 14, 26]
    assert json.loads((run_dir / "eval.json").read_text())["num_images"] == 2

    assert train_cli.main(["superquadrics", "--resume", "--run-dir", str(run_dir), "--steps", "35",
                           "--no-final-eval", "--no-progress"]) == 0  # fmt: skip
    tensors, meta = RunDir(run_dir).load_checkpoint()
    assert meta["step"] == 35 and tensors["strategy.switch_steps"].tolist() == [0, 14, 26]
    capsys.readouterr()

    assert eval_cli.main([str(run_dir), "--max-images", "1", "--no-geometry", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 1
    assert render_cli.main([str(run_dir), "--trajectory", "orbit", "--frames", "2", "--outputs", "rgb,depth",
                            "--device", "cpu"]) == 0  # fmt: skip
    assert len(list((run_dir / "renders" / "orbit" / "rgb").glob("*.png"))) == 2
    capsys.readouterr()

    assert export_cli.main([str(run_dir), "--format", "glb"]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[0])
    assert (
        len(trimesh.load(str(path), process=False, force="mesh").faces) >= 128
    )  # at least the reduced ground

    # recon export --format native: Method.write_native into RUN/exports/native (primitives.json first)
    assert export_cli.main([str(run_dir), "--format", "native"]) == 0
    written = [Path(line) for line in capsys.readouterr().out.strip().splitlines()]
    native = run_dir / "exports" / "native"
    assert written[0] == native / "primitives.json" and sorted(written) == sorted(native.iterdir())
    names = {p.name for p in written}
    assert {"mesh.obj", "mesh.mtl", "mesh.glb", "mesh_full.obj", "mesh_full.mtl", "mesh_full.glb"} <= names
    assert any(p.suffix == ".png" for p in written)  # one texture per part
    with pytest.raises(ReconError, match=r"native.*not empty.*--force"):
        export_cli.main([str(run_dir), "--format", "native"])
    with pytest.raises(ReconError, match=r"--frame, --texture and --mesh surface do not apply"):
        export_cli.main([str(run_dir), "--format", "native", "--frame", "normalized", "--force"])
    method = get_method("superquadrics")
    cfg = load_config_yaml(method.config_cls, run_dir / "config.yaml")
    scene, step = load_scene(method, cfg, RunDir(run_dir))
    prims = load_primitives(written[0])
    assert len(prims.block_index) == scene.num_opaque() and step == 35
    normalization = load_dataset(data).normalization  # original -> normalised
    torch.testing.assert_close(normalization @ prims.T_world_canon, scene.T_world_canon)

    # the viewer's render callback (recon view / --viewer) on a test camera of the dataset
    camera = load_dataset(data).camera("test", 0)
    for mode in ("rgb", "depth", "alpha"):
        out = scene_render_fn(scene, device="cpu")(camera, ViewState(mode=mode))
        assert (
            out.rgb.shape == (1, 32, 32, 3) and out.depth is not None and bool(torch.isfinite(out.rgb).all())
        )


def test_eval_and_export_of_a_restarts_parent_act_on_the_selected_run(data, tmp_path, capsys):
    """``recon eval RUN`` / ``recon export RUN`` on the parent of ``--restarts 2`` use the run restarts.json
    selected, say which on stderr, and follow the record when it selects the other run."""
    parent = tmp_path / "restarts_run"
    argv = ["superquadrics", "--data", str(data), "--steps", "4", "--run-dir", str(parent), "--restarts", "2",
            "--no-final-eval", *TINY]  # fmt: skip
    assert train_cli.main(argv) == 0
    record = json.loads((parent / "restarts.json").read_text())
    selected = parent / record["selected"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(selected)

    assert eval_cli.main([str(parent), "--max-images", "1", "--no-geometry", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"acting on the selected run {selected}" in captured.err and "auto" in captured.err
    assert json.loads(captured.out)["num_images"] == 1
    assert (selected / "eval.json").is_file() and not (parent / "eval.json").exists()

    other = next(r["run_dir"] for r in record["runs"] if r["run_dir"] != record["selected"])
    (parent / "restarts.json").write_text(json.dumps(record | {"selected": other}))
    assert export_cli.main([str(parent), "--format", "glb"]) == 0
    captured = capsys.readouterr()
    assert Path(captured.out.strip().splitlines()[0]).parent == parent / other / "exports"
    assert f"acting on the selected run {parent / other}" in captured.err

    (parent / "restarts.json").write_text(json.dumps(record | {"selected": "../elsewhere"}))
    with pytest.raises(ReconError, match=r"restarts\.json: the selected run .* is not a run folder inside"):
        export_cli.main([str(parent), "--format", "glb"])
