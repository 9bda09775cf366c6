"""Sample-weight regularisers of volume rendering: distortion loss and proposal (interlevel) loss (torch only).

Both are short chains of scans and gathers with autograd; there is no Warp kernel for them (the fused Warp
path is ``composite``).
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["distortion_loss", "interlevel_loss"]

INTERLEVEL_EPS = 1e-7  # denominator floor of the proposal loss (nerfstudio / nerfacc)


def _exclusive_cumsum_packed(x: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray exclusive prefix sum, scanned in float64 (precision over long packed arrays, spec section 1)."""
    from recon.renderers.volume.ref import pack_info

    x64 = x.to(torch.float64)
    cs = torch.cumsum(x64, 0)
    start = pack_info(ray_indices, n_rays)[ray_indices.long(), 0]
    base = torch.where(start > 0, cs[(start - 1).clamp_min(0)], torch.zeros_like(cs))
    return (cs - x64 - base).to(x.dtype)


def distortion_loss(
    weights: Float[Tensor, "*samples"],
    t_starts: Float[Tensor, "*samples"],
    t_ends: Float[Tensor, "*samples"],
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
) -> Float[Tensor, " R"]:
    """Mip-NeRF 360 distortion loss per ray (on ``t`` directly, as nerfacc).

    .. math:: L = \\sum_{i,j} w_i w_j |m_i - m_j| + \\tfrac13 \\sum_i w_i^2 \\delta_i
        = 2 \\sum_i w_i (m_i W_{<i} - S_{<i}) + \\tfrac13 \\sum_i w_i^2 \\delta_i

    with midpoints ``m``, lengths ``delta``, ``W_{<i} = sum_{j<i} w_j`` and ``S_{<i} = sum_{j<i} w_j m_j``
    (linear time; samples of a ray must be sorted front to back).

    Args:
        weights, t_starts, t_ends: (R, S) batched or (S,) packed with ``ray_indices`` and ``n_rays``.
        ray_indices: (S,) sorted ray ids (packed layout) or None.
        n_rays: number of rays (packed).

    Returns:
        (R,) loss per ray.

    Differentiable w.r.t.: ``weights`` (and the interval bounds, which are normally detached).

    Example:
        >>> w = torch.tensor([[0.5, 0.5]]); t0 = torch.tensor([[0.0, 1.0]])
        >>> distortion_loss(w, t0, t0 + 1.0)  # 2 * 0.25 * 1 + (0.25 + 0.25) / 3
        tensor([0.6667])
    """
    mids = 0.5 * (t_starts + t_ends)
    deltas = t_ends - t_starts
    if ray_indices is None:
        if weights.ndim != 2 or t_starts.shape != weights.shape or t_ends.shape != weights.shape:
            raise ValueError(f"batched weights and intervals must all be (R, S), got {tuple(weights.shape)}")
        w_before = torch.cumsum(weights, -1) - weights
        s_before = torch.cumsum(weights * mids, -1) - weights * mids
        inter = 2.0 * (weights * (mids * w_before - s_before)).sum(-1)
        return inter + (weights * weights * deltas).sum(-1) / 3.0
    if n_rays is None:
        raise ValueError("n_rays is required with ray_indices (packed layout)")
    w_before = _exclusive_cumsum_packed(weights, ray_indices, n_rays)
    s_before = _exclusive_cumsum_packed(weights * mids, ray_indices, n_rays)
    per_sample = 2.0 * weights * (mids * w_before - s_before) + weights * weights * deltas / 3.0
    out = torch.zeros(n_rays, dtype=per_sample.dtype, device=per_sample.device)
    return out.index_add(0, ray_indices.long(), per_sample)


def _outer_mass(
    t_edges: Float[Tensor, "R S1"], env_edges: Float[Tensor, "R P1"], env_weights: Float[Tensor, "R P"]
) -> Float[Tensor, "R S"]:
    """Proposal mass over the bins overlapping each interval ``[t_edges[i], t_edges[i+1]]`` (upper envelope)."""
    n_env = env_weights.shape[-1]
    cum = torch.cat([torch.zeros_like(env_weights[:, :1]), torch.cumsum(env_weights, -1)], -1)
    starts, ends = t_edges[:, :-1].contiguous(), t_edges[:, 1:].contiguous()
    lo = (torch.searchsorted(env_edges[:, :-1].contiguous(), starts, right=True) - 1).clamp(0, n_env - 1)
    hi = torch.searchsorted(env_edges[:, 1:].contiguous(), ends, right=True).clamp(0, n_env - 1)
    return cum[:, 1:].gather(-1, hi) - cum[:, :-1].gather(-1, lo)


def interlevel_loss(
    weights: Float[Tensor, "R S"],
    t_edges: Float[Tensor, "R S1"],
    proposal_weights: Float[Tensor, "R P"],
    proposal_edges: Float[Tensor, "R P1"],
) -> Float[Tensor, " R"]:
    """Proposal (interlevel) loss per ray (Mip-NeRF 360 Eq. 13; nerfacc / nerfstudio ``lossfun_outer``).

    .. math:: L = \\sum_i \\max(0, \\hat w_i - \\bar w_i)^2 / (\\hat w_i + \\epsilon)

    with ``hat w = weights.detach()`` (the NeRF weights) and ``bar w_i`` the proposal mass over the proposal bins
    overlapping interval ``i``. The caller scales it (nerfacc: 1024) and averages over rays.

    Args:
        weights: (R, S) final weights (detached inside).
        t_edges: (R, S + 1) their interval edges.
        proposal_weights: (R, P) proposal weights.
        proposal_edges: (R, P + 1) proposal interval edges.

    Returns:
        (R,) loss per ray.

    Differentiable w.r.t.: ``proposal_weights``.

    Example:
        >>> fine, coarse = torch.tensor([[0.0, 0.9, 2.0]]), torch.tensor([[0.0, 1.0, 2.0]])
        >>> interlevel_loss(torch.tensor([[1.0, 0.0]]), fine, torch.tensor([[0.0, 1.0]]), coarse)  # (1 - 0)^2 / 1
        tensor([1.0000])
    """
    if t_edges.shape != (weights.shape[0], weights.shape[1] + 1):
        raise ValueError(
            f"t_edges must be (R, S + 1) for weights {tuple(weights.shape)}, got {tuple(t_edges.shape)}"
        )
    if proposal_edges.shape != (proposal_weights.shape[0], proposal_weights.shape[1] + 1):
        raise ValueError(
            f"proposal_edges must be (R, P + 1) for proposal_weights {tuple(proposal_weights.shape)}, "
            f"got {tuple(proposal_edges.shape)}"
        )
    target = weights.detach()
    outer = _outer_mass(t_edges.detach(), proposal_edges.detach(), proposal_weights)
    return ((target - outer).clamp_min(0.0) ** 2 / (target + INTERLEVEL_EPS)).sum(-1)
