"""The shading ops on fragments of the real rasterizer (``recon.renderers.raster.rasterize``): a textured, tilted,
connected mesh in front of a random soup; both shading backends, forward and gradients w.r.t. the vertices."""

import math

import torch

from recon.renderers.raster import shading_api as shading
from recon.renderers.raster.api import rasterize
from tests.renderers.raster._shading_scenes import camera, grid_mesh, random_mesh
from tests.tolerances import assert_close, tol

WIDTH, HEIGHT = 24, 18


def _tilted_grid(n: int = 4):
    vertices, faces = grid_mesh(n, size=1.1, depth=0.0)
    ax, ay = math.radians(20), math.radians(35)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = torch.tensor([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    vertices = vertices @ (ry @ rx).T + torch.tensor([0.05, -0.03, 3.0])
    uv = (grid_mesh(n, size=1.0)[0][:, :2] + 0.5).clamp(0, 1)
    return vertices, faces, uv


def _scene():
    gen = torch.Generator().manual_seed(7)
    grid_v, grid_f, grid_uv = _tilted_grid()
    soup_v, soup_f = random_mesh(gen, 10)
    soup_v = soup_v + torch.tensor([0.0, 0.0, 1.5])  # behind the grid
    vertices = torch.cat([grid_v, soup_v])
    faces = torch.cat([grid_f, soup_f + len(grid_v)])
    uv = torch.cat([grid_uv, torch.rand(len(soup_v), 2, generator=gen)])
    face_to_texture = torch.cat(
        [torch.zeros(len(grid_f), dtype=torch.long), torch.ones(len(soup_f), dtype=torch.long)]
    )
    return gen, vertices, faces, uv, face_to_texture


def test_textured_soft_render_both_backends():
    gen, vertices, faces, uv, face_to_texture = _scene()
    cam = camera(WIDTH, HEIGHT, cams=2)
    textures = torch.rand(2, 8, 8, 3, generator=gen)
    opacities = torch.rand(len(faces), generator=gen) * 0.5 + 0.5
    background = torch.rand(3, generator=gen)
    results = {}
    for backend in ("torch", "warp"):
        leaves = [t.clone().requires_grad_(True) for t in (vertices, textures, opacities)]
        v, tex, op = leaves
        frags = rasterize(v, faces, cam, layers=4, blur_sq=2.0, detach_bary=False, backend="torch")
        uv_px = shading.interpolate(uv, frags, faces, clip_bary=True, backend=backend)
        colors = shading.sample_texture(tex, uv_px, frags, face_to_texture, backend=backend)
        rgb, alpha = shading.soft_composite(
            frags, colors, op, sigma=0.5, background=background, mode="reference", backend=backend
        )
        results[backend] = (rgb, alpha, leaves, frags)
    rgb_ref, alpha_ref, leaves_ref, frags = results["torch"]
    rgb_fast, alpha_fast, leaves_fast, _ = results["warp"]
    assert bool((frags.pix_to_face[..., 1] >= 0).any()) and bool((alpha_ref < 1e-6).any())  # layers and empty
    assert_close(rgb_fast, rgb_ref, **tol("shading_fwd", torch.float32), name="rgb")
    assert_close(alpha_fast, alpha_ref, **tol("shading_fwd", torch.float32), name="alpha")
    cot_rgb, cot_alpha = (
        torch.randn(rgb_ref.shape, generator=gen),
        torch.randn(alpha_ref.shape, generator=gen),
    )
    g_ref = torch.autograd.grad((rgb_ref * cot_rgb).sum() + (alpha_ref * cot_alpha).sum(), leaves_ref)
    g_fast = torch.autograd.grad((rgb_fast * cot_rgb).sum() + (alpha_fast * cot_alpha).sum(), leaves_fast)
    for name, a, b in zip(("vertices", "textures", "opacities"), g_fast, g_ref, strict=True):
        assert float(b.abs().max()) > 0, name
        assert_close(a, b, **tol("shading_bwd", torch.float32), name=f"grad {name}")


def test_antialias_only_at_silhouettes_of_a_connected_mesh(backend):
    # Per-face random colours make every interior face boundary a colour edge; only the grid's outer boundary is a
    # silhouette, so pixels whose 4-neighbourhood is entirely covered must keep their colour.
    vertices, faces, _ = _tilted_grid()
    cam = camera(WIDTH, HEIGHT)
    frags = rasterize(vertices, faces, cam, layers=1, backend="torch")
    gen = torch.Generator().manual_seed(3)
    face_colors = torch.rand(len(faces), 3, generator=gen)
    covered = frags.pix_to_face[..., 0] >= 0
    color = torch.where(covered[..., None], face_colors[frags.pix_to_face[..., 0].clamp_min(0)], 0.0)
    verts = vertices.clone().requires_grad_(True)
    out = shading.antialias(color, frags, verts, faces, cam, backend=backend)
    changed = (out != color).any(-1)[0]
    cov = covered[0]
    padded = torch.nn.functional.pad(cov[None, None].float(), (1, 1, 1, 1), value=0.0)[0, 0]
    neighbours_all = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) == 4
    interior = cov & neighbours_all
    interior_face_edges = (
        (frags.pix_to_face[0, :, 1:, 0] != frags.pix_to_face[0, :, :-1, 0]) & cov[:, 1:] & cov[:, :-1]
    )
    assert int(interior_face_edges.sum()) > 5  # the colour edges inside the mesh are there
    assert int(changed.sum()) > 8 and not bool((changed & interior).any())
    (grad,) = torch.autograd.grad(out.sum(), verts)
    boundary = torch.zeros(len(vertices), dtype=torch.bool)
    n = 4
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    boundary[torch.cat([idx[0], idx[-1], idx[:, 0], idx[:, -1]])] = True
    assert float(grad[boundary].abs().max()) > 0
    assert float(grad[~boundary].abs().max()) == 0.0  # interior vertices lie on no silhouette edge


def test_all_warp_pipeline_matches_all_torch():
    # The real use: rasterize and shade on one backend. Fragments of the two rasterizer backends agree (their own
    # tests), so the rendered images and the vertex gradients must agree too.
    gen, vertices, faces, uv, face_to_texture = _scene()
    cam = camera(WIDTH, HEIGHT, cams=2)
    textures = torch.rand(2, 8, 8, 3, generator=gen)
    opacities = torch.rand(len(faces), generator=gen) * 0.5 + 0.5
    out = {}
    for backend in ("torch", "warp"):
        v = vertices.clone().requires_grad_(True)
        frags = rasterize(v, faces, cam, layers=4, blur_sq=2.0, detach_bary=True, backend=backend)
        uv_px = shading.interpolate(uv, frags, faces, clip_bary=True, backend=backend)
        colors = shading.sample_texture(textures, uv_px, frags, face_to_texture, backend=backend)
        rgb, alpha = shading.soft_composite(frags, colors, opacities, sigma=0.5, backend=backend)
        hard = rasterize(v, faces, cam, layers=1, backend=backend)
        aa = shading.antialias(rgb, hard, v, faces, cam, backend=backend)
        loss = (aa * torch.linspace(0.0, 1.0, 3)).sum() + alpha.sum()
        out[backend] = (aa, alpha, torch.autograd.grad(loss, v)[0])
    for i, name in enumerate(("rgb", "alpha", "grad vertices")):
        tolerance = tol("shading_bwd" if i == 2 else "shading_fwd", torch.float32)
        assert_close(out["warp"][i], out["torch"][i], **tolerance, name=name)
    assert float(out["torch"][2].abs().max()) > 0


def test_antialias_gradients_fit_a_silhouette(backend):
    # The purpose of antialias: hard rasterisation with silhouette gradients. A flat white triangle on black,
    # shifted 1.6 px right and 0.8 px down of its target, is fitted by gradient descent on its vertices; colour is
    # constant, so the only geometric gradient is the antialias edge term.
    cam = camera(32, 24, focal=30.0)
    z = 3.0

    def lift(px: torch.Tensor) -> torch.Tensor:
        return torch.cat([(px - torch.tensor([16.0, 12.0])) * z / 30.0, torch.full((3, 1), z)], -1)

    target_px = torch.tensor([[9.3, 6.2], [24.1, 8.7], [14.6, 19.4]])
    faces = torch.tensor([[0, 1, 2]])

    def render(vertices: torch.Tensor) -> torch.Tensor:
        frags = rasterize(vertices, faces, cam, layers=1, backend=backend)
        white = frags.covered()[..., :1].float()
        return shading.antialias(white, frags, vertices, faces, cam, backend=backend)

    with torch.no_grad():
        target = render(lift(target_px))
    vertices = lift(target_px + torch.tensor([1.6, 0.8])).requires_grad_(True)
    optimizer = torch.optim.Adam([vertices], lr=0.01)
    losses = []
    for _ in range(40):
        loss = ((render(vertices) - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    offset = (vertices.detach() - lift(target_px))[:, :2] * 30.0 / z  # remaining error in pixels
    assert losses[-1] < 0.2 * losses[0]  # measured: 33.4 -> 0.37 (both backends)
    assert float(offset.norm(dim=-1).mean()) < 0.5 * float(torch.tensor([1.6, 0.8]).norm())  # 1.79 -> 0.31 px
