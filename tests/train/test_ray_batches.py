"""RayBatchSampler: batch layout, gathered targets, per-ray random backgrounds, determinism, errors."""

from types import SimpleNamespace

import pytest
import torch

from recon.core import Camera, ReconError, RenderOutput
from recon.train.ray_batches import RayBatchSampler

N, H, W = 3, 5, 7


def _views(gen):
    T = torch.eye(4).repeat(N, 1, 1)
    T[:, 2, 3] = torch.arange(N, dtype=torch.float32) + 2.0  # distinct poses per view
    K = torch.tensor([[[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]]]).repeat(N, 1, 1)
    alpha = (torch.rand(N, H, W, 1, generator=gen) > 0.5).float()
    colour = torch.rand(N, H, W, 3, generator=gen)
    bg0 = torch.ones(3)
    images = colour * alpha + bg0 * (1 - alpha)
    return images, Camera(T, K, W, H), alpha, colour, bg0


def test_per_ray_images_layout_and_gathered_targets(gen):
    images, cameras, alpha, colour, bg0 = _views(gen)
    sampler = RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=64,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    batch = sampler.next()
    assert batch.pixels.shape == (64, 1, 2) and len(batch.camera) == 64 and batch.target.shape == (64, 1, 3)
    v, i, j = batch.view_indices, batch.pixels[:, 0, 0], batch.pixels[:, 0, 1]
    assert bool(((i >= 0) & (i < W) & (j >= 0) & (j < H)).all()) and bool(((v >= 0) & (v < N)).all())
    torch.testing.assert_close(batch.target[:, 0], images[v, j, i])
    torch.testing.assert_close(batch.alpha[:, 0], alpha[v, j, i])
    torch.testing.assert_close(batch.camera.T_cam_world, cameras.T_cam_world[v])
    torch.testing.assert_close(batch.background, bg0.expand(64, 1, 3))
    assert len(set(v.tolist())) > 1  # rays spread across images


def test_images_per_batch_layout(gen):
    images, cameras, alpha, _, bg0 = _views(gen)
    sampler = RayBatchSampler(images, cameras, alphas=None, dataset_background=bg0, rays_per_batch=12,
                              images_per_batch=4, generator=torch.Generator().manual_seed(0))  # fmt: skip
    batch = sampler.next()
    assert batch.pixels.shape == (4, 3, 2) and len(batch.camera) == 4 and batch.alpha is None
    v = batch.view_indices
    torch.testing.assert_close(batch.target, images[v[:, None], batch.pixels[..., 1], batch.pixels[..., 0]])


def test_random_background_recomposites_target_and_render(gen):
    images, cameras, alpha, colour, bg0 = _views(gen)
    sampler = RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=200,
                              background="random", generator=torch.Generator().manual_seed(1))  # fmt: skip
    batch = sampler.next()
    v, i, j = batch.view_indices, batch.pixels[:, 0, 0], batch.pixels[:, 0, 1]
    a = alpha[v, j, i]
    expected = colour[v, j, i] * a + batch.background[:, 0] * (1 - a)  # colour over the ray's own background
    torch.testing.assert_close(batch.target[:, 0], expected)
    assert float(batch.background.std()) > 0.1  # one colour per ray, not per batch
    # the render made over black is composited over the same per-ray background
    render = RenderOutput(rgb=torch.full((200, 1, 3), 0.2), alpha=torch.full((200, 1, 1), 0.25))
    torch.testing.assert_close(batch.over_background(render).rgb, 0.2 + 0.75 * batch.background)


def test_images_without_alpha_are_opaque(gen):
    images, cameras, _, _, bg0 = _views(gen)
    sampler = RayBatchSampler(images, cameras, alphas=None, dataset_background=bg0, rays_per_batch=32,
                              background="random", generator=torch.Generator().manual_seed(2))  # fmt: skip
    batch = sampler.next()
    v, i, j = batch.view_indices, batch.pixels[:, 0, 0], batch.pixels[:, 0, 1]
    torch.testing.assert_close(batch.target[:, 0], images[v, j, i])  # targets unchanged ...
    assert (
        batch.alpha is None and float(batch.background.std()) > 0.1
    )  # ... the render still sees random colours


def test_determinism_from_the_generator(gen):
    images, cameras, alpha, _, bg0 = _views(gen)

    def draw(seed):
        s = RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=16,
                            background="random", generator=torch.Generator().manual_seed(seed))  # fmt: skip
        b = s.next()
        return b.pixels, b.view_indices, b.background

    for x, y in zip(draw(5), draw(5), strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(draw(5)[0], draw(6)[0])


def test_bad_arguments_raise(gen):
    images, cameras, alpha, _, bg0 = _views(gen)
    g = torch.Generator()
    with pytest.raises(ReconError, match="images_per_batch"):
        RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=10, images_per_batch=3,
                        generator=g)  # fmt: skip
    with pytest.raises(ReconError, match="rays_per_batch"):
        RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=0, generator=g)


def _sfm_table():
    # (view, column, row) rows and their target distances
    rows = torch.tensor([[0, 1, 2], [1, 6, 4], [2, 3, 0], [2, 0, 4]])
    return rows, torch.tensor([1.5, 2.5, 3.5, 4.5])


def test_sfm_depth_rays_are_spread_over_the_batch_with_their_targets(gen):
    images, cameras, alpha, _, bg0 = _views(gen)
    rows, targets = _sfm_table()
    sampler = RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=16,
                              generator=torch.Generator().manual_seed(0), sfm_depth=(rows, targets),
                              sfm_depth_rays=4)  # fmt: skip
    for _ in range(5):
        batch = sampler.next()
        assert batch.depth is not None and batch.depth.shape == (16, 1, 1)
        slots = torch.nonzero(batch.depth[:, 0, 0] > 0).flatten()
        assert slots.tolist() == [0, 4, 8, 12]  # evenly spread: each quarter shard holds one
        got = torch.cat([batch.view_indices[slots, None], batch.pixels[slots, 0]], -1)
        match = (got[:, None] == rows[None]).all(-1)  # each depth ray is one of the table's rows ...
        assert bool(match.any(1).all())
        torch.testing.assert_close(
            batch.depth[slots, 0, 0], targets[match.float().argmax(1)]
        )  # ... with its target
        v, i, j = batch.view_indices, batch.pixels[:, 0, 0], batch.pixels[:, 0, 1]
        torch.testing.assert_close(batch.target[:, 0], images[v, j, i])  # colour targets still the pixels'
        torch.testing.assert_close(batch.camera.T_cam_world, cameras.T_cam_world[v])
    shard = batch.shard(slice(4, 8))
    assert shard.depth is not None and shard.depth.shape == (4, 1, 1) and float(shard.depth[0, 0, 0]) > 0


def test_sfm_depth_from_views_fraction_and_bad_arguments(gen):
    images, cameras, alpha, _, bg0 = _views(gen)
    rows, targets = _sfm_table()

    class Views:
        pass

    views = Views()
    views.images, views.cameras, views.alphas, views.background = images, cameras, alpha, bg0
    views.sfm_depth = (rows, targets)
    g = torch.Generator().manual_seed(0)
    sampler = RayBatchSampler.from_views(views, rays_per_batch=64, generator=g, sfm_depth_fraction=0.125)
    assert sampler.sfm_depth_rays == 8 and int((sampler.next().depth > 0).sum()) == 8
    assert (
        RayBatchSampler.from_views(views, rays_per_batch=64, generator=g).next().depth is None
    )  # fraction 0
    views.sfm_depth = None  # no targets: the fraction is ignored
    assert (
        RayBatchSampler.from_views(
            views, rays_per_batch=64, generator=g, sfm_depth_fraction=0.5
        ).sfm_depth_rays
        == 0
    )
    with pytest.raises(ReconError, match="sfm_depth_fraction"):
        RayBatchSampler.from_views(views, rays_per_batch=64, generator=g, sfm_depth_fraction=1.0)
    for kwargs in ({"sfm_depth_rays": 4}, {"sfm_depth": (rows, targets), "sfm_depth_rays": 16},
                   {"sfm_depth": (rows, targets), "sfm_depth_rays": 4, "images_per_batch": 4}):  # fmt: skip
        with pytest.raises(ReconError, match="sfm_depth_rays"):
            RayBatchSampler(images, cameras, alphas=alpha, dataset_background=bg0, rays_per_batch=16, generator=g,
                            **kwargs)  # fmt: skip


def test_set_rays_per_batch_changes_the_next_batches(gen):
    images, cameras, alpha, _, bg0 = _views(gen)
    sampler = RayBatchSampler.from_views(
        SimpleNamespace(images=images, cameras=cameras, alphas=alpha, background=bg0, sfm_depth=_sfm_table()),
        rays_per_batch=16,
        generator=torch.Generator().manual_seed(0),
        sfm_depth_fraction=0.25,
    )
    assert sampler.sfm_depth_rays == 4
    sampler.set_rays_per_batch(64)
    batch = sampler.next()
    assert batch.pixels.shape == (64, 1, 2) and sampler.sfm_depth_rays == 16  # SfM rays keep their share
    assert int((batch.depth > 0).sum()) == 16
    sampler.set_rays_per_batch(1)  # no room for SfM rays
    assert sampler.next().depth is None and sampler.sfm_depth_rays == 0
    per_image = RayBatchSampler(images, cameras, alphas=None, dataset_background=bg0, rays_per_batch=12,
                                images_per_batch=4, generator=torch.Generator().manual_seed(0))  # fmt: skip
    per_image.set_rays_per_batch(30)  # rounded down to a multiple of the images per batch
    assert per_image.rays_per_batch == 28 and per_image.next().pixels.shape == (4, 7, 2)
    with pytest.raises(ReconError, match="rays_per_batch must be >= 1, got 0"):
        sampler.set_rays_per_batch(0)
