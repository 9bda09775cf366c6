"""Lens models and the precomputed undistortion remap."""

import math

import pytest
import torch

from recon.datasets.undistort import Undistorter, distort_points, undistort_grid


def test_opencv_hand_computed():
    # x = 0.5, y = 0.25: r^2 = 0.3125; radial = (1 + 0.1 r^2) / (1 + 0.2 r^2) = 1.03125 / 1.0625 = 0.970588...
    # xd = 0.5 * radial + 2 p1 x y + p2 (r^2 + 2 x^2) = 0.485294 + 2*0.01*0.125 + 0.02*(0.3125 + 0.5) = 0.503044
    # yd = 0.25 * radial + p1 (r^2 + 2 y^2) + 2 p2 x y = 0.242647 + 0.01*0.4375 + 2*0.02*0.125 = 0.252022
    dist = torch.tensor([0.1, 0.0, 0.01, 0.02, 0.0, 0.2, 0.0, 0.0], dtype=torch.float64)
    out = distort_points(torch.tensor([0.5, 0.25], dtype=torch.float64), "opencv", dist)
    radial = 1.03125 / 1.0625
    expected = [0.5 * radial + 0.0025 + 0.01625, 0.25 * radial + 0.004375 + 0.005]
    assert out.tolist() == pytest.approx(expected, abs=1e-12)


def test_fisheye_hand_computed_and_centre():
    # r = 1: theta = pi/4; theta_d = theta (1 + k1 theta^2) with k1 = 0.1; xd = x * theta_d / r
    dist = torch.tensor([0.1, 0.0, 0.0, 0.0], dtype=torch.float64)
    out = distort_points(torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64), "opencv_fisheye", dist)
    theta = math.pi / 4
    assert out[0].tolist() == pytest.approx([theta * (1 + 0.1 * theta**2), 0.0], abs=1e-12)
    assert out[1].tolist() == [0.0, 0.0]  # the centre maps to itself (no 0/0)


def test_zero_distortion_grid_is_identity_and_image_unchanged():
    K = torch.tensor([[20.0, 0.0, 8.3], [0.0, 21.0, 5.7], [0.0, 0.0, 1.0]])
    img = torch.rand(12, 16, 3, generator=torch.Generator().manual_seed(0))
    grid = undistort_grid(K, "opencv", torch.zeros(8), 16, 12)
    und = Undistorter()
    out = torch.nn.functional.grid_sample(img.permute(2, 0, 1)[None], grid, align_corners=False)[0].permute(
        1, 2, 0
    )
    assert torch.allclose(out, img, atol=1e-5)  # pixel centres land exactly on pixel centres
    assert und(img, K, "opencv", torch.zeros(8)) is img  # all-zero distortion: nothing to do


def test_grid_is_cached_per_camera():
    K = torch.tensor([[20.0, 0.0, 8.0], [0.0, 20.0, 6.0], [0.0, 0.0, 1.0]])
    dist = torch.tensor([0.1, 0.0, 0.0, 0.0])
    und = Undistorter()
    img = torch.rand(12, 16, 1, generator=torch.Generator().manual_seed(1))
    a = und(img, K, "opencv_fisheye", dist)
    b = und(img, K, "opencv_fisheye", dist)
    assert len(und._grids) == 1 and torch.equal(a, b)
    K_other = K.clone()
    K_other[0, 2] += 1.0
    und(img, K_other, "opencv_fisheye", dist)
    assert len(und._grids) == 2


def test_differentiable_wrt_points_and_params():
    xy = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    dist = torch.tensor([0.1, -0.05, 0.01, 0.002], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: distort_points(a, "opencv_fisheye", b), (xy, dist))
