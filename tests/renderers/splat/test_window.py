"""Window function, footprint and compositing oracles (spec triangle_splats.md sections 3-5, 15)."""

import pytest
import torch

from recon.renderers.splat import project_triangles, rasterize_projected, rasterize_triangles
from recon.renderers.splat.ref import window_alpha
from tests.renderers.splat.helpers import lift, pixel_camera, random_scene, spec_loop_render
from tests.tolerances import assert_close, tol

# Right triangle with legs 6 (along x) and 8 (along y), hypotenuse 10, right angle at (4, 4):
#   inradius rho = (6 + 8 - 10) / 2 = 2, incenter s = (4 + 2, 4 + 2) = (6, 6), phi(s) = -2.
#   Edges: y = 4 (bottom), x = 4 (left), hypotenuse 4x + 3y = 52 (distance = (52 - 4x - 3y) / 5 inside).
RIGHT = torch.tensor([[[4.0, 4.0], [10.0, 4.0], [4.0, 12.0]]])
# (point, phi): phi = -min distance to the three edges.
#   (6, 6): distances (2, 2, (52-24-18)/5 = 2)    -> phi = -2,   r = 1
#   (5, 6): distances (2, 1, (52-20-18)/5 = 2.8)  -> phi = -1,   r = 0.5
#   (7, 7): distances (3, 3, (52-28-21)/5 = 0.6)  -> phi = -0.6, r = 0.3
#   (11, 11): beyond the hypotenuse               -> outside,   I = 0
ORACLE_POINTS = torch.tensor([[6.0, 6.0], [5.0, 6.0], [7.0, 7.0], [11.0, 11.0]])
ORACLE_RATIOS = torch.tensor([1.0, 0.5, 0.3, 0.0], dtype=torch.float64)


def _project(p, z=10.0, o=0.5, sigma=1.0, dtype=torch.float32, width=16, height=16, colors=None):
    n = p.shape[0]
    verts = lift(p.to(dtype), z)
    cols = colors if colors is not None else torch.ones(n, 3, dtype=dtype)
    return project_triangles(
        verts,
        cols.to(dtype),
        torch.full((n,), o, dtype=dtype),
        torch.full((n,), sigma, dtype=dtype),
        pixel_camera(width, height, dtype=dtype),
    )


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_window_oracle_right_triangle(sigma, dtype):
    proj = _project(RIGHT, sigma=sigma, dtype=dtype)
    t = tol("splat_oracle", dtype)
    assert bool(proj.visible[0])
    assert_close(proj.inv_phi_s, torch.tensor([-0.5], dtype=dtype), **t, name="1/phi(s)")
    assert_close(proj.inradius_px, torch.tensor([2.0], dtype=dtype), **t, name="inradius")
    # L_k(incenter) = -rho on all three (outward) edges
    L_s = proj.lines[0, :, :2] @ torch.tensor([6.0, 6.0], dtype=dtype) + proj.lines[0, :, 2]
    assert_close(L_s, torch.full((3,), -2.0, dtype=dtype), **t, name="L_k(s)")
    # o = 0.5 keeps alpha = o I below the 0.99 clamp: alpha / o = I = ratio^sigma
    alpha, inside = window_alpha(
        proj.lines, proj.inv_phi_s, proj.sigmas, proj.opacities, ORACLE_POINTS.to(dtype)
    )
    ratios = ORACLE_RATIOS.to(dtype)
    expected = torch.where(ratios > 0, ratios.clamp_min(1e-30) ** sigma, torch.zeros_like(ratios))
    assert_close(alpha[:, 0] / 0.5, expected, **t, name="window I")
    assert inside[:, 0].tolist() == [True, True, True, False]


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_window_oracle_rendered(backend, device, sigma):
    # Shifting the triangle by -0.5 moves oracle point (x, y) to (x - 0.5, y - 0.5): the centre of pixel (x-1, y-1).
    proj = _project(RIGHT - 0.5, sigma=sigma)
    proj = type(proj)(
        **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(proj).items()}
    )
    out = rasterize_projected(proj, None, torch.zeros(3, device=device), backend=backend)
    got = torch.stack([out.alpha[int(y) - 1, int(x) - 1, 0] for x, y in ORACLE_POINTS.tolist()]).cpu()
    expected = 0.5 * torch.where(ORACLE_RATIOS > 0, ORACLE_RATIOS.clamp_min(1e-30) ** sigma, 0.0).float()
    assert_close(got, expected, **tol("splat_fwd", torch.float32), name="alpha at oracle pixels")


def test_orientation_invariance(backend, gen):
    verts, cols, ops, sigs = random_scene(12, gen)
    from tests.renderers.splat.helpers import camera

    cam = camera()
    a = rasterize_triangles(verts, cols, ops, sigs, cam, backend=backend)
    b = rasterize_triangles(verts.flip(1), cols, ops, sigs, cam, backend=backend)
    c = rasterize_triangles(verts.roll(1, dims=1), cols, ops, sigs, cam, backend=backend)
    assert a.alpha.sum() > 1.0  # something is drawn
    for other in (b, c):
        for field in ("rgb", "alpha", "depth", "normals"):
            assert_close(
                getattr(other, field), getattr(a, field), **tol("splat_fwd", torch.float32), name=field
            )


def test_footprint_conservative(gen):
    # Every pixel where a triangle reaches alpha >= 0.01 lies in one of its binned tiles (spec 5).
    from tests.renderers.splat.helpers import camera

    checked = 0
    for seed in range(4):
        g = torch.Generator().manual_seed(100 + seed)
        verts, cols, ops, sigs = random_scene(30, g, width=72, height=56, size=0.6)
        proj = project_triangles(verts, cols, ops, sigs, camera(72, 56))
        ys, xs = torch.meshgrid(torch.arange(56), torch.arange(72), indexing="ij")
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() + 0.5
        alpha, _ = window_alpha(proj.lines, proj.inv_phi_s, proj.sigmas, proj.opacities, pix)
        tx, ty = (xs.reshape(-1) // 16)[:, None], (ys.reshape(-1) // 16)[:, None]
        r = proj.rect
        in_rect = (tx >= r[:, 0]) & (tx < r[:, 2]) & (ty >= r[:, 1]) & (ty < r[:, 3])
        strong = (alpha >= 0.01) & proj.visible[None, :]
        checked += int(strong.sum())
        assert not bool((strong & ~in_rect).any()), f"seed {seed}: alpha >= 0.01 outside the binned tiles"
    assert checked > 500


def test_edge_culling_drops_only_empty_raster_tiles(gen):
    # The binning drops (raster tile, triangle) pairs of the bbox rectangle whose tile lies outside an edge line:
    # every pixel centre of a dropped tile must be outside the triangle (window exactly 0), and some are dropped.
    from recon.renderers.splat import bin_tiles
    from recon.renderers.splat.binning import raster_rects
    from tests.renderers.splat.helpers import camera

    dropped = 0
    for seed in range(3):
        g = torch.Generator().manual_seed(200 + seed)
        verts, cols, ops, sigs = random_scene(30, g, width=72, height=56, size=0.6)
        proj = project_triangles(verts, cols, ops, sigs, camera(72, 56))
        bins = bin_tiles(proj, backend="torch")
        ys, xs = torch.meshgrid(torch.arange(56), torch.arange(72), indexing="ij")
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() + 0.5
        lines = proj.lines.detach().float()
        phi = (
            pix[:, None, None, 0] * lines[None, :, :, 0]
            + pix[:, None, None, 1] * lines[None, :, :, 1]
            + lines[None, :, :, 2]
        ).amax(dim=-1)  # (P, N)
        tile = (ys.reshape(-1) // 8) * bins.tiles_x + xs.reshape(-1) // 8
        binned = torch.zeros(bins.tiles_x * bins.tiles_y, len(proj), dtype=torch.bool)
        for t, (start, end) in enumerate(bins.tile_ranges.tolist()):
            binned[t, bins.point_list[start:end].long()] = True
        r = raster_rects(proj)
        tx, ty = (xs.reshape(-1) // 8)[:, None], (ys.reshape(-1) // 8)[:, None]
        in_rect = (tx >= r[:, 0]) & (tx < r[:, 2]) & (ty >= r[:, 1]) & (ty < r[:, 3])
        culled = in_rect & ~binned[tile]
        dropped += int(culled.sum())
        assert not bool((culled & (phi <= 0)).any()), f"seed {seed}: a pixel inside a triangle was culled"
    assert dropped > 0


def _stack_scene(opacities, colors, depths):
    # Identical right triangles (incenter at pixel (5, 5)) at increasing depths.
    p = (RIGHT - 0.5).expand(len(opacities), 3, 2)
    verts = torch.cat([lift(p[i : i + 1], z) for i, z in enumerate(depths)])
    return (verts, torch.tensor(colors), torch.tensor(opacities), torch.ones(len(opacities)))


def test_two_primitive_compositing(backend, device):
    # Front (z = 5): alpha 0.5, red; back (z = 10): alpha 0.4, green; background blue; at the shared incenter I = 1.
    #   rgb = 0.5 red + (1 - 0.5) 0.4 green + 0.5 * 0.6 blue = (0.5, 0.2, 0.3); alpha = 1 - 0.5 * 0.6 = 0.7
    #   depth = (0.5 * 5 + 0.2 * 10) / 0.7 = 6.4285714; median = 5 (back T_before = 0.5 is not > 0.5)
    #   normals = -(0.5 + 0.2) z = (0, 0, -0.7). Input order back-then-front: the sort must fix it.
    verts, cols, ops, sigs = _stack_scene([0.4, 0.5], [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [10.0, 5.0])
    cam = pixel_camera(16, 16)
    args = [t.to(device) for t in (verts, cols, ops, sigs)]
    out = rasterize_triangles(
        *args, cam.to(device), background=torch.tensor([0.0, 0.0, 1.0], device=device), backend=backend
    )
    t = tol("splat_fwd", torch.float32)
    px = lambda img: img[0, 5, 5].cpu()  # noqa: E731
    assert_close(px(out.rgb), torch.tensor([0.5, 0.2, 0.3]), **t, name="rgb")
    assert_close(px(out.alpha), torch.tensor([0.7]), **t, name="alpha")
    assert_close(px(out.depth), torch.tensor([4.5 / 0.7]), **t, name="depth")
    assert_close(px(out.depth_median), torch.tensor([5.0]), **t, name="median")
    assert_close(px(out.normals), torch.tensor([0.0, 0.0, -0.7]), **t, name="normals")
    assert_close(out.stats.max_blending[0].cpu(), torch.tensor([0.2, 0.5]), **t, name="max_blending")


def test_skip_and_early_stop(backend, device):
    # Stack at pixel (5, 5), front to back: o = 0.003 (alpha < 1/255: skipped), then four with alpha 0.95.
    #   T: 1 -> 0.05 -> 0.0025 -> 0.000125; the fourth would give 6.25e-6 < 1e-4: early stop, NOT blended.
    #   w = (0, 0.95, 0.0475, 0.002375, 0); rgb = (0.95, 0.0475, 0.002375) + 0.000125 * bg (bg = (1, 1, 1)).
    cols = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    verts, cols, ops, sigs = _stack_scene([0.003, 0.95, 0.95, 0.95, 0.95], cols, [4.0, 5.0, 6.0, 7.0, 8.0])
    ops = ops.clone()
    ops[0] = 0.5  # visible for culling (o >= 0.01) ...
    sigs = sigs.clone()
    sigs[0] = 1.0
    leaves = [t.to(device).requires_grad_() for t in (verts, cols, ops, sigs)]
    # ... and alpha 0.003 at the pixel: scale the opacity inside the graph so culling sees 0.5.
    ops_eff = leaves[2] * torch.tensor([0.006, 1, 1, 1, 1], device=device)
    out = rasterize_triangles(
        leaves[0],
        leaves[1],
        ops_eff,
        leaves[3],
        pixel_camera(16, 16).to(device),
        background=torch.ones(3, device=device),
        backend=backend,
    )
    t = tol("splat_fwd", torch.float32)
    assert_close(
        out.rgb[0, 5, 5].cpu(),
        torch.tensor([0.95 + 0.000125, 0.0475 + 0.000125, 0.002375 + 0.000125]),
        **t,
        name="rgb",
    )
    assert_close(out.alpha[0, 5, 5].cpu(), torch.tensor([1 - 0.000125]), **t, name="alpha")
    assert float(out.stats.max_blending[0, 0]) == 0.0  # skipped everywhere (alpha <= 0.003)
    # d rgb(5, 5) / d colour_j = w_j: the per-triangle weights at this pixel; the skipped and the stopped
    # triangles get exactly 0.
    (out.rgb[0, 5, 5].sum() + out.alpha[0, 5, 5].sum()).backward()
    weights = torch.tensor([0.0, 0.95, 0.0475, 0.002375, 0.0])
    for channel in range(3):
        assert_close(
            leaves[1].grad[:, channel].cpu(), weights, **t, name=f"w via d rgb / d colour[{channel}]"
        )
    assert float(leaves[1].grad[0].abs().sum()) == 0.0 and float(leaves[1].grad[4].abs().sum()) == 0.0


def test_spec_loop_oracle_and_max_blending(backend, gen):
    # The dense reference and the Warp kernels against the literal section-4 loop, incl. max_blending.
    from tests.renderers.splat.helpers import camera

    verts, cols, ops, sigs = random_scene(10, gen, width=24, height=20, size=0.5)
    cam = camera(24, 20)
    bg = torch.tensor([0.2, 0.5, 0.9])
    proj = project_triangles(verts, cols, ops, sigs, cam)
    rgb, alpha, max_w = spec_loop_render(proj, bg)
    out = rasterize_triangles(verts, cols, ops, sigs, cam, background=bg, backend=backend)
    t = tol("splat_fwd", torch.float32)
    assert float(alpha.max()) > 0.3
    assert_close(out.rgb[0], rgb, **t, name="rgb")
    assert_close(out.alpha[0, ..., 0], alpha, **t, name="alpha")
    assert_close(out.stats.max_blending[0], max_w, **t, name="max_blending")
