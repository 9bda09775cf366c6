"""Losses (spec §8): differentiable SSIM agrees with recon.metrics.ssim; depth normals; photometric weights."""

import torch

from recon.core import Camera, RenderOutput
from recon.core.transforms import look_at
from recon.train.losses import LossConfig, depth_to_normals, normal_consistency_loss, photometric_loss, ssim


def test_ssim_matches_metrics(gen):
    from recon.metrics import ssim as metric_ssim

    a = torch.rand(1, 40, 36, 3, generator=gen)
    b = (a + 0.1 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    assert abs(float(ssim(a, b)) - float(metric_ssim(a[0], b[0]))) < 1e-4
    assert abs(float(ssim(a, a)) - 1.0) < 1e-6


def test_photometric_weights(gen):
    a = torch.rand(1, 16, 16, 3, generator=gen)
    b = torch.rand(1, 16, 16, 3, generator=gen)
    terms = photometric_loss(a, b, LossConfig(ssim_weight=0.2))
    assert torch.isclose(terms["l1"], 0.8 * (a - b).abs().mean())
    assert torch.isclose(terms["dssim"], 0.2 * (1 - ssim(a, b)))
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
