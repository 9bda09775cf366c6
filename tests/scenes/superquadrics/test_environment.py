"""Background sphere and ground plane with UVs and the learnable ground pose (spec superquadrics.md 1)."""

import math

import torch

from recon.scenes.superquadrics.blocks import IDENTITY_ROT6D
from recon.scenes.superquadrics.environment import background_mesh, ground_mesh, posed_ground_vertices

F64 = torch.float64


def test_background_mesh_uvs_are_the_spherical_map():
    bkg = background_mesh(10.0, level=2)
    assert bkg.vertices.shape == (162, 3) and bkg.uv.shape == (162, 2)
    assert float(bkg.uv.min()) >= 0.0 and float(bkg.uv.max()) <= 1.0
    # +z direction -> u = 0.5, the equator -> v = 0.5, north pole -> v ~ 1
    x, y, z = bkg.vertices.unbind(-1)
    u_expected = (torch.atan2(x, z) + math.pi) / (2 * math.pi)
    torch.testing.assert_close(bkg.uv[:, 0], u_expected)
    top = int(y.argmax())
    assert float(bkg.uv[top, 1]) > 0.999


def test_ground_mesh_uvs_and_reduced_extent():
    full = ground_mesh(10.0, 3)
    assert full.vertices.shape == (81, 3) and full.faces.shape == (128, 3)
    corner = int((full.vertices[:, 0] + full.vertices[:, 2]).argmax())  # (10, 0, 10) -> uv (1, 1)
    torch.testing.assert_close(full.uv[corner], torch.tensor([1.0, 1.0], dtype=F64))
    torch.testing.assert_close(full.uv, (full.vertices[:, [0, 2]] / 10 + 1) / 2)
    reduced = ground_mesh(10.0, 3, extent=3.0)
    assert float(reduced.vertices[:, [0, 2]].abs().max()) == 3.0
    assert torch.equal(reduced.uv, full.uv) and torch.equal(reduced.faces, full.faces)


def test_posed_ground():
    ground = ground_mesh(10.0, 1)
    t = torch.tensor([0.0, -0.9, 0.0], dtype=F64)
    out = posed_ground_vertices(ground.vertices, torch.tensor(IDENTITY_ROT6D, dtype=F64), t)
    torch.testing.assert_close(out, ground.vertices + t)
    # a 90° rotation about x (columns b1 = x, b2 = z) maps the ground normal +y to +z
    r6 = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=F64)
    tilted = posed_ground_vertices(ground.vertices, r6, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(tilted[:, 2], ground.vertices[:, 2].new_zeros(ground.vertices.shape[0]))
    r6 = torch.tensor([1.0, 0.1, 0.0, 0.0, 1.0, 0.2], dtype=F64, requires_grad=True)
    t = t.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda r, tt: posed_ground_vertices(ground.vertices[:5], r, tt), (r6, t))
