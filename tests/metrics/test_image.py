"""Image metrics: PSNR by hand, SSIM / MS-SSIM against torchmetrics, LPIPS availability without downloads."""

import importlib.machinery
import math

import pytest
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from recon.metrics import image as image_metrics
from recon.metrics import lpips, lpips_unavailable_reason, ms_ssim, psnr, ssim
from tests.typecheck import assert_rejected

SSIM_TOL = 1e-4  # brief: matches torchmetrics within 1e-4 (ours runs in float64, torchmetrics in float32)


def _pair(shape, gen, noise=0.2):
    a = torch.rand(shape, generator=gen)
    b = (a + noise * torch.randn(shape, generator=gen)).clamp(0, 1)
    return a, b


def _nchw(x):
    return (x if x.ndim == 4 else x[None]).permute(0, 3, 1, 2)


def test_psnr_constant_error_is_20db() -> None:
    # error 0.1 everywhere: MSE = 0.01, PSNR = -10 log10(0.01) = 20 dB
    img = torch.full((5, 7, 3), 0.35, dtype=torch.float64)
    assert psnr(img + 0.1, img) == pytest.approx(20.0, abs=1e-9)


def test_psnr_mask_and_batch() -> None:
    ref = torch.zeros(2, 4, 4, 3, dtype=torch.float64)
    img = ref.clone()
    img[0] += 0.1  # image 0: MSE 0.01 -> 20 dB
    img[1, :, :2] += 0.01  # image 1: error 0.01 on the left half only
    mask = torch.zeros(2, 4, 4, 1, dtype=torch.bool)
    mask[:, :, :2] = True
    # masked: image 0 still 20 dB, image 1 MSE 1e-4 -> 40 dB; mean 30 dB
    assert psnr(img, ref, mask=mask) == pytest.approx(30.0, abs=1e-9)
    # unmasked image 1: MSE 0.5e-4 -> 43.0103 dB; mean with 20 dB
    assert psnr(img, ref) == pytest.approx(0.5 * (20.0 + 10 * math.log10(2e4)), abs=1e-9)


def test_identical_images() -> None:
    img = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(1))
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(11, 11, 3), (32, 32, 3), (3, 47, 61, 3), (2, 64, 40, 3)])
def test_ssim_matches_torchmetrics(shape, gen) -> None:
    a, b = _pair(shape, gen)
    expected = structural_similarity_index_measure(_nchw(a), _nchw(b), data_range=1.0)
    assert ssim(a, b) == pytest.approx(float(expected), abs=SSIM_TOL)


def test_ssim_matches_torchmetrics_on_similar_images(gen) -> None:
    a, b = _pair((2, 40, 40, 3), gen, noise=0.02)
    expected = structural_similarity_index_measure(_nchw(a), _nchw(b), data_range=1.0)
    assert ssim(a, b) == pytest.approx(float(expected), abs=SSIM_TOL)


@pytest.mark.parametrize("shape", [(176, 190, 3), (2, 200, 200, 3)])
def test_ms_ssim_matches_torchmetrics(shape, gen) -> None:
    a, b = _pair(shape, gen, noise=0.1)
    expected = multiscale_structural_similarity_index_measure(_nchw(a), _nchw(b), data_range=1.0)
    assert ms_ssim(a, b) == pytest.approx(float(expected), abs=SSIM_TOL)


def test_ms_ssim_rejects_small_images(gen) -> None:
    a, b = _pair((64, 64, 3), gen)
    with pytest.raises(ValueError, match="176"):
        ms_ssim(a, b)


def test_shape_errors() -> None:
    assert_rejected(
        lambda: psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3)), match="same shape", argument="ref"
    )
    assert_rejected(lambda: ssim(torch.zeros(4, 4), torch.zeros(4, 4)), match=r"\(H, W, 3\)", argument="img")


def test_lpips_unavailable_here_returns_none_with_reason(gen) -> None:
    reason = lpips_unavailable_reason()
    if reason is None:
        pytest.skip(
            "LPIPS weights are installed on this machine; the unavailable path is covered by the fakes below"
        )
    assert isinstance(reason, str) and reason.strip()
    a, b = _pair((16, 16, 3), gen)
    assert lpips(a, b) is None


def _fake_spec(name, origin):
    return importlib.machinery.ModuleSpec(name, loader=None, origin=str(origin))


def test_lpips_reason_checks_each_weight_file(tmp_path, monkeypatch) -> None:
    """Package, bundled linear weights, torchvision, hub checkpoint: each missing piece is named; no import."""
    pkg = tmp_path / "lpips"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    specs = {"lpips": None, "torchvision": None}
    monkeypatch.setattr(image_metrics.importlib.util, "find_spec", lambda name: specs.get(name))
    monkeypatch.setattr(image_metrics, "_torch_hub_checkpoints", lambda: hub)

    assert "not installed" in lpips_unavailable_reason()
    specs["lpips"] = _fake_spec("lpips", pkg / "__init__.py")
    assert "linear weights" in lpips_unavailable_reason()
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"")
    assert "torchvision" in lpips_unavailable_reason()
    specs["torchvision"] = _fake_spec("torchvision", tmp_path / "tv.py")
    assert "hub cache" in lpips_unavailable_reason()
    (hub / image_metrics.TORCHVISION_CHECKPOINTS["alex"]).write_bytes(b"")
    assert lpips_unavailable_reason() is None


def test_ssim_float64_matches_torchmetrics_float64(gen) -> None:
    a, b = _pair((24, 30, 3), gen)
    a, b = a.double(), b.double()
    expected = structural_similarity_index_measure(_nchw(a), _nchw(b), data_range=1.0)
    assert ssim(a, b) == pytest.approx(float(expected), abs=1e-10)
