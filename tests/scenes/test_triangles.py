"""TriangleSplatScene: parameters and activations (spec §1), initialisation (§9), render, gradients, state."""

import math
from dataclasses import replace

import pytest
import torch

from recon.core import Camera
from recon.core.transforms import look_at
from recon.scenes.base import ExportOptions, RenderOptions, StepContext
from recon.scenes.triangle_init import fibonacci_triangle_directions, triangles_from_points
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene


def _camera(size: int = 32) -> Camera:
    T = look_at(torch.tensor([0.0, -3.0, 0.5]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[[1.2 * size, 0.0, size / 2], [0.0, 1.2 * size, size / 2], [0.0, 0.0, 1.0]]])
    return Camera(T[None], K, size, size)


def _scene(gen: torch.Generator, n: int = 80, degree: int = 1) -> TriangleSplatScene:
    pts = (torch.rand(n, 3, generator=gen) - 0.5) * 1.2
    return TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=degree, init_scale=3.0), pts,
                                          torch.rand(n, 3, generator=gen), generator=gen)  # fmt: skip


def test_initial_activations_match_spec(gen):
    scene = _scene(gen)
    assert torch.allclose(scene.opacities(), torch.full((80,), 0.28))
    assert torch.allclose(scene.sigmas(), torch.full((80,), 1.16))
    assert scene.sh_rest.shape == (80, 3, 3) and torch.count_nonzero(scene.sh_rest) == 0
    assert int(scene.active_sh_degree) == 0
    # DC colour round trip: rgb = C0 * dc + 0.5 (spec §1)
    rgb = scene.colors(torch.randn(80, 3, generator=gen), degree=0)
    assert torch.allclose(rgb, (0.28209479 * scene.sh_dc[:, 0] + 0.5).clamp_min(0), atol=1e-6)


def test_triangles_from_points_geometry(gen):
    # Four points on a unit square: RMS distance to 3 neighbours is sqrt((1 + 1 + 2) / 3).
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0], [1.0, 1, 0]])
    tri = triangles_from_points(pts, scale=2.23, generator=gen)
    r = 2.23 * math.sqrt(4.0 / 3.0)
    # v0 and v2 are p +- r R (0,0,1): p is the midpoint of edge v0 v2 and |v0 - v2| = 2r (spec §9.3)
    assert torch.allclose((tri[:, 0] + tri[:, 2]) / 2, pts, atol=1e-5)
    assert torch.allclose((tri[:, 0] - tri[:, 2]).norm(dim=-1), torch.full((4,), 2 * r), atol=1e-4)
    assert torch.allclose((tri[:, 1] - pts).norm(dim=-1), torch.full((4,), r), atol=1e-4)
    u = fibonacci_triangle_directions()
    assert torch.allclose(u.norm(dim=-1), torch.ones(3))


def test_render_outputs_and_gradients_reach_every_parameter(gen):
    scene = _scene(gen)
    scene.active_sh_degree.fill_(1)
    cam = _camera()
    out = scene.render(cam, RenderOptions(background=torch.ones(3), backend="torch", normals=True,
                                          median_depth=True, stats=True))  # fmt: skip
    assert out.rgb.shape == (1, 32, 32, 3) and out.alpha.shape == (1, 32, 32, 1)
    assert out.depth.shape == (1, 32, 32, 1) and out.normals.shape == (1, 32, 32, 3)
    assert out.stats is not None
    assert out.stats.max_blending.shape == (1, 80) and out.stats.radius_px.shape == (1, 80)
    assert 0.05 < float(out.alpha.detach().mean()) < 1.0
    loss = (out.rgb * torch.randn(out.rgb.shape, generator=gen)).sum() + out.depth.sum() + out.normals.sum()
    loss.backward()
    for name, p in scene.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


def test_world_normals_face_the_camera(gen):
    # One triangle in the plane y = 0 seen from -y: its world normal must point to -y (towards the camera).
    tri = torch.tensor([[[-0.6, 0.0, -0.4], [0.6, 0.0, -0.4], [0.0, 0.0, 0.6]]])
    scene = TriangleSplatScene(TriangleSceneConfig(sh_degree=0), tri, torch.full((1, 3), 0.5))
    with torch.no_grad():
        scene.logit_opacities.fill_(3.0)
    out = scene.render(_camera(), RenderOptions(backend="torch", normals=True))
    n = out.normals[0, 16, 16].detach()
    assert float(n[1]) < -0.5 and abs(float(n[0])) < 1e-4 and abs(float(n[2])) < 1e-4


def test_pixels_select_from_full_render(gen):
    scene = _scene(gen)
    cam = _camera()
    full = scene.render(cam, RenderOptions(backend="torch"))
    pix = torch.tensor([[[3, 5], [20, 7], [31, 31]]])
    part = scene.render(cam, RenderOptions(backend="torch"), pixels=pix)
    assert part.rgb.shape == (1, 3, 3)
    assert torch.equal(part.rgb[0, 1], full.rgb[0, 7, 20])


def test_supersample_box_filters_a_finer_raster(gen):
    # scene.supersample = 2 renders 64 x 64 raster pixels per 32 x 32 image: each output pixel is the mean of its
    # 2 x 2 block of the k = 1 scene's render of the same triangles into the doubled camera.
    base = _scene(gen)
    fine = TriangleSplatScene(replace(base.config, supersample=2), base.vertices.detach(), torch.zeros(80, 3))
    fine.load_state_dict(base.state_dict())
    cam, opts = _camera(), RenderOptions(background=torch.ones(3), backend="torch", stats=True)
    out = fine.render(cam, opts)
    big = base.render(cam.scaled(0.5, width=64, height=64), opts)
    assert out.rgb.shape == (1, 32, 32, 3) and out.depth.shape == (1, 32, 32, 1)
    block = big.rgb.reshape(1, 32, 2, 32, 2, 3).mean(dim=(2, 4))
    assert torch.allclose(out.rgb, block, atol=1e-6)
    assert torch.equal(out.stats.inradius_px, big.stats.inradius_px)  # statistics stay in raster pixels
    out.rgb.sum().backward()
    assert fine.vertices.grad is not None and torch.count_nonzero(fine.vertices.grad) > 0
    # a triangle too small for the 1-px inradius cull at k = 1 is drawn at k = 2 (the point of the option)
    tiny = torch.tensor(
        [[[-0.09, 0.0, -0.06], [0.09, 0.0, -0.06], [0.0, 0.0, 0.12]]]
    )  # inradius ~0.7 px at k = 1
    one, two = (TriangleSplatScene(TriangleSceneConfig(sh_degree=0, supersample=k), tiny, torch.zeros(1, 3))
                for k in (1, 2))  # fmt: skip
    assert float(one.render(cam, opts).alpha.detach().max()) == 0.0
    assert float(two.render(cam, opts).alpha.detach().max()) > 0.0
    with pytest.raises(ValueError, match="scene.supersample"):
        TriangleSplatScene(TriangleSceneConfig(supersample=0), tiny, torch.zeros(1, 3))


def test_lr_scale_decay_schedules(gen):
    from recon.scenes.base import ConstantLr, ExponentialDecayLr

    scene = _scene(gen)
    scene.config = replace(scene.config, lr_scale=4.0)
    groups = {g.name: g for g in scene.param_groups()}
    assert isinstance(groups["sh_dc"].schedule, ConstantLr)
    scene.config = replace(scene.config, lr_scale_decay=True)
    groups = {g.name: g for g in scene.param_groups()}
    for name in ("sh_dc", "sh_rest", "logit_opacities", "raw_sigmas"):
        assert groups[name].schedule == ExponentialDecayLr(0.25), name  # 4x -> 1x over the budget
    assert groups["vertices"].schedule == ExponentialDecayLr(scene.config.lr_vertices_final_ratio)


def test_regularizers_follow_schedule(gen):
    scene = _scene(gen)
    ctx = StepContext(
        step=10, max_steps=100, camera=_camera(), image=torch.zeros(1, 32, 32, 3), background=torch.ones(3)
    )
    terms = scene.regularizers(ctx)
    assert torch.isclose(terms["opacity"], torch.tensor(0.0055 * 0.28))
    assert torch.isclose(terms["area"], 1e-8 / scene.areas().mean())
    late = StepContext(
        step=90, max_steps=100, camera=_camera(), image=torch.zeros(1, 32, 32, 3), background=torch.ones(3)
    )
    assert "area" not in scene.regularizers(late)
    # opacity_on_objects = False (--scene.no-opacity-on-objects) drops the opacity term on object captures only
    for capture, expected in (("object", False), ("outdoor", True), ("auto", True)):
        scene.config = replace(scene.config, opacity_on_objects=False, capture=capture)
        assert ("opacity" in scene.regularizers(ctx)) is expected, capture


def test_export_soup_filters_by_opacity_and_merges_duplicates(gen):
    scene = _scene(gen, n=10)
    with torch.no_grad():
        scene.logit_opacities[:4] = 3.0  # o = 0.95
        scene.vertices[1] = scene.vertices[
            0
        ]  # an exact duplicate triangle shares its 3 vertices after merging
    mesh = scene.export_mesh(ExportOptions(min_opacity=0.5))
    assert mesh.num_faces == 4 and mesh.num_vertices == 9
    assert mesh.face_colors.shape == (4, 3)
    assert scene.export_mesh(ExportOptions(min_opacity=0.0)).num_faces == 10


def test_state_dict_loads_into_scene_of_other_size(gen):
    big = _scene(gen, n=50, degree=2)
    big.active_sh_degree.fill_(2)
    small = TriangleSplatScene.empty(TriangleSceneConfig(sh_degree=2))
    small.load_state_dict_resizing(big.state_dict())
    assert small.num_primitives() == 50 and int(small.active_sh_degree) == 2
    for (name, a), (_, b) in zip(big.state_dict().items(), small.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(KeyError):
        small.load_state_dict_resizing({"vertices": big.vertices.detach()})
