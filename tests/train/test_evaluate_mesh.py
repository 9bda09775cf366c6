"""Mesh-based evaluation: the hard-rasterized render of a mesh scored against a dataset, and ``recon eval --mesh
--output`` on tiny triangles / nerf runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon.cli import eval as eval_cli
from recon.cli import train as train_cli
from recon.core import Mesh

TRI_TINY = ["--scene.random-init-points", "150", "--scene.max-init-points", "150", "--scene.hull-resolution", "24",
            "--strategy.min-every-steps", "10", "--no-progress", "--threads", "1", "--no-final-eval",
            "--scene.sh-degree", "0", "--scene.init-opacity", "0.9"]  # fmt: skip
NEURAL_TINY = ["--scene.grid-levels", "4", "--scene.grid-log2-size", "12", "--scene.grid-max-resolution", "64",
               "--scene.occupancy-resolution", "16", "--scene.render-step-size", "0.05", "--scene.mesh-resolution",
               "32", "--strategy.warmup-steps", "4", "--rays-per-batch", "128", "--no-progress", "--threads", "1",
               "--no-final-eval"]  # fmt: skip
# A mesh whose face colours are exactly the shaded colours of the ground-truth renders differs from them only at
# the silhouettes (antialiased coverage vs one ray per pixel) and by 8-bit rounding: measured 37.1 dB (SSIM 0.994)
# at 48 px, 3 test views; the bound leaves 7 dB of margin.
GT_MESH_MIN_PSNR = 30.0
# The same geometry with the unshaded albedo (a plausible wrong colour) stays far below (measured 10.8 dB).
WRONG_COLOUR_MAX_PSNR = 20.0


def _shaded_sphere_scene(root: Path):
    """A dataset rendered from a face-coloured icosphere, and the face colours every rendered pixel shows."""
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_mesh_scene
    from recon.datasets.synthetic.raycast import _shade

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    rng = np.random.default_rng(0)
    albedo = rng.uniform(0.2, 0.9, size=(len(sphere.faces), 3))
    sphere.visual.face_colors = np.concatenate([np.round(albedo * 255), np.full((len(albedo), 1), 255)], 1)
    sphere.export(root / "sphere.ply")
    albedo = np.asarray(sphere.visual.face_colors)[:, :3] / 255.0
    data = write_mesh_scene(root / "sphere.ply", root / "data", views=4, test_views=3, resolution=48)
    gt = trimesh.load(data / "gt_mesh.ply", force="mesh", process=False)  # the written frame of the renders
    assert len(gt.faces) == len(albedo)
    shaded = np.clip(albedo * _shade(np.asarray(gt.face_normals))[:, None], 0.0, 1.0)
    return load_dataset(data), gt, albedo, shaded


def test_mesh_with_the_rendered_colours_scores_high(tmp_path):
    from recon.train.evaluate import eval_indices, mesh_metrics_record

    dataset, gt, albedo, shaded = _shaded_sphere_scene(tmp_path)
    S = dataset.normalization.float()  # original (written) frame -> the normalised frame of the cameras
    vertices = torch.as_tensor(np.asarray(gt.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(gt.faces), dtype=torch.long)

    def score(colours: np.ndarray) -> dict:
        mesh = Mesh(vertices=vertices, faces=faces, face_colors=torch.as_tensor(colours, dtype=torch.float32))
        return mesh_metrics_record(mesh.transformed(S), dataset, split="test", indices=eval_indices(dataset, "test", 0),
                                   backend="torch", device=torch.device("cpu"), made_by="test")  # fmt: skip

    good, wrong = score(shaded), score(albedo)
    assert good["psnr"] > GT_MESH_MIN_PSNR, good
    assert wrong["psnr"] < WRONG_COLOUR_MAX_PSNR, wrong
    assert good["ssim"] > wrong["ssim"]
    assert good["num_faces"] == len(gt.faces) and good["num_vertices"] == len(gt.vertices)
    assert good["seconds_per_image"] > 0 and good["made_by"] == "test"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=6, test_views=2, resolution=32
    )


@pytest.mark.parametrize("method", ["triangles", "nerf"])
def test_eval_mesh_writes_mesh_record_where_asked(method, data, tmp_path):
    run_dir = tmp_path / "run"
    tiny = TRI_TINY if method == "triangles" else NEURAL_TINY
    assert (
        train_cli.main([method, "--data", str(data), "--steps", "3", "--run-dir", str(run_dir), *tiny]) == 0
    )
    out = tmp_path / "elsewhere" / "metrics.json"
    assert eval_cli.main([str(run_dir), "--mesh", "--output", str(out), "--no-geometry"]) == 0
    assert not (run_dir / "eval.json").exists()  # written only where asked
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]
    ev = json.loads(out.read_text())
    assert ev["method"] == method and ev["num_images"] == 2 and 0 < ev["psnr"] < 60
    mesh = ev["mesh"]
    if "unavailable_reason" in mesh:  # an untrained field may have no surface yet: then it must say so
        assert method == "nerf" and mesh["unavailable_reason"]
        return
    assert 0 < mesh["psnr"] < 60 and 0 < mesh["ssim"] <= 1
    assert mesh["num_faces"] > 0 and mesh["num_vertices"] > 0 and mesh["seconds_per_image"] > 0
    assert method in mesh["made_by"] and "native" in mesh["made_by"]
    assert mesh["backend"]["raster"] == "warp" and "raster" not in ev["protocol"]["backend"]


def test_eval_without_output_writes_run_eval(data, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        train_cli.main(
            ["triangles", "--data", str(data), "--steps", "2", "--run-dir", str(run_dir), *TRI_TINY]
        )
        == 0
    )
    assert eval_cli.main([str(run_dir), "--no-geometry", "--max-images", "1"]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["num_images"] == 1 and "mesh" not in ev
