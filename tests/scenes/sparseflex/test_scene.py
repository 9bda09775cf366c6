"""SparseFlexScene: hull initialisation, render contract, gradients, regularisers, export, state round trip."""

import pytest
import torch
import trimesh

from recon.core import Camera
from recon.core.transforms import look_at
from recon.renderers.encoding import HashGridConfig
from recon.scenes.base import ExportOptions, RenderOptions, StepContext
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.hull import hull_corner_sdf
from recon.scenes.sparseflex.scene import normal_laplacian

SMALL_COLOR = HashGridConfig(levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32)
CONFIG = SparseFlexSceneConfig(resolution=12, color_grid=SMALL_COLOR, color_hidden_dim=16)


def _sphere_scene(config=CONFIG, radius=0.3, center=(0.5, -0.2, 0.1), size=2.0) -> SparseFlexScene:
    r = config.resolution
    axis = torch.arange(r + 1, dtype=torch.float32) / r - 0.5
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    sdf = ((pts.norm(dim=-1) - radius) * r).clamp(-2, 2)
    return SparseFlexScene.from_corner_sdf(
        config, sdf, torch.tensor(center), size, generator=torch.Generator()
    )


def _camera(center=(0.5, -0.2, 0.1), distance=3.0, size=24) -> Camera:
    eye = torch.tensor(center) + torch.tensor([0.0, -distance, 0.3])
    T = look_at(eye, torch.tensor(center), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1.0]])
    return Camera(T[None], K[None], size, size)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_scene

    folder = tmp_path_factory.mktemp("sfs") / "object"
    return load_dataset(write_scene("object", folder, resolution=32, views=10, test_views=2))


def test_hull_contains_the_object(dataset):
    """The visual hull is a superset of the object: s at the GT surface is at most about half a voxel."""
    from recon.scenes.fields import cube_box

    box = cube_box(dataset.scene_box)
    center, size, r = 0.5 * (box[0] + box[1]), float(box[1, 0] - box[0, 0]), 24
    sdf = hull_corner_sdf(dataset, resolution=r, center=center, size=size)
    assert (sdf < 0).any() and (sdf > 0).any() and float(sdf.abs().max()) <= 2.0
    gt = trimesh.load(str(dataset.root / "gt_mesh.ply"), force="mesh", process=False)
    pts = torch.as_tensor(gt.vertices, dtype=torch.float32)
    pts = pts @ dataset.normalization[:3, :3].float().T + dataset.normalization[:3, 3].float()
    grid = ((pts - center) / size + 0.5) * 2 - 1  # grid_sample coordinates in [-1, 1]
    vol = sdf.permute(2, 1, 0)[None, None]  # grid_sample reads (x, y, z) as (W, H, D)
    s_at = torch.nn.functional.grid_sample(vol, grid[None, None, None], align_corners=True).reshape(-1)
    assert float((s_at <= 1.0).float().mean()) > 0.99, float(s_at.max())
    assert float(s_at.min()) < -0.4  # and it is not the whole box: the object's surface is inside the hull


def test_render_contract_and_gradients():
    scene = _sphere_scene()
    cam = _camera()
    bg = torch.tensor([0.2, 0.4, 0.9])
    out = scene.render(cam, RenderOptions(background=bg, normals=True, median_depth=True))
    assert out.rgb.shape == (1, 24, 24, 3) and out.alpha.shape == (1, 24, 24, 1)
    assert out.depth is not None and out.normals is not None and out.depth_median is not None
    covered = out.depth[..., 0] > 0
    assert 0.1 < float(covered.float().mean()) < 0.9
    # background pixels far from the silhouette show b exactly; depth is positive camera z near 3
    far = (out.alpha[..., 0] == 0) & ~covered
    torch.testing.assert_close(out.rgb[far], bg.expand(int(far.sum()), 3))
    assert float(out.depth[covered].min()) > 2.0 and float(out.depth[covered].max()) < 3.5
    n = out.normals[covered]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n)), atol=1e-4, rtol=0)
    # normals face the camera (outward normals of a sphere seen from outside)
    view = torch.tensor([0.0, 1.0, -0.1])
    assert float((n @ view < 0).float().mean()) > 0.95
    # silhouette gradients reach s (through antialias), colours reach the colour field
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(out.rgb.shape, generator=gen)
    ((out.rgb * v).sum() + out.alpha.sum()).backward()
    assert float(scene.s.grad.abs().sum()) > 0 and float(scene.color.encoding.table.grad.abs().sum()) > 0
    assert scene.deform.grad is not None and scene.weights.grad is not None


def test_pixel_subset_gathers_the_full_render():
    scene = _sphere_scene()
    cam = _camera()
    with torch.no_grad():
        full = scene.render(cam, RenderOptions())
        pixels = torch.tensor([[[3, 5], [12, 12], [20, 1]]])
        part = scene.render(cam, RenderOptions(), pixels=pixels)
    torch.testing.assert_close(part.rgb[0, 1], full.rgb[0, 12, 12])
    torch.testing.assert_close(part.alpha[0, 0], full.alpha[0, 5, 3])


def test_regularizers_follow_the_spec_weights():
    scene = _sphere_scene()
    cam = _camera()
    render = scene.render(cam, RenderOptions())
    target = torch.zeros(1, 24, 24, 1)
    ctx = StepContext(0, 100, cam, render.rgb.detach(), torch.zeros(3), render, target_alpha=target)
    early = scene.regularizers(ctx)
    assert set(early) == {"mask", "sign_flip", "l_dev", "weights"}
    torch.testing.assert_close(early["mask"], render.alpha.mean())
    ctx.step = 50  # past 25% of the budget: the sign-flip weight is annealed from 0.2 to 0.01
    scene.render(cam, RenderOptions())
    late = scene.regularizers(ctx)
    torch.testing.assert_close(late["sign_flip"], early["sign_flip"] * (0.01 / 0.2))
    assert "l_dev" not in scene.regularizers(ctx)  # the extraction is used once, then released


def test_export_is_in_the_world_frame_with_colours_and_watertight():
    scene = _sphere_scene(radius=0.3, center=(0.5, -0.2, 0.1), size=2.0)
    mesh = scene.export_mesh(ExportOptions())
    radii = (mesh.vertices - torch.tensor([0.5, -0.2, 0.1])).norm(dim=-1)
    assert float((radii - 0.6).abs().max()) < 2.0 / 12  # radius 0.3 of the unit box x size 2, within a voxel
    assert mesh.vertex_colors is not None and bool(
        ((mesh.vertex_colors >= 0) & (mesh.vertex_colors <= 1)).all()
    )
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=True)
    assert tm.is_watertight and tm.volume > 0  # closed, outward faces


def test_state_round_trip_into_an_empty_scene():
    scene = _sphere_scene()
    with torch.no_grad():
        scene.s.add_(0.01 * torch.randn(scene.s.shape, generator=torch.Generator().manual_seed(2)))
    restored = SparseFlexScene.empty(CONFIG)
    restored.load_state_dict_resizing(scene.state_dict())
    assert restored.num_primitives() == scene.num_primitives()
    with torch.no_grad():
        a = scene.render(_camera(), RenderOptions())
        b = restored.render(_camera(), RenderOptions())
    torch.testing.assert_close(a.rgb, b.rgb)


def test_hull_needs_masks():
    from recon.core.errors import ReconError

    class NoMasks:
        splits = {"train": [0, 1]}

        def alpha(self, split, i):
            return None

    with pytest.raises(ReconError, match="masks"):
        hull_corner_sdf(NoMasks(), resolution=4, center=torch.zeros(3), size=1.0)


def test_normal_laplacian_measures_bumps_not_uneven_spacing():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v = torch.tensor(sphere.vertices, dtype=torch.float64)
    f = torch.tensor(sphere.faces, dtype=torch.int64)
    smooth = normal_laplacian(v, f)
    # a unit sphere: every vertex lies ~ edge^2 / 2 outside its neighbours' mean, along the normal (inward value)
    edge = float(sphere.edges_unique_length.mean())
    assert float(smooth.abs().max()) < edge**2
    # sliding a vertex along the surface (uneven spacing) hardly changes it; pushing it out does
    slid, bumped = v.clone(), v.clone()
    tangent = torch.linalg.cross(v[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    slid[0] = torch.nn.functional.normalize(v[0] + 0.3 * edge * tangent / tangent.norm(), dim=0)
    bumped[0] = v[0] * (1 + 0.3 * edge)
    assert abs(float(normal_laplacian(slid, f)[0])) < edge**2
    assert float(-normal_laplacian(bumped, f)[0]) > 0.25 * edge
    # differentiable w.r.t. the vertices; isolated vertices are 0
    x = torch.cat([v, torch.zeros(1, 3, dtype=torch.float64)]).requires_grad_(True)
    values = normal_laplacian(x, f)
    assert float(values[-1]) == 0.0
    values.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_smooth_term_is_off_by_default_and_weighted_when_on():
    import dataclasses

    cam = _camera()
    ctx_target = torch.zeros(1, 24, 24, 1)
    for weight in (0.0, 0.3):
        scene = _sphere_scene(dataclasses.replace(CONFIG, smooth_weight=weight))
        render = scene.render(cam, RenderOptions())
        ctx = StepContext(0, 100, cam, render.rgb.detach(), torch.zeros(3), render, target_alpha=ctx_target)
        terms = scene.regularizers(ctx)
        assert ("smooth" in terms) == (weight > 0)
        if weight > 0:
            assert bool(torch.isfinite(terms["smooth"])) and terms["smooth"].requires_grad
            (s_grad,) = torch.autograd.grad(terms["smooth"], scene.s, allow_unused=True)
            assert s_grad is not None and float(s_grad.abs().sum()) > 0
