"""Proposal-network sampling (Mip-NeRF 360 section 2; nerfacc ``PropNetEstimator.sampling``; nerfstudio nerfacto).

Each ray is parametrised by a normalised distance ``s in [0, 1]`` mapped to ``t in [near, far]`` uniformly in ``t``
(``"uniform"``) or in ``1/t`` (``"lindisp"``, unbounded scenes). Level 0 cuts ``[0, 1]`` into ``P_0`` (stratified)
intervals; at each level a proposal density field gives ``sigma`` on the intervals, ``render_weight_from_density``
turns it into weights ``w = T alpha``, and ``importance_sampling`` draws the next level's ``P_{k+1}`` interval edges
by inverse CDF of the piecewise-constant PDF in ``s``; after the last proposal level the same step draws the final
``S`` intervals, which the radiance field evaluates and ``composite`` renders (``ProposalSamples.packed``).

Sampling in ``s`` (as nerfacc) keeps the far, wide intervals of ``lindisp`` spacing resampled in disparity.
The two heavy parts reuse ops with Warp twins (``render_weight_from_density``, ``importance_sampling``); the rest is
glue (an affine or reciprocal map), so this module has no kernel of its own. The proposal (interlevel) loss that
trains the proposal fields is ``proposal_loss``; the distortion loss of the final samples is
``recon.renderers.volume.distortion_loss`` on ``s`` (Mip-NeRF 360's normalised ray distance).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core.shapes import Backend
from recon.renderers.volume.api import (
    Spacing,
    importance_sampling,
    render_weight_from_density,
    uniform_intervals,
)
from recon.renderers.volume.losses import distortion_loss, interlevel_loss
from recon.renderers.volume.types import PackedSamples

__all__ = [
    "DensityFn",
    "ProposalLevel",
    "ProposalSamples",
    "proposal_distortion_loss",
    "proposal_loss",
    "proposal_sampling",
    "s_to_t",
    "t_to_s",
]

DensityFn = Callable[[Tensor, Tensor], Tensor]
"""``(t_starts (R, P), t_ends (R, P)) -> sigmas (R, P)``: a proposal field evaluated on ray intervals."""


def s_to_t(
    s: Float[Tensor, "R K"], near: Float[Tensor, " R"], far: Float[Tensor, " R"], spacing: Spacing
) -> Float[Tensor, "R K"]:
    """Normalised ray distance ``s`` to ``t`` (nerfacc ``_transform_stot``).

    .. math:: t = n + s (f - n)\\;\\text{(uniform)},\\quad t = 1 / ((1 - s)/n + s/f)\\;\\text{(lindisp)}

    Edges stay sorted along the last axis (a running maximum): for increasing ``s`` only float32 rounding of
    edges ~1e-8 apart could reorder them, which made an interval of a real capture negative.

    Differentiable w.r.t.: ``s`` (unused: intervals are detached).
    """
    n, f = near[:, None], far[:, None]
    if spacing == "uniform":
        t = n + s * (f - n)
    elif spacing == "lindisp":
        t = 1.0 / ((1.0 - s) / n + s / f)
    else:
        raise ValueError(f"spacing must be 'uniform' or 'lindisp', got {spacing!r}")
    return torch.cummax(t, dim=-1).values  # float32 rounding must not reorder edges ~1 ulp apart


def t_to_s(
    t: Float[Tensor, "R K"], near: Float[Tensor, " R"], far: Float[Tensor, " R"], spacing: Spacing
) -> Float[Tensor, "R K"]:
    """Inverse of ``s_to_t``. Differentiable w.r.t.: ``t``."""
    n, f = near[:, None], far[:, None]
    if spacing == "uniform":
        return (t - n) / (f - n)
    if spacing == "lindisp":
        return (1.0 / t - 1.0 / n) / (1.0 / f - 1.0 / n)
    raise ValueError(f"spacing must be 'uniform' or 'lindisp', got {spacing!r}")


@dataclass(frozen=True)
class ProposalLevel:
    """One proposal level: its intervals and the weights its density field gave them.

    Attributes:
        s_edges: (R, P + 1) interval edges in normalised distance (detached).
        t_edges: (R, P + 1) the same edges in ``t`` (detached).
        weights: (R, P) ``w = T alpha`` of the proposal density (carries the proposal field's graph when sampled
            with ``requires_grad``).
    """

    s_edges: Float[Tensor, "R P1"]
    t_edges: Float[Tensor, "R P1"]
    weights: Float[Tensor, "R P"]


@dataclass(frozen=True)
class ProposalSamples:
    """Final intervals of the proposal sampler (``S`` per ray) and the proposal levels that produced them.

    Attributes:
        s_edges: (R, S + 1) final edges in normalised distance (detached).
        t_edges: (R, S + 1) final edges in ``t`` (detached).
        levels: the proposal levels, coarse to fine.
    """

    s_edges: Float[Tensor, "R S1"]
    t_edges: Float[Tensor, "R S1"]
    levels: tuple[ProposalLevel, ...]

    @property
    def n_rays(self) -> int:
        return self.t_edges.shape[0]

    @property
    def samples_per_ray(self) -> int:
        return self.t_edges.shape[1] - 1

    def packed(self) -> PackedSamples:
        """The final intervals in the packed layout (``S`` samples per ray, ray-major) that ``composite`` takes."""
        r, s = self.n_rays, self.samples_per_ray
        device = self.t_edges.device
        ray_indices = torch.arange(r, device=device).repeat_interleave(s)
        first = torch.arange(r, device=device) * s
        packed_info = torch.stack([first, torch.full_like(first, s)], -1)
        return PackedSamples(
            ray_indices, self.t_edges[:, :-1].reshape(-1), self.t_edges[:, 1:].reshape(-1), packed_info
        )


def _check(
    density_fns: Sequence[DensityFn],
    num_proposal_samples: Sequence[int],
    num_samples: int,
    near,
    far,
    spacing,
) -> None:
    if len(density_fns) != len(num_proposal_samples):
        raise ValueError(
            f"density_fns and num_proposal_samples must have the same length, got {len(density_fns)} and "
            f"{len(num_proposal_samples)}"
        )
    if num_samples < 1 or any(p < 1 for p in num_proposal_samples):
        raise ValueError(f"sample counts must be >= 1, got {list(num_proposal_samples)} and {num_samples}")
    if near.ndim != 1 or far.shape != near.shape:
        raise ValueError(f"near and far must both be (R,), got {tuple(near.shape)} and {tuple(far.shape)}")
    if not bool((far > near).all()):
        raise ValueError("far must be > near on every ray")
    if spacing == "lindisp" and not bool((near > 0).all()):
        raise ValueError("near must be > 0 for spacing='lindisp' (t = 1 / disparity)")


def proposal_sampling(
    density_fns: Sequence[DensityFn],
    *,
    num_proposal_samples: Sequence[int],
    num_samples: int,
    near: Float[Tensor, " R"],
    far: Float[Tensor, " R"],
    spacing: Spacing = "lindisp",
    stratified: bool = False,
    generator: torch.Generator | None = None,
    requires_grad: bool = False,
    anneal: float = 1.0,
    backend: Backend = "auto",
) -> ProposalSamples:
    """Draw ``num_samples`` intervals per ray through a chain of proposal density fields (nerfacc's estimator).

    .. math:: s^{(0)} = \\text{uniform}(P_0),\\; w^{(k)} = T \\alpha(\\sigma_k(t(s^{(k)}))),\\;
        s^{(k+1)} = \\mathrm{CDF}^{-1}_{w^{(k)}}(u),\\; k = 0..K-1

    Args:
        density_fns: K proposal fields ``(t_starts (R, P), t_ends (R, P)) -> sigmas (R, P)``.
        num_proposal_samples: K interval counts, e.g. ``(256, 96)`` (360 scenes, spec section 3).
        num_samples: final intervals per ray, e.g. 48.
        near, far: (R,) ray bounds (``near > 0`` for ``lindisp``).
        spacing: ``"uniform"`` or ``"lindisp"`` (uniform in ``1/t``).
        stratified: jitter every level's quantiles (training).
        generator: RNG of the jitter.
        requires_grad: keep the proposal fields' graphs in ``levels[k].weights`` (training, for
            ``proposal_loss``); otherwise every density is evaluated under ``no_grad``.
        anneal: exponent in [0, 1] applied to each level's weights before the next level resamples them
            (nerfstudio's proposal weight annealing: 0 resamples uniformly, 1 uses the weights as they are);
            ``levels[k].weights`` are stored unannealed.
        backend: backend of the weight and resampling ops.

    Returns:
        ``ProposalSamples`` with detached final edges, sorted, inside ``[near, far]``.

    Differentiable w.r.t.: the proposal fields, through ``levels[k].weights`` only (with ``requires_grad``).

    Example:
        >>> flat = lambda t0, t1: torch.ones_like(t0)
        >>> out = proposal_sampling([flat], num_proposal_samples=[8], num_samples=4,
        ...     near=torch.tensor([1.0]), far=torch.tensor([3.0]), spacing="uniform", backend="torch")
        >>> out.t_edges.shape, float(out.t_edges[0, 0]), float(out.t_edges[0, -1])
        (torch.Size([1, 5]), 1.0, 3.0)
    """
    _check(density_fns, num_proposal_samples, num_samples, near, far, spacing)
    if not 0.0 <= anneal <= 1.0:
        raise ValueError(f"anneal must be in [0, 1], got {anneal}")
    zeros = torch.zeros_like(near)
    s_edges = uniform_intervals(zeros, torch.ones_like(near), num_samples=num_proposal_samples[0],
                                stratified=stratified, generator=generator)  # fmt: skip
    counts = [*num_proposal_samples[1:], num_samples]
    levels = []
    for density_fn, next_count in zip(density_fns, counts, strict=True):
        t_edges = s_to_t(s_edges, near, far, spacing)
        with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
            sigmas = density_fn(t_edges[:, :-1], t_edges[:, 1:])
            if sigmas.shape != t_edges[:, 1:].shape:
                raise ValueError(
                    f"a density_fn must return (R, P) = {tuple(t_edges[:, 1:].shape)}, got {tuple(sigmas.shape)}"
                )
            weights = render_weight_from_density(
                t_edges[:, :-1], t_edges[:, 1:], sigmas, backend=backend
            ).weights
        levels.append(ProposalLevel(s_edges, t_edges, weights))
        resample = weights.detach() if anneal == 1.0 else weights.detach() ** anneal  # 0 ** 0 = 1: uniform
        s_edges = importance_sampling(s_edges, resample, num_samples=next_count, stratified=stratified,
                                      generator=generator, backend=backend)  # fmt: skip
    if not density_fns:  # no proposal level: uniform final samples
        s_edges = uniform_intervals(zeros, torch.ones_like(near), num_samples=num_samples,
                                    stratified=stratified, generator=generator)  # fmt: skip
    return ProposalSamples(s_edges, s_to_t(s_edges, near, far, spacing), tuple(levels))


def proposal_loss(samples: ProposalSamples, weights: Float[Tensor, "R S"]) -> Float[Tensor, " R"]:
    """Interlevel loss of all proposal levels against the final weights, per ray (spec section 1).

    .. math:: L = \\sum_k \\sum_i \\max(0, \\hat w_i - \\bar w^{(k)}_i)^2 / (\\hat w_i + \\epsilon)

    ``hat w`` are the detached final weights and ``bar w^{(k)}_i`` the mass of level ``k`` over its intervals
    overlapping final interval ``i`` (overlaps are computed in ``s``, which orders intervals like ``t``).

    Args:
        samples: the sampler's output (levels sampled with ``requires_grad``).
        weights: (R, S) final weights of the radiance field.

    Returns:
        (R,) loss per ray (nerfacc scales its mean by 1024 with a 1024 gradient scaler on the photometric loss;
        the relative weight is 1).

    Differentiable w.r.t.: the proposal weights (the final weights are detached).
    """
    if weights.shape != (samples.n_rays, samples.samples_per_ray):
        raise ValueError(
            f"weights must be (R, S) = {(samples.n_rays, samples.samples_per_ray)}, got {tuple(weights.shape)}"
        )
    total = torch.zeros(samples.n_rays, dtype=weights.dtype, device=weights.device)
    for level in samples.levels:
        total = total + interlevel_loss(weights, samples.s_edges, level.weights, level.s_edges)
    return total


def proposal_distortion_loss(samples: ProposalSamples, weights: Float[Tensor, "R S"]) -> Float[Tensor, " R"]:
    """Mip-NeRF 360 distortion loss of the final weights on the normalised distance ``s`` (Eq. 15), per ray.

    Differentiable w.r.t.: ``weights``.
    """
    return distortion_loss(weights, samples.s_edges[:, :-1], samples.s_edges[:, 1:])
