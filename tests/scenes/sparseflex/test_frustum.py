"""Frustum-aware sectional voxels (crop frusta): culled extraction renders what the whole band renders."""

from dataclasses import replace

import torch

from recon.core import Camera
from recon.core.transforms import look_at
from recon.renderers.encoding import HashGridConfig
from recon.scenes.base import RenderOptions
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.frustum import CropWindow, choose_crop, frustum_mask, voxel_spheres

SMALL_COLOR = HashGridConfig(levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=16)
CONFIG = SparseFlexSceneConfig(resolution=24, color_grid=SMALL_COLOR, color_hidden_dim=8)
CENTER = torch.tensor([0.3, -0.2, 0.1])
SIZE = 2.0


def _scene(config=CONFIG) -> SparseFlexScene:
    """A bumpy ball (radius 0.7 +- 0.1) so faces are not aligned with the voxel grid; random weights."""
    r = config.resolution
    axis = torch.arange(r + 1, dtype=torch.float32) / r - 0.5
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1) * SIZE
    bumps = 0.1 * torch.sin(7 * pts[..., 0]) * torch.cos(5 * pts[..., 1])
    sdf = ((pts.norm(dim=-1) - 0.7 - bumps) * r / SIZE).clamp(-2, 2)
    scene = SparseFlexScene.from_corner_sdf(
        config, sdf, CENTER, SIZE, generator=torch.Generator().manual_seed(0)
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        scene.weights.copy_(0.5 * torch.randn(scene.weights.shape, generator=gen))
        scene.deform.copy_(0.5 * torch.randn(scene.deform.shape, generator=gen))
    return scene


def _camera(eye, size=48, focal=1.3) -> Camera:
    T = look_at(torch.tensor(eye) + CENTER, CENTER, torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[size * focal, 0, size / 2], [0, size * focal, size / 2], [0, 0, 1.0]])
    return Camera(T[None], K[None], size, size)


def _render(scene: SparseFlexScene, camera: Camera, culling: bool):
    scene.config = replace(scene.config, frustum_culling=culling)
    with torch.no_grad():
        out = scene.render(camera, RenderOptions(background=torch.zeros(3), backend="torch"))
    return out, scene.rendered_voxels


CROPS = [  # (eye, x0, y0, width, height): close views (the camera near the surface) and windows at the borders
    ((0.0, -1.2, 0.2), 10, 14, 20, 16),
    ((1.1, 0.3, -0.4), 0, 0, 16, 16),
    ((-0.5, 0.6, 1.0), 30, 26, 18, 22),
    ((0.0, -3.0, 0.5), 8, 20, 40, 12),
]


def test_culled_crop_renders_what_the_whole_band_renders():
    """The FSV set is a superset of the voxels whose surface projects into the crop: the crop's image (alpha and
    depth) is the same with only the culled voxels extracted as with every voxel."""
    scene = _scene()
    total = scene.grid().num_voxels
    for eye, x0, y0, w, h in CROPS:
        crop = CropWindow(torch.tensor([x0]), torch.tensor([y0]), w, h).camera(_camera(eye))
        full, n_full = _render(scene, crop, culling=False)
        culled, n_culled = _render(scene, crop, culling=True)
        assert n_full == total and 0 < n_culled < total, (eye, n_culled, total)
        assert float(full.alpha.max()) > 0.5, eye  # the crop sees the surface
        torch.testing.assert_close(culled.alpha, full.alpha, atol=1e-5, rtol=0)
        torch.testing.assert_close(culled.depth, full.depth, atol=1e-5, rtol=0)


def test_visible_faces_come_from_culled_voxels():
    """Every dual vertex of a face visible in the crop belongs to a voxel of the frustum set."""
    from recon.renderers.raster import rasterize

    scene = _scene()
    eye, x0, y0, w, h = CROPS[0]
    crop = CropWindow(torch.tensor([x0]), torch.tensor([y0]), w, h).camera(_camera(eye))
    with torch.no_grad():
        out = scene.extract(training=False, backend="torch")
    frags = rasterize(scene.to_world(out.vertices), out.faces, crop, layers=1, backend="torch")
    visible = frags.pix_to_face[..., 0].unique()
    verts = out.faces[visible[visible >= 0]].unique()
    owners = out.vertex_voxel[verts[verts < out.num_dual_vertices]].unique()
    centres, radius = voxel_spheres(scene.grid(), scene.box_center, scene.box_side())
    selected = frustum_mask(centres, radius, crop)
    assert owners.numel() > 10 and bool(selected[owners].all())
    assert int(selected.sum()) < scene.grid().num_voxels


def test_crop_window_matches_the_full_image():
    scene = _scene()
    camera = _camera((0.0, -3.0, 0.5))
    window = CropWindow(torch.tensor([7]), torch.tensor([11]), 20, 25)
    full, _ = _render(scene, camera, culling=False)
    crop, _ = _render(scene, window.camera(camera), culling=True)
    assert crop.alpha.shape == (1, 25, 20, 1)
    differ = (window.image(full.alpha) - crop.alpha).abs() > 1e-3
    assert float(differ.float().mean()) < 0.01  # only silhouette pixels whose coverage rounds differently


def test_choose_crop_holds_at_most_the_target():
    scene = _scene()
    camera = _camera((0.0, -2.4, 0.5), size=64)
    centres, radius = voxel_spheres(scene.grid(), scene.box_center, scene.box_side())
    in_view = int(frustum_mask(centres, radius, camera).sum())
    gen = torch.Generator().manual_seed(3)
    for fraction in (0.3, 0.5):  # at R = 24 the 4-voxel margin alone puts ~15% in a thin crop
        target = int(fraction * scene.grid().num_voxels)
        for _ in range(3):
            window = choose_crop(centres, radius, camera, target=target, min_size=2, generator=gen)
            count = int(frustum_mask(centres, radius, window.camera(camera)).sum())
            assert 0 < count <= target and window.width < camera.width, (count, target, window)
            assert count > 0.3 * target  # bisection finds a crop near the target, not a tiny one
    whole = choose_crop(centres, radius, camera, target=in_view, min_size=2, generator=gen)
    assert (whole.width, whole.height) == (camera.width, camera.height)


def test_choose_crop_draws_one_number_whatever_the_outcome():
    """Data-parallel ranks see different views but share one generator: a full-image answer and a crop must
    advance it alike."""
    scene = _scene()
    camera = _camera((0.0, -2.4, 0.5), size=64)
    centres, radius = voxel_spheres(scene.grid(), scene.box_center, scene.box_side())
    full_gen, crop_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = choose_crop(centres, radius, camera, target=10**9, min_size=2, generator=full_gen)
    crop = choose_crop(
        centres, radius, camera, target=scene.grid().num_voxels // 2, min_size=2, generator=crop_gen
    )
    assert whole.width == camera.width and crop.width < camera.width
    assert torch.equal(full_gen.get_state(), crop_gen.get_state())
