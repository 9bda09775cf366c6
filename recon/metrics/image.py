"""Image metrics on [0, 1] RGB images: PSNR, SSIM, MS-SSIM (torchmetrics' conventions) and LPIPS when available.

Images are ``(H, W, 3)`` or ``(B, H, W, 3)`` float tensors in [0, 1], already composited over the evaluation
background. A batch returns the mean of the per-image values. PSNR is computed in float64; SSIM and MS-SSIM in
float64 for float64 inputs, else in float32 (as torchmetrics does). The float-returning metrics are not
differentiable; ``ssim_tensor`` and ``psnr_tensor`` are the same formulas as differentiable tensors (training losses
and training-time logs use them, so there is one SSIM and one PSNR in recon).
"""

import functools
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

DATA_RANGE = 1.0  # images are in [0, 1]
SSIM_KERNEL_SIZE = 11  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales
PSNR_MIN_MSE = 1e-20  # psnr_tensor's MSE floor: identical images give 200 dB instead of inf (no NaN in logs)
LPIPS_NET = "alex"  # the LPIPS paper's default backbone
TORCHVISION_CHECKPOINTS = {  # files torchvision's pretrained backbones load from the torch hub cache
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}


def _as_batch(img: Tensor, ref: Tensor, dtype: torch.dtype | None = torch.float64) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) views of two same-shaped (H, W, 3) or (B, H, W, 3) images, in ``dtype``.

    ``dtype=None`` keeps float64 inputs in float64 and computes everything else in float32.
    """
    if not isinstance(img, Tensor) or not isinstance(ref, Tensor):
        raise TypeError("img and ref must be torch tensors of shape (H, W, 3) or (B, H, W, 3)")
    if img.shape != ref.shape:
        raise ValueError(
            f"img and ref must have the same shape, got {tuple(img.shape)} and {tuple(ref.shape)}"
        )
    if img.ndim not in (3, 4) or img.shape[-1] != 3:
        raise ValueError(f"img must have shape (H, W, 3) or (B, H, W, 3), got {tuple(img.shape)}")
    if img.ndim == 3:
        img, ref = img[None], ref[None]
    if dtype is None:
        dtype = torch.float64 if img.dtype == torch.float64 else torch.float32
    return (
        img.detach().to(dtype).permute(0, 3, 1, 2),
        ref.detach().to(device=img.device, dtype=dtype).permute(0, 3, 1, 2),
    )


def _as_batch_differentiable(img: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) views of two same-shaped images in ``img``'s dtype, keeping the autograd graph."""
    if not isinstance(img, Tensor) or not isinstance(ref, Tensor):
        raise TypeError("img and ref must be torch tensors of shape (H, W, 3) or (B, H, W, 3)")
    if img.shape != ref.shape or img.ndim not in (3, 4) or img.shape[-1] != 3:
        raise ValueError(
            f"img and ref must both have shape (H, W, 3) or (B, H, W, 3), got {tuple(img.shape)} and "
            f"{tuple(ref.shape)}"
        )
    if img.ndim == 3:
        img, ref = img[None], ref[None]
    return img.permute(0, 3, 1, 2), ref.to(img).permute(0, 3, 1, 2)


def psnr_tensor(img: Float[Tensor, "*batch H W 3"], ref: Float[Tensor, "*batch H W 3"]) -> Tensor:
    """The PSNR of :func:`psnr` as a 0-d tensor in ``img``'s dtype (no host sync; for training-time logs).

    ``-10 log10(MSE)`` per image (MSE clamped at 1e-20 so identical images give 200 dB, not inf), averaged.
    Differentiable w.r.t. ``img`` and ``ref``.
    """
    x, y = _as_batch_differentiable(img, ref)
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(PSNR_MIN_MSE)
    return (-10.0 * torch.log10(mse / DATA_RANGE**2)).mean()


def ssim_tensor(img: Float[Tensor, "*batch H W 3"], ref: Float[Tensor, "*batch H W 3"]) -> Tensor:
    """The SSIM of :func:`ssim` (torchmetrics' convention, reflect padding) as a differentiable 0-d tensor.

    Computed in ``img``'s dtype; used by the D-SSIM training loss. Differentiable w.r.t. ``img`` and ``ref``.
    """
    x, y = _as_batch_differentiable(img, ref)
    return _ssim_and_cs(x, y)[0].mean()


def psnr(
    img: Float[Tensor, "*batch H W 3"],
    ref: Float[Tensor, "*batch H W 3"],
    *,
    mask: Tensor | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (no clamping; clamp renders first).

    .. math:: \\mathrm{PSNR} = -10 \\log_{10} \\mathrm{MSE}, \\quad
              \\mathrm{MSE} = \\frac{\\sum_p m_p \\lVert x_p - y_p \\rVert^2}{3 \\sum_p m_p}

    Args:
        img: (H, W, 3) or (B, H, W, 3) image.
        ref: the reference, same shape.
        mask: optional (H, W), (H, W, 1) or batched weights/booleans; the MSE runs over masked pixels only.

    Returns:
        The PSNR (mean over the batch of per-image values). ``float('inf')`` when an image equals its reference
        exactly (MSE = 0); a batch holding such an image also averages to ``inf``.

    Differentiable w.r.t.: nothing (a metric).

    Example:
        >>> x = torch.full((4, 4, 3), 0.5, dtype=torch.float64)
        >>> round(psnr(x + 0.1, x), 6)  # MSE 0.01 -> 20 dB
        20.0
    """
    x, y = _as_batch(img, ref)
    sq = ((x - y) ** 2).mean(1)  # (B, H, W)
    if mask is None:
        mse = sq.flatten(1).mean(1)
    else:
        m = mask.detach().to(device=sq.device, dtype=torch.float64)
        if m.ndim >= 3 and m.shape[-1] == 1:
            m = m[..., 0]
        m = m.expand_as(sq) if m.ndim == 2 else m.reshape(sq.shape)
        total = m.flatten(1).sum(1)
        if bool((total <= 0).any()):
            raise ValueError("mask selects no pixel of some image")
        mse = (sq * m).flatten(1).sum(1) / total
    values = [math.inf if float(e) == 0.0 else -10.0 * math.log10(float(e) / DATA_RANGE**2) for e in mse]
    return sum(values) / len(values)


def _gaussian_filter(x: Tensor) -> Tensor:
    """Valid 11x11 Gaussian filtering (sigma 1.5) of (N, C, H, W) float64, as two separable 1D passes.

    The 2D window is the outer product of the normalised 1D Gaussian, so the two passes equal torchmetrics'
    single 11x11 convolution.
    """
    coords = torch.arange(SSIM_KERNEL_SIZE, dtype=x.dtype, device=x.device) - (SSIM_KERNEL_SIZE - 1) / 2
    g = torch.exp(-0.5 * (coords / SSIM_SIGMA) ** 2)
    g = g / g.sum()
    channels = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def _ssim_and_cs(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image SSIM and contrast-sensitivity means, torchmetrics' convention.

    The images are reflect-padded by 5 pixels before the 11x11 Gaussian filtering; SSIM averages the full
    (H, W) map, the contrast term ``cs`` averages the map without the 5-pixel border (as torchmetrics does).
    """
    pad = (SSIM_KERNEL_SIZE - 1) // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(
            f"images must be larger than {pad} pixels per side for SSIM, got {tuple(x.shape[-2:])}"
        )
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    yp = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    stats = _gaussian_filter(torch.cat([xp, yp, xp * xp, yp * yp, xp * yp])).split(x.shape[0])
    mu_x, mu_y = stats[0], stats[1]
    var_x = (stats[2] - mu_x**2).clamp_min(0.0)
    var_y = (stats[3] - mu_y**2).clamp_min(0.0)
    cov = stats[4] - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    cs = cs_map[..., pad:-pad, pad:-pad]
    return ssim_map.flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(img: Float[Tensor, "*batch H W 3"], ref: Float[Tensor, "*batch H W 3"]) -> float:
    """Structural similarity (Wang et al. 2004), equal to torchmetrics' ``structural_similarity_index_measure``.

    .. math:: \\mathrm{SSIM} = \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}
              {(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)}

    with local statistics from an 11x11 Gaussian window (sigma 1.5), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
    data range ``L = 1``, reflect padding, averaged over pixels and channels.

    Args:
        img: (H, W, 3) or (B, H, W, 3) image in [0, 1]; H, W > 5.
        ref: the reference, same shape.

    Returns:
        Mean SSIM over the batch; 1.0 for identical images.

    Differentiable w.r.t.: nothing (a metric).
    """
    x, y = _as_batch(img, ref, dtype=None)
    return float(_ssim_and_cs(x, y)[0].mean())


def ms_ssim(img: Float[Tensor, "*batch H W 3"], ref: Float[Tensor, "*batch H W 3"]) -> float:
    """Multi-scale SSIM (Wang et al. 2003), equal to torchmetrics' ``multiscale_structural_similarity_index_measure``
    with its defaults (five scales, betas (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), ReLU-normalised terms).

    .. math:: \\mathrm{MS\\text{-}SSIM} = \\mathrm{SSIM}_5^{\\beta_5} \\prod_{s=1}^{4} \\mathrm{cs}_s^{\\beta_s}

    Each scale halves the images with 2x2 average pooling.

    Args:
        img: (H, W, 3) or (B, H, W, 3) image in [0, 1]; H, W >= 176 (the coarsest scale must exceed the window).
        ref: the reference, same shape.

    Returns:
        Mean MS-SSIM over the batch.

    Differentiable w.r.t.: nothing (a metric).
    """
    x, y = _as_batch(img, ref, dtype=None)
    levels = len(MS_SSIM_BETAS)
    divisor = (levels - 1) ** 2  # torchmetrics' size rule
    if min(x.shape[-2:]) // divisor <= SSIM_KERNEL_SIZE - 1:
        raise ValueError(
            f"MS-SSIM needs images of at least {divisor * SSIM_KERNEL_SIZE} pixels per side, got {tuple(x.shape[-2:])}"
        )
    terms = []
    for _ in range(levels):
        sim, cs = _ssim_and_cs(x, y)
        terms.append(cs.clamp_min(0.0))
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    terms[-1] = sim.clamp_min(0.0)
    betas = torch.tensor(MS_SSIM_BETAS, dtype=sim.dtype, device=sim.device)[:, None]
    return float((torch.stack(terms) ** betas).prod(0).mean())


def _torch_hub_checkpoints() -> Path:
    """The torch hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``), without importing torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot run offline here, or None when it can.

    LPIPS needs the ``lpips`` package, its bundled linear-layer weights (``lpips/weights/v0.1/alex.pth``),
    ``torchvision``, and torchvision's pretrained AlexNet in the torch hub cache. Nothing is imported or downloaded.
    """
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return "the lpips package is not installed (pip install 'recon[lpips]')"
    linear = Path(spec.origin).parent / "weights" / "v0.1" / f"{LPIPS_NET}.pth"
    if not linear.is_file():
        return f"the lpips package has no bundled linear weights at {linear}"
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed (LPIPS needs its pretrained backbone)"
    backbone = _torch_hub_checkpoints() / TORCHVISION_CHECKPOINTS[LPIPS_NET]
    if not backbone.is_file():
        return f"the pretrained {LPIPS_NET} backbone is not in the torch hub cache ({backbone}); recon never downloads"
    return None


@functools.lru_cache(maxsize=1)
def _lpips_model() -> torch.nn.Module:
    import lpips as lpips_package  # pyright: ignore[reportMissingImports]  # optional dependency, imported only once its weights are known to be local

    model = lpips_package.LPIPS(net=LPIPS_NET, pretrained=True, verbose=False)
    return model.eval()


def lpips(
    img: Float[Tensor, "*batch H W 3"],
    ref: Float[Tensor, "*batch H W 3"],
    *,
    model: torch.nn.Module | None = None,
) -> float | None:
    """LPIPS distance (Zhang et al. 2018, AlexNet, v0.1) or None when its weights are not available locally.

    .. math:: \\mathrm{LPIPS} = \\frac{1}{B} \\sum_b d(2 x_b - 1, 2 y_b - 1)

    where ``d`` is the network: both images are mapped from [0, 1] to [-1, 1] (what LPIPS was trained on) and
    passed as one ``(B, 3, H, W)`` batch; the per-image distances are averaged.

    Args:
        img: (H, W, 3) or (B, H, W, 3) image in [0, 1].
        ref: the reference, same shape.
        model: the distance network, called as ``model(x, y)`` on ``(B, 3, H, W)`` float32 tensors in [-1, 1]
            and returning ``B`` distances (any shape with B elements, e.g. ``(B, 1, 1, 1)``). None: the
            pretrained LPIPS-AlexNet when its weights are local (else the result is None).

    Returns:
        Mean LPIPS over the batch (lower is better), or None; :func:`lpips_unavailable_reason` says why.

    Differentiable w.r.t.: nothing (a metric).

    Example:
        >>> import torch
        >>> class MeanAbs(torch.nn.Module):
        ...     def forward(self, x, y):
        ...         return (x - y).abs().mean(dim=(1, 2, 3))
        >>> lpips(torch.ones(4, 4, 3), torch.zeros(4, 4, 3), model=MeanAbs())
        2.0
    """
    x, y = _as_batch(img, ref)
    if model is None:
        if lpips_unavailable_reason() is not None:
            return None
        model = _lpips_model()
    model = model.to(x.device)
    with torch.no_grad():
        value = model(x.float() * 2 - 1, y.float() * 2 - 1)  # LPIPS expects [-1, 1]
    if value.numel() != x.shape[0]:
        raise ValueError(f"lpips: model returned {value.numel()} values for a batch of {x.shape[0]} images")
    return float(value.float().mean())
