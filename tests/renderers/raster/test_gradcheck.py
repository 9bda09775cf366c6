"""float64 gradcheck of the reference ``rasterize`` on tiny inputs (pixel centres away from every edge)."""

import torch

from recon.core.camera import Camera
from recon.renderers.raster import rasterize
from tests.renderers.raster.helpers import pixel_camera


def _outputs(frags):
    covered = frags.covered()
    dists = torch.where(covered, frags.dists, 0.0)
    return frags.bary, frags.depth, dists


def _check(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_two_triangles_bary_depth_dists():
    # Two overlapping, tilted triangles seen by a 5x5 pixel camera; corners placed off the pixel-centre lattice
    # (x.5) by >= 0.1 px so no centre is within eps of an edge.
    cam = pixel_camera(5, 5, dtype=torch.float64)
    pts = torch.tensor([[0.2, 0.3, 1.5], [4.7, 0.9, 2.5], [1.1, 4.8, 2.0], [4.9, 4.6, 1.2], [0.1, 2.2, 3.0],
                        [3.3, 0.1, 2.6]], dtype=torch.float64)  # fmt: skip
    vertices = torch.cat([pts[:, :2] * pts[:, 2:], pts[:, 2:]], dim=1).requires_grad_()
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(vertices.detach(), faces, cam, layers=2, backend="torch")
    assert int((frags.pix_to_face[..., 1] >= 0).sum()) > 3, "some pixels must see both faces"
    _check(lambda v: _outputs(rasterize(v, faces, cam, layers=2, backend="torch")), vertices)


def test_blurred_fragments_outside():
    # blur_sq = 1.5 px^2: pixels just outside the triangle are fragments with dists > 0; their gradient flows
    # through the point-to-segment distance.
    cam = pixel_camera(6, 5, dtype=torch.float64)
    pts = torch.tensor([[1.3, 1.2, 2.0], [4.6, 1.4, 2.4], [2.2, 3.7, 1.7]], dtype=torch.float64)
    vertices = torch.cat([pts[:, :2] * pts[:, 2:], pts[:, 2:]], dim=1).requires_grad_()
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(vertices.detach(), faces, cam, blur_sq=1.5, backend="torch")
    assert bool((frags.dists[frags.covered()] > 0).any()), "the blur must add fragments outside"
    _check(lambda v: _outputs(rasterize(v, faces, cam, blur_sq=1.5, backend="torch")), vertices)


def test_near_plane_clipped_face_and_pose():
    # A floor crossing z_near = 0.5 (one corner behind the camera): dists come from the clipped quad, whose
    # corners move with the vertices through the clipping parameter t; gradients also reach T_cam_world.
    faces = torch.tensor([[0, 1, 2]])
    vertices = torch.tensor([[1.1, 1.0, 1.3], [3.2, 1.05, 1.1], [0.9, 0.95, -1.2]], dtype=torch.float64)
    vertices.requires_grad_()
    pose = torch.eye(4, dtype=torch.float64)[None].requires_grad_()
    K = torch.eye(3, dtype=torch.float64)[None]

    def fn(v, T):
        return _outputs(rasterize(v, faces, Camera(T, K, 6, 4), z_near=0.5, backend="torch"))

    frags = rasterize(vertices.detach(), faces, Camera(pose.detach(), K, 6, 4), z_near=0.5, backend="torch")
    assert int(frags.covered().sum()) >= 2
    _check(fn, vertices, pose)
