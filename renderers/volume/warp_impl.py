"""Launch glue and autograd Functions of the Warp volume-rendering path (float32; CPU and CUDA).

Same signatures, outputs and differentiability contract as ``ref.py``. Warp is imported on first use.
"""

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recon.renderers._backend import get_warp, warp_device
from recon.renderers.volume import ref
from recon.renderers.volume.types import PackedSamples

__all__ = [
    "composite",
    "importance_sampling",
    "march_rays",
    "ray_aabb_intersect",
    "render_weight_from_alpha",
    "render_weight_from_density",
]


def _kernels() -> ModuleType:
    get_warp()
    from recon.renderers.volume import warp_kernels

    return warp_kernels


def _launch(kernel, dim, inputs: list, like: Tensor) -> None:
    wp = get_warp()
    device = warp_device(like)
    stream = wp.stream_from_torch(like.device) if like.device.type == "cuda" else None
    wp.launch(kernel, dim=dim, inputs=inputs, device=device, stream=stream)


def _w(t: Tensor, dtype=None):
    """Zero-copy Warp view of a contiguous torch tensor."""
    wp = get_warp()
    return wp.from_torch(t.contiguous(), dtype=dtype, requires_grad=False)


def _w_vec3(t: Tensor):
    return _w(t.contiguous(), dtype=get_warp().vec3)


class _CompositeFunction(torch.autograd.Function):
    """Per-ray compositing; outputs ``(weights, trans, alphas, rgb, opacity, acc_depth, final_trans)``."""

    @staticmethod
    def forward(
        ctx, values, colors, background, dts, mids, packed_info, use_density: int, use_background: int
    ):
        k = _kernels()
        n_samples, n_rays, n_channels = values.shape[0], packed_info.shape[0], colors.shape[1]
        opts = dict(dtype=values.dtype, device=values.device)
        weights, trans, alphas = (torch.empty(n_samples, **opts) for _ in range(3))
        rgb = torch.empty((n_rays, max(n_channels, 1)), **opts)
        opacity, acc_depth, final_trans = (torch.empty(n_rays, **opts) for _ in range(3))
        colors_arg = colors if n_channels > 0 else torch.zeros((1, 1), **opts)
        if n_rays > 0:
            _launch(
                k.composite_forward,
                n_rays,
                [_w(packed_info), _w(values), _w(dts), _w(mids), _w(colors_arg), _w(background), n_channels,
                 use_density, use_background, _w(weights), _w(trans), _w(alphas), _w(rgb), _w(opacity),
                 _w(acc_depth), _w(final_trans)],
                values,
            )  # fmt: skip
        rgb = rgb[:, :n_channels]
        ctx.save_for_backward(
            colors_arg, background, dts, mids, packed_info, weights, trans, alphas, final_trans
        )
        ctx.flags = (use_density, use_background, n_channels)
        ctx.mark_non_differentiable(final_trans)
        return weights, trans, alphas, rgb, opacity, acc_depth, final_trans

    @staticmethod
    @once_differentiable  # the Warp backward builds no graph: double backward must raise, not return 0
    def backward(ctx, g_weights, g_trans, g_alphas, g_rgb, g_opacity, g_depth, _g_final):
        colors, background, dts, mids, packed_info, weights, trans, alphas, final_trans = ctx.saved_tensors
        use_density, use_background, n_channels = ctx.flags
        n_samples, n_rays = weights.shape[0], packed_info.shape[0]
        opts = dict(dtype=weights.dtype, device=weights.device)

        def dense(g, shape):
            return torch.zeros(shape, **opts) if g is None else g.to(weights.dtype).contiguous()

        g_weights, g_trans, g_alphas = (dense(g, n_samples) for g in (g_weights, g_trans, g_alphas))
        g_opacity, g_depth = dense(g_opacity, n_rays), dense(g_depth, n_rays)
        g_rgb = (
            dense(g_rgb, (n_rays, n_channels)) if n_channels > 0 else torch.zeros((max(n_rays, 1), 1), **opts)
        )
        if not use_density:
            g_alphas = torch.zeros_like(g_alphas)  # alphas are the input in alpha mode, not an output
        grad_values = torch.zeros(n_samples, **opts)
        grad_colors = torch.zeros(colors.shape, **opts)
        if n_rays > 0:
            _launch(
                _kernels().composite_backward,
                n_rays,
                [_w(packed_info), _w(dts), _w(mids), _w(colors), _w(background), n_channels, use_density,
                 use_background, _w(weights), _w(trans), _w(alphas), _w(g_weights), _w(g_trans), _w(g_alphas),
                 _w(g_rgb), _w(g_opacity), _w(g_depth), _w(grad_values), _w(grad_colors)],
                weights,
            )  # fmt: skip
        grad_colors_out = grad_colors if (n_channels > 0 and ctx.needs_input_grad[1]) else None
        grad_background = None
        if use_background and ctx.needs_input_grad[2] and n_channels > 0:
            grad_background = (g_rgb * final_trans[:, None]).sum(0)
        grad_values_out = grad_values if ctx.needs_input_grad[0] else None
        return grad_values_out, grad_colors_out, grad_background, None, None, None, None, None


def _run(values, t_starts, t_ends, colors, background, ray_indices, n_rays, use_density):
    packed_info = ref.pack_info(ray_indices, n_rays).to(torch.int32)
    opts = dict(dtype=values.dtype, device=values.device)
    dts = (t_ends - t_starts).detach().contiguous() if t_starts is not None else torch.zeros_like(values)
    mids = (
        (0.5 * (t_starts + t_ends)).detach().contiguous()
        if t_starts is not None
        else torch.zeros_like(values)
    )
    if colors is None:
        colors = torch.zeros((values.shape[0], 0), **opts)
    use_background = int(background is not None)
    bg = background if background is not None else torch.zeros(max(colors.shape[1], 1), **opts)
    return _CompositeFunction.apply(
        values.contiguous(),
        colors.contiguous(),
        bg.contiguous(),
        dts,
        mids,
        packed_info,
        use_density,
        use_background,
    )


def render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays):
    weights, trans, alphas, *_ = _run(sigmas, t_starts, t_ends, None, None, ray_indices, n_rays, 1)
    return weights, trans, alphas


def render_weight_from_alpha(alphas, ray_indices, n_rays):
    weights, trans, *_ = _run(alphas, None, None, None, None, ray_indices, n_rays, 0)
    return weights, trans


def composite(t_starts, t_ends, colors, sigmas, alphas, background, ray_indices, n_rays) -> dict[str, Tensor]:
    values = sigmas if sigmas is not None else alphas
    use_density = int(sigmas is not None)
    weights, trans, _, rgb, opacity, acc_depth, _ = _run(
        values, t_starts, t_ends, colors, background, ray_indices, n_rays, use_density
    )
    opacity, acc_depth = opacity[:, None], acc_depth[:, None]
    depth = acc_depth / opacity.clamp_min(ref.DEPTH_EPS)
    return dict(
        rgb=rgb, opacity=opacity, depth=depth, accumulated_depth=acc_depth, weights=weights, trans=trans
    )


def ray_aabb_intersect(origins, directions, aabb):
    wp = get_warp()
    n = origins.shape[0]
    opts = dict(dtype=origins.dtype, device=origins.device)
    t_near, t_far = torch.empty(n, **opts), torch.empty(n, **opts)
    hit = torch.empty(n, dtype=torch.int32, device=origins.device)
    if n > 0:
        box = aabb.detach().cpu().tolist()  # host sync: the box is a kernel constant (6 floats)
        _launch(
            _kernels().ray_aabb,
            n,
            [_w_vec3(origins.detach()), _w_vec3(directions.detach()), wp.vec3(*box[0]), wp.vec3(*box[1]),
             ref.AABB_EPS, _w(t_near), _w(t_far), _w(hit)],
            origins,
        )  # fmt: skip
    return t_near, t_far, hit.bool()


def march_rays(origins, directions, binaries, aabb, near_plane, far_plane, step_size, cone_angle, t_offsets):
    wp = get_warp()
    k = _kernels()
    levels, resolution = binaries.shape[0], binaries.shape[1]
    n_rays = origins.shape[0]
    center = 0.5 * (aabb[0] + aabb[1])
    scale = 2.0 ** (levels - 1)
    outer = torch.stack([center + (aabb[0] - center) * scale, center + (aabb[1] - center) * scale])
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, outer)
    t_begin = torch.maximum(t_near, torch.full_like(t_near, near_plane)) + t_offsets * step_size
    t_stop = torch.minimum(t_far, torch.full_like(t_far, far_plane))
    t_stop = torch.where(hit, t_stop, torch.full_like(t_stop, -torch.inf))
    c, h = center.detach().cpu().tolist(), (0.5 * (aabb[1] - aabb[0])).detach().cpu().tolist()  # host sync
    flat = binaries.reshape(-1).to(torch.uint8).contiguous()
    counts = torch.zeros(n_rays, dtype=torch.int32, device=origins.device)
    dummy_i = torch.zeros(1, dtype=torch.int32, device=origins.device)
    dummy_f = torch.zeros(1, dtype=origins.dtype, device=origins.device)
    common = [_w_vec3(origins.detach()), _w_vec3(directions.detach()), _w(t_begin), _w(t_stop), _w(flat),
              wp.vec3(*c), wp.vec3(*h), resolution, levels, float(step_size), float(cone_angle)]  # fmt: skip
    if n_rays > 0:
        _launch(
            k.march,
            n_rays,
            [*common, 1, _w(dummy_i), _w(counts), _w(dummy_i), _w(dummy_f), _w(dummy_f)],
            origins,
        )
    offsets = torch.cumsum(counts, 0, dtype=torch.int64) - counts
    total = int(counts.sum()) if n_rays > 0 else 0  # host sync: the number of samples sizes the outputs
    ray_indices = torch.empty(max(total, 1), dtype=torch.int32, device=origins.device)
    t_starts = torch.empty(max(total, 1), dtype=origins.dtype, device=origins.device)
    t_ends = torch.empty_like(t_starts)
    if total > 0:
        offsets32 = offsets.to(torch.int32)
        _launch(
            k.march,
            n_rays,
            [*common, 0, _w(offsets32), _w(counts), _w(ray_indices), _w(t_starts), _w(t_ends)],
            origins,
        )
    packed_info = torch.stack([offsets, counts.long()], -1)
    return PackedSamples(ray_indices[:total].long(), t_starts[:total], t_ends[:total], packed_info)


def importance_sampling(t_edges, weights, u):
    w = weights + ref.PDF_PADDING
    cdf = torch.cumsum(w, -1) / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1).clamp(max=1.0).contiguous()
    out = torch.empty_like(u)
    if u.numel() > 0:
        _launch(_kernels().inverse_cdf, u.shape, [_w(t_edges.detach()), _w(cdf.detach()), _w(u), _w(out)], u)
    return out
