"""Lens models and the precomputed undistortion remap."""

import math

import pytest
import torch

from recon.datasets.undistort import (
    Undistorter,
    blank_free_zoom,
    distort_points,
    pinhole_K,
    undistort_grid,
    zoomed_K,
)


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


def _blank_pixels(K_src, K_out, model, dist, w, h):
    white = torch.ones(h, w, 1)
    out = Undistorter()(white, K_src, model, dist, K_out=K_out)
    return int((out[..., 0] < 0.999).sum())


def test_pincushion_lens_zooms_just_enough_for_no_blank_pixel():
    """k1 > 0 (pincushion, as colmap_beer_can's phone): at the same K the corners of the undistorted image see
    outside the source; ``pinhole_K`` zooms in by the smallest factor that leaves none."""
    w, h = 48, 64
    K = torch.tensor([[70.0, 0.0, 24.0], [0.0, 70.0, 32.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    dist = torch.tensor([0.08, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert _blank_pixels(K, K, "opencv", dist, w, h) > 20  # the old behaviour: black corners
    zoom = blank_free_zoom(K, "opencv", dist, w, h)
    assert 1.01 < zoom < 1.2
    K_out = pinhole_K(K, "opencv", dist, w, h)
    assert float(K_out[0, 0]) == pytest.approx(70.0 * zoom) and float(K_out[1, 1]) == pytest.approx(
        70.0 * zoom
    )
    assert K_out[:2, 2].tolist() == [24.0, 32.0]  # principal point and size stay
    assert _blank_pixels(K, K_out, "opencv", dist, w, h) == 0
    assert _blank_pixels(K, zoomed_K(K, 1.0 + 0.8 * (zoom - 1.0)), "opencv", dist, w, h) > 0  # minimal zoom


def test_barrel_lens_and_pinhole_keep_K():
    K = torch.tensor([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    barrel = torch.tensor([-0.2, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert blank_free_zoom(K, "opencv", barrel, 64, 48) == 1.0
    assert torch.equal(pinhole_K(K, "opencv", barrel, 64, 48), K)
    assert torch.equal(pinhole_K(K, "pinhole", None, 64, 48), K)


def test_dataset_hands_out_the_zoomed_camera_and_blank_free_images(tmp_path, dw):
    """A COLMAP SIMPLE_RADIAL camera with k1 > 0 and white images: the loader's camera has the zoomed focal, its
    images have no black pixel, and the camera maps a point to the pixel the undistorted image shows it at."""
    from PIL import Image

    from recon.datasets import load_dataset

    w, h, f, k1 = 40, 30, 45.0, 0.1
    T = torch.eye(4, dtype=torch.float64)[None].repeat(2, 1, 1)
    dw.colmap(
        tmp_path, [("SIMPLE_RADIAL", w, h, [f, w / 2, h / 2, k1])], T, [0, 0], binary=True, write_images=False
    )
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (w, h), (255, 255, 255)).save(tmp_path / "images" / f"img_{i:03d}.png")
    ds = load_dataset(tmp_path)
    cam = ds.camera("train", 0)
    assert float(cam.K[0, 0, 0]) > 1.01 * f
    assert float(ds.image("train", 0).min()) > 0.99
