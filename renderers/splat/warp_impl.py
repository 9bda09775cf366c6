"""Warp launch glue of the splat rasteriser: tile binning and the autograd-wrapped raster forward/backward.

Kernels live in ``warp_kernels.py``; this module is imported on the first Warp call only. Launches run on the
device of the input tensors (``"cpu"`` or ``"cuda:i"``), on the current torch CUDA stream, sharing memory with
torch zero-copy (``wp.from_torch``).

Design choices (fastest on both CPU and CUDA):

* Footprint tiles of 16x16 (spec 5) refined to 8x8 raster tiles (``constants.RASTER_TILE``); on CUDA one
  64-thread block per raster tile, on CPU (serial launches) the tile list stays in cache. Raster tiles entirely
  outside one of the triangle's edge lines are dropped too (exact, ``binning.subtile_outside``): ~20% fewer pairs.
* Keys ``tile << 32 | bits(zbar)`` in int64 with one global stable radix sort over only the occupied bits
  (``end_bit = 32 + bit_length(num_tiles)``): fewer passes than a full 64-bit sort, same order.
* Per-pixel atomics into an (N, 19) gradient buffer rather than per-tile reductions: on CUDA (as in 3DGS) atomics
  on a packed row avoid a second reduction pass and its scratch memory; on the CPU Warp's atomics are plain
  read-modify-writes, so each of the (at most 2) concurrent CPU launches (tile rows split between Python threads,
  ``_cpu_workers``) gets a private buffer, summed afterwards.
* The hot loop reads window parameters gathered in sorted order (``geom``) and tests "inside" with one branch on
  ``max_k L_k(p)``: measured on the 2-core CPU, this took the forward from ~130 to ~80 ms CPU on case (b).
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from recon.renderers._backend import WarpLauncher, get_warp
from recon.renderers.splat.binning import SUBTILES, depth_key_bits
from recon.renderers.splat.constants import BBOX_MARGIN_PX, RASTER_TILE
from recon.renderers.splat.project import tile_grid
from recon.renderers.splat.types import PARAM_SIZE, ProjectedTriangles, RasterOutput, TileBins

__all__ = ["bin_tiles_warp", "rasterize_backward", "rasterize_forward", "rasterize_warp"]


def _kernels():
    get_warp()  # import + quiet init once, before the kernel module imports warp
    from recon.renderers.splat import warp_kernels

    return warp_kernels


def bin_tiles_warp(proj: ProjectedTriangles) -> TileBins:
    """Warp twin of :func:`recon.renderers.splat.binning.bin_tiles_torch` (same output, bit for bit)."""
    k = _kernels()
    tiles_x, tiles_y = tile_grid(proj.width, proj.height, RASTER_TILE)
    num_tiles = tiles_x * tiles_y
    device = proj.zbar.device
    # Raster rectangles (binning.raster_rects) and edge culling (binning.subtile_outside) in one kernel: count the
    # kept raster tiles of each rectangle, then emit them.
    lines = proj.lines.detach().reshape(-1, 9).to(torch.float64).contiguous()
    rect = torch.empty(len(proj), 4, dtype=torch.int32, device=device)
    counts = torch.empty(len(proj), dtype=torch.int64, device=device)
    launcher = WarpLauncher(proj.zbar)
    a = launcher.arr
    launcher.launch(
        k.count_tiles,
        len(proj),
        [
            a(proj.rect.to(torch.int32)),
            a(proj.bbox.detach().to(torch.float64)),
            a(proj.visible),
            a(lines),
            SUBTILES,
            tiles_x,
            tiles_y,
            BBOX_MARGIN_PX,
            a(rect),
            a(counts),
        ],
    )
    offsets = torch.cumsum(counts, 0)
    # Host sync: the total number of (tile, triangle) pairs sizes the key buffers.
    total = int(offsets[-1]) if len(proj) > 0 else 0
    ranges = torch.zeros(num_tiles, 2, dtype=torch.int32, device=device)
    if total == 0:
        return TileBins(
            torch.zeros(0, dtype=torch.int32, device=device), ranges, tiles_x, tiles_y, RASTER_TILE
        )
    offsets = offsets - counts
    # radix_sort_pairs needs 2x storage for its ping-pong buffers.
    keys = torch.empty(2 * total, dtype=torch.int64, device=device)
    values = torch.empty(2 * total, dtype=torch.int32, device=device)
    wp = launcher.wp
    launcher.launch(
        k.emit_keys,
        len(proj),
        [
            launcher.arr(rect),
            launcher.arr(lines),
            launcher.arr(offsets),
            launcher.arr(depth_key_bits(proj.zbar)),
            tiles_x,
            launcher.arr(keys),
            launcher.arr(values),
        ],
    )
    end_bit = 32 + max(1, int(num_tiles - 1).bit_length())
    keys_wp, values_wp = launcher.arr(keys), launcher.arr(values)
    if launcher.stream is not None:
        with wp.ScopedStream(launcher.stream):
            wp.utils.radix_sort_pairs(keys_wp, values_wp, total, end_bit=end_bit)
    else:
        wp.utils.radix_sort_pairs(keys_wp, values_wp, total, end_bit=end_bit)
    launcher.launch(k.tile_ranges, total, [keys_wp, total, launcher.arr(ranges)])
    return TileBins(values[:total].clone(), ranges, tiles_x, tiles_y, RASTER_TILE)


MAX_CPU_WORKERS = 2  # the project's target machine has 2 cores; more threads only add buffers
GEOM_SIZE = 12  # packed columns the inside test and window need: lines (9), 1/phi(s), sigma, o


def _gather_geometry(params: Tensor, bins: TileBins) -> Tensor:
    """(M, 12) window parameters in sorted-list order (contiguous per tile for the hot loop)."""
    m = bins.point_list.numel()
    geom = torch.empty(max(m, 1), GEOM_SIZE, dtype=params.dtype, device=params.device)
    launcher = WarpLauncher(params)
    launcher.launch(
        _kernels().gather_geometry,
        m,
        [launcher.arr(params), launcher.arr(bins.point_list), launcher.arr(geom)],
    )
    return geom


def _cpu_workers(device: torch.device) -> int:
    """Concurrent CPU launches: Warp runs one CPU launch on one thread, so the raster kernels are split by tile
    rows over this many Python threads (ctypes releases the GIL). ``RECON_WARP_CPU_THREADS`` overrides."""
    if device.type != "cpu":
        return 1
    env = os.environ.get("RECON_WARP_CPU_THREADS")
    if env is not None:
        return max(1, int(env))
    return max(
        1, min(MAX_CPU_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    )


def _launch_rows(launcher: WarpLauncher, kernel, bins: TileBins, workers: int, make_inputs) -> None:
    """Launch a per-pixel kernel over all tiles, split into ``workers`` interleaved tile-row sets.

    ``make_inputs(w, row_start, row_step)`` returns worker ``w``'s input list; workers write their atomics to
    private buffers (CPU "atomics" are plain read-modify-writes, so concurrent launches must not share them).
    """
    k = _kernels()
    workers = min(workers, bins.tiles_y)
    if workers <= 1:
        launcher.launch(kernel, bins.tiles_y * bins.tiles_x * k.TILE_PIXELS, make_inputs(0, 0, 1))
        return
    pool = _pool(workers)
    futures = []
    for w in range(workers):
        rows = len(range(w, bins.tiles_y, workers))
        dim = rows * bins.tiles_x * k.TILE_PIXELS
        futures.append(pool.submit(launcher.launch, kernel, dim, make_inputs(w, w, workers)))
    for f in futures:
        f.result()


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recon-splat")
    return _POOLS[workers]


def rasterize_forward(
    params: Tensor, bins: TileBins, background: Tensor, width: int, height: int, compute_distortion: bool
) -> tuple[Tensor, ...]:
    """Launch ``render_fwd``.

    Returns:
        ``(out (HW, 10), t_final (HW,), last_contrib (HW,) int32, median_contrib (HW,) int32, moments (HW, 2),
        max_blending (N,), geom (M, 12))`` with ``out`` = rgb(3), alpha, depth_sum, depth_median, normal(3),
        distortion; ``geom`` is the sorted window-parameter buffer, reused by the backward launch.
    """
    k = _kernels()
    device = params.device
    hw = width * height
    out = torch.empty(hw, k.OUT_SIZE, dtype=torch.float32, device=device)
    t_final = torch.empty(hw, dtype=torch.float32, device=device)
    last = torch.empty(hw, dtype=torch.int32, device=device)
    median = torch.empty(hw, dtype=torch.int32, device=device)
    moments = torch.empty(hw, 2, dtype=torch.float32, device=device)
    workers = _cpu_workers(device)
    max_blending = torch.zeros(workers, params.shape[0], dtype=torch.float32, device=device)
    geom = _gather_geometry(params, bins)
    launcher = WarpLauncher(params)
    a = launcher.arr
    shared = [a(params), a(geom), a(bins.point_list), a(bins.tile_ranges), a(background), width, height]
    tail = [a(out), a(t_final), a(last), a(median), a(moments)]
    _launch_rows(
        launcher,
        k.render_fwd,
        bins,
        workers,
        lambda w, r0, step: [
            *shared,
            bins.tiles_x,
            r0,
            step,
            int(compute_distortion),
            *tail,
            a(max_blending[w]),
        ],
    )
    return out, t_final, last, median, moments, max_blending.amax(dim=0), geom


def rasterize_backward(
    params: Tensor,
    bins: TileBins,
    background: Tensor,
    width: int,
    height: int,
    compute_distortion: bool,
    grad_out: Tensor,
    saved: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
) -> Tensor:
    """Launch ``render_bwd``; returns the (N, 19) gradient of the packed parameters.

    ``saved`` = ``(t_final, last_contrib, median_contrib, moments, geom)`` from :func:`rasterize_forward`.
    """
    k = _kernels()
    t_final, last, median, moments, geom = saved
    workers = _cpu_workers(params.device)
    grad_params = torch.zeros(workers, params.shape[0], PARAM_SIZE, dtype=torch.float32, device=params.device)
    launcher = WarpLauncher(params)
    a = launcher.arr
    shared = [a(params), a(geom), a(bins.point_list), a(bins.tile_ranges), a(background), width, height]
    tail = [a(grad_out.to(torch.float32).contiguous()), a(t_final), a(last), a(median), a(moments)]
    _launch_rows(
        launcher,
        k.render_bwd,
        bins,
        workers,
        lambda w, r0, step: [
            *shared,
            bins.tiles_x,
            r0,
            step,
            int(compute_distortion),
            *tail,
            a(grad_params[w]),
        ],
    )
    return grad_params.sum(dim=0) if workers > 1 else grad_params[0]


class _RasterizeFunction(torch.autograd.Function):
    """Autograd wrapper: forward/backward Warp kernels on the packed (N, 19) parameters and the background."""

    @staticmethod
    def forward(ctx, params, background, point_list, tile_ranges, geometry):  # type: ignore[override]
        width, height, tiles_x, tiles_y, compute_distortion = geometry
        bins = TileBins(point_list, tile_ranges, tiles_x, tiles_y, RASTER_TILE)
        out, t_final, last, median, moments, max_blending, geom = rasterize_forward(
            params, bins, background, width, height, compute_distortion
        )
        ctx.save_for_backward(
            params, background, point_list, tile_ranges, t_final, last, median, moments, geom
        )
        ctx.geometry = geometry
        ctx.mark_non_differentiable(max_blending)
        return out, max_blending

    @staticmethod
    def backward(ctx, grad_out, _grad_max_blending):  # type: ignore[override]
        params, background, point_list, tile_ranges, t_final, last, median, moments, geom = ctx.saved_tensors
        width, height, tiles_x, tiles_y, compute_distortion = ctx.geometry
        grad_params = grad_background = None
        if ctx.needs_input_grad[0]:
            bins = TileBins(point_list, tile_ranges, tiles_x, tiles_y, RASTER_TILE)
            grad_params = rasterize_backward(
                params,
                bins,
                background,
                width,
                height,
                compute_distortion,
                grad_out.contiguous(),
                (t_final, last, median, moments, geom),
            )
        if ctx.needs_input_grad[1]:
            grad_background = (t_final[:, None] * grad_out[:, :3]).sum(dim=0)
        return grad_params, grad_background, None, None, None


def _capture_inputs(**tensors: Tensor) -> None:
    """``RECON_CAPTURE_INPUTS=<dir>``: save the inputs of a failing Warp raster call for offline debugging."""
    folder = os.environ.get("RECON_CAPTURE_INPUTS")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"splat_rasterize_{os.getpid()}_{time.time_ns()}.pt")
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, path)


def rasterize_warp(
    proj: ProjectedTriangles, bins: TileBins, background: Tensor, *, compute_distortion: bool = False
) -> RasterOutput:
    """Warp rasterisation of one camera; see :func:`recon.renderers.splat.api.rasterize_projected`."""
    params = proj.packed().to(torch.float32).contiguous()
    bg = background.to(torch.float32).contiguous()
    geometry = (proj.width, proj.height, bins.tiles_x, bins.tiles_y, bool(compute_distortion))
    try:
        out, max_blending = _RasterizeFunction.apply(params, bg, bins.point_list, bins.tile_ranges, geometry)
    except Exception:
        _capture_inputs(
            params=params,
            background=bg,
            point_list=bins.point_list,
            tile_ranges=bins.tile_ranges,
            geometry=torch.tensor(geometry[:4] + (int(compute_distortion),)),
        )
        raise
    h, w = proj.height, proj.width
    out = out.reshape(h, w, -1)
    return RasterOutput(
        rgb=out[..., 0:3],
        alpha=out[..., 3:4],
        depth_sum=out[..., 4:5],
        depth_median=out[..., 5:6],
        normals=out[..., 6:9],
        distortion=out[..., 9:10] if compute_distortion else None,
        max_blending=max_blending,
    )
