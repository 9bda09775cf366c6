"""Canonical frame from synthetic camera rings with a known centre and up (spec superquadrics.md 9)."""

import json
import math
from pathlib import Path

import pytest
import torch

from recon.core.camera import Camera
from recon.core.transforms import apply_T, look_at
from recon.scenes.superquadrics.frame import canonical_frame, closest_point_to_axes, rotation_to_y

F64 = torch.float64


def _ring(center, up, *, n=12, radius=3.0, height=1.2, jitter=0.0, seed=0) -> Camera:
    """Cameras on a circle around ``up`` through ``center``, raised by ``height``, looking at ``center``."""
    gen = torch.Generator().manual_seed(seed)
    up = up / up.norm()
    a = torch.linalg.cross(up, torch.tensor([0.3, 0.9, 0.1], dtype=F64))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    poses = []
    for k in range(n):
        th = 2 * math.pi * k / n
        eye = center + radius * (math.cos(th) * a + math.sin(th) * b) + height * up
        target = center + jitter * torch.randn(3, generator=gen, dtype=F64)
        poses.append(look_at(eye, target, up))
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]], dtype=F64).expand(n, 3, 3).clone()
    return Camera(torch.stack(poses), K, 100, 80)


@pytest.mark.parametrize(
    ("center", "up"),
    [
        ([0.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        ([0.3, -1.0, 2.0], [0.2, 0.1, 1.0]),
        ([5.0, 1.0, -2.0], [0.0, -1.0, 0.0]),
    ],
)
def test_ring_recovers_centre_up_and_scale(center, up):
    center, up = torch.tensor(center, dtype=F64), torch.tensor(up, dtype=F64)
    up = up / up.norm()
    frame = canonical_frame(_ring(center, up), roi_radius=0.5)
    torch.testing.assert_close(frame.center, center, rtol=0, atol=1e-9)
    torch.testing.assert_close(frame.up, up, rtol=0, atol=1e-9)
    assert frame.scale == pytest.approx(4.0)  # ROI radius 0.5 -> 2
    # centre -> origin, centre + r*up -> (0, 2, 0), a point at ROI radius along any direction -> norm 2
    mapped = apply_T(frame.T_canon_world, torch.stack([center, center + 0.5 * up]))
    torch.testing.assert_close(
        mapped, torch.tensor([[0.0, 0, 0], [0.0, 2.0, 0]], dtype=F64), rtol=0, atol=1e-9
    )
    side = torch.linalg.cross(up, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    side = center + 0.5 * side / side.norm()
    assert float(apply_T(frame.T_canon_world, side[None]).norm()) == pytest.approx(2.0)
    torch.testing.assert_close(frame.T_world_canon @ frame.T_canon_world, torch.eye(4, dtype=F64))
    # the camera centres are above the centre in the canonical frame (up = +y)
    cam_canon = apply_T(frame.T_canon_world, _ring(center, up).centers())
    assert bool((cam_canon[:, 1] > 0).all())


def test_least_squares_centre_with_noisy_targets_and_given_roi_centre():
    center = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    cams = _ring(center, up, jitter=0.05, n=24)
    frame = canonical_frame(cams, roi_radius=1.0)
    assert float((frame.center - center).norm()) < 0.05  # noise of 0.05 on each look-at target
    given = torch.tensor([1.5, 2.0, 3.0], dtype=F64)
    assert torch.equal(canonical_frame(cams, roi_radius=1.0, roi_center=given).center, given)


def test_closest_point_oracle():
    # the x axis through (0, 0, 0) and the y axis shifted to z = 2: the closest point is midway, (0, 0, 1)
    origins = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 5.0, 1.0]], dtype=F64)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(
        closest_point_to_axes(origins[:2], dirs[:2]), torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    )


def test_rotation_to_y():
    for up in ([0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.3, -0.2, 0.9]):
        u = torch.tensor(up, dtype=F64)
        u = u / u.norm()
        R = rotation_to_y(u)
        torch.testing.assert_close(R @ u, torch.tensor([0.0, 1.0, 0.0], dtype=F64))
        torch.testing.assert_close(torch.linalg.det(R), torch.tensor(1.0, dtype=F64))


def test_errors():
    center, up = torch.zeros(3, dtype=F64), torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    cams = _ring(center, up)
    with pytest.raises(ValueError, match="roi_radius"):
        canonical_frame(cams, roi_radius=0.0)
    parallel = Camera(cams.T_cam_world[:1].expand(3, 4, 4).clone(), cams.K[:3], 100, 80)
    with pytest.raises(ValueError, match="parallel"):
        canonical_frame(parallel, roi_radius=1.0)
    flipped = cams.T_cam_world.clone()
    flipped[1::2, :3, :3] = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=F64)) @ flipped[1::2, :3, :3]
    with pytest.raises(ValueError, match="up"):
        canonical_frame(Camera(flipped, cams.K, 100, 80), roi_radius=1.0, roi_center=center)


DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "nerf_synthetic_chair_200"


@pytest.mark.skipif(
    not (DATA / "transforms_train.json").exists(), reason="shared NeRF-synthetic chair not present"
)
def test_nerf_synthetic_cameras_give_blender_up_and_origin():
    """Real cameras: Blender scenes are z-up around the origin; the frame must find both (cameras only, no images)."""
    frames = json.loads((DATA / "transforms_train.json").read_text())["frames"]
    T_world_cam_gl = torch.tensor([f["transform_matrix"] for f in frames], dtype=F64)
    T_world_cam = T_world_cam_gl @ torch.diag(
        torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=F64)
    )  # OpenGL -> OpenCV
    T_cam_world = torch.linalg.inv(T_world_cam)
    K = torch.eye(3, dtype=F64).expand(len(frames), 3, 3).clone()
    frame = canonical_frame(Camera(T_cam_world, K, 800, 800), roi_radius=1.5)
    assert float(frame.center.norm()) < 0.1  # the chair's cameras all look at the origin
    assert float(frame.up[2]) > 0.95  # Blender up is +z
