"""float64 ``torch.autograd.gradcheck`` of every shading reference op on tiny inputs (CPU)."""

import pytest
import torch

from recon.renderers.raster import shading_api as shading
from recon.renderers.raster.types import Fragments
from tests.renderers.raster._shading_scenes import brute_rasterize, camera, random_mesh

F64 = torch.float64


def _tiny_fragments(gen: torch.Generator, faces: int = 4, shape=(1, 3, 4, 2)) -> Fragments:
    p2f = torch.randint(-1, faces, shape, generator=gen)
    bary = torch.rand(*shape, 3, generator=gen, dtype=F64)
    bary = bary / bary.sum(-1, keepdim=True)
    # |d| >= 0.05 keeps max(d, 0) away from its kink under gradcheck's finite differences.
    dists = (torch.rand(shape, generator=gen, dtype=F64) * 2 + 0.05) * torch.where(
        torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0
    ).to(F64)
    return Fragments(p2f, bary, dists, torch.rand(shape, generator=gen, dtype=F64) + 1)


def test_interpolate_gradcheck():
    gen = torch.Generator().manual_seed(0)
    frags = _tiny_fragments(gen)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 0], [4, 1, 2]])
    attrs = torch.randn(5, 2, generator=gen, dtype=F64, requires_grad=True)
    bary = frags.bary.clone().requires_grad_(True)

    def fn(a, b):
        return shading.interpolate(a, Fragments(frags.pix_to_face, b, frags.dists, frags.depth), faces)

    assert torch.autograd.gradcheck(fn, (attrs, bary))


@pytest.mark.parametrize(("wrap_u", "mip_level"), [(False, None), (True, None), (False, 1)])
def test_sample_texture_gradcheck(wrap_u, mip_level):
    gen = torch.Generator().manual_seed(1)
    frags = _tiny_fragments(gen)
    textures = torch.rand(2, 5, 6, 2, generator=gen, dtype=F64, requires_grad=True)
    # Texel coordinates at integer + [0.2, 0.8]: finite differences never cross a texel boundary; some u outside
    # [0, 1] exercise the clamp (zero gradient) and the wrap.
    cells = torch.randint(-1, 6, (*frags.pix_to_face.shape, 2), generator=gen).to(F64)
    frac = 0.2 + 0.6 * torch.rand(*frags.pix_to_face.shape, 2, generator=gen, dtype=F64)
    width = 6 if wrap_u else 5
    uv = ((cells + frac) / torch.tensor([width, 4.0], dtype=F64)).requires_grad_(True)
    face_to_texture = torch.tensor([0, 1, 1, 0])

    def fn(tex, uv_):
        return shading.sample_texture(tex, uv_, frags, face_to_texture, wrap_u=wrap_u, mip_level=mip_level)

    assert torch.autograd.gradcheck(fn, (textures, uv))


@pytest.mark.parametrize("mode", ["over", "reference"])
def test_soft_composite_gradcheck(mode):
    gen = torch.Generator().manual_seed(2)
    frags = _tiny_fragments(gen)
    colors = torch.rand(*frags.pix_to_face.shape, 3, generator=gen, dtype=F64, requires_grad=True)
    opacities = torch.tensor([0.3, 1.0, 0.6, 0.9], dtype=F64, requires_grad=True)  # one opaque face
    background = torch.rand(3, generator=gen, dtype=F64, requires_grad=True)
    dists = frags.dists.clone().requires_grad_(True)

    def fn(d, c, o, bg):
        f = Fragments(frags.pix_to_face, frags.bary, d, frags.depth)
        return shading.soft_composite(f, c, o, sigma=0.7, background=bg, mode=mode)

    assert torch.autograd.gradcheck(fn, (dists, colors, opacities, background))


def test_silhouette_gradcheck():
    gen = torch.Generator().manual_seed(3)
    frags = _tiny_fragments(gen)
    opacities = torch.tensor([0.3, 0.8, 0.6, 0.9], dtype=F64, requires_grad=True)
    dists = frags.dists.clone().requires_grad_(True)

    def fn(d, o):
        return shading.silhouette(Fragments(frags.pix_to_face, frags.bary, d, frags.depth), o, sigma=0.5)

    assert torch.autograd.gradcheck(fn, (dists, opacities))


def test_soft_composite_gradcheck_through_vertices():
    # Spec superquadrics.md section 13: gradients w.r.t. vertices (through dists), alpha and texels with detached
    # barycentrics. Vertices go through the brute-force rasterizer of the tests (float64).
    gen = torch.Generator().manual_seed(4)
    vertices, faces = random_mesh(gen, 3, dtype=F64)
    cam = camera(6, 5, focal=5.0, dtype=F64)
    vertices.requires_grad_(True)
    layout = brute_rasterize(vertices.detach(), faces, cam, layers=3, blur_sq=1.0)
    colors = torch.rand(*layout.pix_to_face.shape, 3, generator=gen, dtype=F64, requires_grad=True)
    opacities = torch.tensor([0.5, 0.7, 0.9], dtype=F64, requires_grad=True)

    def fn(v, c, o):
        frags = brute_rasterize(v, faces, cam, layers=3, blur_sq=1.0)
        assert torch.equal(frags.pix_to_face, layout.pix_to_face)  # finite differences keep the slot layout
        return shading.soft_composite(frags, c, o, sigma=0.5, background=torch.zeros(3, dtype=F64))

    assert torch.autograd.gradcheck(fn, (vertices, colors, opacities))


def test_antialias_gradcheck():
    gen = torch.Generator().manual_seed(5)
    vertices, faces = random_mesh(gen, 6, dtype=F64)
    cam = camera(12, 10, focal=14.0, dtype=F64)
    frags = brute_rasterize(vertices, faces, cam, layers=1)
    color = torch.rand(1, 10, 12, 1, generator=gen, dtype=F64, requires_grad=True)
    vertices.requires_grad_(True)

    def fn(c, v):
        return shading.antialias(c, frags, v, faces, cam)

    out = fn(color, vertices)
    assert bool((out != color).any())  # some pixels were blended, so the vertex gradient is not trivially 0
    assert torch.autograd.gradcheck(fn, (color, vertices))
    grad = torch.autograd.grad(out.sum(), vertices)[0]
    assert float(grad.abs().max()) > 0
