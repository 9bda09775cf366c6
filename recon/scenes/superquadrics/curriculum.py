"""Three-stage curriculum of the blocks world driven by the training-time fraction (spec superquadrics.md 8).

``fraction`` is the elapsed part of the training budget in [0, 1] (steps or wall-clock), so one schedule serves
every budget. Stages (published DTU milestones 750 / 1500 of 1800 epochs):

1. ``coarse_decimated`` for ``fraction < decimate_until``: soft opacities with noise, 8x decimated textures;
2. ``coarse`` for ``fraction < coarse_until``: the same with full-resolution textures;
3. ``fine``: only ``α > 0.5`` blocks, opaque, σ = 5e-6, no parsimony or overlap, reduced TV and LPIPS.
"""

from dataclasses import dataclass
from typing import Literal

from recon.scenes.superquadrics.config import SuperquadricsConfig

__all__ = ["Stage", "StageName", "lr_multiplier", "sigma_ndc_to_px2", "stage_at"]

StageName = Literal["coarse_decimated", "coarse", "fine"]


@dataclass(frozen=True)
class Stage:
    """What one training step does at a given fraction of the budget.

    Attributes:
        name: the stage.
        coarse: True in the two coarse stages.
        decimate_textures: average-pool + upsample textures before sampling (first stage only).
        opacity_noise: add N(0, std²) noise to the opacity logits this step.
        opaque_only: render only ``α > opaque_threshold`` blocks, with face alpha 1.
        sigma_ndc: soft-rasteriser σ in squared-NDC units (shorter image side spans [-1, 1]).
        perceptual_factor: f_p (1 coarse, 0.1 fine).
        coarse_factor: f_c, factor of parsimony and overlap (1 coarse, 0 fine).
        tv_factor: f_t (1 coarse, 0.1 fine).
        lr_multiplier: factor on every base learning rate (0.1 from ``lr_decay_at`` on).
    """

    name: StageName
    coarse: bool
    decimate_textures: bool
    opacity_noise: bool
    opaque_only: bool
    sigma_ndc: float
    perceptual_factor: float
    coarse_factor: float
    tv_factor: float
    lr_multiplier: float

    def sigma_px2(self, height: int, width: int) -> float:
        """σ in squared pixels for an image of ``height x width`` (see :func:`sigma_ndc_to_px2`)."""
        return sigma_ndc_to_px2(self.sigma_ndc, height, width)


def sigma_ndc_to_px2(sigma_ndc: float, height: int, width: int) -> float:
    """Convert a PyTorch3D squared-NDC σ to squared pixels: ``σ_px² = σ_ndc·(min(H, W)/2)²``.

    Example:
        >>> sigma_ndc_to_px2(1e-4, 300, 400)  # DTU coarse: 2.25 px²
        2.25
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return sigma_ndc * (min(height, width) / 2.0) ** 2


def lr_multiplier(fraction: float, cfg: SuperquadricsConfig) -> float:
    """``lr_decay_factor`` from ``cfg.lr_decay_at`` on, else 1 (MultiStep ×0.1 at DTU epoch 1700 of 1800)."""
    return cfg.lr_decay_factor if fraction >= cfg.lr_decay_at else 1.0


def stage_at(fraction: float, cfg: SuperquadricsConfig) -> Stage:
    """The curriculum stage at training fraction ``fraction`` ∈ [0, 1].

    Args:
        fraction: elapsed part of the budget (a milestone belongs to the later stage: ``decimate_until`` itself is
            already ``coarse``).
        cfg: milestones, σ values and noise settings.

    Raises:
        ValueError: fraction outside [0, 1] (or NaN).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    lr = lr_multiplier(fraction, cfg)
    if fraction < cfg.coarse_until:
        decimated = fraction < cfg.decimate_until
        return Stage(
            name="coarse_decimated" if decimated else "coarse",
            coarse=True,
            decimate_textures=decimated,
            opacity_noise=cfg.opacity_noise_std > 0,
            opaque_only=False,
            sigma_ndc=cfg.sigma_coarse,
            perceptual_factor=1.0,
            coarse_factor=1.0,
            tv_factor=1.0,
            lr_multiplier=lr,
        )
    return Stage(
        name="fine",
        coarse=False,
        decimate_textures=False,
        opacity_noise=False,
        opaque_only=True,
        sigma_ndc=cfg.sigma_fine,
        perceptual_factor=0.1,
        coarse_factor=0.0,
        tv_factor=0.1,
        lr_multiplier=lr,
    )
