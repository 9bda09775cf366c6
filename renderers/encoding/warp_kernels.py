# ruff: noqa: UP018  (Warp needs int(0) / float(0.0) to declare loop-carried dynamic variables)
"""Warp kernels of the hash-grid encoding (one thread per (point, level); uint32 hashing as tcnn)."""

import warp as wp

PRIME_1 = wp.constant(wp.uint32(2654435761))
PRIME_2 = wp.constant(wp.uint32(805459861))


@wp.func
def grid_index(c0: int, c1: int, c2: int, res: wp.uint32, size: wp.uint32, dense: int) -> int:
    u0 = wp.uint32(c0)
    u1 = wp.uint32(c1)
    u2 = wp.uint32(c2)
    idx = wp.uint32(0)
    if dense == 1:
        idx = u0 + u1 * res + u2 * (res * res)
    else:
        idx = u0 ^ (u1 * PRIME_1) ^ (u2 * PRIME_2)
    return int(idx % size)


@wp.func
def lerp_weight(bit: int, f: float) -> float:
    if bit == 1:
        return f
    return 1.0 - f


@wp.func
def lerp_slope(bit: int) -> float:
    if bit == 1:
        return 1.0
    return -1.0


@wp.kernel(enable_backward=False)
def hash_grid_forward(
    x: wp.array2d(dtype=wp.float32),
    table: wp.array2d(dtype=wp.float32),
    scales: wp.array(dtype=wp.float32),
    resolutions: wp.array(dtype=wp.uint32),
    sizes: wp.array(dtype=wp.uint32),
    offsets: wp.array(dtype=wp.int32),
    dense: wp.array(dtype=wp.int32),
    n_features: int,
    out: wp.array2d(dtype=wp.float32),
):
    level, n = wp.tid()  # level-major launch: consecutive threads share a level (cache locality)
    s = scales[level]
    q0 = x[n, 0] * s + 0.5
    q1 = x[n, 1] * s + 0.5
    q2 = x[n, 2] * s + 0.5
    fl0 = wp.floor(q0)
    fl1 = wp.floor(q1)
    fl2 = wp.floor(q2)
    f0 = q0 - fl0
    f1 = q1 - fl1
    f2 = q2 - fl2
    c0 = int(fl0)
    c1 = int(fl1)
    c2 = int(fl2)
    base = level * n_features
    for f in range(n_features):
        out[n, base + f] = 0.0
    for corner in range(8):
        b0 = corner & 1
        b1 = (corner >> 1) & 1
        b2 = (corner >> 2) & 1
        row = offsets[level] + grid_index(
            c0 + b0, c1 + b1, c2 + b2, resolutions[level], sizes[level], dense[level]
        )
        w = lerp_weight(b0, f0) * lerp_weight(b1, f1) * lerp_weight(b2, f2)
        for f in range(n_features):
            out[n, base + f] = out[n, base + f] + w * table[row, f]


@wp.kernel(enable_backward=False)
def hash_grid_backward(
    x: wp.array2d(dtype=wp.float32),
    table: wp.array2d(dtype=wp.float32),
    scales: wp.array(dtype=wp.float32),
    resolutions: wp.array(dtype=wp.uint32),
    sizes: wp.array(dtype=wp.uint32),
    offsets: wp.array(dtype=wp.int32),
    dense: wp.array(dtype=wp.int32),
    n_features: int,
    grad_out: wp.array2d(dtype=wp.float32),
    need_table: int,
    need_x: int,
    grad_table: wp.array2d(dtype=wp.float32),
    grad_x: wp.array2d(dtype=wp.float32),
):
    """``dL/dtable[row] += w * g`` (atomics: rows collide across points and hashed levels) and
    ``dL/dx_d += scale_l * sum_corner sum_f g_f table[row, f] * dw/df_d``."""
    level, n = wp.tid()  # level-major launch: consecutive threads share a level (cache locality)
    s = scales[level]
    q0 = x[n, 0] * s + 0.5
    q1 = x[n, 1] * s + 0.5
    q2 = x[n, 2] * s + 0.5
    fl0 = wp.floor(q0)
    fl1 = wp.floor(q1)
    fl2 = wp.floor(q2)
    f0 = q0 - fl0
    f1 = q1 - fl1
    f2 = q2 - fl2
    c0 = int(fl0)
    c1 = int(fl1)
    c2 = int(fl2)
    base = level * n_features
    gx0 = float(0.0)
    gx1 = float(0.0)
    gx2 = float(0.0)
    for corner in range(8):
        b0 = corner & 1
        b1 = (corner >> 1) & 1
        b2 = (corner >> 2) & 1
        row = offsets[level] + grid_index(
            c0 + b0, c1 + b1, c2 + b2, resolutions[level], sizes[level], dense[level]
        )
        w0 = lerp_weight(b0, f0)
        w1 = lerp_weight(b1, f1)
        w2 = lerp_weight(b2, f2)
        dot = float(0.0)
        for f in range(n_features):
            g = grad_out[n, base + f]
            if need_table == 1:
                wp.atomic_add(grad_table, row, f, w0 * w1 * w2 * g)
            dot += g * table[row, f]
        if need_x == 1:
            gx0 += dot * lerp_slope(b0) * w1 * w2
            gx1 += dot * w0 * lerp_slope(b1) * w2
            gx2 += dot * w0 * w1 * lerp_slope(b2)
    if need_x == 1:
        wp.atomic_add(grad_x, n, 0, gx0 * s)
        wp.atomic_add(grad_x, n, 1, gx1 * s)
        wp.atomic_add(grad_x, n, 2, gx2 * s)
