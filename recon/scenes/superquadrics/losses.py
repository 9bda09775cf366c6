"""Regularisers of the blocks world as functions of tensors (spec superquadrics.md 5 and 7).

Opacity handling (spec 5): ``alive = α > kill_threshold`` (noise-free) decides which blocks exist; in the coarse
phase the logits get N(0, std²) noise and ``α̂ = sigmoid(noisy logits)·alive`` is used everywhere in that step;
in the fine phase ``α̂ = [α > opaque_threshold]`` (0/1). The weighted total is assembled by the scene/loss object
from these terms and the stage factors (``recon.scenes.superquadrics.curriculum.Stage``).
"""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from recon.scenes.superquadrics.blocks import BlockSet
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.curriculum import Stage
from recon.scenes.superquadrics.geometry import sdf_proxy

__all__ = [
    "OVERLAP_MAX_BLOCKS",
    "OVERLAP_POINTS",
    "OVERLAP_TEMPERATURE",
    "PARSIMONY_MIN",
    "alive_mask",
    "effective_opacities",
    "noisy_alpha_logits",
    "opaque_mask",
    "overlap_loss",
    "parsimony_loss",
    "total_variation",
    "tv_loss",
    "weighted_regularizers",
]

PARSIMONY_MIN = 1.5e-8  # sqrt is taken of max(alpha_hat, 1.5e-8): the gradient of sqrt at 0 is infinite
OVERLAP_POINTS = 1000  # points sampled per block (reference OVERLAP_N_POINTS)
OVERLAP_TEMPERATURE = 0.005  # occupancy = sigmoid(-sdf / T) (reference OVERLAP_TEMPERATURE)
OVERLAP_MAX_BLOCKS = 1.95  # penalise occupancy sums above ~2 blocks (reference OVERLAP_N_BLOCKS)


def alive_mask(alpha_logits: Float[Tensor, " N"], *, kill_threshold: float = 0.01) -> Bool[Tensor, " N"]:
    """Blocks not killed: noise-free ``sigmoid(logit) > kill_threshold`` (a killed block has α < 0.01)."""
    return torch.sigmoid(alpha_logits.detach()) > kill_threshold


def opaque_mask(alpha_logits: Float[Tensor, " N"], *, opaque_threshold: float = 0.5) -> Bool[Tensor, " N"]:
    """Blocks kept in the fine phase and in export: noise-free ``α > opaque_threshold``."""
    return torch.sigmoid(alpha_logits.detach()) > opaque_threshold


def noisy_alpha_logits(
    alpha_logits: Float[Tensor, " N"], *, std: float = 1.0, generator: torch.Generator | None = None
) -> Float[Tensor, " N"]:
    """Coarse-phase opacity noise: ``logits + N(0, std²)`` (noise drawn on the logits' device).

    Differentiable w.r.t. ``alpha_logits`` (identity Jacobian).
    """
    noise = torch.randn(
        alpha_logits.shape, generator=generator, device=alpha_logits.device, dtype=alpha_logits.dtype
    )
    return alpha_logits + std * noise


def effective_opacities(
    alpha_logits: Float[Tensor, " N"],
    *,
    coarse: bool,
    noisy_logits: Float[Tensor, " N"] | None = None,
    kill_threshold: float = 0.01,
    opaque_threshold: float = 0.5,
) -> Float[Tensor, " N"]:
    """α̂ used by rendering, parsimony and overlap in one step (spec 5).

    .. math:: \\hat\\alpha = \\sigma(\\tilde\\ell)\\,[\\sigma(\\ell) > 0.01]\\ \\text{(coarse)},\\qquad
        \\hat\\alpha = [\\sigma(\\ell) > 0.5]\\ \\text{(fine)}

    Args:
        alpha_logits: (N,) noise-free logits ℓ (decide which blocks are killed / opaque).
        coarse: coarse phase (soft, noisy) or fine phase (0/1).
        noisy_logits: (N,) ℓ̃ = ℓ + noise for this step, or None for no noise (coarse phase only).
        kill_threshold: α below which a block is killed.
        opaque_threshold: α above which a block is kept in the fine phase.

    Returns:
        (N,) α̂. Differentiable w.r.t. the logits in the coarse phase; constant in the fine phase.
    """
    if not coarse:
        return opaque_mask(alpha_logits, opaque_threshold=opaque_threshold).to(alpha_logits.dtype)
    logits = alpha_logits if noisy_logits is None else noisy_logits
    alive = alive_mask(alpha_logits, kill_threshold=kill_threshold)
    return torch.sigmoid(logits) * alive.to(logits.dtype)


def parsimony_loss(alpha_hat: Float[Tensor, " N"]) -> Float[Tensor, ""]:
    """Parsimony ``mean_j sqrt(max(α̂_j, 1.5e-8))`` (spec 7): drives unneeded blocks to vanish.

    A killed block has α̂ = 0, so it contributes the constant sqrt(1.5e-8) and no gradient.

    Differentiable w.r.t. ``alpha_hat``.
    """
    return alpha_hat.clamp_min(PARSIMONY_MIN).sqrt().mean()


def total_variation(texture: Float[Tensor, "*batch H W 3"]) -> Float[Tensor, ""]:
    """``tv(T)``: mean over texels of the channel-summed squared forward differences, along u plus along v."""
    du = torch.diff(texture, dim=-2).pow(2).sum(-1).mean()
    dv = torch.diff(texture, dim=-3).pow(2).sum(-1).mean()
    return du + dv


def tv_loss(
    block_textures: Float[Tensor, "N H W 3"],
    background_texture: Float[Tensor, "Hb Wb 3"],
    ground_texture: Float[Tensor, "Hg Wg 3"],
    *,
    ground_factor: float = 1.0,
) -> Float[Tensor, ""]:
    """Texture TV of the scene on activated colours (spec 7).

    .. math:: TV = tv(bkg) + \\mathrm{mean}(\\textstyle\\sum_j \\Delta u_j^2) + \\mathrm{mean}(\\sum_j \\Delta v_j^2)
        + f_t\\, tv(ground)

    Block u-differences wrap around (the last column is compared with the first: the atlas is periodic in u);
    block terms are summed over blocks before the mean so each block gets the same gradient scale whatever N.
    The reference passes all N blocks' textures, killed ones included, undecimated (N may be 0).

    Args:
        block_textures: (N, H, W, 3) block colours (sigmoid of the logits), W along u.
        background_texture: (Hb, Wb, 3) background colours.
        ground_texture: (Hg, Wg, 3) ground colours.
        ground_factor: f_t on the ground term (0.1 in the fine phase, so that term is scaled by 0.1 twice).

    Returns:
        Scalar TV (not yet multiplied by ``tv_weight·f_t``). Differentiable w.r.t. all textures.
    """
    loss = total_variation(background_texture) + ground_factor * total_variation(ground_texture)
    if block_textures.shape[0] > 0:
        wrapped = torch.cat([block_textures, block_textures[:, :, :1]], dim=2)
        du = torch.diff(wrapped, dim=2).pow(2).sum(-1)
        dv = torch.diff(block_textures, dim=1).pow(2).sum(-1)
        loss = loss + du.sum(0).mean() + dv.sum(0).mean()
    return loss


def overlap_loss(
    eps: Float[Tensor, "N 2"],
    scales: Float[Tensor, "N 3"],
    rotations: Float[Tensor, "N 3 3"],
    translations: Float[Tensor, "N 3"],
    alpha_hat: Float[Tensor, " N"],
    *,
    ratio: float = 0.25,
    n_points: int = OVERLAP_POINTS,
    temperature: float = OVERLAP_TEMPERATURE,
    max_blocks: float = OVERLAP_MAX_BLOCKS,
    generator: torch.Generator | None = None,
) -> Float[Tensor, ""]:
    """Penalty on space inside two or more opaque blocks (spec 7).

    .. math:: \\mathrm{overlap} = \\mathrm{mean}_x \\max(0, \\textstyle\\sum_j \\sigma(-sdf_j(x)/T)\\,\\hat\\alpha_j
        - 1.95)

    ``n_points`` points are drawn uniformly in each block's local box ``[−1, 1]³`` and mapped to the canonical
    frame with ``ratio·S, R, t`` without gradient; all ``N·n_points`` points are then evaluated in every block's
    frame ``x_loc = Rᵀ(x − t)/(ratio·S)`` with gradient.

    Args:
        eps: (N, 2) exponents; scales: (N, 3) S; rotations: (N, 3, 3); translations: (N, 3).
        alpha_hat: (N,) effective opacities (:func:`effective_opacities`).
        ratio: block/scene ratio.
        n_points: samples per block.
        temperature: occupancy temperature.
        max_blocks: occupancy sum that starts to cost.
        generator: draws the samples (on CPU when given, then moved; else on the tensors' device).

    Returns:
        Scalar penalty. Differentiable w.r.t. ``eps``, ``scales``, ``rotations``, ``translations``, ``alpha_hat``.
    """
    n = eps.shape[0]
    device, dtype = translations.device, translations.dtype
    shape = (n, n_points, 3)
    if generator is not None:
        unit = torch.rand(shape, generator=generator, dtype=dtype).to(device)
    else:
        unit = torch.rand(shape, device=device, dtype=dtype)
    half = ratio * scales
    with torch.no_grad():
        samples = (2 * unit - 1) * half[:, None, :]
        samples = samples @ rotations.transpose(-1, -2) + translations[:, None, :]
        samples = samples.reshape(1, n * n_points, 3)
    local = ((samples - translations[:, None, :]) @ rotations) / half[:, None, :]  # row form of R^T (x - t)
    occupancy = torch.sigmoid(-sdf_proxy(local, eps) / temperature) * alpha_hat[:, None]
    return (occupancy.sum(0) - max_blocks).clamp_min(0).mean()


def weighted_regularizers(
    blocks: BlockSet,
    alpha_hat: Float[Tensor, " N"],
    *,
    stage: Stage,
    cfg: SuperquadricsConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The regularisers of one step, weighted by ``cfg`` and the stage factors (spec 7), as the reference does.

    .. math:: 0.01 f_c\\,\\mathrm{parsimony} + 0.1 f_t\\,TV + 1.0 f_c\\,\\mathrm{overlap}

    TV sees all N block textures (killed ones included) undecimated, with the ground term scaled by ``f_t``;
    overlap sees all N blocks with their α̂ (so killed blocks contribute nothing). Terms whose factor is 0 are
    returned as zeros without being computed.

    Args:
        blocks: the parameters (with gradients).
        alpha_hat: (N,) :func:`effective_opacities` of this step (the same noisy α the renderer uses).
        stage: the curriculum stage (``stage_at(fraction, cfg)``).
        cfg: weights and overlap settings.
        generator: draws the overlap samples.

    Returns:
        ``{"parsimony", "tv", "overlap"}`` scalar tensors, already weighted. Differentiable w.r.t. the block
        parameters, the textures and ``alpha_hat``.
    """
    zero = alpha_hat.new_zeros(())
    terms = {"parsimony": zero, "tv": zero, "overlap": zero}
    if stage.coarse_factor > 0:
        terms["parsimony"] = cfg.parsimony_weight * stage.coarse_factor * parsimony_loss(alpha_hat)
        terms["overlap"] = (
            cfg.overlap_weight
            * stage.coarse_factor
            * overlap_loss(
                blocks.exponents(),
                blocks.scales(),
                blocks.rotations(),
                blocks.translations,
                alpha_hat,
                ratio=blocks.ratio,
                n_points=cfg.overlap_points,
                temperature=cfg.overlap_temperature,
                max_blocks=cfg.overlap_max_blocks,
                generator=generator,
            )
        )
    if stage.tv_factor > 0:
        tv = tv_loss(
            torch.sigmoid(blocks.texture_logits),
            torch.sigmoid(blocks.background_texture_logits),
            torch.sigmoid(blocks.ground_texture_logits),
            ground_factor=stage.tv_factor,
        )
        terms["tv"] = cfg.tv_weight * stage.tv_factor * tv
    return terms
