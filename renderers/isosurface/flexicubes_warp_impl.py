"""Warp path of FlexiCubes: case ids and the dual-vertex stage (crossings, dual vertices and L_dev) run as Warp
kernels (float32), the latter inside a ``torch.autograd.Function`` with the hand-written adjoint kernel. The integer bookkeeping (ambiguity fix, edge
grouping, quads) and the triangulation are the torch code of ``flexicubes_ref`` (cheap, O(surface cubes) index
work). Launches run on the device of the inputs, on the current torch CUDA stream, zero-copy (``wp.from_torch``).
"""

import os
import time
from types import ModuleType

import torch
from torch import Tensor

from recon.renderers._backend import get_warp, warp_device
from recon.renderers.isosurface import flexicubes_ref as ref

__all__ = ["cube_cases", "dense_cube_cases", "dual_vertices_and_l_dev"]


def _kernels() -> ModuleType:
    get_warp()  # import + quiet init once, before the kernel module imports warp
    from recon.renderers.isosurface import flexicubes_warp_kernels

    return flexicubes_warp_kernels


_TABLES: dict[str, tuple[Tensor, Tensor]] = {}


def _tables(device: torch.device) -> tuple[Tensor, Tensor]:
    key = str(device)
    if key not in _TABLES:
        t = ref.tables(device)
        _TABLES[key] = (t["dmc"].to(torch.int32).contiguous(), t["edge_corners"].to(torch.int32).contiguous())
    return _TABLES[key]


def _launch(kernel, dim, inputs: list, like: Tensor) -> None:
    wp = get_warp()
    if like.device.type == "cuda":
        stream = wp.stream_from_torch(torch.cuda.current_stream(like.device))
        wp.launch(kernel, dim=dim, inputs=inputs, device=warp_device(like), stream=stream)
    else:
        wp.launch(kernel, dim=dim, inputs=inputs, device=warp_device(like))


def _arr(t: Tensor, dtype=None):
    wp = get_warp()
    return wp.from_torch(t.detach().contiguous(), dtype=dtype)


@torch.no_grad()
def dense_cube_cases(s: Tensor) -> Tensor:
    """Warp twin of :func:`flexicubes_ref.dense_cube_cases` ((R, R, R) int32 on CUDA).

    On the CPU the vectorised uint8 torch pass is used instead: Warp runs a CPU launch on one thread, and at 64^3
    that took ~10 ms against ~0.5 ms for the torch pass (2-core machine, one torch thread).
    """
    if s.device.type == "cpu":
        return ref.dense_cube_cases(s)
    return dense_cube_cases_kernel(s)


@torch.no_grad()
def dense_cube_cases_kernel(s: Tensor) -> Tensor:
    """The Warp case kernel on any device ((R, R, R) int32)."""
    r = s.shape[0] - 1
    cases = torch.empty((r, r, r), dtype=torch.int32, device=s.device)
    _launch(_kernels().dense_cases, (r, r, r), [_arr(s), _arr(cases)], s)
    return cases  # int32: callers widen the ids of the surface cubes


@torch.no_grad()
def cube_cases(s: Tensor, corners: Tensor) -> Tensor:
    """Warp twin of :func:`flexicubes_ref.cube_cases`."""
    cases = torch.empty(corners.shape[0], dtype=torch.int32, device=s.device)
    if corners.shape[0] > 0:
        _launch(_kernels().list_cases, corners.shape[0], [_arr(s), _arr(corners), _arr(cases)], s)
    return cases.to(torch.int64)


class _DualVertices(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, alpha, beta, corners, cases, vd_offset, count: int):
        wp = get_warp()
        dmc, edge_corners = _tables(s.device)
        vd = torch.zeros((count, 3), dtype=torch.float32, device=s.device)
        l_dev = torch.zeros(count, dtype=torch.float32, device=s.device)
        inputs = [_arr(x, wp.vec3), _arr(s), _arr(corners), _arr(cases), _arr(vd_offset), _arr(alpha),
                  _arr(beta), _arr(dmc), _arr(edge_corners)]  # fmt: skip
        if corners.shape[0] > 0:
            outputs = [_arr(vd, wp.vec3), _arr(l_dev)]
            _launch(_kernels().dual_vertices_fwd, (corners.shape[0], 4), [*inputs, *outputs], s)
        ctx.save_for_backward(x, s, alpha, beta, corners, cases, vd_offset, vd)
        return vd, l_dev

    @staticmethod
    def backward(ctx, grad_vd, grad_l_dev):
        wp = get_warp()
        x, s, alpha, beta, corners, cases, vd_offset, vd = ctx.saved_tensors
        dmc, edge_corners = _tables(s.device)
        grads = [torch.zeros_like(t) for t in (x, s, alpha, beta)]
        if corners.shape[0] > 0 and any(ctx.needs_input_grad[:4]):
            inputs = [_arr(x, wp.vec3), _arr(s), _arr(corners), _arr(cases), _arr(vd_offset), _arr(alpha),
                      _arr(beta), _arr(dmc), _arr(edge_corners), _arr(vd, wp.vec3), _arr(grad_vd, wp.vec3), _arr(grad_l_dev),
                      _arr(grads[0], wp.vec3), _arr(grads[1]), _arr(grads[2]), _arr(grads[3])]  # fmt: skip
            _launch(_kernels().dual_vertices_bwd, (corners.shape[0], 4), inputs, s)
        out = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[:4])]
        return (*out, None, None, None, None)


def dual_vertices_and_l_dev(
    x: Tensor, s: Tensor, cubes: ref.SurfaceCubes, beta: Tensor, alpha: Tensor, entries
) -> tuple[Tensor, Tensor]:
    """Warp twin of :func:`flexicubes_ref.dual_vertices_and_l_dev`: ``(vd (Vd, 3), l_dev (Vd,))`` float32."""
    num_vd = entries.num_vd
    vd_offset = (torch.cumsum(num_vd, 0) - num_vd).to(torch.int32)
    count = int(num_vd.sum())  # host sync: the number of dual vertices sizes the output
    inputs = dict(
        x=x.contiguous(),
        s=s.contiguous(),
        alpha=alpha.contiguous(),
        beta=beta.contiguous(),
        corners=cubes.corners.contiguous(),
        cases=cubes.cases.to(torch.int32),
        vd_offset=vd_offset,
    )
    try:
        return _DualVertices.apply(*inputs.values(), count)
    except Exception:
        _capture_inputs(inputs)
        raise


def _capture_inputs(tensors: dict[str, Tensor]) -> None:
    """``RECON_CAPTURE_INPUTS=<dir>``: save the inputs of a failing Warp dual-vertex call for offline debugging."""
    folder = os.environ.get("RECON_CAPTURE_INPUTS")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"flexicubes_dual_vertices_{os.getpid()}_{time.time_ns()}.pt")
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, path)
