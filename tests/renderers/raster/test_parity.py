"""Warp vs torch reference for ``rasterize``: pix_to_face, attributes and vertex gradients (random cotangents)."""

import pytest
import torch

from recon.renderers.raster import rasterize, ref
from recon.renderers.raster.project import project_faces
from tests.renderers.raster.helpers import look_at, orbit_cameras, torus, triangle_soup
from tests.tolerances import assert_close, tol

# (layers, blur_sq px^2, cull_backfaces)
CASES = {
    "hard_k1": (1, 0.0, False),
    "k4": (4, 0.0, False),
    "soft_k5": (5, 3.0, False),
    "culled_k3": (3, 0.0, True),
}
TIE_DEPTH_REL = (
    1e-5  # two faces closer than this (relative depth) may swap slots between float32 implementations
)
EDGE_PX2 = (
    1e-3  # a pixel centre this close (px^2) to a face's coverage boundary may be in or out after rounding
)
MAX_AMBIGUOUS = 0.01  # at most 1% of the pixels may differ, and each only for one of the reasons above


def _scene(kind: str, gen: torch.Generator):
    if kind == "soup":
        vertices, faces = triangle_soup(60, gen)
        return vertices, faces, orbit_cameras(2, 36, 28)
    if kind == "torus":
        vertices, faces = torus(16, 10)
        return vertices, faces, orbit_cameras(2, 40, 32)
    # "near": a camera inside the soup, so many faces cross the near plane or lie behind it.
    vertices, faces = triangle_soup(60, gen, size=0.6)
    cams = orbit_cameras(1, 36, 28, distance=0.3)
    return vertices, faces, cams


def _ambiguous(a, b, vertices, faces, cameras, blur_sq) -> torch.Tensor:
    """(C, H, W) pixels whose slot lists differ between fragments ``a`` and ``b`` only through an equal-depth swap
    or a face whose pixel centre lies on its coverage boundary (|dists| or |dists - blur_sq| below EDGE_PX2)."""
    proj = project_faces(vertices.detach(), faces, cameras, z_near=1e-3, cull_backfaces=False)
    _, depth_b, dists_b = ref.attributes(proj, faces, b.pix_to_face)
    same_depths = ((a.depth - depth_b).abs() <= TIE_DEPTH_REL * a.depth.abs().clamp_min(1.0)).all(-1)
    boundary = torch.zeros_like(same_depths)
    for frags, dists in ((a, a.dists), (b, dists_b)):
        on_edge = (dists.abs() < EDGE_PX2) | ((dists - blur_sq).abs() < EDGE_PX2)
        boundary |= (on_edge & frags.covered()).any(-1)
    return same_depths | boundary


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["soup", "torus", "near"])
def test_forward_matches_reference(kind, case, device, gen):
    layers, blur_sq, cull = CASES[case]
    vertices, faces, cameras = _scene(kind, gen)
    vertices, faces, cameras = vertices.to(device), faces.to(device), cameras.to(device)
    kwargs = dict(layers=layers, blur_sq=blur_sq, cull_backfaces=cull)
    a = rasterize(vertices, faces, cameras, backend="torch", **kwargs)
    b = rasterize(vertices, faces, cameras, backend="warp", **kwargs)
    assert a.covered().float().mean() > 0.1, "the scene must cover a good part of the images"
    differs = (a.pix_to_face != b.pix_to_face).any(-1)
    ambiguous = _ambiguous(a, b, vertices, faces, cameras, blur_sq)
    assert not bool((differs & ~ambiguous).any()), (
        f"{int((differs & ~ambiguous).sum())} pixels differ for real"
    )
    assert differs.float().mean() <= MAX_AMBIGUOUS
    same = (a.pix_to_face == b.pix_to_face) & a.covered()
    for name in ("bary", "depth", "dists"):
        mask = same[..., None] if name == "bary" else same
        va, vb = getattr(a, name), getattr(b, name)
        assert_close(
            torch.where(mask, vb, 0), torch.where(mask, va, 0), name=name, **tol("raster_fwd", torch.float32)
        )
    empty = ~b.covered()
    assert bool((b.bary[empty] == 0).all() and (b.depth[empty] == 0).all())
    assert bool((b.dists[empty] == a.dists[empty]).all())


@pytest.mark.parametrize("output", ["bary", "depth", "dists"])
@pytest.mark.parametrize("case", ["hard_k1", "soft_k5"])
@pytest.mark.parametrize("kind", ["soup", "near"])
def test_backward_matches_reference(kind, case, output, device, gen):
    """Both attribute passes on the same slots (the reference's), a random cotangent on one output at a time."""
    from recon.renderers.raster import warp_impl

    layers, blur_sq, _ = CASES[case]
    vertices, faces, cameras = _scene(kind, gen)
    vertices, faces, cameras = vertices.to(device), faces.to(device), cameras.to(device)
    proj0 = project_faces(vertices, faces, cameras, z_near=1e-3, cull_backfaces=False)
    pix_to_face = ref.visibility(proj0, layers=layers, blur_sq=blur_sq)
    index = ("bary", "depth", "dists").index(output)
    grads, cot = {}, None
    for name, impl in (("torch", ref), ("warp", warp_impl)):
        leaf = vertices.clone().requires_grad_()
        proj = project_faces(leaf, faces, cameras, z_near=1e-3, cull_backfaces=False)
        out = impl.attributes(proj, faces, pix_to_face)[index]
        if output == "dists":  # PAD_DIST is a constant: mask the empty slots
            out = torch.where(pix_to_face >= 0, out, 0)
        if cot is None:
            cot = torch.randn(out.shape, generator=gen).to(device)
        (grads[name],) = torch.autograd.grad((out * cot).sum(), leaf)
    assert grads["torch"].abs().max() > 0
    scale = float(grads["torch"].abs().max())
    assert_close(grads["warp"] / scale, grads["torch"] / scale, name=f"d{output}/dvertices",
                 **tol("raster_bwd", torch.float32))  # fmt: skip


def test_end_to_end_gradients_to_vertices_and_pose(device, gen):
    """Through the public op: gradients reach vertices and T_cam_world on both backends, and agree."""
    vertices, faces = torus(12, 8)
    T = look_at((3.0, 1.0, 1.5))[None]
    K = torch.tensor([[[40.0, 0.0, 16.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]]])
    from recon.core.camera import Camera

    results = {}
    for backend in ("torch", "warp"):
        v = vertices.clone().to(device).requires_grad_()
        pose = T.clone().to(device).requires_grad_()
        frags = rasterize(v, faces.to(device), Camera(pose, K.to(device), 32, 24), layers=2, backend=backend)
        loss = (frags.depth * 0.3 + frags.bary[..., 0]).sum() + torch.where(
            frags.covered(), frags.dists, 0
        ).sum()
        results[backend] = (frags.pix_to_face, *torch.autograd.grad(loss, (v, pose)))
    assert torch.equal(results["torch"][0], results["warp"][0])
    for i, name in ((1, "vertices"), (2, "pose")):
        ref_g, fast_g = results["torch"][i], results["warp"][i]
        assert ref_g.abs().max() > 0
        scale = float(ref_g.abs().max())
        assert_close(fast_g / scale, ref_g / scale, name=name, **tol("raster_bwd", torch.float32))
