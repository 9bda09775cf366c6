"""Ray-rendered fields deliver RenderOutput depths as camera z (converted once in ``render_camera``); their
training jitter is a function of (step, global ray index) so data-parallel shards render what one process does."""

import pytest
import torch

from recon.core import Camera
from recon.core.transforms import look_at
from recon.scenes.base import RenderOptions
from recon.scenes.field_scene import render_camera, stratified_offsets
from recon.scenes.nerf import NerfScene, NerfSceneConfig

PLANE_Z = 3.0  # the fake field is the plane at camera z = 3


def _camera() -> Camera:
    T = look_at(torch.tensor([0.5, -4.0, 1.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[[10.0, 0.0, 9.0], [0.0, 12.0, 5.0], [0.0, 0.0, 1.0]]])  # wide, off-centre: cos varies
    return Camera(T[None], K, 16, 12)


def test_ray_distances_become_camera_z():
    camera = _camera()
    forward = camera.T_cam_world[0, 2, :3]

    def render_rays(origins, directions):  # distance along each unit ray to the plane z_cam = PLANE_Z
        t = PLANE_Z / (directions @ forward)[:, None]
        ones = torch.ones_like(t)
        return {"rgb": ones.expand(-1, 3), "alpha": ones, "depth": t, "depth_median": t,
                "eikonal": 2 * ones, "num_samples": ones}  # fmt: skip

    full = render_camera(render_rays, camera, pixels=None, chunk=50, producer="PlaneField")
    assert full.depth.shape == (1, 12, 16, 1)
    torch.testing.assert_close(full.depth, torch.full_like(full.depth, PLANE_Z), rtol=0, atol=1e-5)
    torch.testing.assert_close(full.depth_median, full.depth)
    assert full.eikonal is not None and full.eikonal.residual_sum.shape == (1, 12, 16, 1)
    assert full.producer == "PlaneField"
    pixels = torch.tensor([[[0, 0], [15, 11], [7, 4]]])
    part = render_camera(render_rays, camera, pixels=pixels, chunk=2)
    torch.testing.assert_close(part.depth, torch.full((1, 3, 1), PLANE_Z), rtol=0, atol=1e-5)


# --- stratified offsets: a function of (step, index of the ray in the step's whole batch) ------------------------
def test_stratified_offsets_of_shards_are_those_of_the_whole_batch():
    whole = stratified_offsets(5, 0, 1000)
    shards = torch.cat([stratified_offsets(5, 0, 300), stratified_offsets(5, 300, 700)])
    assert whole.dtype == torch.float32 and torch.equal(whole, shards)
    assert not torch.equal(whole, stratified_offsets(6, 0, 1000))  # another step, other offsets
    assert float(whole.min()) >= 0.0 and float(whole.max()) < 1.0
    # uniform: 10 bins of the 1000 offsets each hold 100 +- 40 (deterministic: the hash has no state)
    counts = torch.histc(whole, bins=10, min=0.0, max=1.0)
    assert bool(((counts > 60) & (counts < 140)).all()), counts.tolist()
    with pytest.raises(ValueError, match="first"):
        stratified_offsets(0, -1, 3)


def test_a_training_render_of_a_shard_equals_that_part_of_the_whole_batch():
    """2 ranks rendering the halves of a ray batch (RenderOptions.first_ray) see the offsets one process sees for
    the whole batch, whatever the render chunk."""
    box = torch.tensor([[-1.0] * 3, [1.0] * 3])
    config = NerfSceneConfig(grid_levels=4, grid_log2_size=10, grid_max_resolution=32, occupancy_resolution=8,
                             render_step_size=0.05, render_chunk=4)  # fmt: skip
    scene = NerfScene(config, box, generator=torch.Generator().manual_seed(0))
    scene.set_step(3)
    camera = _camera()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.stack(
        [torch.randint(16, (1, 10), generator=gen), torch.randint(12, (1, 10), generator=gen)], -1
    )
    whole = scene.render(camera, RenderOptions(), pixels=pixels).depth.detach()
    first = scene.render(camera, RenderOptions(first_ray=0), pixels=pixels[:, :6]).depth.detach()
    second = scene.render(camera, RenderOptions(first_ray=6), pixels=pixels[:, 6:]).depth.detach()
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-6, rtol=0)
    unshifted = scene.render(camera, RenderOptions(first_ray=0), pixels=pixels[:, 6:]).depth.detach()
    assert float((unshifted - whole[:, 6:]).abs().max()) > 1e-4  # the offset really moves the samples
    scene.eval()  # evaluation renders without jitter: first_ray changes nothing
    assert torch.equal(scene.render(camera, RenderOptions(first_ray=6), pixels=pixels).depth.detach(),
                       scene.render(camera, RenderOptions(), pixels=pixels).depth.detach())  # fmt: skip


def test_depth_deviation_is_linear_in_the_weights_and_ignores_what_the_ray_does_not_stop():
    from recon.scenes.field_scene import depth_deviation

    # ray 0: samples at t = 1, 2, 4 (target 2); ray 1: no target; ray 2: one sample at 10 (target 4)
    t_starts = torch.tensor([0.5, 1.5, 3.5, 0.5, 9.5], dtype=torch.float64)
    t_ends = t_starts + 1.0
    ri = torch.tensor([0, 0, 0, 1, 2])
    weights = torch.tensor([0.2, 0.5, 0.2, 0.9, 0.6], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([2.0, 0.0, 4.0], dtype=torch.float64)
    out = depth_deviation(t_starts, t_ends, weights, ri, target)
    # |1-2|/2 = 0.5, 0, |4-2|/2 = 1 (cap); |10-4|/4 = 1.5 -> 1 (cap); the 0.1 and 0.4 not stopped cost nothing
    expected = [0.2 * 0.5 + 0.5 * 0.0 + 0.2 * 1.0, 0.0, 0.6 * 1.0]
    assert out.shape == (3, 1) and out.flatten().tolist() == pytest.approx(expected)
    out.sum().backward()
    assert weights.grad.tolist() == pytest.approx(
        [0.5, 0.0, 1.0, 0.0, 1.0]
    )  # each sample's miss; none off-target


def test_depth_deviation_float64_gradcheck():
    from recon.scenes.field_scene import depth_deviation

    g = torch.Generator().manual_seed(0)
    t_starts = torch.rand(7, generator=g, dtype=torch.float64) * 4
    t_ends = t_starts + 0.1
    ri = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    target = torch.tensor([2.0, 0.0, 1.5], dtype=torch.float64)
    weights = torch.rand(7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: depth_deviation(t_starts, t_ends, w, ri, target), (weights,))
