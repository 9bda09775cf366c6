"""Pure-PyTorch reference of the volume-rendering ops (the oracle; any device, float32 or float64).

Layouts (see ``api.py``): *packed* flat samples ``(S,)`` with ``ray_indices`` sorted ascending, or *batched*
``(R, S)``; the public API flattens batched inputs to packed before calling in here.
"""

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.renderers.volume.types import PackedSamples

__all__ = [
    "accumulate_along_rays",
    "composite",
    "grid_cell_index",
    "importance_sampling",
    "march_rays",
    "pack_info",
    "ray_aabb_intersect",
    "render_weight_from_alpha",
    "render_weight_from_density",
]

DEPTH_EPS = 1e-10  # opacity floor of the expected-depth division (spec: D / max(A, 1e-10))
AABB_EPS = 1e-12  # |direction component| below which a slab is treated as parallel (avoids 0 * inf)
PDF_PADDING = (
    1e-5  # mass added to every bin before inverse-CDF sampling so all-zero weights give a uniform PDF
)


def pack_info(ray_indices: Int[Tensor, " S"], n_rays: int) -> Int[Tensor, "R 2"]:
    """``packed_info[r] = (first sample of ray r, sample count)``: index_add of ones + exclusive cumsum."""
    counts = torch.zeros(n_rays, dtype=torch.long, device=ray_indices.device)
    counts.index_add_(0, ray_indices.long(), torch.ones_like(ray_indices, dtype=torch.long))
    starts = torch.cumsum(counts, 0) - counts
    return torch.stack([starts, counts], -1)


def _exclusive_segment_sum(x: Float[Tensor, " S"], ray_indices: Int[Tensor, " S"], n_rays: int) -> Tensor:
    """Per-ray exclusive prefix sum ``excl_i = cs_i - x_i - cs[start(ray_i) - 1]``, scanned in float64."""
    x64 = x.to(torch.float64)
    cs = torch.cumsum(x64, 0)
    info = pack_info(ray_indices, n_rays)
    start = info[ray_indices.long(), 0]
    base = torch.where(start > 0, cs[(start - 1).clamp_min(0)], torch.zeros_like(cs))
    return (cs - x64 - base).to(x.dtype)


def render_weight_from_density(
    t_starts: Float[Tensor, " S"],
    t_ends: Float[Tensor, " S"],
    sigmas: Float[Tensor, " S"],
    ray_indices: Int[Tensor, " S"],
    n_rays: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, transmittance and alphas from densities (packed). Autograd through a float64 segmented scan."""
    tau = sigmas * (t_ends - t_starts)
    trans = torch.exp(-_exclusive_segment_sum(tau, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-tau)
    return trans * alphas, trans, alphas


def _to_padded(x: Tensor, ray_indices: Tensor, n_rays: int, fill: float) -> tuple[Tensor, Tensor, Tensor]:
    """Scatter packed ``x`` into a padded ``(R, max_count)`` array; returns it with the (ray, slot) indices."""
    info = pack_info(ray_indices, n_rays)
    ray = ray_indices.long()
    slot = torch.arange(x.shape[0], device=x.device) - info[ray, 0]
    width = int(info[:, 1].max()) if n_rays > 0 and x.shape[0] > 0 else 0  # host sync: padded width
    padded = torch.full((n_rays, width), fill, dtype=x.dtype, device=x.device)
    padded = padded.index_put((ray, slot), x)
    return padded, ray, slot


def render_weight_from_alpha(
    alphas: Float[Tensor, " S"], ray_indices: Int[Tensor, " S"], n_rays: int
) -> tuple[Tensor, Tensor]:
    """Weights and transmittance ``T_i = prod_{j<i}(1 - alpha_j)`` (exclusive cumprod on a padded layout)."""
    if alphas.shape[0] == 0:
        return alphas.clone(), alphas.clone()
    one_minus, ray, slot = _to_padded(1.0 - alphas, ray_indices, n_rays, 1.0)
    ones = torch.ones_like(one_minus[:, :1])
    trans_padded = torch.cumprod(torch.cat([ones, one_minus[:, :-1]], -1), -1)
    trans = trans_padded[ray, slot]
    return trans * alphas, trans


def accumulate_along_rays(
    weights: Float[Tensor, " S"],
    values: Float[Tensor, "S D"] | None,
    ray_indices: Int[Tensor, " S"],
    n_rays: int,
) -> Float[Tensor, "R D"]:
    """``out[r] = sum_{i in ray r} w_i * v_i`` (``v = 1`` when ``values`` is None) with ``index_add``."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices.long(), src)


def composite(
    t_starts: Float[Tensor, " S"],
    t_ends: Float[Tensor, " S"],
    colors: Float[Tensor, "S D"],
    sigmas: Float[Tensor, " S"] | None,
    alphas: Float[Tensor, " S"] | None,
    background: Float[Tensor, " D"] | None,
    ray_indices: Int[Tensor, " S"],
    n_rays: int,
) -> dict[str, Tensor]:
    """Colour, opacity, accumulated and expected depth, weights and transmittance (see ``api.composite``)."""
    if sigmas is not None:
        weights, trans, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    else:
        assert alphas is not None
        weights, trans = render_weight_from_alpha(alphas, ray_indices, n_rays)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays)
    rgb = accumulate_along_rays(weights, colors, ray_indices, n_rays)
    if background is not None:
        rgb = rgb + (1.0 - opacity) * background
    mids = 0.5 * (t_starts + t_ends)
    acc_depth = accumulate_along_rays(weights, mids[:, None], ray_indices, n_rays)
    depth = acc_depth / opacity.clamp_min(DEPTH_EPS)
    return dict(
        rgb=rgb, opacity=opacity, depth=depth, accumulated_depth=acc_depth, weights=weights, trans=trans
    )


def ray_aabb_intersect(
    origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], aabb: Float[Tensor, "2 3"]
) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test: entry/exit distances (may be negative) and a hit flag (``t_far >= max(t_near, 0)``)."""
    parallel = directions.abs() < AABB_EPS
    safe = torch.where(parallel, torch.ones_like(directions), directions)
    t0 = (aabb[0] - origins) / safe
    t1 = (aabb[1] - origins) / safe
    lo = torch.minimum(t0, t1)
    hi = torch.maximum(t0, t1)
    inside = (origins >= aabb[0]) & (origins <= aabb[1])
    big = torch.full_like(lo, math.inf)
    lo = torch.where(parallel, torch.where(inside, -big, big), lo)
    hi = torch.where(parallel, torch.where(inside, big, -big), hi)
    t_near = lo.max(-1).values
    t_far = hi.min(-1).values
    hit = t_far >= t_near.clamp_min(0.0)
    return t_near, t_far, hit


def grid_cell_index(
    points: Float[Tensor, "N 3"], aabb: Float[Tensor, "2 3"], resolution: int, levels: int
) -> Int[Tensor, " N"]:
    """Flat cell index ``level * res^3 + ix * res^2 + iy * res + iz`` in the finest level containing each point.

    Level ``l`` spans the base box scaled by ``2^l`` about its centre; ``-1`` marks points outside every level.
    """
    center = 0.5 * (aabb[0] + aabb[1])
    half = 0.5 * (aabb[1] - aabb[0])
    m = ((points - center) / half).abs().max(-1).values
    level = torch.zeros_like(m, dtype=torch.long)
    span = torch.ones_like(m)
    for _ in range(levels - 1):
        grow = m > span
        level = level + grow.long()
        span = torch.where(grow, span * 2.0, span)
    inside = m <= span
    u = (points - center) / (half * span[:, None]) * 0.5 + 0.5
    cell = torch.floor(u * resolution).long().clamp(0, resolution - 1)
    flat = ((level * resolution + cell[:, 0]) * resolution + cell[:, 1]) * resolution + cell[:, 2]
    return torch.where(inside, flat, torch.full_like(flat, -1))


def march_rays(
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    binaries: Bool[Tensor, "L X Y Z"],
    aabb: Float[Tensor, "2 3"],
    near_plane: float,
    far_plane: float,
    step_size: float,
    cone_angle: float,
    t_offsets: Float[Tensor, " R"],
) -> PackedSamples:
    """Fixed/cone-growing steps from ``max(t_aabb_near, near) + offset * step`` (see ``api.march_rays``)."""
    levels, resolution = binaries.shape[0], binaries.shape[1]
    n_rays = origins.shape[0]
    center = 0.5 * (aabb[0] + aabb[1])
    outer = torch.stack(
        [center + (aabb[0] - center) * 2.0 ** (levels - 1), center + (aabb[1] - center) * 2.0 ** (levels - 1)]
    )
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, outer)
    t = torch.maximum(t_near, torch.full_like(t_near, near_plane)) + t_offsets * step_size
    t_stop = torch.minimum(t_far, torch.full_like(t_far, far_plane))
    active = hit & (t < t_stop)
    flat_binaries = binaries.reshape(-1)
    ray_ids, starts, ends = [], [], []
    while bool(active.any()):  # host sync per step: the reference marches all rays in lock step
        dt = torch.clamp(t * cone_angle, min=step_size, max=1e10)
        t1 = t + dt
        active = active & (t1 <= t_stop)
        mid = 0.5 * (t + t1)
        cell = grid_cell_index(origins + directions * mid[:, None], aabb, resolution, levels)
        occupied = active & (cell >= 0) & flat_binaries[cell.clamp_min(0)]
        idx = torch.nonzero(occupied).squeeze(-1)
        ray_ids.append(idx)
        starts.append(t[idx])
        ends.append(t1[idx])
        t = t1
    if not ray_ids:
        empty = origins.new_zeros(0)
        ray_indices = torch.zeros(0, dtype=torch.long, device=origins.device)
        return PackedSamples(ray_indices, empty, empty.clone(), pack_info(ray_indices, n_rays))
    ray_cat, start_cat, end_cat = torch.cat(ray_ids), torch.cat(starts), torch.cat(ends)
    order = torch.sort(ray_cat, stable=True).indices  # stable: samples of a ray stay in marching order
    ray_indices = ray_cat[order]
    return PackedSamples(ray_indices, start_cat[order], end_cat[order], pack_info(ray_indices, n_rays))


def importance_sampling(
    t_edges: Float[Tensor, "R S1"], weights: Float[Tensor, "R S"], u: Float[Tensor, "R K1"]
) -> Float[Tensor, "R K1"]:
    """Inverse CDF of the piecewise-constant PDF ``(w + pad) / sum`` over the bins ``[t_edges[k], t_edges[k+1]]``."""
    w = weights + PDF_PADDING
    cdf = torch.cumsum(w, -1) / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1).clamp(max=1.0)
    n_bins = weights.shape[-1]
    bin_index = (torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True) - 1).clamp(0, n_bins - 1)
    c0 = cdf.gather(-1, bin_index)
    c1 = cdf.gather(-1, bin_index + 1)
    e0 = t_edges.gather(-1, bin_index)
    e1 = t_edges.gather(-1, bin_index + 1)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return e0 + frac * (e1 - e0)
