"""nerfstudio / instant-ngp transforms.json: intrinsics, applied_transform, distortion, masks, depth, splits."""

import json

import numpy as np
import pytest
import torch

from recon.core.transforms import axis_angle_to_rotmat, invert_T, make_T, transform_pose
from recon.datasets import DatasetError, dataset_info, detect_format, load_dataset
from tests.tolerances import assert_close, tol

W, H = 16, 12


def _info_KT(info: dict, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    cams = info["splits"][split]
    return (
        torch.tensor([c["K"] for c in cams], dtype=torch.float64),
        torch.tensor([c["T_cam_world"] for c in cams], dtype=torch.float64),
    )


@pytest.mark.parametrize("per_frame", [True, False])
def test_round_trip_known_cameras(tmp_path, dw, per_frame):
    K, T = dw.random_cameras(9, width=W, height=H, seed=4)
    if not per_frame:
        K[:] = K[0]
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, per_frame=per_frame)
    assert detect_format(tmp_path) == "nerfstudio"
    ds = load_dataset(tmp_path)
    assert torch.equal(ds.normalization, torch.eye(4, dtype=torch.float64))
    assert "every 8th" in ds.split_rule
    info = dataset_info(ds)
    # every 8th held out: sorted names frame_00000 .. frame_00008 -> test = 0 and 8
    assert [c["name"] for c in info["splits"]["test"]] == ["images/frame_00000.png", "images/frame_00008.png"]
    order = [0, 8, 1, 2, 3, 4, 5, 6, 7]
    K_got, T_got = (torch.cat(pair) for pair in zip(_info_KT(info, "test"), _info_KT(info, "train")))
    assert_close(K_got, K[order], **tol("loader", torch.float64), name="K")
    assert_close(T_got, T[order], **tol("loader", torch.float64), name="T_cam_world")


def test_applied_transform_keeps_original_frame_recoverable(tmp_path, dw):
    K, T = dw.random_cameras(4, width=W, height=H, seed=5)
    A = make_T(
        axis_angle_to_rotmat(torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)), torch.tensor([1.0, 2, 3])
    )
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, applied=A)
    ds = load_dataset(tmp_path)
    assert_close(ds.normalization, A, **tol("loader", torch.float64), name="normalization")
    info = dataset_info(ds)
    _, T_orig = (torch.cat(p) for p in zip(_info_KT(info, "test"), _info_KT(info, "train")))
    assert_close(T_orig, T[[0, 1, 2, 3]], **tol("loader", torch.float64), name="original-frame T_cam_world")
    # The cameras handed out are in the stored (applied) frame, as nerfstudio users expect.
    stored = invert_T(A @ invert_T(T[1]))
    assert_close(ds.camera("train", 0).T_cam_world[0], stored.float(), **tol("camera", torch.float32))
    assert_close(transform_pose(T[1], A), stored, **tol("loader", torch.float64))


def test_explicit_split_lists(tmp_path, dw):
    K, T = dw.random_cameras(5, width=W, height=H, seed=6)
    names = [f"images/frame_{i:05d}.png" for i in range(5)]
    top = {"train_filenames": names[:3], "val_filenames": [names[3]], "test_filenames": [names[4], names[0]]}
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, top=top)
    ds = load_dataset(tmp_path)
    assert ds.split_rule.startswith("explicit lists")
    assert {s: [f.name for f in fs] for s, fs in ds.splits.items()} == {
        "train": names[:3],
        "val": [names[3]],
        "test": [names[4], names[0]],
    }
    top = {"train_filenames": names[:3], "test_filenames": ["images/nope.png"]}
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, top=top)
    with pytest.raises(DatasetError, match="nope.png"):
        load_dataset(tmp_path)


def test_distortion_models_map_to_recon_layout(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, seed=7)
    top = {"camera_model": "OPENCV", "k1": 0.1, "k2": -0.02, "k3": 0.003, "p1": 0.001, "p2": -0.002}
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, top=top)
    cam = dataset_info(tmp_path)["splits"]["train"][0]
    assert cam["camera_model"] == "opencv"
    assert cam["distortion"] == pytest.approx([0.1, -0.02, 0.001, -0.002, 0.003, 0, 0, 0])
    ds = load_dataset(tmp_path)
    assert ds.camera("train", 0).camera_model == "pinhole"  # undistorted up front
    assert ds.image("train", 0).shape == (H, W, 3)
    top = {"camera_model": "OPENCV_FISHEYE", "k1": 0.1, "k2": 0.01, "k3": 0.001, "k4": 0.0001}
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, top=top)
    cam = dataset_info(tmp_path)["splits"]["train"][0]
    assert cam["camera_model"] == "opencv_fisheye" and cam["distortion"] == pytest.approx(
        [0.1, 0.01, 0.001, 1e-4]
    )
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, top={"camera_model": "EQUIRECTANGULAR"})
    with pytest.raises(DatasetError, match="EQUIRECTANGULAR"):
        load_dataset(tmp_path)


def test_masks_and_depth_with_unit(tmp_path, dw):
    from PIL import Image

    K, T = dw.random_cameras(2, width=W, height=H, seed=8)
    depth_mm = np.random.default_rng(1).integers(500, 3000, size=(H, W)).astype(np.uint16)
    mask = np.zeros((H, W), np.uint8)
    mask[2:8, 3:10] = 255
    (tmp_path / "depth").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(depth_mm).save(tmp_path / "depth" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    extras = [{"depth_file_path": f"depth/{i}.png", "mask_path": f"masks/{i}.png"} for i in range(2)]
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, frame_extras=extras)
    ds = load_dataset(tmp_path)
    assert ds.has_masks and ds.has_depth
    # 16-bit PNG depth defaults to millimetres (depth_unit_scale_factor 1e-3)
    assert_close(
        ds.depth("test", 0)[..., 0], torch.from_numpy(depth_mm.astype(np.float32)) * 1e-3, rtol=1e-6, atol=0
    )
    assert_close(ds.alpha("test", 0)[..., 0], torch.from_numpy(mask / 255.0).float(), rtol=0, atol=0)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["depth_unit_scale_factor"] = 0.01
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_dataset(tmp_path)
    assert_close(
        ds.depth("test", 0)[..., 0], torch.from_numpy(depth_mm.astype(np.float32)) * 0.01, rtol=1e-6, atol=0
    )


def test_instant_ngp_camera_angle_and_meta_size(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, seed=9, square_pixels=True, centered=True)
    K[:] = K[0]
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, per_frame=False)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy"):
        del meta[key]
    meta.update(camera_angle_x=2 * float(torch.atan(0.5 * W / K[0, 0, 0])), aabb_scale=4)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    K_got, _ = _info_KT(dataset_info(tmp_path), "train")
    assert_close(K_got[0], K[0], **tol("loader", torch.float64))


def test_ply_points_in_the_stored_frame(tmp_path, dw):
    import trimesh

    K, T = dw.random_cameras(3, width=W, height=H, seed=10)
    A = make_T(axis_angle_to_rotmat(torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)), torch.zeros(3))
    points = np.random.default_rng(2).normal(size=(40, 3))
    colors = np.random.default_rng(3).integers(0, 256, size=(40, 4), dtype=np.uint8)
    colors[:, 3] = 255
    tmp_path.mkdir(exist_ok=True)
    trimesh.PointCloud(points, colors=colors).export(tmp_path / "sparse_pc.ply")
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, applied=A, top={"ply_file_path": "sparse_pc.ply"})
    ds = load_dataset(tmp_path)
    assert dataset_info(ds)["points3d"] == 40
    assert_close(ds.points3d.double(), torch.from_numpy(points), rtol=0, atol=1e-6, name="points3d")
    assert_close(ds.points3d_rgb, torch.from_numpy(colors[:, :3] / 255.0).float(), rtol=0, atol=1e-6)
    lo, hi = ds.scene_box
    assert bool((lo < torch.from_numpy(np.median(points, 0)).float()).all() and (hi > lo).all())
