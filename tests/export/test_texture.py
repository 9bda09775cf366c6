"""Texture baking: the UV rasteriser covers each chart exactly, dilation grows charts, and baking the renders of
a red-top / blue-bottom sphere gives red texels on top and blue ones below."""

import math

import torch

from recon.core import Mesh
from recon.export.texture import bake_texture, dilate, rasterize_uv, unwrap

from .procedural import BLUE, RED, ring_frame, sphere_mesh, sphere_scene


def test_rasterize_uv_covers_a_triangle_area():
    # the upper-left half of a 64x64 atlas: centres (col + 0.5, row + 0.5) with col + row + 1 <= 64 (those on the
    # diagonal edge count as inside) -> col + row <= 63: 64 * 65 / 2 = 2080 texels
    faces = torch.tensor([[0, 1, 2]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texel, face, bary = rasterize_uv(faces, uv, 64)
    assert len(texel) == 2080 and bool((face == 0).all())
    assert torch.allclose(bary.sum(-1), torch.ones(len(bary)))
    row, col = texel // 64, texel % 64
    assert bool(((row + col) <= 63).all())


def test_dilate_grows_by_the_number_of_passes():
    image = torch.zeros(9, 9, 3)
    filled = torch.zeros(9, 9, dtype=torch.bool)
    image[4, 4] = torch.tensor([0.2, 0.4, 0.6])
    filled[4, 4] = True
    out = dilate(image, filled, 2)
    assert torch.allclose(out[2:7, 2:7], torch.tensor([0.2, 0.4, 0.6]).expand(5, 5, 3))
    assert torch.allclose(out[0, 0], torch.tensor([0.2, 0.4, 0.6]))  # beyond the passes: the mean colour


def test_unwrap_keeps_positions():
    mesh = sphere_mesh(1)
    unwrapped, uv = unwrap(mesh, 128)
    assert unwrapped.num_faces == mesh.num_faces and uv.shape == (unwrapped.num_vertices, 2)
    assert bool(((uv >= 0) & (uv <= 1)).all())
    assert torch.allclose(
        unwrapped.vertices.norm(dim=-1), torch.full((unwrapped.num_vertices,), 0.8), atol=1e-5
    )


def test_bake_sphere_colours_from_renders():
    scene, frame = sphere_scene(), ring_frame()
    mesh = sphere_mesh(2)
    baked, texture = bake_texture(scene, mesh, frame.training_cameras(), size=128)
    texel, face, bary = rasterize_uv(baked.faces, texture.uv, 128)
    points = (bary[..., None] * baked.vertices[baked.faces[face]]).sum(1)
    colours = texture.image.reshape(-1, 3)[texel]
    top, bottom = points[:, 2] > 0.3, points[:, 2] < -0.3
    # flat triangles under a sphere of radius 0.8: the nearest render may show the neighbour face near z = 0,
    # hence the +-0.3 band; colours come back within 8-bit-ish error plus the render's window falloff
    for where, colour in ((top, RED), (bottom, BLUE)):
        err = (colours[where] - torch.tensor(colour)).abs().max(dim=-1).values
        assert float(err.median()) < 0.05 and float((err < 0.15).float().mean()) > 0.95
    assert math.isclose(float(texture.uv.min()), 0.0, abs_tol=0.1)
    assert baked.vertex_colors is None and isinstance(baked, Mesh)
