"""DTU/IDR cameras.npz: RQ decomposition of world_mat, scale_mat normalisation, image/ and mask/."""

import pytest
import torch

from recon.core.transforms import axis_angle_to_rotmat, transform_pose
from recon.datasets import detect_format, load_dataset
from recon.datasets.dtu import decompose_projection
from tests.datasets.helpers import assert_every_nth_cameras
from tests.tolerances import assert_close, tol

W, H = 16, 12


def _with_skew(K: torch.Tensor) -> torch.Tensor:
    K = K.clone()
    K[:, 0, 1] = 0.3  # DTU's calibrated K has a small skew; the decomposition must keep it
    return K


@pytest.mark.parametrize("scale", [1.0, 3.7, -0.02])
def test_decompose_projection_any_scale(dw, scale):
    K, T = dw.random_cameras(4, width=W, height=H, seed=31)
    K = _with_skew(K)
    for i in range(4):
        K_got, T_got = decompose_projection(scale * (K[i] @ T[i][:3, :4]))
        assert_close(K_got, K[i], rtol=0, atol=1e-9, name="K")
        assert_close(T_got, T[i], rtol=0, atol=1e-9, name="T_cam_world")


def test_round_trip_known_cameras(tmp_path, dw):
    K, T = dw.random_cameras(9, width=W, height=H, seed=32)
    K = _with_skew(K)
    scale_mat = torch.eye(4, dtype=torch.float64)
    scale_mat[:3, :3] = 2.5 * axis_angle_to_rotmat(torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64))
    scale_mat[:3, 3] = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    dw.dtu(tmp_path, K, T, scale_mat, width=W, height=H, lambdas=[1.0, -2.0, 0.5, 1, 1, 1, 1, 1, 7.0])
    assert detect_format(tmp_path) == "dtu"
    ds = load_dataset(tmp_path)
    assert_close(ds.normalization, torch.linalg.inv(scale_mat), rtol=0, atol=1e-12, name="normalization")
    assert_every_nth_cameras(ds, K, T)
    # IDR's normalised pose: decomposing P @ scale_mat gives the same camera as transform_pose(T, scale_mat^-1).
    K_n, T_n = decompose_projection(K[1] @ T[1][:3, :4] @ scale_mat)
    assert_close(transform_pose(T[1], ds.normalization), T_n, rtol=0, atol=1e-9)
    assert_close(ds.camera("train", 0).T_cam_world[0], T_n.float(), **tol("camera", torch.float32))
    assert ds.has_masks and ds.splits["train"][0].mask_path.name == "001.png"
    assert ds.alpha("train", 0).shape == (H, W, 1)
    assert torch.equal(ds.scene_box, torch.tensor([[-1.0] * 3, [1.0] * 3]))


def test_neus_cameras_sphere_layout(tmp_path, dw):
    """NeuS ships cameras_sphere.npz (same keys) with image/ and 3-channel masks in mask/."""
    K, T = dw.random_cameras(9, width=W, height=H, seed=33)
    scale_mat = torch.eye(4, dtype=torch.float64)
    scale_mat[:3, :3] *= 1.7
    dw.dtu(tmp_path, K, T, scale_mat, width=W, height=H, masks=False)
    (tmp_path / "cameras.npz").rename(tmp_path / "cameras_sphere.npz")
    for i in range(9):
        dw.write_png(tmp_path / "mask" / f"{i:03d}.png", W, H, seed=200 + i, mode="RGB")
    assert detect_format(tmp_path) == "dtu"
    assert detect_format(tmp_path / "cameras_sphere.npz") == "dtu"  # the marker file stands for its folder
    ds = load_dataset(tmp_path)
    assert_close(ds.normalization, torch.linalg.inv(scale_mat), rtol=0, atol=1e-12, name="normalization")
    assert_every_nth_cameras(ds, K, T)
    assert ds.has_masks and ds.splits["test"][1].mask_path.name == "008.png"
