"""MeshRenderer: hard rasterisation of plain meshes (colour sources, background, depth, normals, errors)."""

import pytest
import torch

from recon.core import Camera, Mesh
from recon.scenes.base import RenderOptions
from recon.scenes.mesh_scene import MeshRenderer, MeshTexture

W = H = 16
Z = 2.0


def _camera() -> Camera:
    """Identity pose, f = 8 px, centre (8, 8): the plane z = 2 spans x, y in [-2, 2] over the image."""
    K = torch.tensor([[[8.0, 0.0, 8.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]]])
    return Camera(torch.eye(4)[None], K, W, H)


def _quad(half: float = 1.0, **colours) -> Mesh:
    """A square of side ``2 half`` at z = 2 facing the camera: vertices TL, TR, BR, BL (image orientation)."""
    v = torch.tensor([[-half, -half, Z], [half, -half, Z], [half, half, Z], [-half, half, Z]])
    return Mesh(vertices=v, faces=torch.tensor([[0, 1, 2], [0, 2, 3]]), **colours)


def _options(**kw) -> RenderOptions:
    return RenderOptions(background=torch.tensor([0.0, 0.0, 1.0]), backend=kw.pop("backend", "torch"), **kw)


def test_face_colours_over_background(backend):
    # the quad covers pixels 4..11 (x in [-1, 1] at z = 2 is 4 px either side of the centre)
    mesh = _quad(face_colors=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    out = MeshRenderer(mesh).render(_camera(), _options(backend=backend, normals=True))
    rgb, alpha = out.rgb[0], out.alpha[0, ..., 0]
    assert rgb.shape == (H, W, 3) and alpha.shape == (H, W)
    assert torch.allclose(
        rgb[5, 10], torch.tensor([1.0, 0.0, 0.0])
    )  # above the diagonal: face 0 (TL, TR, BR)
    assert torch.allclose(rgb[10, 5], torch.tensor([0.0, 1.0, 0.0]))  # below: face 1
    assert torch.allclose(rgb[1, 1], torch.tensor([0.0, 0.0, 1.0])) and alpha[1, 1] == 0  # background
    assert int((alpha == 1).sum()) == 64  # 8 x 8 covered pixels; the edges lie on pixel borders: no blending
    assert torch.allclose(out.depth[0, 6, 6], torch.tensor([Z])) and out.depth[0, 0, 0] == 0
    # the normal faces the camera (the quad winds clockwise on screen = its normal points away; it is flipped)
    assert torch.allclose(out.normals[0, 6, 6], torch.tensor([0.0, 0.0, -1.0]))


def test_vertex_colours_interpolate(backend):
    colours = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    out = MeshRenderer(_quad(vertex_colors=colours)).render(_camera(), _options(backend=backend))
    # the colours are an affine function of the square's (x, y): r = (x + 1) / 2, g = (y + 1) / 2
    for row, col in [(7, 9), (4, 4), (11, 11), (5, 10)]:
        x = ((col + 0.5) - 8.0) / 8.0 * Z  # in [-1, 1]
        y = ((row + 0.5) - 8.0) / 8.0 * Z
        expect = torch.tensor([(x + 1) / 2, (y + 1) / 2, 0.0])
        assert torch.allclose(out.rgb[0, row, col], expect, atol=1e-5), (row, col)


def test_texture_lookup():
    # a 2 x 2 texture over the quad: each quadrant of the square reads one texel (glTF texel centres)
    image = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    out = MeshRenderer(_quad(), texture=MeshTexture(uv=uv, image=image)).render(_camera(), _options())
    # texel centres u = 0.25 / 0.75 sit at x = -0.5 / 0.5, i.e. on pixel borders 6 and 10: pixels 4 and 11 lie
    # outside them (clamped to one texel), pixel 9 (centre 9.5: u = 0.6875) blends 1/8 texel 0 + 7/8 texel 1
    assert torch.allclose(out.rgb[0, 4, 4], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(out.rgb[0, 4, 11], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(out.rgb[0, 11, 4], torch.tensor([0.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(out.rgb[0, 11, 11], torch.tensor([1.0, 1.0, 1.0]), atol=1e-5)
    assert torch.allclose(out.rgb[0, 4, 9], torch.tensor([0.125, 0.875, 0.0]), atol=1e-5)


def test_uncoloured_mesh_is_shaded_grey_and_antialiased_edges_blend():
    half = 1.1  # edges at x = +-1.1 -> pixel 8 +- 4.4: partial coverage at columns 3 and 12
    out = MeshRenderer(_quad(half)).render(_camera(), _options())
    centre = out.rgb[0, 8, 8]
    assert torch.allclose(centre, torch.full((3,), 0.8), atol=1e-5)  # facing the camera: full headlight
    edge = out.alpha[0, 8, 3, 0]
    assert 0.0 < float(edge) < 1.0  # antialiased silhouette
    assert 0.0 < float(out.rgb[0, 8, 3, 2]) < 1.0


def test_bad_inputs():
    with pytest.raises(TypeError, match="mesh"):
        MeshRenderer("mesh.ply")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one face"):
        MeshRenderer(Mesh(vertices=torch.zeros(3, 3), faces=torch.zeros(0, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="texture.uv"):
        MeshRenderer(_quad(), texture=MeshTexture(uv=torch.zeros(3, 2), image=torch.zeros(2, 2, 3)))
