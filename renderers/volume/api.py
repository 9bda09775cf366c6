"""Volume rendering ops: ray/box intersection, occupancy-grid marching, compositing, interval samplers.

Names follow nerfacc where they overlap (``render_weight_from_density``, ``render_weight_from_alpha``,
``accumulate_along_rays``, ``ray_aabb_intersect``, ``importance_sampling``). Every op validates here and
dispatches to ``ref.py`` (PyTorch, the oracle, any device and dtype) or ``warp_impl.py`` (Warp kernels, float32,
CPU and CUDA). ``backend="auto"`` picks Warp for float32 tensors on a Warp device, else the reference.

Sample layouts (spec section 1):

* *batched*: ``t_starts, t_ends, sigmas: (R, S)`` (pass ``ray_indices=None``);
* *packed*: flat ``(S,)`` tensors with ``ray_indices: (S,)`` sorted ascending and ``n_rays``; samples of one ray
  are ordered front to back. ``packed_info[r] = (first sample of ray r, count)``.
"""

from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.core.shapes import Backend
from recon.renderers._backend import resolve_backend
from recon.renderers.volume import ref
from recon.renderers.volume.types import (
    CompositeOutput,
    PackedSamples,
    RayAABBHits,
    WeightsFromAlpha,
    WeightsFromDensity,
)

__all__ = [
    "EARLY_STOP_EPS",
    "accumulate_along_rays",
    "composite",
    "importance_sampling",
    "march_rays",
    "pack_info",
    "ray_aabb_intersect",
    "render_visibility_from_alpha",
    "render_visibility_from_density",
    "render_weight_from_alpha",
    "render_weight_from_density",
    "uniform_intervals",
]

EARLY_STOP_EPS = 1e-4  # transmittance below which a ray ends (spec section 1, nerfacc default)
Spacing = Literal["uniform", "lindisp"]


SIGMA_MAX = 1e10  # densities are clamped to this in render_weight_from_density (finite transmittance scan)


def _impl(backend: Backend, *tensors: Tensor, op: str):
    """The implementation module of volume op ``op`` (the float32 rule lives in ``resolve_backend``)."""
    if resolve_backend(backend, *tensors, op=f"volume.{op}") == "warp":
        from recon.renderers.volume import warp_impl

        return warp_impl
    return ref


def _as_packed(ray_indices: Tensor | None, n_rays: int | None, *tensors: Tensor):
    """Flatten batched ``(R, S)`` inputs; returns (flat tensors, ray_indices, n_rays, batched shape or None)."""
    lead = tensors[0]
    if ray_indices is None:
        if lead.ndim != 2:
            raise ValueError(
                f"batched samples must have shape (R, S) when ray_indices is None, got {tuple(lead.shape)}"
            )
        for t in tensors:
            if t.shape != lead.shape:
                raise ValueError(f"sample tensors must share shape {tuple(lead.shape)}, got {tuple(t.shape)}")
        n, s = lead.shape
        ray_indices = torch.arange(n, device=lead.device).repeat_interleave(s)
        return [t.reshape(-1) for t in tensors], ray_indices, n, (n, s)
    if n_rays is None:
        raise ValueError("n_rays is required with ray_indices (packed layout)")
    if lead.ndim != 1 or ray_indices.shape != lead.shape:
        raise ValueError(
            f"packed samples must be (S,) like ray_indices {tuple(ray_indices.shape)}, got {tuple(lead.shape)}"
        )
    for t in tensors:
        if t.shape != lead.shape:
            raise ValueError(f"sample tensors must share shape {tuple(lead.shape)}, got {tuple(t.shape)}")
    return list(tensors), ray_indices, int(n_rays), None


def pack_info(ray_indices: Int[Tensor, " S"], n_rays: int) -> Int[Tensor, "R 2"]:
    """``packed_info[r] = (first, count)`` of sorted ``ray_indices`` (index_add of ones + exclusive cumsum).

    Example:
        >>> pack_info(torch.tensor([0, 0, 2]), 3).tolist()
        [[0, 2], [2, 0], [2, 1]]
    """
    return ref.pack_info(ray_indices, n_rays)


def _safe_intervals(ts: Tensor, te: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """``(t_ends, sigmas)`` made safe for the transmittance scan (see ``render_weight_from_density``): densities
    clamped to ``SIGMA_MAX`` (an exp activation overflows to inf, and inf - inf in the scan is NaN) and inverted
    intervals emptied (float32 rounding can make ``t_end < t_start`` by ~1e-8; a negative ``tau`` times a huge
    density gives ``alpha = -inf``)."""
    return torch.maximum(te, ts), sigmas.clamp(max=SIGMA_MAX)


def render_weight_from_density(
    t_starts: Float[Tensor, "*samples"],
    t_ends: Float[Tensor, "*samples"],
    sigmas: Float[Tensor, "*samples"],
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
    backend: Backend = "auto",
) -> WeightsFromDensity:
    """Volume-rendering weights from densities.

    .. math::
        \\tau_i = \\sigma_i (t_{end,i} - t_{start,i}),\\; \\alpha_i = 1 - e^{-\\tau_i},\\;
        T_i = e^{-\\sum_{j<i} \\tau_j},\\; w_i = T_i \\alpha_i

    Args:
        t_starts, t_ends, sigmas: (R, S) batched, or (S,) packed with ``ray_indices`` and ``n_rays``.
        ray_indices: (S,) sorted ray id of each packed sample, or None for the batched layout.
        n_rays: number of rays R (packed layout).
        backend: "auto" | "torch" | "warp".

    Returns:
        ``WeightsFromDensity(weights, transmittance, alphas)``, each shaped like ``sigmas``.

    Densities above ``SIGMA_MAX`` (1e10; e.g. ``inf`` from an overflowing exp activation) are clamped to it, so
    the transmittance scan stays finite (``inf - inf`` would make the whole ray NaN); such a sample is opaque
    either way and gets no gradient.
    Intervals with ``t_end < t_start`` (float32 rounding of importance samples packed into ~1e-8 of a ray
    around a very dense surface) count as empty: a negative ``tau`` times a huge density gives ``alpha = -inf``
    and a NaN weight, which stopped a 20-minute beer-can run.

    Differentiable w.r.t.: ``sigmas`` (Warp: closed-form backward kernel). Not w.r.t. ``t_starts``/``t_ends``.

    Example:
        >>> t = torch.tensor([[0.0, 1.0, 2.0]]); s = torch.tensor([[0.0, 0.6931472, 1.3862944]])
        >>> render_weight_from_density(t, t + 1, s, backend="torch").weights  # (0, 1/2, 3/8)
        tensor([[0.0000, 0.5000, 0.3750]])
    """
    (ts, te, sg), ri, n, batched = _as_packed(ray_indices, n_rays, t_starts, t_ends, sigmas)
    te, sg = _safe_intervals(ts, te, sg)
    impl = _impl(backend, ts, te, sg, op="render_weight_from_density")
    weights, trans, alphas = impl.render_weight_from_density(ts.detach(), te.detach(), sg, ri, n)
    if batched is not None:
        weights, trans, alphas = (x.reshape(batched) for x in (weights, trans, alphas))
    return WeightsFromDensity(weights, trans, alphas)


def render_weight_from_alpha(
    alphas: Float[Tensor, "*samples"],
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
    backend: Backend = "auto",
) -> WeightsFromAlpha:
    """Volume-rendering weights from opacities (e.g. NeuS): ``w_i = alpha_i prod_{j<i}(1 - alpha_j)``.

    Args:
        alphas: (R, S) batched or (S,) packed with ``ray_indices`` and ``n_rays``; values in [0, 1].
        ray_indices: (S,) sorted ray ids, or None (batched).
        n_rays: number of rays (packed).
        backend: "auto" | "torch" | "warp".

    Returns:
        ``WeightsFromAlpha(weights, transmittance)`` shaped like ``alphas``.

    Differentiable w.r.t.: ``alphas`` (Warp: closed-form backward, no division by ``1 - alpha``).

    Example:
        >>> render_weight_from_alpha(torch.tensor([[0.5, 0.5]]), backend="torch").weights
        tensor([[0.5000, 0.2500]])
    """
    (al,), ri, n, batched = _as_packed(ray_indices, n_rays, alphas)
    weights, trans = _impl(backend, al, op="render_weight_from_alpha").render_weight_from_alpha(al, ri, n)
    if batched is not None:
        weights, trans = weights.reshape(batched), trans.reshape(batched)
    return WeightsFromAlpha(weights, trans)


@torch.no_grad()
def render_visibility_from_density(
    t_starts: Float[Tensor, "*samples"],
    t_ends: Float[Tensor, "*samples"],
    sigmas: Float[Tensor, "*samples"],
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
    early_stop_eps: float = EARLY_STOP_EPS,
    alpha_thre: float = 0.0,
    backend: Backend = "auto",
) -> Bool[Tensor, "*samples"]:
    """Samples worth rendering: ``T_i >= early_stop_eps`` and (if ``alpha_thre > 0``) ``alpha_i >= alpha_thre``.

    No-grad (used at sampling time, spec section 3). Shapes as in ``render_weight_from_density``.

    Example:
        >>> t = torch.tensor([[0.0, 1.0, 2.0]])
        >>> render_visibility_from_density(t, t + 1, torch.tensor([[20.0, 1.0, 1.0]]), backend="torch")
        tensor([[ True, False, False]])
    """
    _, trans, alphas = render_weight_from_density(
        t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays, backend=backend
    )
    visible = trans >= early_stop_eps
    if alpha_thre > 0.0:
        visible = visible & (alphas >= alpha_thre)
    return visible


@torch.no_grad()
def render_visibility_from_alpha(
    alphas: Float[Tensor, "*samples"],
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
    early_stop_eps: float = EARLY_STOP_EPS,
    alpha_thre: float = 0.0,
    backend: Backend = "auto",
) -> Bool[Tensor, "*samples"]:
    """Like ``render_visibility_from_density`` for fields that give alphas directly (no-grad)."""
    _, trans = render_weight_from_alpha(alphas, ray_indices=ray_indices, n_rays=n_rays, backend=backend)
    visible = trans >= early_stop_eps
    if alpha_thre > 0.0:
        visible = visible & (alphas >= alpha_thre)
    return visible


def accumulate_along_rays(
    weights: Float[Tensor, "*samples"],
    values: Float[Tensor, "*samples D"] | None = None,
    *,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
) -> Float[Tensor, "R D"]:
    """``out[r] = sum_{i in ray r} w_i v_i`` (``v = 1`` when ``values`` is None, giving the opacity).

    One implementation for both backends: an ``index_add`` (a scatter with no compute to fuse; the fused Warp
    path is ``composite``).

    Args:
        weights: (R, S) batched or (S,) packed.
        values: (R, S, D) / (S, D), or None.
        ray_indices, n_rays: packed layout (see module docstring).

    Returns:
        (R, D) (D = 1 when ``values`` is None).

    Differentiable w.r.t.: ``weights`` and ``values``.

    Example:
        >>> accumulate_along_rays(torch.tensor([[0.5, 0.25]]), torch.ones(1, 2, 3)).tolist()
        [[0.75, 0.75, 0.75]]
    """
    if ray_indices is None:
        if weights.ndim != 2:
            raise ValueError(f"batched weights must be (R, S), got {tuple(weights.shape)}")
        if values is None:
            return weights.sum(-1, keepdim=True)
        if values.shape[:2] != weights.shape:
            raise ValueError(f"values must be (R, S, D) with (R, S) = {tuple(weights.shape)}")
        return (weights[..., None] * values).sum(-2)
    if n_rays is None:
        raise ValueError("n_rays is required with ray_indices (packed layout)")
    if values is not None and values.shape[0] != weights.shape[0]:
        raise ValueError(f"values must be (S, D) with S = {weights.shape[0]}, got {tuple(values.shape)}")
    return ref.accumulate_along_rays(weights, values, ray_indices, n_rays)


def composite(
    t_starts: Float[Tensor, "*samples"],
    t_ends: Float[Tensor, "*samples"],
    colors: Float[Tensor, "*samples D"],
    *,
    sigmas: Float[Tensor, "*samples"] | None = None,
    alphas: Float[Tensor, "*samples"] | None = None,
    ray_indices: Int[Tensor, " S"] | None = None,
    n_rays: int | None = None,
    background: Float[Tensor, " D"] | None = None,
    backend: Backend = "auto",
) -> CompositeOutput:
    """Front-to-back compositing of colour, opacity and depth (fused weights + accumulation).

    .. math::
        C = \\sum_i w_i c_i + (1 - A) c_{bg},\\; A = \\sum_i w_i,\\;
        D = \\sum_i w_i \\bar t_i / \\max(A, 10^{-10}),\\; \\bar t_i = (t_{start,i} + t_{end,i}) / 2

    with ``w`` from ``sigmas`` (``render_weight_from_density``) or ``alphas`` (``render_weight_from_alpha``).
    The Warp kernel's backward is the closed form ``dC/dtau_i = T_{i+1} c_i - C_{>i}`` (spec section 1).

    Args:
        t_starts, t_ends: (R, S) batched or (S,) packed interval bounds.
        colors: (R, S, D) or (S, D) per-sample values (any channel count D >= 1; e.g. unit normals
            ``grad f / |grad f|`` of an SDF field give the rendered normal ``sum_i w_i n_i``).
        sigmas: densities shaped like ``t_starts``; exactly one of ``sigmas`` / ``alphas``.
        alphas: opacities in [0, 1] shaped like ``t_starts``.
        ray_indices, n_rays: packed layout (see module docstring).
        background: (D,) colour behind the samples, or None for no background term.
        backend: "auto" | "torch" | "warp".

    Returns:
        ``CompositeOutput`` (rgb (R, D), opacity/depth/accumulated_depth (R, 1), weights/transmittance in the
        sample layout).

    Densities are made safe as in ``render_weight_from_density`` (clamped to ``SIGMA_MAX``; inverted intervals
    empty).

    Differentiable w.r.t.: ``sigmas`` or ``alphas``, ``colors``, ``background``. Not ``t_starts``/``t_ends``.

    Example:
        >>> t = torch.tensor([[0.0, 1.0]]); out = composite(t, t + 1, torch.ones(1, 2, 3),
        ...     alphas=torch.tensor([[0.5, 0.5]]), background=torch.zeros(3), backend="torch")
        >>> out.rgb.tolist(), out.depth.tolist()
        ([[0.75, 0.75, 0.75]], [[0.8333333134651184]])
    """
    if (sigmas is None) == (alphas is None):
        raise ValueError("composite needs exactly one of sigmas= or alphas=")
    field = sigmas if sigmas is not None else alphas
    assert field is not None  # exactly one of them is given (checked above)
    (ts, te, fl), ri, n, batched = _as_packed(ray_indices, n_rays, t_starts, t_ends, field)
    lead = ts.shape[0]
    if colors.shape[: t_starts.ndim] != t_starts.shape or colors.ndim != t_starts.ndim + 1:
        raise ValueError(f"colors must have shape {tuple(t_starts.shape)} + (D,), got {tuple(colors.shape)}")
    flat_colors = colors.reshape(lead, colors.shape[-1])
    if background is not None and background.shape != (colors.shape[-1],):
        raise ValueError(f"background must have shape ({colors.shape[-1]},), got {tuple(background.shape)}")
    extra = [background] if background is not None else []
    is_density = sigmas is not None
    if is_density:
        te, fl = _safe_intervals(ts, te, fl)
    impl = _impl(backend, ts, te, fl, flat_colors, *extra, op="composite")
    out = impl.composite(
        ts.detach(),
        te.detach(),
        flat_colors,
        fl if is_density else None,
        None if is_density else fl,
        background,
        ri,
        n,
    )
    weights, trans = out["weights"], out["trans"]
    if batched is not None:
        weights, trans = weights.reshape(batched), trans.reshape(batched)
    return CompositeOutput(
        rgb=out["rgb"],
        opacity=out["opacity"],
        depth=out["depth"],
        accumulated_depth=out["accumulated_depth"],
        weights=weights,
        transmittance=trans,
    )


def _as_box(aabb: Tensor) -> Tensor:
    if aabb.shape == (6,):
        return aabb.reshape(2, 3)
    if aabb.shape != (2, 3):
        raise ValueError(f"aabb must have shape (2, 3) (min, max) or (6,), got {tuple(aabb.shape)}")
    return aabb


@torch.no_grad()
def ray_aabb_intersect(
    rays_o: Float[Tensor, "R 3"],
    rays_d: Float[Tensor, "R 3"],
    aabb: Float[Tensor, "2 3"],
    *,
    backend: Backend = "auto",
) -> RayAABBHits:
    """Slab test of rays ``x(t) = o + t d`` against one axis-aligned box.

    .. math:: t_{near} = \\max_d \\min(t_{0,d}, t_{1,d}),\\; t_{far} = \\min_d \\max(t_{0,d}, t_{1,d}),\\;
        t_{k,d} = (b_{k,d} - o_d) / d_d

    Args:
        rays_o, rays_d: (R, 3) origins and directions (need not be unit; t is in units of ``|d|``).
        aabb: (2, 3) ``[min, max]`` (or nerfacc's flat (6,)).
        backend: "auto" | "torch" | "warp".

    Returns:
        ``RayAABBHits(t_near (R,), t_far (R,), hit (R,) bool)``; ``hit = t_far >= max(t_near, 0)``; ``t_near`` is
        negative for origins inside the box; a direction component ``|d| < 1e-12`` is a parallel slab.

    Differentiable w.r.t.: nothing (no-grad).

    Example:
        >>> ray_aabb_intersect(torch.tensor([[-2.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]),
        ...     torch.tensor([[-1.0] * 3, [1.0] * 3]), backend="torch").t_far
        tensor([3.])
    """
    if rays_o.ndim != 2 or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
        raise ValueError(
            f"rays_o and rays_d must both be (R, 3), got {tuple(rays_o.shape)}, {tuple(rays_d.shape)}"
        )
    box = _as_box(aabb).to(rays_o)
    return RayAABBHits(
        *_impl(backend, rays_o, rays_d, op="ray_aabb_intersect").ray_aabb_intersect(rays_o, rays_d, box)
    )


@torch.no_grad()
def march_rays(
    rays_o: Float[Tensor, "R 3"],
    rays_d: Float[Tensor, "R 3"],
    binaries: Bool[Tensor, "L X X X"],
    aabb: Float[Tensor, "2 3"],
    *,
    step_size: float,
    near_plane: float = 0.0,
    far_plane: float = 1e10,
    cone_angle: float = 0.0,
    t_offsets: Float[Tensor, " R"] | None = None,
    backend: Backend = "auto",
) -> PackedSamples:
    """March rays through a (multi-level) occupancy grid and emit the intervals that lie in occupied cells.

    Level ``l`` of ``binaries`` covers ``aabb`` scaled by ``2^l`` about its centre; a point uses the finest level
    containing it. Each ray starts at ``max(t_near(outer box), near_plane) + t_offsets * step_size`` and steps
    ``dt = clamp(t * cone_angle, step_size, 1e10)`` while ``t + dt <= min(t_far, far_plane)``; interval
    ``[t, t + dt]`` is kept when the cell of its midpoint is occupied (spec section 3).

    Args:
        rays_o, rays_d: (R, 3) rays (``t`` in units of ``|rays_d|``; use unit directions).
        binaries: (L, X, X, X) bool occupancy, indexed ``[level, ix, iy, iz]`` along x, y, z.
        aabb: (2, 3) box of level 0.
        step_size: the minimum step (synthetic 5e-3, 360 scenes 1e-3).
        near_plane, far_plane: clip distances.
        cone_angle: 0 for constant steps, 0.004 for cone-growing steps (360 scenes).
        t_offsets: (R,) start jitter in [0, 1) steps (stratified sampling), or None for no jitter.
        backend: "auto" | "torch" | "warp".

    Returns:
        ``PackedSamples(ray_indices, t_starts, t_ends, packed_info)``.

    Differentiable w.r.t.: nothing (no-grad; sample positions are not optimised).

    Example:
        >>> grid = torch.ones(1, 4, 4, 4, dtype=torch.bool)
        >>> s = march_rays(torch.tensor([[-2.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]), grid,
        ...     torch.tensor([[-1.0] * 3, [1.0] * 3]), step_size=0.5, backend="torch")
        >>> s.t_starts.tolist()
        [1.0, 1.5, 2.0, 2.5]
    """
    if rays_o.ndim != 2 or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
        raise ValueError(
            f"rays_o and rays_d must both be (R, 3), got {tuple(rays_o.shape)}, {tuple(rays_d.shape)}"
        )
    if binaries.ndim != 4 or binaries.dtype != torch.bool or len(set(binaries.shape[1:])) != 1:
        raise ValueError(
            f"binaries must be a bool (L, X, X, X) grid, got {binaries.dtype} {tuple(binaries.shape)}"
        )
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    box = _as_box(aabb).to(rays_o)
    offsets = torch.zeros_like(rays_o[:, 0]) if t_offsets is None else t_offsets.to(rays_o)
    impl = _impl(backend, rays_o, rays_d, op="march_rays")
    return impl.march_rays(
        rays_o, rays_d, binaries.to(rays_o.device), box, near_plane, far_plane, step_size, cone_angle, offsets
    )


def _stratified_u(n_rays: int, num_samples: int, stratified: bool, generator, like: Tensor) -> Tensor:
    """Edge quantiles ``u_k = k / n`` (k = 0..n); stratified jitters interior ones within ``+-0.5 / n``."""
    u = torch.linspace(0.0, 1.0, num_samples + 1, dtype=like.dtype, device=like.device).expand(n_rays, -1)
    if stratified and num_samples > 1:
        jitter = torch.rand((n_rays, num_samples - 1), generator=generator, dtype=like.dtype).to(like.device)
        interior = u[:, 1:-1] + (jitter - 0.5) / num_samples
        u = torch.cat([u[:, :1], interior, u[:, -1:]], -1)
    return u.contiguous()


def uniform_intervals(
    near: Float[Tensor, " R"],
    far: Float[Tensor, " R"],
    *,
    num_samples: int,
    spacing: Spacing = "uniform",
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "R S1"]:
    """Interval edges ``(R, num_samples + 1)`` from ``near`` to ``far``, uniform in ``t`` or in ``1/t``.

    .. math:: t(s) = n + s (f - n)\\;\\text{(uniform)},\\quad t(s) = 1 / (1/n + s (1/f - 1/n))\\;\\text{(lindisp)}

    ``s`` are the quantiles ``k / num_samples``; ``stratified`` jitters the interior ones by up to half a bin
    (edges stay sorted and the first/last stay at ``near``/``far``). Torch only (elementwise arithmetic).

    Differentiable w.r.t.: nothing used in practice (intervals are detached sample positions).

    Example:
        >>> uniform_intervals(torch.tensor([2.0]), torch.tensor([6.0]), num_samples=4).tolist()
        [[2.0, 3.0, 4.0, 5.0, 6.0]]
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    s = _stratified_u(near.shape[0], num_samples, stratified, generator, near)
    if spacing == "uniform":
        return near[:, None] + s * (far - near)[:, None]
    if spacing == "lindisp":
        t = 1.0 / (1.0 / near[:, None] + s * (1.0 / far - 1.0 / near)[:, None])
        # Pin the ends: 1 / (1 / far) is not exactly far in floating point.
        return torch.cat([near[:, None], t[:, 1:-1], far[:, None]], -1)
    raise ValueError(f"spacing must be 'uniform' or 'lindisp', got {spacing!r}")


@torch.no_grad()
def importance_sampling(
    t_edges: Float[Tensor, "R S1"],
    weights: Float[Tensor, "R S"],
    *,
    num_samples: int,
    stratified: bool = False,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
) -> Float[Tensor, "R K1"]:
    """Inverse-CDF resampling of interval edges from a piecewise-constant PDF (proposal / NeuS up-sampling).

    .. math:: p(t) \\propto w_k + \\epsilon \\text{ on } [e_k, e_{k+1}],\\; t_j = \\mathrm{CDF}^{-1}(u_j),\\;
        u_j = j / n \\;(\\pm 0.5/n \\text{ jitter when stratified})

    with ``epsilon = 1e-5`` so all-zero weights give a uniform PDF.

    Args:
        t_edges: (R, S + 1) sorted edges of the current intervals.
        weights: (R, S) non-negative mass of each interval (e.g. proposal weights).
        num_samples: number of new intervals ``K``.
        stratified: jitter the quantiles (training).
        generator: RNG for the jitter.
        backend: "auto" | "torch" | "warp".

    Returns:
        (R, K + 1) sorted new edges inside ``[t_edges[:, 0], t_edges[:, -1]]`` (detached).

    Differentiable w.r.t.: nothing (the spec detaches resampled intervals).

    Example:
        >>> e = torch.tensor([[0.0, 1.0, 2.0]])
        >>> importance_sampling(e, torch.tensor([[0.0, 1.0]]), num_samples=2, backend="torch")
        tensor([[0.0000, 1.5000, 2.0000]])
    """
    if t_edges.ndim != 2 or weights.shape != (t_edges.shape[0], t_edges.shape[1] - 1):
        raise ValueError(
            f"t_edges must be (R, S + 1) and weights (R, S), got {tuple(t_edges.shape)} and {tuple(weights.shape)}"
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    u = _stratified_u(t_edges.shape[0], num_samples, stratified, generator, t_edges)
    return _impl(backend, t_edges, weights, op="importance_sampling").importance_sampling(
        t_edges.detach(), weights.detach(), u
    )
