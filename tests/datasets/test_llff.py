"""LLFF poses_bounds.npy: axis conversion [down, right, backwards] -> OpenCV, hwf intrinsics, splits."""

import numpy as np
import pytest
import torch

from recon.core.transforms import apply_T, invert_T, transform_pose
from recon.datasets import DatasetError, dataset_info, detect_format, load_dataset
from recon.datasets.llff import llff_row_to_pose
from tests.datasets.helpers import assert_every_nth_cameras
from tests.tolerances import assert_close, tol
from tests.typecheck import assert_rejected

W, H = 16, 12


def test_row_conversion_hand_computed():
    # A camera at (1, 2, 3) whose LLFF axes are down = -z_world, right = +x_world, backwards = -y_world:
    # it looks along +y_world, so OpenCV x = +x_world, y (down) = -z_world, z (forward) = +y_world.
    R_llff = np.array(
        [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], dtype=np.float64
    )  # columns: down, right, backwards
    M = np.concatenate([R_llff, [[1], [2], [3]], [[12], [16], [20]]], axis=1)
    T, K, size, bounds = llff_row_to_pose(np.concatenate([M.reshape(-1), [0.5, 9.0]]), "row")
    R_world_cam = torch.tensor([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64)
    assert torch.equal(invert_T(T)[:3, :3], R_world_cam)
    assert torch.equal(invert_T(T)[:3, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.equal(K, torch.tensor([[20.0, 0, 8], [0, 20, 6], [0, 0, 1]], dtype=torch.float64))
    assert size == (16, 12) and bounds == (0.5, 9.0)


def test_round_trip_known_cameras(tmp_path, dw):
    K, T = dw.random_cameras(9, width=W, height=H, seed=21, square_pixels=True, centered=True)
    dw.llff(tmp_path, K, T, width=W, height=H)
    assert detect_format(tmp_path) == "llff"
    ds = load_dataset(tmp_path)
    assert_every_nth_cameras(ds, K, T)
    S = ds.normalization
    assert_close(S[:3, :3], float(S[0, 0]) * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    centers = apply_T(S, invert_T(T)[:, :3, 3])
    assert float(centers.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-9)
    assert_close(
        ds.cameras("train").T_cam_world, transform_pose(T[1:8], S).float(), **tol("camera", torch.float32)
    )
    # the box spans the frusta between the near and far bounds, so it holds every camera centre
    assert bool(((centers >= ds.scene_box[0].double()) & (centers <= ds.scene_box[1].double())).all())


def test_downscaled_image_folder_rescales_K(tmp_path, dw):
    K, T = dw.random_cameras(3, width=2 * W, height=2 * H, seed=22, square_pixels=True, centered=True)
    dw.llff(tmp_path, K, T, width=2 * W, height=2 * H, image_scale=2)  # images/ at half the hwf size
    info = dataset_info(tmp_path)
    cam = info["splits"]["train"][0]
    assert (cam["width"], cam["height"]) == (W, H)
    K_half = K[1].clone()
    K_half[:2] /= 2
    assert_close(torch.tensor(cam["K"], dtype=torch.float64), K_half, **tol("loader", torch.float64))


def test_image_count_mismatch(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H)
    dw.llff(tmp_path, K, T, width=W, height=H)
    (tmp_path / "images" / "IMG_0002.png").unlink()
    with pytest.raises(DatasetError, match=r"holds 2 images but .*poses_bounds.npy has 3 poses"):
        load_dataset(tmp_path)


def _images_n_only(tmp_path, dw, n: int, files: int = 1):
    """An LLFF folder with only images_<n>/ (like the LLFF fern copy) holding ``files * (W, H)`` images; hwf
    states the full size, n times larger."""
    w, h = n * files * W, n * files * H
    K, T = dw.random_cameras(9, width=w, height=h, seed=23, square_pixels=True, centered=True)
    dw.llff(tmp_path, K, T, width=w, height=h, image_scale=n)
    (tmp_path / "images").rename(tmp_path / f"images_{n}")
    return K, T


def test_images_n_only_folder_loads_the_copies(tmp_path, dw):
    K, T = _images_n_only(tmp_path, dw, 8)
    ds = load_dataset(tmp_path)  # downscale unset: the copies as they are, recorded as downscale 8
    assert ds.downscale == 8.0
    frame = ds.splits["train"][0]
    assert frame.image_path == tmp_path / "images_8" / "IMG_0001.png" and frame.file_factor == 8.0
    assert (frame.width, frame.height, frame.load_width, frame.load_height) == (W, H, W, H)
    K_small = K[1].clone()
    K_small[:2] /= 8  # hwf is stated for the full size: K follows the 8x smaller files
    assert_close(frame.K, K_small, **tol("loader", torch.float64))
    assert_close(ds.camera("train", 0).K[0].double(), K_small, **tol("loader", torch.float32))
    assert load_dataset(tmp_path, downscale=8).downscale == 8.0  # the published factor means the same files


def test_images_n_only_other_factors(tmp_path, dw):
    _images_n_only(tmp_path, dw, 2, files=2)
    quarter = load_dataset(tmp_path, downscale=4).splits["train"][0]  # 2x more from the images_2 copies
    assert (quarter.load_width, quarter.load_height) == (W, H) and quarter.load_path is None
    with pytest.raises(
        DatasetError, match=r"IMG_0001.png is stored 2x smaller .* expected downscale >= 2, got 1"
    ):
        load_dataset(tmp_path, downscale=1)


def test_test_every_is_configurable_and_recorded(tmp_path, dw):
    K, T = dw.random_cameras(9, width=W, height=H, seed=24, square_pixels=True, centered=True)
    dw.llff(tmp_path, K, T, width=W, height=H)
    ds = load_dataset(tmp_path, test_every=3)
    assert [f.name for f in ds.splits["test"]] == [f"images/IMG_{i:04d}.png" for i in (0, 3, 6)]
    assert len(ds.splits["train"]) == 6 and "every 3rd image" in ds.split_rule
    assert "every 8th image" in load_dataset(tmp_path).split_rule
    for bad in (1, 0, 2.5, "8", True):
        assert_rejected(
            lambda bad=bad: load_dataset(tmp_path, test_every=bad),
            match=r"test_every must be a whole number >= 2",
            error=DatasetError,
        )


@pytest.mark.parametrize("folder", ["colmap_points", "sparse/0"])
def test_sfm_points_next_to_poses_bounds_are_loaded_and_normalised(tmp_path, dw, folder):
    K, T = dw.random_cameras(9, width=W, height=H, seed=5, square_pixels=True, centered=True)
    dw.llff(tmp_path, K, T, width=W, height=H)
    assert load_dataset(tmp_path).points3d is None  # no COLMAP points: none invented
    xyz = np.array([[0.1, -0.2, 0.3], [1.0, 2.0, -0.5], [-0.4, 0.0, 0.25]])
    model = tmp_path / folder
    model.mkdir(parents=True)
    lines = [f"{k + 1} {x} {y} {z} {10 * k} 128 255 0.5 1 0" for k, (x, y, z) in enumerate(xyz)]
    (model / "points3D.txt").write_text("# 3D point list\n" + "\n".join(lines) + "\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "llff"
    assert_close(ds.points3d.double(), apply_T(ds.normalization, torch.from_numpy(xyz)).float().double(),
                 **tol("loader", torch.float32))  # fmt: skip
    assert_close(ds.points3d_rgb[:, 1], torch.full((3,), 128 / 255), **tol("loader", torch.float32))
    assert float(ds.points3d_rgb[2, 0]) == pytest.approx(20 / 255)
