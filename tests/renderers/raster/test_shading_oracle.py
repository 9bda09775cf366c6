"""Hand-computed cases of the shading ops (arithmetic in comments), limits, empty slots and input validation."""

import math

import pytest
import torch

from recon.core.camera import Camera
from recon.renderers.raster import shading_api as shading
from recon.renderers.raster.types import Fragments
from tests.renderers.raster._shading_scenes import brute_rasterize, camera, random_mesh
from tests.tolerances import assert_close, tol
from tests.typecheck import assert_rejected

ORACLE = tol("shading_oracle", torch.float32)


def _one_pixel(faces, dists, bary=None) -> Fragments:
    k = len(faces)
    bary = torch.full((1, 1, 1, k, 3), 1 / 3) if bary is None else bary
    return Fragments(
        torch.tensor(faces).reshape(1, 1, 1, k),
        bary,
        torch.tensor(dists, dtype=torch.float32).reshape(1, 1, 1, k),
        torch.ones(1, 1, 1, k),
    )


@pytest.mark.parametrize("mode", ["over", "reference"])
def test_soft_composite_two_layers(backend, mode):
    # Slot 0: face 0 with d = -1 (inside), alpha_0 = 0.5 -> a_0 = exp(0) * 0.5 = 0.5.
    # Slot 1: face 1 with d = 0.5 px^2, sigma = 0.5, alpha_1 = 0.8 -> a_1 = exp(-1) * 0.8 = 0.2943036.
    # T_0 = 1, T_1 = 0.5, T_2 = 0.5 * (1 - 0.2943036) = 0.3528482, mask m = 1 - T_2 = 0.6471518.
    # C_fg = red * 0.5 + green * 0.5 * 0.2943036 = (0.5, 0.1471518, 0).
    # over:      C = C_fg + T_2 * blue          = (0.5, 0.1471518, 0.3528482)
    # reference: C = C_fg * m + (1 - m) * blue  = (0.3235759, 0.0952306, 0.3528482)
    frags = _one_pixel([0, 1], [-1.0, 0.5])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).reshape(1, 1, 1, 2, 3)
    a1 = math.exp(-1.0) * 0.8
    t2 = 0.5 * (1 - a1)
    m = 1 - t2
    fg = torch.tensor([0.5, 0.5 * a1, 0.0])
    expected = (
        fg + t2 * torch.tensor([0.0, 0.0, 1.0]) if mode == "over" else fg * m + t2 * torch.tensor([0, 0, 1.0])
    )
    rgb, alpha = shading.soft_composite(
        frags,
        colors,
        torch.tensor([0.5, 0.8]),
        sigma=0.5,
        background=torch.tensor([0.0, 0.0, 1.0]),
        mode=mode,
        backend=backend,
    )
    assert_close(rgb.reshape(3), expected, **ORACLE, name="rgb")
    assert_close(alpha.reshape(1), torch.tensor([m]), **ORACLE, name="alpha")
    sil = shading.silhouette(frags, torch.tensor([0.5, 0.8]), sigma=0.5, backend=backend)
    assert_close(sil.reshape(1), torch.tensor([m]), **ORACLE, name="silhouette")


def test_bilinear_texel_lookup(backend):
    # texel[i, j] = 10 i + j on a 3 x 4 texture; aligned corners: x = u (W - 1) = 0.5 * 3 = 1.5,
    # y = v (H - 1) = 0.25 * 2 = 0.5; bilinear of a linear function is exact: 10 * 0.5 + 1.5 = 6.5.
    # uv = (1.2, -0.3) clamps to (x, y) = (3, 0): texel[0, 3] = 3.
    # wrap_u: x = u W = 0.9375 * 4 = 3.75, v = 0 -> 0.25 texel[0, 3] + 0.75 texel[0, 0] = 0.75.
    tex = (10 * torch.arange(3.0)[:, None] + torch.arange(4.0)[None, :]).reshape(1, 3, 4, 1)
    frags = _one_pixel([0, 0, 0, -1], [-1.0] * 4)
    uv = torch.tensor([[0.5, 0.25], [1.2, -0.3], [0.9375, 0.0], [0.5, 0.5]]).reshape(1, 1, 1, 4, 2)
    out = shading.sample_texture(tex, uv, frags, torch.zeros(1, dtype=torch.long), backend=backend)
    assert_close(out.reshape(4)[:2], torch.tensor([6.5, 3.0]), **ORACLE, name="clamped")
    assert float(out.reshape(4)[3]) == 0.0  # empty slot
    wrapped = shading.sample_texture(
        tex, uv, frags, torch.zeros(1, dtype=torch.long), wrap_u=True, backend=backend
    )
    assert_close(wrapped.reshape(4)[2], torch.tensor(0.75), **ORACLE, name="wrapped")


def test_mip_level_is_box_filtered(backend):
    # Level 1 of a 4 x 4 texture is 2 x 2; texel [0, 1] averages rows 0-1, columns 2-3 of 10 i + j:
    # (2 + 3 + 12 + 13) / 4 = 7.5; uv = (1, 0) hits it with aligned corners.
    tex = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).reshape(1, 4, 4, 1)
    frags = _one_pixel([0], [-1.0])
    uv = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 1, 2)
    out = shading.sample_texture(
        tex, uv, frags, torch.zeros(1, dtype=torch.long), mip_level=1, backend=backend
    )
    assert_close(out.reshape(1), torch.tensor([7.5]), **ORACLE, name="mip 1")
    # Odd sizes round up: level 1 of a 3 x 3 texture is 2 x 2 and its texel [1, 1] covers only texel [2, 2] = 22.
    odd = (10 * torch.arange(3.0)[:, None] + torch.arange(3.0)[None, :]).reshape(1, 3, 3, 1)
    corner = torch.ones(1, 1, 1, 1, 2)
    out = shading.sample_texture(
        odd, corner, frags, torch.zeros(1, dtype=torch.long), mip_level=1, backend=backend
    )
    assert_close(out.reshape(1), torch.tensor([22.0]), **ORACLE, name="odd mip 1")
    # Beyond the last level the pyramid stays at 1 x 1: the mean of 10 i + j over 4 x 4 is 10 * 1.5 + 1.5 = 16.5.
    out = shading.sample_texture(
        tex, uv, frags, torch.zeros(1, dtype=torch.long), mip_level=9, backend=backend
    )
    assert_close(out.reshape(1), torch.tensor([16.5]), **ORACLE, name="mip 9")


def test_interpolate_constant_is_constant(backend):
    gen = torch.Generator().manual_seed(0)
    vertices, faces = random_mesh(gen, 10)
    frags = brute_rasterize(vertices, faces, camera(16, 12), layers=3, blur_sq=1.5)
    out = shading.interpolate(torch.full((len(vertices), 2), 4.25), frags, faces, backend=backend)
    covered = frags.covered()
    assert int(covered.sum()) > 20
    assert_close(out[covered], torch.full((int(covered.sum()), 2), 4.25), **ORACLE, name="covered")
    assert bool((out[~covered] == 0).all())


def _edge_scene(edge_x: float):
    # Camera f = 10, c = (10, 4), 20 x 8 px. One triangle at z = 2 whose right edge A-B is the vertical screen line
    # x = edge_x (A = (edge_x, -20), B = (edge_x, 30) in pixels); the third vertex is far left, off screen.
    f, z = 10.0, 2.0
    K = torch.tensor([[[f, 0.0, 10.0], [0.0, f, 4.0], [0.0, 0.0, 1.0]]])
    cam = Camera(T_cam_world=torch.eye(4)[None], K=K, width=20, height=8)
    screen = torch.tensor([[edge_x, -20.0], [edge_x, 30.0], [-30.0, 4.0]])
    world = torch.cat([(screen - torch.tensor([10.0, 4.0])) * z / f, torch.full((3, 1), z)], -1)
    return cam, world, torch.tensor([[0, 1, 2]]), f / z


@pytest.mark.parametrize("edge_x", [9.8, 10.3, 10.45])
def test_antialias_partially_covered_edge_pixel(backend, edge_x):
    # The hard render colours pixel columns whose centre x + 0.5 < edge_x with c0 = 1, the rest with c1 = 0. The
    # pair (9, 10) straddles the edge; the crossing sits dc = edge_x - 9.5 px from pixel 9's centre. dc < 0.5:
    # pixel 9 gets alpha = 0.5 - dc of c1 - c0; dc > 0.5: pixel 10 gets dc - 0.5 of c0 - c1. Both are the area
    # of pixel j (spanning [j, j + 1]) left of the edge: coverage_j = clamp(edge_x - j, 0, 1), so
    # 9.8 -> pixel 9 = 0.8; 10.3 -> pixel 10 = 0.3; 10.45 -> pixel 10 = 0.45 (nearly half covered).
    cam, vertices, faces, df_dx = _edge_scene(edge_x)
    frags = brute_rasterize(vertices, faces, cam, layers=1)
    hard = frags.covered()[..., 0].float()
    assert bool((hard[0, :, :10] == 1).all()) and bool((hard[0, :, 11:] == 0).all())
    color = hard.unsqueeze(-1).clone().requires_grad_(True)
    verts = vertices.clone().requires_grad_(True)
    out = shading.antialias(color, frags, verts, faces, cam, backend=backend)
    cols = torch.arange(20.0)
    expected = (edge_x - cols).clamp(0.0, 1.0)
    assert_close(
        out[0, :, :, 0], expected.expand(8, 20), **tol("shading_projected", torch.float32), name="coverage"
    )
    # Moving the edge right by dx screen px raises the coverage of the straddling pixel by dx in each of the 8
    # rows; a world x shift of A and B moves the edge by f / z screen px per unit.
    (g_vertices,) = torch.autograd.grad(out.sum(), verts)
    assert float(g_vertices[:2, 0].sum()) > 0
    assert_close(
        g_vertices[:2, 0].sum(), torch.tensor(8 * df_dx), rtol=1e-4, atol=1e-4, name="d sum / d edge x"
    )
    assert float(g_vertices[2].abs().max()) == 0.0  # the far vertex is on no crossing edge


def test_sigma_to_zero_is_hard_zbuffer(backend):
    gen = torch.Generator().manual_seed(1)
    vertices, faces = random_mesh(gen, 16)
    cam = camera(20, 14)
    soft = brute_rasterize(vertices, faces, cam, layers=16, blur_sq=3.0)  # K = F: no covering face is cut off
    hard = brute_rasterize(vertices, faces, cam, layers=1)
    vertex_colors = torch.rand(len(vertices), 3, generator=gen)
    background = torch.tensor([0.2, 0.3, 0.4])
    covered = hard.covered()[..., 0:1]
    front = shading.interpolate(vertex_colors, hard, faces, backend="torch")[..., 0, :]
    zbuffer = torch.where(covered, front, background)
    colors = shading.interpolate(vertex_colors, soft, faces, backend=backend)
    for sigma in (0.0, 1e-7):
        rgb, alpha = shading.soft_composite(
            soft, colors, None, sigma=sigma, background=background, backend=backend
        )
        assert_close(rgb, zbuffer, **ORACLE, name=f"rgb sigma={sigma}")
        assert_close(alpha, covered.float(), **ORACLE, name=f"alpha sigma={sigma}")
    assert bool(covered.any()) and not bool(covered.all())
    assert int((soft.dists[..., 0] > 0).sum()) > 5  # blurred slots in front of the covering ones exist


def test_empty_slots_contribute_nothing(backend):
    gen = torch.Generator().manual_seed(2)
    vertices, faces = random_mesh(gen, 10)
    frags = brute_rasterize(vertices, faces, camera(16, 12), layers=3, blur_sq=2.0)
    empty = ~frags.covered()
    assert int(empty.sum()) > 10
    # Garbage in empty slots: barycentrics, a "deep inside" distance, NaN colours and uv must all be ignored.
    nan = float("nan")
    noisy = Fragments(
        frags.pix_to_face,
        torch.where(empty[..., None], torch.full_like(frags.bary, nan), frags.bary),
        torch.where(empty, torch.full_like(frags.dists, -5.0), frags.dists),
        frags.depth,
    )
    colors = torch.rand(*frags.pix_to_face.shape, 3, generator=gen)
    noisy_colors = torch.where(empty[..., None], torch.full_like(colors, nan), colors)
    uv = torch.rand(*frags.pix_to_face.shape, 2, generator=gen)
    noisy_uv = torch.where(empty[..., None], torch.full_like(uv, nan), uv)
    opacities = torch.rand(len(faces), generator=gen)
    attrs = torch.rand(len(vertices), 3, generator=gen)
    textures = torch.rand(1, 4, 4, 3, generator=gen)
    to_texture = torch.zeros(len(faces), dtype=torch.long)
    for f, tex_uv in ((frags, uv), (noisy, noisy_uv)):
        assert bool((shading.interpolate(attrs, f, faces, backend=backend)[empty] == 0).all())
        assert bool(
            (shading.sample_texture(textures, tex_uv, f, to_texture, backend=backend)[empty] == 0).all()
        )
    rgb_a, alpha_a = shading.soft_composite(frags, colors, opacities, sigma=0.5, backend=backend)
    rgb_b, alpha_b = shading.soft_composite(noisy, noisy_colors, opacities, sigma=0.5, backend=backend)
    assert torch.equal(rgb_a, rgb_b) and torch.equal(alpha_a, alpha_b)
    leaves = [t.clone().requires_grad_(True) for t in (noisy_colors, noisy.dists, noisy.bary, noisy_uv)]
    f = Fragments(noisy.pix_to_face, leaves[2], leaves[1], noisy.depth)
    rgb, _ = shading.soft_composite(f, leaves[0], opacities, sigma=0.5, backend=backend)
    tex = shading.sample_texture(textures, leaves[3], f, to_texture, backend=backend)
    total = rgb.sum() + shading.interpolate(attrs, f, faces, backend=backend).sum() + tex.sum()
    grads = torch.autograd.grad(total, leaves)
    for name, g in zip(("colors", "dists", "bary", "uv"), grads, strict=True):
        assert bool((g[empty] == 0).all()), name  # exactly 0, not NaN
        assert float(g[~empty].abs().max()) > 0, name


def test_decoupled_composite_formulas():
    fg, m, env = torch.tensor([[0.4, 0.2]]), torch.tensor([[0.5]]), torch.tensor([[1.0, 0.0]])
    # over: 0.4 + 0.5 * 1 = 0.9, 0.2 + 0 = 0.2; reference: 0.4 * 0.5 + 0.5 = 0.7, 0.2 * 0.5 = 0.1
    assert_close(shading.decoupled_composite(fg, m, env, "over"), torch.tensor([[0.9, 0.2]]), **ORACLE)
    assert_close(shading.decoupled_composite(fg, m, env, "reference"), torch.tensor([[0.7, 0.1]]), **ORACLE)


def test_validation_names_the_argument():
    frags = _one_pixel([0], [-1.0])
    colors = torch.ones(1, 1, 1, 1, 3)
    assert_rejected(
        lambda: shading.soft_composite(frags, torch.ones(1, 1, 1, 2, 3), sigma=1.0), match="colors"
    )
    assert_rejected(lambda: shading.soft_composite(frags, colors, sigma=-1.0), match="sigma")
    assert_rejected(lambda: shading.soft_composite(frags, colors, sigma=1.0, mode="add"), match="mode")  # type: ignore[arg-type]
    assert_rejected(
        lambda: shading.soft_composite(frags, colors, sigma=1.0, background=torch.ones(4)), match="background"
    )
    assert_rejected(lambda: shading.silhouette(frags, torch.ones(1, 1), sigma=1.0), match="opacities")
    assert_rejected(lambda: shading.interpolate(torch.ones(3, 2), frags), match="faces")
    assert_rejected(
        lambda: shading.interpolate(torch.ones(3, 2), frags, torch.tensor([[0, 1, 5]])), match="faces"
    )
    assert_rejected(
        lambda: shading.sample_texture(
            torch.ones(1, 2, 2, 1), torch.ones(1, 1, 1, 1, 3), frags, torch.zeros(1, dtype=torch.long)
        ),
        match="uv",
    )
    assert_rejected(
        lambda: shading.sample_texture(
            torch.ones(1, 2, 2, 1), torch.ones(1, 1, 1, 1, 2), frags, torch.ones(1, dtype=torch.long)
        ),
        match="face_to_texture",
    )
    with pytest.raises(ValueError, match="mip_level"):
        shading.sample_texture(
            torch.ones(1, 2, 2, 1),
            torch.ones(1, 1, 1, 1, 2),
            frags,
            torch.zeros(1, dtype=torch.long),
            mip_level=-1,
        )
    assert_rejected(lambda: shading.silhouette(object(), sigma=1.0), match="fragments", error=TypeError)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="camera"):
        shading.antialias(
            torch.ones(1, 1, 1, 3), frags, torch.ones(3, 3), torch.tensor([[0, 1, 2]]), camera(4, 4)
        )
    assert_rejected(
        lambda: shading.interpolate(torch.ones(1, 3, 2), _one_pixel([3], [-1.0])), match="pix_to_face"
    )


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(shading, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_mesh_without_faces(backend):
    # A scene whose mesh has no faces (e.g. every block killed): all slots empty, every op returns its "nothing"
    # (0, the background, the input colour) and gradients are zero rather than errors.
    c, h, w, k = 1, 5, 6, 2
    frags = Fragments(
        torch.full((c, h, w, k), -1),
        torch.zeros(c, h, w, k, 3),
        torch.full((c, h, w, k), 1e10),
        torch.zeros(c, h, w, k),
    )
    corners = torch.zeros(0, 3, 2, requires_grad=True)
    assert bool((shading.interpolate(corners, frags, backend=backend) == 0).all())
    uv = torch.rand(c, h, w, k, 2, requires_grad=True)
    tex = shading.sample_texture(
        torch.rand(1, 2, 2, 3), uv, frags, torch.zeros(0, dtype=torch.long), backend=backend
    )
    assert bool((tex == 0).all())
    background = torch.tensor([0.1, 0.2, 0.3])
    rgb, alpha = shading.soft_composite(
        frags, tex, torch.zeros(0), sigma=1.0, background=background, backend=backend
    )
    assert torch.equal(rgb, background.expand_as(rgb)) and bool((alpha == 0).all())
    color = torch.rand(c, h, w, 3)
    no_faces = torch.zeros(0, 3, dtype=torch.long)
    assert torch.equal(
        shading.antialias(color, frags, torch.rand(0, 3), no_faces, camera(w, h), backend=backend), color
    )
    (g_uv,) = torch.autograd.grad(rgb.sum(), uv)
    assert bool((g_uv == 0).all())
