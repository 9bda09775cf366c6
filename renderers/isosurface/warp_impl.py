"""Warp path of marching cubes: case classification and triangle emission run as Warp kernels (float32);
the per-edge vertex interpolation (``torch.unique`` of edge ids, ``EDGE_MARGIN`` clamp) is shared with ``ref.py``."""

from types import ModuleType

import torch
from torch import Tensor

from recon.renderers._backend import get_warp, warp_device
from recon.renderers.isosurface import ref
from recon.renderers.isosurface.tables import TRI_TABLE

__all__ = ["marching_cubes"]

_TABLES: dict[str, tuple[Tensor, ...]] = {}


def _kernels() -> ModuleType:
    get_warp()
    from recon.renderers.isosurface import warp_kernels

    return warp_kernels


def _tables(device: torch.device) -> tuple[Tensor, ...]:
    key = str(device)
    if key not in _TABLES:
        tri = torch.tensor(TRI_TABLE, dtype=torch.int32)
        counts = ((tri >= 0).sum(-1) // 3).to(torch.int32)
        lower, axis = ref._edge_geometry(torch.device("cpu"))
        _TABLES[key] = tuple(
            t.to(device).contiguous() for t in (tri, counts, lower.to(torch.int32), axis.to(torch.int32))
        )
    return _TABLES[key]


def _launch(kernel, dim, inputs: list, like: Tensor) -> None:
    wp = get_warp()
    stream = wp.stream_from_torch(like.device) if like.device.type == "cuda" else None
    wp.launch(kernel, dim=dim, inputs=inputs, device=warp_device(like), stream=stream)


def face_edge_ids(values: Tensor, level: float) -> Tensor:
    wp = get_warp()
    k = _kernels()
    # edge ids are integers; wp.from_torch would attach a .grad to a tensor that requires grad
    values = values.detach().contiguous()
    nx, ny, nz = values.shape
    cells = (nx - 1, ny - 1, nz - 1)
    tri, tri_counts, lower, axis = _tables(values.device)
    cases = torch.empty(cells, dtype=torch.int32, device=values.device)
    counts = torch.empty(cells, dtype=torch.int32, device=values.device)
    _launch(k.count_triangles, cells, [wp.from_torch(values), float(level), wp.from_torch(tri_counts),
                                       wp.from_torch(cases), wp.from_torch(counts)], values)  # fmt: skip
    flat = counts.reshape(-1).to(torch.int64)
    offsets = (torch.cumsum(flat, 0) - flat).reshape(cells).contiguous()
    total = int(flat.sum())  # host sync: the triangle count sizes the output
    edge_ids = torch.empty(max(3 * total, 1), dtype=torch.int64, device=values.device)
    if total > 0:
        _launch(
            k.emit_triangles,
            cells,
            [wp.from_torch(cases), wp.from_torch(offsets), wp.from_torch(tri), wp.from_torch(lower),
             wp.from_torch(axis), ny, nz, nx * ny * nz, wp.from_torch(edge_ids)],
            values,
        )  # fmt: skip
    return edge_ids[: 3 * total]


def marching_cubes(values: Tensor, level: float, flip: bool):
    return ref.mesh_from_edge_ids(values, level, face_edge_ids(values, level), flip)
