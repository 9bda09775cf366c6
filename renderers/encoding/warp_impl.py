"""Launch glue and autograd Function of the Warp hash-grid encoding (float32; CPU and CUDA).

Backward gives ``dL/dtable`` (atomic adds) and the first-order positional gradient ``dL/dx``. It is not twice
differentiable: losses on ``d features / d x`` that need ``create_graph=True`` (eikonal terms of SDF fields) use
``backend="torch"``.
"""

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recon.renderers._backend import get_warp, warp_device
from recon.renderers.encoding.layout import HashGridLayout

__all__ = ["hash_grid_encode"]

_LEVEL_TABLES: dict[tuple[HashGridLayout, str], tuple[Tensor, ...]] = {}
_GRAD_STORAGES: dict[tuple[tuple[int, ...], torch.dtype], list[torch.UntypedStorage]] = {}
_MAX_GRAD_STORAGES = 4  # per shape; more tables of one shape in one graph allocate afresh


def _kernels() -> ModuleType:
    get_warp()
    from recon.renderers.encoding import warp_kernels

    return warp_kernels


def _level_tables(layout: HashGridLayout, device: torch.device) -> tuple[Tensor, ...]:
    """Per-level scale/resolution/size/offset/dense arrays on ``device`` (cached per layout and device)."""
    key = (layout, str(device))
    if key not in _LEVEL_TABLES:
        _LEVEL_TABLES[key] = (
            torch.tensor(layout.scales, dtype=torch.float32, device=device),
            torch.tensor(layout.resolutions, dtype=torch.int32, device=device),
            torch.tensor(layout.sizes, dtype=torch.int32, device=device),
            torch.tensor(layout.offsets, dtype=torch.int32, device=device),
            torch.tensor([int(d) for d in layout.dense], dtype=torch.int32, device=device),
        )
    return _LEVEL_TABLES[key]


def _w(t: Tensor, dtype=None):
    """Zero-copy Warp view of ``t``, without a gradient array. ``wp.from_torch`` would otherwise allocate a
    zero-filled ``.grad`` for a tensor that requires grad (the hash table: 2^17-2^19 entries per level) on every
    call, forward included, which autograd then adds the real gradient into: two extra passes over the table per
    step (~24 ms at 2^19 on one thread; benchmarks/README.md, "The table-sized work of a hash-grid step")."""
    return get_warp().from_torch(t.detach(), dtype=dtype, requires_grad=False)


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    return torch.empty(shape, device="meta").stride()


def _zeros_for_table_grad(table: Tensor) -> Tensor:
    """A zero-filled, contiguous tensor shaped like ``table`` for its gradient.

    On CPU it reuses the memory of an earlier step's table gradient that nothing holds any more (its storage's only
    user is this cache, e.g. after ``zero_grad(set_to_none=True)``): glibc hands blocks over 32 MiB (a 2^19-entry,
    16-level table's gradient is 46 MB) back to the OS on free, so a fresh one page-faults on every step (measured
    ~18 ms per step at 2^19 on one thread). The cache keeps at most ``_MAX_GRAD_STORAGES`` buffers per shape alive
    for the process's lifetime. The returned tensor is new (autograd takes it as ``.grad`` without a
    copy) and shares a cached storage only while no other tensor uses it; a storage still in use, e.g. by a first
    gradient of the same table in the same backward, is never handed out again. CUDA has its caching allocator.
    """
    use_count = getattr(torch._C, "_storage_Use_Count", None)  # private: without it, allocate as before
    if table.device.type != "cpu" or use_count is None:
        return torch.zeros_like(table, memory_format=torch.contiguous_format)
    cached = _GRAD_STORAGES.setdefault((tuple(table.shape), table.dtype), [])
    for storage in cached:
        if use_count(storage._cdata) == 1:  # only this cache holds it
            out = torch.empty(0, dtype=table.dtype).set_(
                storage, 0, table.shape, _contiguous_strides(table.shape)
            )
            return out.zero_()
    out = torch.zeros(table.shape, dtype=table.dtype)
    if len(cached) < _MAX_GRAD_STORAGES:
        cached.append(out.untyped_storage())
    return out


def _args(layout: HashGridLayout, like: Tensor) -> list:
    wp = get_warp()
    scales, res, sizes, offsets, dense = _level_tables(layout, like.device)
    return [_w(scales), _w(res, wp.uint32), _w(sizes, wp.uint32), _w(offsets), _w(dense)]


def _launch(kernel, dim, inputs: list, like: Tensor) -> None:
    wp = get_warp()
    stream = wp.stream_from_torch(like.device) if like.device.type == "cuda" else None
    wp.launch(kernel, dim=dim, inputs=inputs, device=warp_device(like), stream=stream)


class _HashGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, layout: HashGridLayout) -> Tensor:
        x = x.contiguous()
        table = table.contiguous()
        n_features = table.shape[1]
        out = torch.empty((x.shape[0], layout.levels * n_features), dtype=x.dtype, device=x.device)
        if x.shape[0] > 0:
            _launch(
                _kernels().hash_grid_forward,
                (layout.levels, x.shape[0]),
                [_w(x), _w(table), *_args(layout, x), n_features, _w(out)],
                x,
            )
        ctx.save_for_backward(x, table)
        ctx.layout = layout
        return out

    @staticmethod
    @once_differentiable  # the Warp backward builds no graph: double backward must raise, not return 0
    def backward(ctx, grad_out: Tensor):
        x, table = ctx.saved_tensors
        layout = ctx.layout
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else torch.zeros((1, 3), dtype=x.dtype, device=x.device)
        grad_table = (
            _zeros_for_table_grad(table)
            if need_table
            else torch.zeros((1, 1), dtype=x.dtype, device=x.device)
        )
        if x.shape[0] > 0 and (need_x or need_table):
            _launch(
                _kernels().hash_grid_backward,
                (layout.levels, x.shape[0]),
                [_w(x), _w(table), *_args(layout, x), table.shape[1], _w(grad_out.contiguous()),
                 int(need_table), int(need_x), _w(grad_table), _w(grad_x)],
                x,
            )  # fmt: skip
        return (grad_x if need_x else None), (grad_table if need_table else None), None


def hash_grid_encode(x: Tensor, table: Tensor, layout: HashGridLayout) -> Tensor:
    return _HashGridFunction.apply(x, table, layout)
