"""Warp vs dense reference: forward outputs, statistics and gradients (random cotangents), CPU and CUDA."""

import pytest
import torch

from recon.core.camera import Camera
from recon.renderers.splat import bin_tiles, project_triangles, rasterize_triangles
from tests.renderers.splat.helpers import FOCAL, camera, random_scene
from tests.tolerances import assert_close, tol

OUTPUTS = ("rgb", "alpha", "depth", "depth_median", "normals", "distortion")


def _occluded_scene(gen, width, height):
    # Random triangles behind three large, nearly opaque ones covering the image centre: early stop everywhere
    # there (T < 1e-4 after ~2-3 layers), so the pixels behind are fully occluded.
    v, c, o, s = random_scene(16, gen, width=width, height=height)
    big = torch.tensor([[[-1.0, -1.0, 0.0], [1.2, -0.9, 0.0], [0.0, 1.3, 0.0]]])
    walls = torch.cat([big * z / 2.0 + torch.tensor([0.0, 0.0, z]) for z in (0.8, 0.9, 1.0)])
    v = torch.cat([walls, v])
    c = torch.cat([torch.rand(3, 3, generator=gen), c])
    o = torch.cat([torch.full((3,), 0.99), o])
    s = torch.cat([torch.full((3,), 0.05), s])  # small sigma: a nearly solid triangle (alpha ~ o inside)
    return v, c, o, s


def _scene(kind, gen, width, height):
    if kind == "random":
        return random_scene(28, gen, width=width, height=height)
    if kind == "special":  # behind the camera, edge-on, and a scene in the left half only (empty tiles)
        v, c, o, s = random_scene(24, gen, width=width, height=height, behind=3, edge_on=3)
        v[6:, :, 0] = v[6:, :, 0].abs().neg() - 0.1  # x < 0: the right part of the image stays empty
        return v, c, o, s
    if kind == "occluded":
        return _occluded_scene(gen, width, height)
    raise ValueError(kind)


def _render_both(scene, cam, device, incenter_grad, gen):
    bg = torch.rand(3, generator=gen)
    results = {}
    for backend in ("torch", "warp"):
        leaves = [t.to(device).clone().requires_grad_() for t in (*scene, bg)]
        v, c, o, s, b = leaves
        out = rasterize_triangles(
            v,
            c,
            o,
            s,
            cam.to(device),
            background=b,
            backend=backend,
            incenter_grad=incenter_grad,
            compute_distortion=True,
        )
        results[backend] = (out, leaves)
    return results


@pytest.mark.parametrize("incenter_grad", [False, True])
@pytest.mark.parametrize(
    ("kind", "width", "height"),
    [("random", 40, 24), ("random", 33, 17), ("special", 48, 32), ("occluded", 29, 21)],
)
def test_warp_matches_ref(device, kind, width, height, incenter_grad):
    gen = torch.Generator().manual_seed(width * 1000 + height + len(kind))  # deterministic per case
    scene = _scene(kind, gen, width, height)
    cam = camera(width, height)
    res = _render_both(scene, cam, device, incenter_grad, gen)
    ref, fast = res["torch"][0], res["warp"][0]
    t_fwd = tol("splat_fwd", torch.float32)
    for name in OUTPUTS:
        assert_close(getattr(fast, name), getattr(ref, name), **t_fwd, name=name)
    alpha = ref.alpha.detach()
    assert float(alpha.max()) > 0.5 and float(alpha.min()) < 1e-6  # drawn pixels and empty ones
    if kind == "special":
        vis = ref.stats.visible[0]
        assert not bool(vis[:6].any())  # behind the camera and edge-on are culled
    if kind == "occluded":
        assert float(alpha.max()) > 1 - 2e-4  # early-stopped pixels
    for name in ("visible", "radius_px", "means2d", "inradius_px"):
        assert torch.equal(getattr(fast.stats, name), getattr(ref.stats, name)), name
    assert_close(fast.stats.max_blending, ref.stats.max_blending, **t_fwd, name="max_blending")

    # Backward with random cotangents on every output.
    cot = {name: torch.randn(getattr(ref, name).shape, generator=gen).to(device) for name in OUTPUTS}
    grads = {}
    for backend, (out, leaves) in res.items():
        loss = sum((getattr(out, name) * cot[name]).sum() for name in OUTPUTS)
        grads[backend] = torch.autograd.grad(loss, leaves)
    t_bwd = tol("splat_bwd", torch.float32)
    for name, g_fast, g_ref in zip(
        ("vertices", "colors", "opacities", "sigmas", "background"),
        grads["warp"],
        grads["torch"],
        strict=True,
    ):
        assert float(g_ref.abs().max()) > 0, name
        assert_close(g_fast, g_ref, **t_bwd, name=f"d/d{name}")


def test_multi_camera_and_per_view_colors(device, gen):
    v, c, o, s = random_scene(20, gen, width=32, height=24)
    cam0 = camera(32, 24)
    T1 = torch.eye(4)
    T1[0, 3] = 0.2  # second camera shifted along x
    cams = Camera.cat([cam0, Camera(T_cam_world=T1[None], K=cam0.K, width=32, height=24)]).to(device)
    colors = torch.stack([c, c.flip(0)]).to(device)
    args = [t.to(device) for t in (v, colors, o, s)]
    ref = rasterize_triangles(*args, cams, backend="torch")
    fast = rasterize_triangles(*args, cams, backend="warp")
    assert ref.rgb.shape == (2, 24, 32, 3) and ref.stats.max_blending.shape == (2, 20)
    for name in ("rgb", "alpha", "depth", "normals"):
        assert_close(getattr(fast, name), getattr(ref, name), **tol("splat_fwd", torch.float32), name=name)
    # each view equals a single-camera render with its own colours
    single = rasterize_triangles(args[0], colors[1], args[2], args[3], cams[1], backend="torch")
    assert_close(ref.rgb[1:], single.rgb, **tol("splat_fwd", torch.float32), name="view 1")


def test_binning_torch_equals_warp(device, gen):
    for width, height in ((40, 24), (33, 17), (64, 48)):
        v, c, o, s = random_scene(40, gen, width=width, height=height, behind=2)
        proj = project_triangles(*(t.to(device) for t in (v, c, o, s)), camera(width, height).to(device))
        a = bin_tiles(proj, backend="torch")
        b = bin_tiles(proj, backend="warp")
        assert a.point_list.numel() > 0
        assert torch.equal(a.point_list, b.point_list) and torch.equal(a.tile_ranges, b.tile_ranges)
        assert (a.tiles_x, a.tiles_y, a.tile_size) == (b.tiles_x, b.tiles_y, b.tile_size)
        # each tile's list is sorted front to back
        z = proj.zbar[a.point_list.long()]
        for start, end in a.tile_ranges.tolist():
            if end - start > 1:
                assert bool((z[start + 1 : end] >= z[start : end - 1]).all())


def test_empty_scene(backend, device):
    # All triangles culled (behind the camera): background everywhere, zero depth, zero stats, zero gradients.
    v = torch.tensor(
        [[[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.0, 0.1, -1.0]]], device=device, requires_grad=True
    )
    bg = torch.tensor([0.3, 0.2, 0.1], device=device)
    out = rasterize_triangles(
        v,
        torch.ones(1, 3, device=device),
        torch.full((1,), 0.5, device=device),
        torch.ones(1, device=device),
        camera(20, 12).to(device),
        background=bg,
        backend=backend,
    )
    assert torch.equal(out.rgb, bg.expand(1, 12, 20, 3))
    assert float(out.alpha.detach().abs().max()) == 0.0 and float(out.depth.detach().abs().max()) == 0.0
    assert not bool(out.stats.visible.any())
    out.rgb.sum().backward()
    assert float(v.grad.abs().max()) == 0.0


def test_focal_scaling_keeps_sigma_meaning(backend):
    # phi(p)/phi(s) is invariant to image-space scaling (spec 3). With f' = 2f and c' = 2c - 0.5, a point p of the
    # small image maps to 2p - 0.5, so small pixel centre (i + 0.5) maps to big pixel centre (2i + 0.5): the alpha
    # of big pixel (2i, 2j) equals that of small pixel (i, j) wherever alpha >= 0.01 (always binned).
    tri = torch.tensor([[[-0.4, -0.3, 2.0], [0.5, -0.2, 2.0], [0.0, 0.45, 2.0]]])
    args = (torch.ones(1, 3), torch.full((1,), 0.7), torch.full((1,), 1.7))
    small_cam = camera(32, 32, focal=FOCAL)
    K = small_cam.K.clone()
    K[:, :2, :2] *= 2
    K[:, :2, 2] = 2 * K[:, :2, 2] - 0.5
    big_cam = Camera(T_cam_world=small_cam.T_cam_world, K=K, width=64, height=64)
    small = rasterize_triangles(tri, *args, small_cam, backend=backend).alpha[0, ..., 0]
    big = rasterize_triangles(tri, *args, big_cam, backend=backend).alpha[0, ::2, ::2, 0]
    mask = small >= 0.01
    assert int(mask.sum()) > 50
    assert_close(big[mask], small[mask], **tol("splat_fwd", torch.float32), name="alpha at matching pixels")


def test_cpu_worker_split_is_exact(monkeypatch, gen):
    # The CPU raster kernels split tile rows over concurrent launches with private atomic buffers: one worker and
    # two workers give the same images and (up to summation order) the same gradients.
    v, c, o, s = random_scene(24, gen, width=40, height=40)
    cam = camera(40, 40)
    results = []
    for workers in ("1", "2"):
        monkeypatch.setenv("RECON_WARP_CPU_THREADS", workers)
        leaves = [t.clone().requires_grad_() for t in (v, c, o, s)]
        out = rasterize_triangles(*leaves, cam, backend="warp")
        (out.rgb.sum() + out.depth.sum()).backward()
        results.append((out, [t.grad for t in leaves]))
    (a, ga), (b, gb) = results
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.stats.max_blending, b.stats.max_blending)
    for x, y in zip(ga, gb, strict=True):
        assert_close(x, y, **tol("splat_bwd", torch.float32), name="grad")
