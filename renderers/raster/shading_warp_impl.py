"""Warp launch glue of the mesh shading ops: ``torch.autograd.Function`` wrappers with hand-written backward kernels.

Imported on the first Warp call only. Launches run on the device of the inputs, on the current torch CUDA stream,
sharing memory zero-copy (``wp.from_torch``). Work that is not per-pixel-per-layer (gathering per-corner
attributes, the texture pyramid, vertex projection, the final background blend) stays in differentiable torch in
``shading_api`` and is shared by both backends.

Warp runs one CPU launch on one thread, so on the CPU the per-slot and per-pixel launches are split into
``_cpu_workers`` contiguous ranges launched concurrently from Python threads (ctypes releases the GIL); CPU
"atomics" are plain read-modify-writes, so each concurrent launch scatter-adds into a private buffer, summed
afterwards. The antialias kernels (few active threads, scattered writes to pixels) use one launch.
"""

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from recon.renderers._backend import get_warp, warp_device

__all__ = ["antialias", "interpolate", "sample_texture", "soft_composite_layers"]


def _kernels():
    get_warp()  # import + quiet init once, before the kernel module imports warp
    from recon.renderers.raster import shading_warp_kernels

    return shading_warp_kernels


def _launch(kernel, dim: int, inputs: list, like: Tensor) -> None:
    wp = get_warp()
    if dim == 0:
        return
    device = warp_device(like)
    if like.device.type == "cuda":
        stream = wp.stream_from_torch(torch.cuda.current_stream(like.device))
        wp.launch(kernel, dim=dim, inputs=inputs, device=device, stream=stream)
    else:
        wp.launch(kernel, dim=dim, inputs=inputs, device=device)


MAX_CPU_WORKERS = 2  # the project's target machine has 2 cores; more threads only add private buffers
MIN_SPLIT = (
    1 << 15
)  # launches smaller than this run as one: a thread-pool round trip costs more than it saves
_POOL: ThreadPoolExecutor | None = None


def _cpu_workers(like: Tensor, dim: int) -> int:
    """Concurrent CPU launches for ``dim`` threads (``RECON_WARP_CPU_THREADS`` overrides the core count)."""
    if like.device.type != "cpu" or dim < MIN_SPLIT:
        return 1
    env = os.environ.get("RECON_WARP_CPU_THREADS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, int(env) if env is not None else min(MAX_CPU_WORKERS, cores))


def _launch_split(
    kernel,
    dim: int,
    like: Tensor,
    make_inputs: Callable[[int, list], list],
    accumulators: Sequence[Tensor] = (),
) -> None:
    """Launch ``kernel`` over threads ``[0, dim)``, on the CPU as concurrent ranges.

    ``make_inputs(offset, buffers)`` returns the inputs of the launch starting at thread ``offset``, scatter-adding
    into ``buffers`` (the ``accumulators`` themselves for the first range, zeroed private copies for the others,
    added into the accumulators afterwards).
    """
    global _POOL
    workers = _cpu_workers(like, dim)
    if workers == 1:
        _launch(kernel, dim, make_inputs(0, list(accumulators)), like)
        return
    buffers = [list(accumulators)] + [[torch.zeros_like(a) for a in accumulators] for _ in range(workers - 1)]
    chunk = -(-dim // workers)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=MAX_CPU_WORKERS, thread_name_prefix="recon-shading")
    futures = [
        _POOL.submit(_launch, kernel, min(chunk, dim - w * chunk), make_inputs(w * chunk, buffers[w]), like)
        for w in range(workers)
        if w * chunk < dim
    ]
    for future in futures:
        future.result()
    for private in buffers[1:]:
        for total, part in zip(accumulators, private, strict=True):
            total += part


def _arr(t: Tensor):
    return get_warp().from_torch(t.detach().contiguous())


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


def _i32(t: Tensor) -> Tensor:
    return t.detach().to(torch.int32).contiguous()


def _capture_inputs(op: str, **tensors: Tensor) -> None:
    """``RECON_CAPTURE_INPUTS=<dir>``: save the inputs of a failing Warp shading call for offline debugging."""
    folder = os.environ.get("RECON_CAPTURE_INPUTS")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"raster_{op}_{os.getpid()}_{time.time_ns()}.pt")
    torch.save({k: v.detach().cpu() for k, v in tensors.items() if isinstance(v, Tensor)}, path)


# ---------------------------------------------------------------------------------------------------------------
class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, corners: Tensor, bary: Tensor, pix_to_face: Tensor):  # type: ignore[override]
        k = _kernels()
        slots = pix_to_face.numel()
        out = torch.zeros(slots, corners.shape[-1], dtype=torch.float32, device=corners.device)
        p2f = _i32(pix_to_face.reshape(-1))
        b = _f32(bary.reshape(-1, 3))
        inputs = [_arr(corners), _arr(p2f), _arr(b), _arr(out)]
        _launch_split(k.interpolate_fwd, slots, corners, lambda offset, _: [offset, *inputs])
        ctx.save_for_backward(corners, b, p2f)
        ctx.bary_shape = bary.shape
        return out.reshape(*pix_to_face.shape, corners.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        corners, b, p2f = ctx.saved_tensors
        need_corners, need_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_corners or need_bary):
            return None, None, None
        grad_corners = torch.zeros_like(corners)
        grad_bary = torch.zeros_like(b)
        g = _f32(grad_out.reshape(b.shape[0], -1))
        inputs = [_arr(corners), _arr(p2f), _arr(b), _arr(g), int(need_corners)]
        _launch_split(
            _kernels().interpolate_bwd,
            b.shape[0],
            corners,
            lambda offset, bufs: [offset, *inputs, _arr(bufs[0]), _arr(grad_bary)],
            [grad_corners],
        )
        return (
            grad_corners if need_corners else None,
            grad_bary.reshape(ctx.bary_shape) if need_bary else None,
            None,
        )


def interpolate(corner_attributes: Tensor, pix_to_face: Tensor, bary: Tensor) -> Tensor:
    """Warp twin of ``shading_ref.interpolate`` (float32)."""
    corners = corner_attributes.to(torch.float32).contiguous()
    try:
        return _Interpolate.apply(corners, bary, pix_to_face)
    except Exception:
        _capture_inputs("interpolate", corners=corners, bary=bary, pix_to_face=pix_to_face)
        raise


# ---------------------------------------------------------------------------------------------------------------
class _SampleTexture(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, textures: Tensor, uv: Tensor, pix_to_face: Tensor, face_to_texture: Tensor, wrap_u: bool
    ):  # type: ignore[override]
        k = _kernels()
        slots = pix_to_face.numel()
        out = torch.zeros(slots, textures.shape[-1], dtype=torch.float32, device=textures.device)
        p2f, f2t = _i32(pix_to_face.reshape(-1)), _i32(face_to_texture)
        uv_flat = _f32(uv.reshape(-1, 2))
        inputs = [_arr(textures), _arr(uv_flat), _arr(p2f), _arr(f2t), int(wrap_u), _arr(out)]
        _launch_split(k.sample_fwd, slots, textures, lambda offset, _: [offset, *inputs])
        ctx.save_for_backward(textures, uv_flat, p2f, f2t)
        ctx.wrap_u = bool(wrap_u)
        ctx.uv_shape = uv.shape
        return out.reshape(*pix_to_face.shape, textures.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        textures, uv_flat, p2f, f2t = ctx.saved_tensors
        need_tex, need_uv = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_tex or need_uv):
            return None, None, None, None, None
        grad_tex = torch.zeros_like(textures)
        grad_uv = torch.zeros_like(uv_flat)
        g = _f32(grad_out.reshape(uv_flat.shape[0], -1))
        inputs = [
            _arr(textures),
            _arr(uv_flat),
            _arr(p2f),
            _arr(f2t),
            int(ctx.wrap_u),
            _arr(g),
            int(need_tex),
        ]
        _launch_split(
            _kernels().sample_bwd,
            uv_flat.shape[0],
            textures,
            lambda offset, bufs: [offset, *inputs, _arr(bufs[0]), _arr(grad_uv)],
            [grad_tex],
        )
        return (
            grad_tex if need_tex else None,
            grad_uv.reshape(ctx.uv_shape) if need_uv else None,
            None,
            None,
            None,
        )


def sample_texture(
    textures: Tensor, uv: Tensor, pix_to_face: Tensor, face_to_texture: Tensor, *, wrap_u: bool
) -> Tensor:
    """Warp twin of ``shading_ref.sample_texture`` (float32)."""
    tex = textures.to(torch.float32).contiguous()
    try:
        return _SampleTexture.apply(tex, uv, pix_to_face, face_to_texture, wrap_u)
    except Exception:
        _capture_inputs("sample_texture", textures=tex, uv=uv, pix_to_face=pix_to_face, f2t=face_to_texture)
        raise


# ---------------------------------------------------------------------------------------------------------------
class _CompositeLayers(torch.autograd.Function):
    """``(fg (P, D), T_K (P,))`` of the front-to-back sum over the K slots of each pixel (no background)."""

    @staticmethod
    def forward(
        ctx, dists: Tensor, colors: Tensor, opacities: Tensor | None, pix_to_face: Tensor, sigma: float
    ):  # type: ignore[override]
        k = _kernels()
        pixels, slots = pix_to_face.shape
        device = colors.device
        fg = torch.zeros(pixels, colors.shape[-1], dtype=torch.float32, device=device)
        t_final = torch.empty(pixels, dtype=torch.float32, device=device)
        trans = torch.empty(pixels, slots, dtype=torch.float32, device=device)
        has_op = opacities is not None
        op = _f32(opacities) if has_op else torch.zeros(1, dtype=torch.float32, device=device)
        p2f, d = _i32(pix_to_face), _f32(dists)
        inputs = [_arr(p2f), _arr(d), _arr(colors), _arr(op), int(has_op), float(sigma)]
        outputs = [_arr(fg), _arr(t_final), _arr(trans)]
        _launch_split(k.composite_fwd, pixels, colors, lambda offset, _: [offset, *inputs, *outputs])
        ctx.save_for_backward(p2f, d, colors, op, trans)
        ctx.has_op, ctx.sigma = has_op, float(sigma)
        return fg, t_final

    @staticmethod
    def backward(ctx, grad_fg: Tensor, grad_t_final: Tensor):  # type: ignore[override]
        p2f, d, colors, op, trans = ctx.saved_tensors
        need_op = bool(ctx.has_op and ctx.needs_input_grad[2])
        grad_colors = torch.zeros_like(colors)
        grad_dists = torch.zeros_like(d)
        grad_op = torch.zeros_like(op)
        g_fg = _f32(grad_fg) if grad_fg is not None else colors.new_zeros(colors.shape[0], colors.shape[-1])
        g_t = _f32(grad_t_final) if grad_t_final is not None else torch.zeros_like(trans[:, 0])
        inputs = [_arr(p2f), _arr(d), _arr(colors), _arr(op), int(ctx.has_op), ctx.sigma, _arr(trans)]
        inputs += [_arr(g_fg), _arr(g_t), int(need_op), _arr(grad_colors), _arr(grad_dists)]
        _launch_split(
            _kernels().composite_bwd,
            p2f.shape[0],
            d,
            lambda offset, bufs: [offset, *inputs, _arr(bufs[0])],
            [grad_op],
        )
        return (
            grad_dists if ctx.needs_input_grad[0] else None,
            grad_colors if ctx.needs_input_grad[1] else None,
            grad_op if need_op else None,
            None,
            None,
        )


def soft_composite_layers(
    pix_to_face: Tensor, dists: Tensor, colors: Tensor, opacities: Tensor | None, *, sigma: float
) -> tuple[Tensor, Tensor]:
    """``(fg (C, H, W, D), T_K (C, H, W, 1))``: the layered sum of ``shading_ref.soft_composite`` before the
    background blend (float32)."""
    cams, height, width, slots = pix_to_face.shape
    channels = colors.shape[-1]
    flat_colors = colors.to(torch.float32).reshape(-1, slots, channels).contiguous()
    flat_p2f = pix_to_face.reshape(-1, slots)
    flat_d = dists.reshape(-1, slots)
    try:
        fg, t_final = _CompositeLayers.apply(flat_d, flat_colors, opacities, flat_p2f, sigma)
    except Exception:
        _capture_inputs("composite", dists=dists, colors=colors, pix_to_face=pix_to_face)
        raise
    return fg.reshape(cams, height, width, channels), t_final.reshape(cams, height, width, 1)


# ---------------------------------------------------------------------------------------------------------------
class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        color: Tensor,
        screen: Tensor,
        face0: Tensor,
        depth0: Tensor,
        depth_ok: Tensor,
        faces: Tensor,
        opposite: Tensor,
    ):  # type: ignore[override]
        cams, height, width, channels = color.shape
        flat = _f32(color.reshape(-1, channels))
        out = flat.clone()
        scr = _f32(screen.reshape(-1, 2))
        geometry = [_arr(_i32(face0.reshape(-1))), _arr(_f32(depth0.reshape(-1))), _arr(scr)]
        geometry += [_arr(_i32(depth_ok.reshape(-1))), _arr(_i32(faces)), _arr(_i32(opposite))]
        sizes = [height, width, screen.shape[1]]
        _launch(
            _kernels().antialias_fwd, flat.shape[0] * 2, [_arr(flat), *geometry, *sizes, _arr(out)], color
        )
        ctx.save_for_backward(flat, scr, face0, depth0, depth_ok, faces, opposite)
        ctx.sizes = (cams, height, width, channels, screen.shape[1])
        return out.reshape(color.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        flat, scr, face0, depth0, depth_ok, faces, opposite = ctx.saved_tensors
        cams, height, width, channels, num_vertices = ctx.sizes
        g = _f32(grad_out.reshape(-1, channels))
        grad_color = g.clone()
        grad_screen = torch.zeros_like(scr)
        geometry = [_arr(_i32(face0.reshape(-1))), _arr(_f32(depth0.reshape(-1))), _arr(scr)]
        geometry += [_arr(_i32(depth_ok.reshape(-1))), _arr(_i32(faces)), _arr(_i32(opposite))]
        inputs = [
            _arr(flat),
            *geometry,
            height,
            width,
            num_vertices,
            _arr(g),
            _arr(grad_color),
            _arr(grad_screen),
        ]
        _launch(_kernels().antialias_bwd, flat.shape[0] * 2, inputs, flat)
        return (
            grad_color.reshape(cams, height, width, channels) if ctx.needs_input_grad[0] else None,
            grad_screen.reshape(cams, num_vertices, 2) if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
            None,
        )


def antialias(
    color: Tensor,
    pix_to_face: Tensor,
    depth: Tensor,
    screen: Tensor,
    depth_ok: Tensor,
    faces: Tensor,
    opposite: Tensor,
) -> Tensor:
    """Warp twin of ``shading_ref.antialias`` (float32); ``opposite`` from ``shading_ref.edge_opposites``."""
    face0, depth0 = pix_to_face[..., 0], depth[..., 0]
    try:
        return _Antialias.apply(color, screen, face0, depth0, depth_ok, faces, opposite)
    except Exception:
        _capture_inputs("antialias", color=color, screen=screen, pix_to_face=pix_to_face, faces=faces)
        raise
