# ruff: noqa: UP018  (Warp needs int(0) / float(0.0) to declare loop-carried dynamic variables)
"""Warp kernels of marching cubes: per-cell case + triangle count, then per-cell triangle emission."""

import warp as wp

from recon.renderers.isosurface.tables import CORNER_OFFSETS


@wp.func
def cell_case(values: wp.array3d(dtype=wp.float32), i: int, j: int, k: int, level: float) -> int:
    case = int(0)
    for c in range(8):
        value = values[
            i + wp.static(CORNER_OFFSETS[c][0]),
            j + wp.static(CORNER_OFFSETS[c][1]),
            k + wp.static(CORNER_OFFSETS[c][2]),
        ]
        if value >= level:
            case += wp.static(2**c)
    return case


@wp.kernel(enable_backward=False)
def count_triangles(
    values: wp.array3d(dtype=wp.float32),
    level: float,
    tri_counts_table: wp.array(dtype=wp.int32),
    cases: wp.array3d(dtype=wp.int32),
    counts: wp.array3d(dtype=wp.int32),
):
    i, j, k = wp.tid()
    case = cell_case(values, i, j, k, level)
    cases[i, j, k] = case
    counts[i, j, k] = tri_counts_table[case]


@wp.kernel(enable_backward=False)
def emit_triangles(
    cases: wp.array3d(dtype=wp.int32),
    offsets: wp.array3d(dtype=wp.int64),
    tri_table: wp.array2d(dtype=wp.int32),
    edge_lower: wp.array2d(dtype=wp.int32),
    edge_axis: wp.array(dtype=wp.int32),
    ny: int,
    nz: int,
    n_nodes: wp.int64,
    edge_ids: wp.array(dtype=wp.int64),
):
    """Corner ``c`` of the cell's ``t``-th triangle -> ``edge_ids[3 * (offsets[cell] + t) + c]``."""
    i, j, k = wp.tid()
    case = cases[i, j, k]
    base = offsets[i, j, k] * wp.int64(3)
    for s in range(15):
        e = tri_table[case, s]
        if e >= 0:
            ni = wp.int64(i + edge_lower[e, 0])
            nj = wp.int64(j + edge_lower[e, 1])
            nk = wp.int64(k + edge_lower[e, 2])
            node = (ni * wp.int64(ny) + nj) * wp.int64(nz) + nk
            edge_ids[base + wp.int64(s)] = wp.int64(edge_axis[e]) * n_nodes + node
