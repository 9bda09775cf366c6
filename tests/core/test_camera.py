"""Camera: ray generation, projection and unprojection (round trips and hand-computed cases)."""

import math

import pytest
import torch

from recon.core import Camera, ReconError  # noqa: F401  (ReconError re-export checked in test_errors)
from recon.core.transforms import invert_T, look_at, make_T, random_rotations
from tests.tolerances import assert_close, tol
from tests.typecheck import assert_rejected


def _random_cameras(n: int, gen: torch.Generator, dtype=torch.float64) -> Camera:
    R = random_rotations(n, generator=gen, dtype=dtype)
    t = torch.randn(n, 3, generator=gen, dtype=dtype)
    K = torch.zeros(n, 3, 3, dtype=dtype)
    K[:, 0, 0] = 100 + 50 * torch.rand(n, generator=gen, dtype=dtype)
    K[:, 1, 1] = 100 + 50 * torch.rand(n, generator=gen, dtype=dtype)
    K[:, 0, 2] = 30 + torch.rand(n, generator=gen, dtype=dtype)
    K[:, 1, 2] = 20 + torch.rand(n, generator=gen, dtype=dtype)
    K[:, 2, 2] = 1
    return Camera(T_cam_world=make_T(R, t), K=K, width=64, height=40)


def _hand_camera(dtype=torch.float64) -> Camera:
    # Identity pose, fx=fy=100, cx=32, cy=20 on a 64x40 image.
    K = torch.tensor([[[100.0, 0, 32], [0, 100, 20], [0, 0, 1]]], dtype=dtype)
    return Camera(T_cam_world=torch.eye(4, dtype=dtype)[None], K=K, width=64, height=40)


def test_project_hand_case():
    cam = _hand_camera()
    # Point (0.1, -0.2, 2): u = 100*0.1/2 + 32 = 37, v = 100*(-0.2)/2 + 20 = 10, depth 2.
    uv, z = cam.project(torch.tensor([[[0.1, -0.2, 2.0]]], dtype=torch.float64))
    assert_close(uv, torch.tensor([[[37.0, 10.0]]]), rtol=0, atol=1e-12)
    assert_close(z, torch.tensor([[2.0]]), rtol=0, atol=1e-12)


def test_ray_through_pixel_centre_hand_case():
    cam = _hand_camera()
    # Pixel (i=31, j=19) has its centre at (31.5, 19.5): direction (-0.5/100, -0.5/100, 1), normalised.
    rays = cam.generate_rays(torch.tensor([[[31, 19]]]))
    d = torch.tensor([-0.005, -0.005, 1.0], dtype=torch.float64)
    assert_close(rays.directions[0, 0], d / d.norm(), rtol=0, atol=1e-12)
    assert_close(rays.origins[0, 0], torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)


def test_full_image_rays_shape_and_unit():
    cam = _random_cameras(2, torch.Generator().manual_seed(1))
    rays = cam.generate_rays()
    assert rays.shape == (2, 40, 64)
    assert_close(
        rays.directions.norm(dim=-1),
        torch.ones(2, 40, 64, dtype=torch.float64),
        **tol("camera", torch.float64),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_unproject_round_trip(dtype, gen):
    cam = _random_cameras(3, gen, dtype)
    uv = torch.rand(3, 50, 2, generator=gen, dtype=dtype) * torch.tensor([64.0, 40.0], dtype=dtype)
    depth = 0.5 + 3 * torch.rand(3, 50, generator=gen, dtype=dtype)
    pts = cam.unproject(uv, depth)
    uv2, depth2 = cam.project(pts)
    assert_close(uv2, uv, **tol("camera", dtype), name="uv")
    assert_close(depth2, depth, **tol("camera", dtype), name="depth")


def test_rays_hit_unprojected_points(gen):
    cam = _random_cameras(2, gen)
    pix = torch.randint(0, 40, (2, 30, 2), generator=gen)
    rays = cam.generate_rays(pix)
    depth = 1 + torch.rand(2, 30, generator=gen, dtype=torch.float64)
    pts = cam.unproject(pix.double() + 0.5, depth)
    # The point lies on the ray: (p - o) parallel to d, at distance depth / cos(angle to the optical axis).
    v = pts - rays.origins
    cross = torch.linalg.cross(v, rays.directions)
    assert_close(cross, torch.zeros_like(cross), **tol("camera", torch.float64))
    assert bool(((v * rays.directions).sum(-1) > 0).all())


def test_look_at_centre_projects_to_principal_point():
    eye = torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64)
    target = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    T = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    K = torch.tensor([[[80.0, 0, 40], [0, 80, 30], [0, 0, 1]]], dtype=torch.float64)
    cam = Camera(T_cam_world=T[None], K=K, width=80, height=60)
    uv, z = cam.project(target[None, None])
    assert_close(uv[0, 0], torch.tensor([40.0, 30.0], dtype=torch.float64), rtol=0, atol=1e-9)
    assert_close(z[0, 0], (target - eye).norm(), rtol=0, atol=1e-9)
    assert_close(cam.centers()[0], eye, rtol=0, atol=1e-12)
    # World up (+z) appears as image up, i.e. negative v.
    uv_up, _ = cam.project((target + torch.tensor([0, 0, 0.1], dtype=torch.float64))[None, None])
    assert float(uv_up[0, 0, 1]) < 30.0


def test_scaled_keeps_pixel_geometry():
    cam = _hand_camera()
    half = cam.scaled(2.0)
    assert (half.width, half.height) == (32, 20)
    # A world point projects to half the pixel coordinates (pixel centres at +0.5 make this exact).
    p = torch.tensor([[[0.05, 0.07, 1.5]]], dtype=torch.float64)
    assert_close(half.project(p)[0], cam.project(p)[0] / 2, rtol=0, atol=1e-12)


def test_invert_and_world_to_camera(gen):
    cam = _random_cameras(2, gen)
    T = cam.T_cam_world
    assert_close(T @ invert_T(T), torch.eye(4, dtype=torch.float64).expand(2, 4, 4), rtol=0, atol=1e-12)


def test_camera_validates_shapes():
    assert_rejected(
        lambda: Camera(T_cam_world=torch.eye(4), K=torch.eye(3)[None], width=4, height=4), match="T_cam_world"
    )
    assert_rejected(
        lambda: Camera(T_cam_world=torch.eye(4)[None], K=torch.eye(3), width=4, height=4), match="K"
    )
    assert_rejected(
        lambda: Camera(
            T_cam_world=torch.eye(4)[None],
            K=torch.eye(3)[None],
            width=4,
            height=4,
            camera_model="opencv",
            distortion=torch.zeros(1, 3),
        ),
        match="distortion",
    )
    cam = Camera(T_cam_world=torch.eye(4)[None], K=torch.eye(3)[None], width=4, height=4)
    assert_rejected(lambda: cam.project(torch.zeros(5, 3)), match="points")


def test_indexing_and_cat(gen):
    cam = _random_cameras(4, gen)
    assert len(cam[1]) == 1 and len(cam[1:3]) == 2
    assert_close(Camera.cat([cam[0], cam[1:]]).K, cam.K, rtol=0, atol=0)
    assert math.isclose(float(cam[2].K[0, 0, 0]), float(cam.K[2, 0, 0]))
