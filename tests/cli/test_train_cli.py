"""recon train / eval / export / render on a tiny built-in synthetic scene, through the command modules."""

import json
from pathlib import Path

import open3d as o3d
import pytest
import torch
import trimesh

from recon.cli import eval as eval_cli
from recon.cli import export as export_cli
from recon.cli import render as render_cli
from recon.cli import train as train_cli
from recon.core import NotAvailableYet, ReconError
from tests.cli.cli_helpers import train_in_process

TINY = ["--scene.random-init-points", "150", "--scene.max-init-points", "150", "--scene.hull-resolution", "24",
        "--strategy.min-every-steps", "10", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def data(object_data) -> Path:
    return object_data


_train = train_in_process


def test_train_eval_export_render(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, last = _train(
        ["triangles", "--data", str(data), "--steps", "20", "--run-dir", str(run_dir), *TINY], capsys
    )
    assert code == 0 and last == str(run_dir)  # the run directory is the last line of stdout
    for name in ("config.yaml", "dataset.json", "metrics.jsonl", "eval.json"):
        assert (run_dir / name).is_file(), name
    ev = json.loads((run_dir / "eval.json").read_text())
    for key in (
        "method",
        "step",
        "split",
        "num_images",
        "psnr",
        "ssim",
        "lpips",
        "protocol",
        "seconds_per_image",
    ):
        assert key in ev, key
    assert ev["step"] == 20 and ev["num_images"] == 2 and ev["protocol"]["background"] == "white"
    assert set(ev["protocol"]) >= {"background", "resolution", "split_rule", "backend", "device"}
    assert "exposure" not in ev["protocol"]  # no per-photo compensation (Blender images carry alpha)
    # what really ran, per op family (not the requested "auto"); Warp runs on this CPU
    assert ev["protocol"]["backend"] == {"splat": "warp"} and ev["protocol"]["backend_requested"] == "auto"
    assert "chamfer" in ev and "fscore" in ev and "fscore_threshold" in ev  # synthetic data has a GT mesh

    assert eval_cli.main([str(run_dir), "--max-images", "1", "--no-geometry", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 1

    for fmt in ("ply", "obj", "glb"):
        assert export_cli.main([str(run_dir), "--format", fmt, "--all-triangles"]) == 0
        path = Path(capsys.readouterr().out.strip().splitlines()[0])
        tm = trimesh.load(str(path), process=False, force="mesh")
        om = o3d.io.read_triangle_mesh(str(path))
        assert (len(tm.vertices), len(tm.faces)) == (len(om.vertices), len(om.triangles)), fmt
        assert len(tm.faces) > 0
    assert not (run_dir / "exports" / "splats.ply").exists()  # no unrequested sibling: only when asked
    # every triangle: after 20 steps none may have reached the default min_opacity of 0.5 yet
    assert (
        export_cli.main([str(run_dir), "--format", "splat-ply", "--frame", "normalized", "--all-triangles"])
        == 0
    )
    splats = Path(capsys.readouterr().out.strip().splitlines()[0])
    assert splats.is_file() and splats.parent == run_dir / "exports"

    assert render_cli.main([str(run_dir), "--trajectory", "orbit", "--frames", "2", "--outputs", "rgb,depth",
                            "--device", "cpu"]) == 0  # fmt: skip
    assert len(list((run_dir / "renders" / "orbit" / "rgb").glob("*.png"))) == 2
    video = tmp_path / "orbit.mp4"
    assert render_cli.main([str(run_dir), "--trajectory", "orbit", "--frames", "3", "--output", str(video),
                            "--device", "cpu"]) == 0  # fmt: skip
    import imageio.v3 as iio

    assert iio.imread(video, index=None).shape[0] == 3  # three decodable frames


def test_export_original_frame_applies_inverse_normalisation(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _train(["triangles", "--data", str(data), "--steps", "2", "--run-dir", str(run_dir), "--no-final-eval", *TINY],
           capsys)  # fmt: skip
    info = json.loads((run_dir / "dataset.json").read_text())
    S = torch.tensor(info["normalization"], dtype=torch.float64)
    export_cli.main([str(run_dir), "--all-triangles", "--frame", "normalized"])
    export_cli.main([str(run_dir), "--all-triangles", "--frame", "original"])
    capsys.readouterr()
    norm = trimesh.load(str(run_dir / "exports" / "native_normalized.ply"), process=False)
    orig = trimesh.load(str(run_dir / "exports" / "native_original.ply"), process=False)
    mapped = orig.vertices @ S[:3, :3].numpy().T + S[:3, 3].numpy()
    assert abs(mapped - norm.vertices).max() < 1e-4


def test_resume_continues_from_checkpoint(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _train(["triangles", "--data", str(data), "--steps", "6", "--run-dir", str(run_dir), "--no-final-eval", *TINY],
           capsys)  # fmt: skip
    code, last = _train(
        ["triangles", "--resume", "--run-dir", str(run_dir), "--steps", "10", "--no-final-eval"], capsys
    )
    assert code == 0 and last == str(run_dir)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 10


def test_unknown_and_future_methods(capsys, monkeypatch):
    from recon.train import methods

    monkeypatch.setitem(methods.REGISTRY, "planned", (None, "a planned method - not available yet"))
    with pytest.raises(NotAvailableYet, match="planned"):
        train_cli.main(["planned", "--data", "x"])
    with pytest.raises(ReconError, match="unknown"):
        train_cli.main(["gaussians", "--data", "x"])
    with pytest.raises(ReconError, match="METHOD"):
        train_cli.main(["--data", "x"])


def test_existing_run_dir_needs_resume(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _train(["triangles", "--data", str(data), "--steps", "1", "--run-dir", str(run_dir), "--no-final-eval", *TINY],
           capsys)  # fmt: skip
    with pytest.raises(ReconError, match="--resume"):
        train_cli.main(["triangles", "--data", str(data), "--steps", "1", "--run-dir", str(run_dir), *TINY])


def test_train_with_live_viewer(data, tmp_path, capsys):
    """`recon train --viewer` serves the viewer on the given port during training and closes it at the end."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run_viewer"
    seen: dict[str, int] = {}
    original = train_cli._progress_bar

    def probing_progress_bar(cfg, start_step):
        # While training runs, the viewer's HTTP server answers on the requested port.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            seen["status"] = response.status
        return original(cfg, start_step)

    train_cli._progress_bar = probing_progress_bar
    try:
        code, last = _train(
            ["triangles", "--data", str(data), "--steps", "5", "--run-dir", str(run_dir), "--viewer",
             "--viewer-port", str(port), "--no-final-eval", *TINY],
            capsys,
        )  # fmt: skip
    finally:
        train_cli._progress_bar = original
    assert code == 0 and last == str(run_dir)
    assert seen["status"] == 200
    with socket.socket() as s:  # closed after training: the port is free again
        s.bind(("127.0.0.1", port))


NEURAL_TINY = ["--scene.grid-levels", "4", "--scene.grid-log2-size", "12", "--scene.grid-max-resolution", "64",
               "--scene.occupancy-resolution", "16", "--scene.render-step-size", "0.05", "--scene.mesh-resolution",
               "32", "--strategy.warmup-steps", "4", "--rays-per-batch", "128", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize("method", ["nerf", "neus"])
def test_train_neural_fields_through_generic_trainer(method, data, tmp_path, capsys):
    """nerf/neus run through the same trainer (ray batches), checkpoint, resume, evaluate and export."""
    run_dir = tmp_path / method
    code, last = _train(
        [
            method,
            "--data",
            str(data),
            "--steps",
            "6",
            "--run-dir",
            str(run_dir),
            "--no-final-eval",
            *NEURAL_TINY,
        ],
        capsys,
    )
    assert code == 0 and last == str(run_dir)
    code, last = _train([method, "--resume", "--run-dir", str(run_dir), "--steps", "8"], capsys)
    assert code == 0 and last == str(run_dir)
    assert not (run_dir / "eval.json").exists()  # the resumed run keeps the saved --no-final-eval
    assert eval_cli.main([str(run_dir)]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["method"] == method and ev["step"] == 8 and ev["num_images"] == 2
    assert 0 < ev["psnr"] < 60 and ev["protocol"]["background"] == "white"
    assert ev["protocol"]["backend"]["volume"] == "warp" and ev["protocol"]["backend"]["encoding"] == "warp"
    out = tmp_path / f"{method}.ply"
    assert export_cli.main([str(run_dir), "--format", "ply", "--output", str(out)]) == 0
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 0 and len(o3d.io.read_triangle_mesh(str(out)).triangles) == len(mesh.faces)
    # The viewer's render callback works on the run as for every method (recon view RUN_DIR uses it).
    from recon.cli.view import scene_render_fn
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene
    from recon.viewer import ViewState

    run, m, cfg = open_run_config(run_dir)
    scene, step = load_scene(m, cfg, run)
    from recon.datasets import load_dataset

    camera = load_dataset(data).camera("test", 0)
    for mode in ("rgb", "depth", "normals", "alpha"):
        view = scene_render_fn(scene, device="cpu")(camera, ViewState(mode=mode))
        assert step == 8 and view.rgb.shape == (1, camera.height, camera.width, 3)
        assert bool(torch.isfinite(view.rgb).all()) and float(view.alpha.max()) > 0
