"""Hand-computed cases of ``rasterize`` on both backends (arithmetic in the comments).

All cases use ``pixel_camera``: identity pose, f = 1, c = 0, so a camera point ``(x z, y z, z)`` projects to pixel
coordinates ``(x, y)`` and pixel ``(row y, column x)`` has its centre at ``(x + 0.5, y + 0.5)``.
"""

import pytest
import torch

from recon.renderers.raster import PAD_DIST, rasterize
from tests.renderers.raster.helpers import lift, pixel_camera
from tests.tolerances import assert_close, tol

# Right triangle with pixel corners A = (0, 0), B = (4, 0), C = (0, 4): normal (B - A) x (C - A) = +z, away from
# the camera, so [0, 1, 2] is a back face and [0, 2, 1] a front face.
RIGHT = [(0.0, 0.0), (4.0, 0.0), (0.0, 4.0)]


def _run(vertices, faces, backend, device, *, size=(4, 4), dtype=torch.float32, **kwargs):
    cam = pixel_camera(*size, dtype=dtype, device=device)
    v = torch.tensor(vertices, dtype=dtype, device=device)
    f = torch.tensor(faces, dtype=torch.int64, device=device)
    return rasterize(v, f, cam, backend=backend, **kwargs)


def _close(actual, expected, name):
    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    assert_close(actual, expected, name=name, **tol("raster_oracle", actual.dtype))


def test_one_triangle(backend, device):
    frags = _run(lift(RIGHT, 2.0), [[0, 1, 2]], backend, device)
    # Covered: centres with (x + 0.5) + (y + 0.5) <= 4, i.e. x + y <= 3 (the hypotenuse is inclusive).
    expected = torch.tensor([[1 if x + y <= 3 else 0 for x in range(4)] for y in range(4)])
    assert torch.equal((frags.pix_to_face[0, ..., 0] == 0).cpu().long(), expected)
    assert bool((frags.pix_to_face[0, ..., 0][expected == 0] == -1).all())
    # Pixel (0, 0), centre (0.5, 0.5) = b0 A + b1 B + b2 C: b1 = 0.5 / 4, b2 = 0.5 / 4, b0 = 0.75 (constant depth,
    # so screen-space = perspective-correct). Edges x = 0 and y = 0 are 0.5 px away: dists = -0.25.
    _close(frags.bary[0, 0, 0, 0], [0.75, 0.125, 0.125], "bary")
    _close(frags.depth[0, 0, 0, 0], 2.0, "depth")
    _close(frags.dists[0, 0, 0, 0], -0.25, "dists")
    # Pixel (row 2, column 1), centre (1.5, 2.5), lies exactly on the hypotenuse x + y = 4: inside, dists = 0,
    # bary = (0, 1.5 / 4, 2.5 / 4).
    assert int(frags.pix_to_face[0, 2, 1, 0]) == 0
    _close(frags.dists[0, 2, 1, 0], 0.0, "dists on the edge")
    _close(frags.bary[0, 2, 1, 0], [0.0, 0.375, 0.625], "bary on the edge")
    # Empty slots: bary 0, depth 0, dists PAD_DIST.
    assert float(frags.dists[0, 3, 3, 0]) == pytest.approx(PAD_DIST)
    assert float(frags.depth[0, 3, 3, 0]) == 0.0 and bool((frags.bary[0, 3, 3, 0] == 0).all())


def test_shared_edge_is_inclusive_on_both_faces(backend, device):
    # Face 0 = A B C at z = 2, face 1 = B D C at z = 3 with D = (4, 4): the centre (1.5, 2.5) of pixel (2, 1) is on
    # their shared edge B C, so both faces cover it, nearer first: [0, 1] with depths [2, 3].
    vertices = lift(RIGHT, 2.0) + lift([(4.0, 0.0), (4.0, 4.0), (0.0, 4.0)], 3.0)
    frags = _run(vertices, [[0, 1, 2], [3, 4, 5]], backend, device, layers=2)
    assert frags.pix_to_face[0, 2, 1].tolist() == [0, 1]
    _close(frags.depth[0, 2, 1], [2.0, 3.0], "depth")
    # Off the edge only one face covers: centre (0.5, 0.5) -> face 0 then nothing.
    assert frags.pix_to_face[0, 0, 0].tolist() == [0, -1]


def test_perspective_correct_barycentrics(backend, device):
    # A = (0, 0) at z = 1, B = (4, 0) at z = 3, C = (0, 4) at z = 1. At centre (0.5, 0.5) the screen barycentrics
    # are (0.75, 0.125, 0.125); perspective-correct ones are proportional to screen_i / z_i = (0.75, 1/24, 1/8),
    # whose sum is 11/12: bary = (9/11, 1/22, 3/22) and depth = 1 / (11/12) = 12/11.
    vertices = [lift(RIGHT[:1], 1.0)[0], lift(RIGHT[1:2], 3.0)[0], lift(RIGHT[2:], 1.0)[0]]
    frags = _run(vertices, [[0, 1, 2]], backend, device)
    _close(frags.bary[0, 0, 0, 0], [9 / 11, 1 / 22, 3 / 22], "bary")
    _close(frags.depth[0, 0, 0, 0], 12 / 11, "depth")


def test_face_crossing_the_near_plane(backend, device):
    # Camera-frame A = (1, 1, 1), B = (3, 1, 1), C = (1, 1, -1): a floor y = 1 running behind the camera. With
    # z_near = 0.5, edge B C is cut at t = (0.5 - 1) / (-1 - 1) = 0.25 -> (2.5, 1, 0.5) and edge C A at
    # t = (0.5 + 1) / 2 = 0.75 -> (1, 1, 0.5). Projected quad: A (1, 1), B (3, 1), (5, 2), (2, 2).
    # Pixel (row 1, column 2), centre (2.5, 1.5): ray (2.5, 1.5, 1) meets y = 1 at (5/3, 1, 2/3): depth 2/3;
    # in the plane's (x, z) coordinates (5/3, 2/3) = A + b1 (B - A) + b2 (C - A) = (1 + 2 b1, 1 - 2 b2):
    # bary = (1/2, 1/3, 1/6). Nearest quad edges: v = 1 and v = 2, 0.5 px away: dists = -0.25.
    vertices = [[1.0, 1.0, 1.0], [3.0, 1.0, 1.0], [1.0, 1.0, -1.0]]
    frags = _run(vertices, [[0, 1, 2]], backend, device, size=(6, 4), z_near=0.5)
    _close(frags.bary[0, 1, 2, 0], [0.5, 1 / 3, 1 / 6], "bary")
    _close(frags.depth[0, 1, 2, 0], 2 / 3, "depth")
    _close(frags.dists[0, 1, 2, 0], -0.25, "dists")
    # Row 1 (v = 1.5) is covered for u in [1.5, 4]: columns 2 and 3 surely, 0 and 4 not; nothing beyond the
    # horizon v = 2 (rows 2, 3) and nothing above v = 1 (row 0).
    row = frags.pix_to_face[0, 1, :, 0].tolist()
    assert row[2] == 0 and row[3] == 0 and row[0] == -1 and row[4] == -1
    assert bool((frags.pix_to_face[0, 2:] == -1).all() and (frags.pix_to_face[0, 0] == -1).all())
    # The same face fully behind the plane (all z < 0.5 once shifted) produces nothing.
    behind = [[x, y, z - 2.0] for x, y, z in vertices]
    assert bool((_run(behind, [[0, 1, 2]], backend, device, size=(6, 4), z_near=0.5).pix_to_face == -1).all())


def test_equal_depth_faces_are_ordered_by_index(backend, device):
    # Faces 0 and 1 are the same triangle at z = 2; face 2 is a copy at z = 1 (in front). Order: [2, 0, 1].
    vertices = lift(RIGHT, 2.0) + lift(RIGHT, 1.0)
    frags = _run(vertices, [[0, 1, 2], [0, 1, 2], [3, 4, 5]], backend, device, layers=4)
    assert frags.pix_to_face[0, 0, 0].tolist() == [2, 0, 1, -1]
    _close(frags.depth[0, 0, 0], [1.0, 2.0, 2.0, 0.0], "depth")


def test_layers_are_sorted_by_depth(backend, device):
    # Three copies at z = 3, 1, 2 (faces 0, 1, 2): nearest first [1, 2, 0]; K = 2 keeps the two nearest.
    vertices = lift(RIGHT, 3.0) + lift(RIGHT, 1.0) + lift(RIGHT, 2.0)
    faces = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    frags = _run(vertices, faces, backend, device, layers=3)
    assert frags.pix_to_face[0, 0, 0].tolist() == [1, 2, 0]
    _close(frags.depth[0, 0, 0], [1.0, 2.0, 3.0], "depth")
    assert _run(vertices, faces, backend, device, layers=2).pix_to_face[0, 0, 0].tolist() == [1, 2]


def test_back_faces_are_rasterized_unless_culled(backend, device):
    # Face 0 = [0, 1, 2] at z = 2 faces away (normal +z), face 1 = [3, 5, 4] at z = 3 faces the camera.
    vertices = lift(RIGHT, 2.0) + lift(RIGHT, 3.0)
    faces = [[0, 1, 2], [3, 5, 4]]
    assert _run(vertices, faces, backend, device, layers=2).pix_to_face[0, 0, 0].tolist() == [0, 1]
    culled = _run(vertices, faces, backend, device, layers=2, cull_backfaces=True)
    assert culled.pix_to_face[0, 0, 0].tolist() == [1, -1]


@pytest.mark.parametrize("blur_sq", [0.0, 2.0])
def test_degenerate_faces_produce_nothing(backend, device, blur_sq):
    # Collinear corners, a repeated corner, and a face in the plane x = 0 through the camera centre (edge-on).
    vertices = lift([(0.0, 0.0), (1.0, 1.0), (3.0, 3.0)], 2.0) + [
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 2.0],
        [0.0, 3.0, 1.5],
    ]
    faces = [[0, 1, 2], [0, 0, 2], [3, 4, 5]]
    v = torch.tensor(vertices, dtype=torch.float32, device=device, requires_grad=True)
    frags = rasterize(v, torch.tensor(faces, device=device), pixel_camera(4, 4, device=device), layers=2,
                      blur_sq=blur_sq, backend=backend)  # fmt: skip
    assert bool((frags.pix_to_face == -1).all())
    loss = frags.bary.sum() + frags.depth.sum() + torch.where(frags.covered(), frags.dists, 0).sum()
    (grad,) = torch.autograd.grad(loss, v)
    assert bool(torch.isfinite(grad).all() and (grad == 0).all())


def test_blurred_fragment_outside_the_face(backend, device):
    # Pixel (row 1, column 3), centre (3.5, 1.5): x + y = 5, outside the hypotenuse by 1 / sqrt(2) px, so
    # dists = +0.5. It is a fragment for blur_sq = 0.6, not for 0.4. Screen bary = (1 - 0.875 - 0.375, 3.5 / 4,
    # 1.5 / 4) = (-0.25, 0.875, 0.375); clipped_bary clamps and renormalises: (0, 0.7, 0.3).
    frags = _run(lift(RIGHT, 2.0), [[0, 1, 2]], backend, device, blur_sq=0.6)
    assert int(frags.pix_to_face[0, 1, 3, 0]) == 0
    _close(frags.dists[0, 1, 3, 0], 0.5, "dists")
    _close(frags.bary[0, 1, 3, 0], [-0.25, 0.875, 0.375], "bary")
    _close(frags.clipped_bary()[0, 1, 3, 0], [0.0, 0.7, 0.3], "clipped bary")
    assert (
        int(_run(lift(RIGHT, 2.0), [[0, 1, 2]], backend, device, blur_sq=0.4).pix_to_face[0, 1, 3, 0]) == -1
    )


def test_no_faces(backend, device):
    v = torch.ones(1, 3, device=device, requires_grad=True)
    frags = rasterize(v, torch.zeros(0, 3, dtype=torch.int64, device=device), pixel_camera(4, 4, device=device),
                      layers=2, backend=backend)  # fmt: skip
    assert frags.pix_to_face.shape == (1, 4, 4, 2) and bool((frags.pix_to_face == -1).all())
    assert bool((frags.dists == PAD_DIST).all()) and frags.depth.requires_grad
