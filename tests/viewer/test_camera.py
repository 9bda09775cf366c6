"""viser's browser camera <-> recon Camera, render sizes, the shared up direction."""

import math

import numpy as np
import pytest
import torch
import viser.transforms as vtf

from recon.core import Camera
from recon.core.transforms import look_at, random_rotations, rotmat_to_quat
from recon.viewer.camera import average_up_direction, camera_to_viser, render_size, viser_to_camera


def test_matches_viser_pose_convention(gen):
    """viser's wxyz/position mean P_world = R p_camera + t with OpenCV axes: our T_world_cam is exactly that."""
    wxyz = torch.randn(4, generator=gen, dtype=torch.float64)
    wxyz = wxyz / wxyz.norm()
    position = torch.randn(3, generator=gen, dtype=torch.float64)
    cam = viser_to_camera(wxyz, position, fov_y=1.0, width=80, height=60, dtype=torch.float64)
    R_viser = vtf.SO3(wxyz.numpy()).as_matrix()
    T_world_cam = cam.T_world_cam()[0]
    np.testing.assert_allclose(T_world_cam[:3, :3].numpy(), R_viser, atol=1e-12)
    np.testing.assert_allclose(T_world_cam[:3, 3].numpy(), position.numpy(), atol=1e-12)


def test_viewing_direction_and_image_up():
    """A point on the camera's +z axis lands on the image centre; a point along -y (viser's "up") lands above it."""
    T = look_at(torch.tensor([0.0, -4.0, 1.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    wxyz, position, fov_y, aspect = camera_to_viser(
        Camera(
            T_cam_world=T[None],
            K=torch.tensor([[[50.0, 0, 40], [0, 50.0, 30], [0, 0, 1]]]),
            width=80,
            height=60,
        )
    )
    cam = viser_to_camera(wxyz, position, fov_y=fov_y, width=80, height=60)
    uv, z = cam.project(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]]))
    assert torch.allclose(uv[0, 0], torch.tensor([40.0, 30.0]), atol=1e-4)
    assert float(z[0, 0]) > 0
    assert float(uv[0, 1, 1]) < 30.0  # world +z is up on screen
    # Viser's up direction (-y of the camera) agrees: the camera's -y axis has a positive world z component.
    R = vtf.SO3(np.asarray(wxyz)).as_matrix()
    assert -R[2, 1] > 0.9
    assert aspect == pytest.approx(80 / 60)


def test_intrinsics_from_vertical_fov():
    """fy = (H / 2) / tan(fov_y / 2); square pixels; principal point at the centre. fov 90 deg, H 100 -> fy 50."""
    cam = viser_to_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), fov_y=math.pi / 2, width=200, height=100)
    expected = torch.tensor([[50.0, 0.0, 100.0], [0.0, 50.0, 50.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(cam.K[0], expected, atol=1e-5)
    assert (cam.width, cam.height) == (200, 100)


def test_round_trip(gen):
    """viser pose -> Camera -> viser pose, for random rotations (quaternions up to sign)."""
    for R in random_rotations(16, generator=gen, dtype=torch.float64):
        wxyz = rotmat_to_quat(R)
        position = torch.randn(3, generator=gen, dtype=torch.float64)
        cam = viser_to_camera(wxyz, position, fov_y=0.8, width=64, height=48, dtype=torch.float64)
        wxyz2, position2, fov2, aspect2 = camera_to_viser(cam)
        q2 = torch.tensor(wxyz2, dtype=torch.float64)
        assert min(float((q2 - wxyz).norm()), float((q2 + wxyz).norm())) < 1e-9
        assert torch.allclose(torch.tensor(position2, dtype=torch.float64), position, atol=1e-9)
        assert fov2 == pytest.approx(0.8, abs=1e-9)
        assert aspect2 == pytest.approx(64 / 48)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="fov_y"):
        viser_to_camera((1.0, 0, 0, 0), (0, 0, 0), fov_y=0.0, width=10, height=10)
    with pytest.raises(ValueError, match="width and height"):
        viser_to_camera((1.0, 0, 0, 0), (0, 0, 0), fov_y=1.0, width=0, height=10)


@pytest.mark.parametrize(
    ("canvas", "cap", "scale", "expected"),
    [
        ((800, 600), 1024, 1.0, (800, 600)),  # below the cap: canvas size
        ((1600, 900), 800, 1.0, (800, 450)),  # longest side capped, aspect kept
        ((800, 600), 1024, 0.25, (200, 150)),  # preview factor
        ((900, 1600), 800, 0.5, (225, 400)),  # portrait canvas, cap then preview
        ((3, 2), 1024, 0.01, (1, 1)),  # never below one pixel
    ],
)
def test_render_size(canvas, cap, scale, expected):
    assert render_size(*canvas, max_resolution=cap, scale=scale) == expected


def test_average_up_direction():
    cams = []
    for eye in ([3.0, 0.0, 1.0], [0.0, 3.0, 0.5], [-3.0, 0.0, 2.0]):
        T = look_at(torch.tensor(eye), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
        cams.append(Camera(T_cam_world=T[None], K=torch.eye(3)[None], width=4, height=4))
    up = torch.tensor(average_up_direction(cams))
    assert float(up @ torch.tensor([0.0, 0.0, 1.0])) > 0.8
    assert float(up.norm()) == pytest.approx(1.0)
    assert average_up_direction([]) == (0.0, 0.0, 1.0)
