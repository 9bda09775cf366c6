"""Losses (spec §8): the D-SSIM term is recon.metrics' SSIM; depth normals; photometric weights; missing outputs."""

import pytest
import torch

from recon.core import Camera, MissingRenderOutput, RenderOutput
from recon.core.transforms import look_at
from recon.metrics import ssim_tensor
from recon.train.losses import (
    LossConfig,
    depth_to_normals,
    loss_needs,
    normal_consistency_loss,
    photometric_loss,
    sfm_depth_loss,
    total_loss,
)


def test_dssim_is_the_metric_ssim(gen):
    from recon.metrics import ssim as metric_ssim

    a = torch.rand(1, 40, 36, 3, generator=gen, requires_grad=True)
    b = (a.detach() + 0.1 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    terms = photometric_loss(a, b, LossConfig(ssim_weight=1.0))
    assert abs(float(1.0 - terms["dssim"].detach()) - metric_ssim(a[0].detach(), b[0])) < 1e-5
    terms["dssim"].backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all()) and float(a.grad.abs().sum()) > 0


def test_photometric_weights(gen):
    a = torch.rand(1, 16, 16, 3, generator=gen)
    b = torch.rand(1, 16, 16, 3, generator=gen)
    terms = photometric_loss(a, b, LossConfig(ssim_weight=0.2))
    assert torch.isclose(terms["l1"], 0.8 * (a - b).abs().mean())
    assert torch.isclose(terms["dssim"], 0.2 * (1 - ssim_tensor(a, b)))
    assert "l2" in photometric_loss(a, b, LossConfig(l2=True))


def _plane_camera() -> Camera:
    T = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]])
    return Camera(T[None], K, 16, 16)


def test_depth_normals_of_a_plane_face_the_camera():
    cam = _plane_camera()
    depth = torch.full((1, 16, 16, 1), 3.0)  # the plane y = 0 seen head-on
    n = depth_to_normals(depth, cam)
    assert torch.allclose(n[0, 1:-1, 1:-1], torch.tensor([0.0, -1.0, 0.0]).expand(14, 14, 3), atol=1e-5)
    assert torch.count_nonzero(n[0, 0]) == 0  # zero on the border


def test_normal_consistency_is_zero_for_matching_normals():
    cam = _plane_camera()
    depth = torch.full((1, 16, 16, 1), 3.0)
    normals = torch.tensor([0.0, -1.0, 0.0]).expand(1, 16, 16, 3)
    render = RenderOutput(
        rgb=torch.zeros(1, 16, 16, 3), alpha=torch.ones(1, 16, 16, 1), depth=depth, normals=normals
    )
    loss = normal_consistency_loss(render, cam, median_depth=False)
    border = 1 - (14 * 14) / (16 * 16)  # border pixels have N_surf = 0 and contribute 1 each
    assert abs(float(loss) - border) < 1e-5


def test_missing_outputs_name_the_scene_and_the_field():
    cam = _plane_camera()
    render = RenderOutput(rgb=torch.zeros(1, 16, 16, 3), alpha=torch.ones(1, 16, 16, 1), producer="ToyScene")
    with pytest.raises(MissingRenderOutput, match="ToyScene.*'normals'|'normals'.*ToyScene"):
        normal_consistency_loss(render, cam, median_depth=True)
    cfg = LossConfig(ssim_weight=0.0, normal_weight=0.0, distortion_weight=0.1, normal_from_fraction=0.0)
    with pytest.raises(MissingRenderOutput, match="distortion"):
        total_loss(render, torch.zeros(1, 16, 16, 3), cam, cfg, fraction=0.5)


def test_loss_needs_follow_the_weights():
    assert loss_needs(LossConfig(normal_weight=0.0)).normals is False
    needs = loss_needs(LossConfig(normal_weight=1e-4, normal_from_fraction=0.2))
    assert needs.normals and needs.depth_median and not needs.distortion
    assert loss_needs(LossConfig(normal_weight=1e-4, normal_from_fraction=1.0)).normals is False


def test_sfm_depth_loss_is_the_mean_deviation_over_rays_with_a_target():
    deviation = torch.tensor([[[0.5], [3.0], [0.25]], [[0.0], [5.0], [7.0]]], requires_grad=True)
    target = torch.tensor([[[2.0], [0.0], [6.0]], [[2.0], [0.0], [0.0]]])  # 0 = no target
    loss = sfm_depth_loss(deviation, target)
    assert float(loss.detach()) == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    loss.backward()
    assert deviation.grad.flatten().tolist() == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0, 0.0])
    none = sfm_depth_loss(deviation, torch.zeros_like(target))
    assert (
        float(none.detach()) == 0.0 and none.requires_grad
    )  # no target in the batch: a zero that backpropagates
    assert loss_needs(LossConfig(normal_weight=0.0, sfm_depth_weight=0.1)).depth_deviation
    assert not loss_needs(LossConfig(normal_weight=0.0)).depth_deviation
