"""Bad input (issue 2, item 8): each case raises one DatasetError naming the file and what was expected."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from recon.core.errors import ReconError
from recon.datasets import DatasetError, load_dataset
from tests.typecheck import assert_rejected

W, H = 16, 12


@pytest.fixture
def blender(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    return dw.blender(tmp_path, {"train": (K, T), "test": (K, T)}, width=W, height=H)


def _edit_json(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _raises(root, pattern):
    with pytest.raises(DatasetError, match=pattern) as info:
        load_dataset(root)
    assert isinstance(info.value, ReconError) and "\n" not in str(info.value)
    return info.value


def test_missing_image(blender):
    (blender / "train" / "r_1.png").unlink()
    _raises(
        blender, rf"image file not found: {re.escape(str(blender / 'train' / 'r_1.png'))} \(expected a PNG"
    )


def test_corrupt_png_header(blender):
    (blender / "train" / "r_2.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    _raises(
        blender,
        rf"corrupt or unreadable image file {re.escape(str(blender / 'train' / 'r_2.png'))}: expected",
    )


def test_truncated_png_body_fails_on_first_access(blender):
    path = blender / "train" / "r_0.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 4), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixel data cut
    ds = load_dataset(blender)  # the header is valid: loading stays lazy
    with pytest.raises(DatasetError, match=rf"corrupt or unreadable image file {re.escape(str(path))}"):
        ds.image("train", 0)


def test_truncated_json(blender):
    path = blender / "transforms_train.json"
    path.write_text(path.read_text()[:100])
    _raises(blender, rf"invalid or truncated JSON in {re.escape(str(path))} at line \d+, column \d+")


def test_nan_pose(blender):
    _edit_json(
        blender / "transforms_test.json",
        lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")),
    )
    err = _raises(blender, r"transforms_test.json \(frame 1\): the pose contains NaN")
    assert "expected a finite rigid 4x4 pose" in str(err)


def test_non_rigid_pose(blender):
    def stretch(meta):
        M = np.array(meta["frames"][2]["transform_matrix"])
        M[:3, 0] *= 1.5
        meta["frames"][2]["transform_matrix"] = M.tolist()

    _edit_json(blender / "transforms_train.json", stretch)
    _raises(
        blender, r"transforms_train.json \(frame 2\): the pose is not rigid .* expected a rigid camera pose"
    )


def test_mask_of_wrong_size(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((H // 2, W // 2), np.uint8)).save(tmp_path / "masks" / "m.png")
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, frame_extras=[{"mask_path": "masks/m.png"}] * 2)
    _raises(
        tmp_path,
        rf"mask {re.escape(str(tmp_path / 'masks' / 'm.png'))} is 8x6: expected 16x12 \(the size of image",
    )


def test_dtu_mask_of_wrong_size(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.dtu(tmp_path, K, T, torch.eye(4, dtype=torch.float64), width=W, height=H)
    dw.write_png(tmp_path / "mask" / "001.png", W + 1, H, mode="L")
    _raises(tmp_path, r"mask .*001.png is 17x12: expected 16x12")


def test_missing_depth_and_mesh_files(blender):
    _edit_json(blender / "transforms_train.json", lambda m: m["frames"][0].update(depth_file_path="d.npy"))
    _raises(blender, r"depth file not found: .*d.npy \(named by .*transforms_train.json \(frame 0\)\)")
    _edit_json(blender / "transforms_train.json", lambda m: m["frames"][0].pop("depth_file_path"))
    _edit_json(blender / "transforms_train.json", lambda m: m.update(gt_mesh="mesh.ply"))
    _raises(blender, r"ground-truth mesh not found: .*mesh.ply")


def test_depth_of_wrong_size_fails_on_access(blender):
    np.save(blender / "d.npy", np.ones((H, W + 2), np.float32))
    _edit_json(blender / "transforms_train.json", lambda m: m["frames"][0].update(depth_file_path="d.npy"))
    ds = load_dataset(blender)
    with pytest.raises(DatasetError, match=r"depth map .*d.npy is 18x12: expected 16x12"):
        ds.depth("train", 0)


def test_colmap_truncated_binary_and_bad_quaternion(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    cams = [("PINHOLE", W, H, [10.0, 10.0, 8.0, 6.0])]
    dw.colmap(tmp_path, cams, T, [0, 0], binary=True)
    images_bin = tmp_path / "sparse" / "0" / "images.bin"
    images_bin.write_bytes(images_bin.read_bytes()[:50])
    _raises(tmp_path, rf"{re.escape(str(images_bin))} is truncated at byte \d+")
    dw.colmap(tmp_path, cams, T, [0, 0], binary=False)
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        (tmp_path / "sparse" / "0" / f).unlink()
    text = (tmp_path / "sparse" / "0" / "images.txt").read_text().splitlines()
    parts = text[1].split()
    parts[1] = "2.0"  # qw: no longer a unit quaternion
    text[1] = " ".join(parts)
    (tmp_path / "sparse" / "0" / "images.txt").write_text("\n".join(text) + "\n")
    _raises(tmp_path, r"image 1 \(img_000.png\) .*: qvec .* is not a finite unit quaternion")


def test_colmap_missing_image(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.colmap(tmp_path, [("PINHOLE", W, H, [10.0, 10.0, 8.0, 6.0])], T, [0, 0], binary=True)
    (tmp_path / "images" / "img_001.png").unlink()
    _raises(tmp_path, r"image file not found: .*images/img_001.png")


def test_dtu_nan_projection(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    K[1, 0, 0] = float("nan")
    dw.dtu(tmp_path, K, T, torch.eye(4, dtype=torch.float64), width=W, height=H)
    _raises(tmp_path, r"cameras.npz: world_mat_1 contains NaN")


def test_llff_bad_shape(tmp_path):
    (tmp_path / "images").mkdir()
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 15)))
    _raises(tmp_path, r"poses_bounds.npy has shape \(3, 15\): expected \(N, 17\)")


def test_mixed_image_sizes_in_a_split(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H)
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, frame_extras=[{}, {}, {"w": 2 * W, "h": 2 * H}])
    dw.write_png(tmp_path / "images" / "frame_00002.png", 2 * W, 2 * H)
    first, odd = (re.escape(str(tmp_path / "images" / f"frame_0000{i}.png")) for i in (1, 2))
    _raises(tmp_path, rf"split 'train' mixes image sizes: {odd} is 32x24 but {first} is 16x12; expected one")


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.0, r"camera_angle_x is 0.0; expected a field of view in radians in \(0, pi\)"),
        (-0.5, r"camera_angle_x is -0.5; expected a field of view in radians in \(0, pi\)"),
        (3.5, r"camera_angle_x is 3.5; expected a field of view in radians in \(0, pi\)"),
        ("wide", r"camera_angle_x is 'wide'; expected a finite number"),
        (True, r"camera_angle_x is True; expected a finite number"),
        ([0.7], r"camera_angle_x is \[0.7\]; expected a finite number"),
    ],
)
def test_bad_camera_angle_x(blender, value, expected):
    _edit_json(blender / "transforms_train.json", lambda m: m.update(camera_angle_x=value))
    _raises(blender, rf"transforms_train.json \(frame 0\): {expected}")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("fl_x", -3.0, r"invalid intrinsics fx=-3.0"),
        ("cx", "centre", r"cx is 'centre'; expected a finite number"),
        ("w", 0, r"w is 0.0; expected a positive whole number of pixels"),
    ],
)
def test_bad_json_intrinsics(tmp_path, dw, key, value, expected):
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, frame_extras=[{}, {key: value}])
    _raises(tmp_path, rf"transforms.json \(frame 1\): {expected}")


def test_nan_json_intrinsics(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.nerfstudio(tmp_path, K, T, width=W, height=H)
    (tmp_path / "transforms.json").write_text(
        (tmp_path / "transforms.json").read_text().replace('"fl_y": ', '"fl_y": NaN, "x": ', 1)
    )
    _raises(tmp_path, r"transforms.json \(frame 0\): fl_y is nan; expected a finite number")


def test_nan_and_negative_colmap_intrinsics(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.colmap(tmp_path, [("PINHOLE", W, H, [10.0, float("nan"), 8.0, 6.0])], T, [0, 0], binary=True)
    _raises(
        tmp_path, r"image .*img_001.png: the intrinsics contain NaN or infinite values: expected a finite K"
    )
    dw.colmap(tmp_path, [("PINHOLE", W, H, [10.0, -10.0, 8.0, 6.0])], T, [0, 0], binary=True)
    _raises(tmp_path, r"image .*img_001.png: focal lengths fx=10, fy=-10: expected positive values")


def test_singular_pose(blender):
    _edit_json(
        blender / "transforms_train.json",
        lambda m: m["frames"][0].update(
            transform_matrix=[[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 1]]
        ),
    )
    _raises(
        blender, r"transforms_train.json \(frame 0\): the pose is not rigid .* expected a rigid camera pose"
    )


def test_images_too_small_for_ssim(tmp_path, dw):
    K, T = dw.random_cameras(2, width=10, height=12)
    dw.nerfstudio(tmp_path, K, T, width=10, height=12)
    _raises(
        tmp_path,
        r"image .*frame_0000[01].png loads at 10x12 \(downscale 1\): expected at least 11 px on each side",
    )
    K, T = dw.random_cameras(2, width=W, height=H)
    dw.nerfstudio(tmp_path / "b", K, T, width=W, height=H)
    load_dataset(tmp_path / "b")  # 16x12 is enough
    with pytest.raises(DatasetError, match=r"loads at 8x6 \(downscale 2\): expected at least 11 px"):
        load_dataset(tmp_path / "b", downscale=2)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"downscale": 0}, r"downscale must be a positive number, got 0"),
        ({"downscale": "x"}, r"downscale must be a positive number, got 'x'"),
        ({"background": (1, 2, 3)}, r"background must be three numbers in \[0, 1\]"),
        ({"test_every": 1}, r"test_every must be a whole number >= 2"),
    ],
)
def test_bad_load_arguments(blender, kwargs, expected):
    assert_rejected(lambda: load_dataset(blender, **kwargs), match=expected, error=DatasetError)
