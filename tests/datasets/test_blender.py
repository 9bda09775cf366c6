"""Blender / NeRF-synthetic loader: round trip of known cameras, synthetic extras, background, real data."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from recon.core.transforms import transform_pose
from recon.datasets import dataset_info, detect_format, load_dataset
from tests.shared_data import require_shared
from tests.tolerances import assert_close, tol

W, H = 16, 12


def _info_tensors(info: dict, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    cams = info["splits"][split]
    K = torch.tensor([c["K"] for c in cams], dtype=torch.float64)
    T = torch.tensor([c["T_cam_world"] for c in cams], dtype=torch.float64)
    return K, T


def test_round_trip_known_cameras(tmp_path, dw):
    K_tr, T_tr = dw.random_cameras(5, width=W, height=H, seed=1, square_pixels=True, centered=True)
    K_te, T_te = dw.random_cameras(3, width=W, height=H, seed=2, square_pixels=True, centered=True)
    K_te[:, 0, 0] = K_te[:, 1, 1] = K_tr[0, 0, 0]  # one camera_angle_x per split file
    K_tr[:, 0, 0] = K_tr[:, 1, 1] = K_tr[0, 0, 0]
    dw.blender(tmp_path, {"train": (K_tr, T_tr), "test": (K_te, T_te)}, width=W, height=H)
    assert detect_format(tmp_path) == "blender"
    ds = load_dataset(tmp_path)
    assert ds.format == "blender" and ds.split_rule.startswith("explicit files")
    assert [len(ds.splits[s]) for s in ("train", "test")] == [5, 3]
    info = dataset_info(ds)
    for split, (K, T) in {"train": (K_tr, T_tr), "test": (K_te, T_te)}.items():
        K_got, T_got = _info_tensors(info, split)
        assert_close(K_got, K, **tol("loader", torch.float64), name=f"{split} K")
        assert_close(T_got, T, **tol("loader", torch.float64), name=f"{split} T_cam_world")
        cams = ds.cameras(split)
        assert (cams.width, cams.height, cams.camera_model) == (W, H, "pinhole")
        assert_close(
            cams.T_cam_world, transform_pose(T, ds.normalization).float(), **tol("camera", torch.float32)
        )
    assert torch.equal(ds.normalization, torch.eye(4, dtype=torch.float64))
    assert torch.equal(ds.scene_box, torch.tensor([[-1.5] * 3, [1.5] * 3]))


def test_rgba_composited_over_background_and_alpha_kept(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    dw.blender(tmp_path, {"train": (K, T), "test": (K, T)}, width=W, height=H)
    rgba = np.asarray(Image.open(tmp_path / "train" / "r_0.png"), dtype=np.float32) / 255
    rgb, a = torch.from_numpy(rgba[..., :3]), torch.from_numpy(rgba[..., 3:])
    white = load_dataset(tmp_path)
    assert white.white_background and white.has_masks
    assert_close(white.image("train", 0), rgb * a + (1 - a), rtol=0, atol=1e-6)
    assert_close(white.alpha("train", 0), a, rtol=0, atol=1e-6)
    green = load_dataset(tmp_path, background=(0.0, 1.0, 0.0))
    assert not green.white_background
    expected = rgb * a + torch.tensor([0.0, 1.0, 0.0]) * (1 - a)
    assert_close(green.image("train", 0), expected, rtol=0, atol=1e-6)


def test_synthetic_extras_depth_normals_mesh(tmp_path, dw):
    import trimesh

    W, H = 32, 24  # twice the module size: downscale 2 must stay above the SSIM minimum

    K, T = dw.random_cameras(2, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    dw.blender(tmp_path, {"train": (K, T), "test": (K, T)}, width=W, height=H)
    trimesh.creation.box(extents=(1.0, 2.0, 0.5)).export(tmp_path / "gt_mesh.ply")
    depth = np.random.default_rng(0).uniform(1, 3, size=(H, W)).astype(np.float32)
    depth[0, 0] = 0.0  # background
    normals = np.random.default_rng(1).normal(size=(H, W, 3)).astype(np.float32)
    for split in ("train", "test"):
        meta = json.loads((tmp_path / f"transforms_{split}.json").read_text())
        meta.update(gt_mesh="gt_mesh.ply", white_background=False)
        for i, frame in enumerate(meta["frames"]):
            np.save(tmp_path / f"{split}_depth_{i}.npy", depth)
            np.save(tmp_path / f"{split}_normal_{i}.npy", normals)
            frame.update(depth_file_path=f"{split}_depth_{i}.npy", normal_file_path=f"{split}_normal_{i}.npy")
        meta["fl_x"] = float(K[0, 0, 0])  # fl_x is accepted alongside camera_angle_x
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    ds = load_dataset(tmp_path)
    assert ds.has_depth and not ds.white_background
    assert ds.gt_mesh_path == (tmp_path / "gt_mesh.ply").resolve()
    assert_close(ds.normals("test", 0), torch.from_numpy(normals), rtol=0, atol=0)
    assert_close(ds.depth("train", 1)[..., 0], torch.from_numpy(depth), rtol=0, atol=1e-6)
    # mesh bounds (+-0.5, +-1, +-0.25) grown by 10% of the largest extent (2) on each side
    assert_close(ds.scene_box, torch.tensor([[-0.7, -1.2, -0.45], [0.7, 1.2, 0.45]]), rtol=0, atol=1e-6)
    small = load_dataset(tmp_path, downscale=2)
    assert small.depth("train", 0).shape == (H // 2, W // 2, 1)


def test_fl_xy_and_principal_point_keys(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H, seed=3)
    K[:] = K[0]
    dw.blender(tmp_path, {"train": (K, T), "test": (K, T)}, width=W, height=H)
    for split in ("train", "test"):
        meta = json.loads((tmp_path / f"transforms_{split}.json").read_text())
        meta.update(
            fl_x=float(K[0, 0, 0]), fl_y=float(K[0, 1, 1]), cx=float(K[0, 0, 2]), cy=float(K[0, 1, 2])
        )
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    K_got, _ = _info_tensors(dataset_info(tmp_path), "train")
    assert_close(K_got, K, **tol("loader", torch.float64))


def test_missing_test_split_falls_back_to_every_8th(tmp_path, dw):
    K, T = dw.random_cameras(10, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    dw.blender(tmp_path, {"train": (K, T)}, width=W, height=H)
    ds = load_dataset(tmp_path)
    assert [len(ds.splits["train"]), len(ds.splits["test"])] == [8, 2]
    assert "every 8th" in ds.split_rule


def test_real_nerf_synthetic_chair():
    chair = require_shared("nerf_synthetic_chair_200")
    ds = load_dataset(chair)
    assert ds.format == "blender"
    assert {s: len(f) for s, f in ds.splits.items()} == {"train": 100, "test": 200}
    assert ds.white_background and ds.has_masks and not ds.has_depth
    cams = ds.cameras("test")
    assert (cams.width, cams.height) == (200, 200)
    angle = json.loads((chair / "transforms_train.json").read_text())["camera_angle_x"]
    assert math.isclose(float(cams.K[0, 0, 0]), 100 / math.tan(angle / 2), rel_tol=1e-6)
    img, alpha = ds.image("train", 0), ds.alpha("train", 0)
    assert img.shape == (200, 200, 3) and img.dtype == torch.float32 and float(img.max()) <= 1.0
    assert float(img[0, 0].min()) == pytest.approx(1.0)  # corner is background, composited over white
    # Pose convention check: the chair sits at the world origin, so the silhouette's centroid lies near the
    # projection of the origin in every view (a wrong axis flip puts it behind the camera or mirrored).
    for i in (0, 17, 42):
        cam = ds.camera("train", i)
        uv, z = cam.project(torch.zeros(1, 1, 3))
        a = ds.alpha("train", i)[..., 0]
        rows, cols = torch.meshgrid(torch.arange(200.0) + 0.5, torch.arange(200.0) + 0.5, indexing="ij")
        centroid = torch.stack([(cols * a).sum(), (rows * a).sum()]) / a.sum()
        assert float(z[0, 0]) > 0
        assert float((centroid - uv[0, 0]).norm()) < 25.0
    assert alpha is not None and float(alpha.mean()) > 0.05


def test_synthetic_scene_depth_lies_on_its_gt_mesh(tmp_path):
    """Integration with recon.datasets.synthetic: depth unprojected through the loaded cameras hits gt_mesh."""
    import open3d as o3d
    import trimesh

    from recon.datasets.synthetic import write_scene

    ds = load_dataset(write_scene("object", tmp_path / "obj", views=2, test_views=1, resolution=48))
    mesh = trimesh.load(ds.gt_mesh_path, force="mesh", process=False)
    cam, depth = ds.camera("train", 0), ds.depth("train", 0)[..., 0]
    pix = torch.nonzero(depth > 0)[::7]  # (row, col) of foreground pixels
    uv = pix.flip(-1).float()[None] + 0.5
    points = cam.unproject(uv, depth[pix[:, 0], pix[:, 1]][None])[0]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)),
    )
    dist = scene.compute_distance(o3d.core.Tensor(points.numpy().astype(np.float32))).numpy()
    extent = float((ds.scene_box[1] - ds.scene_box[0]).max())
    assert len(points) > 10 and float(np.max(dist)) < 1e-3 * extent
