"""Ray-rendered fields deliver RenderOutput depths as camera z (converted once in ``render_camera``)."""

import torch

from recon.core import Camera
from recon.core.transforms import look_at
from recon.scenes.field_scene import render_camera

PLANE_Z = 3.0  # the fake field is the plane at camera z = 3


def _camera() -> Camera:
    T = look_at(torch.tensor([0.5, -4.0, 1.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[[10.0, 0.0, 9.0], [0.0, 12.0, 5.0], [0.0, 0.0, 1.0]]])  # wide, off-centre: cos varies
    return Camera(T[None], K, 16, 12)


def test_ray_distances_become_camera_z():
    camera = _camera()
    forward = camera.T_cam_world[0, 2, :3]

    def render_rays(origins, directions):  # distance along each unit ray to the plane z_cam = PLANE_Z
        t = PLANE_Z / (directions @ forward)[:, None]
        ones = torch.ones_like(t)
        return {"rgb": ones.expand(-1, 3), "alpha": ones, "depth": t, "depth_median": t,
                "eikonal": 2 * ones, "num_samples": ones}  # fmt: skip

    full = render_camera(render_rays, camera, pixels=None, chunk=50, producer="PlaneField")
    assert full.depth.shape == (1, 12, 16, 1)
    torch.testing.assert_close(full.depth, torch.full_like(full.depth, PLANE_Z), rtol=0, atol=1e-5)
    torch.testing.assert_close(full.depth_median, full.depth)
    assert full.eikonal is not None and full.eikonal.residual_sum.shape == (1, 12, 16, 1)
    assert full.producer == "PlaneField"
    pixels = torch.tensor([[[0, 0], [15, 11], [7, 4]]])
    part = render_camera(render_rays, camera, pixels=pixels, chunk=2)
    torch.testing.assert_close(part.depth, torch.full((1, 3, 1), PLANE_Z), rtol=0, atol=1e-5)
