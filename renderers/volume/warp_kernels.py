# ruff: noqa: UP018  (Warp needs int(0) / float(0.0) to declare loop-carried dynamic variables)
"""Warp kernels of the volume-rendering ops (imported only by ``warp_impl``; compiled lazily, cached by Warp).

Compositing works per ray on the packed layout (``packed_info[r] = (first, count)``); ``use_density = 1`` takes
densities and interval lengths (``tau = sigma * dt``), ``0`` takes alphas directly. The backward kernel is the
closed form of the spec (section 1), written in the alpha form so it needs no division by ``1 - alpha``:

    e_i   = dL/dw_i + dL/dA + dL/dD * t_mid_i + sum_ch dL/dC_ch * c_i,ch          (per-sample coefficient)
    R_k   = sum_{i>k} e_i alpha_i prod_{k<j<i}(1 - alpha_j) + e_bg prod_{j>k}(1 - alpha_j)
    Q_k   = sum_{i>k} dL/dT_i prod_{k<j<i}(1 - alpha_j)
    dL/dalpha_k = T_k (e_k - R_k - Q_k) [+ dL/dalpha_k (alpha output)],   dL/dsigma_k = dt_k (1 - alpha_k) dL/dalpha_k

Walking each ray back to front gives ``R`` and ``Q`` by the recursions ``R <- e_i alpha_i + (1 - alpha_i) R`` and
``Q <- dL/dT_i + (1 - alpha_i) Q``. With ``T_{k+1} = T_k (1 - alpha_k)`` this is exactly
``dC/dtau_k = T_{k+1} c_k - C_{>k}`` of the spec (``T_{k+1} R_k = C_{>k}``), accumulated without cancellation.
"""

import warp as wp

MAX_CONE_STEP = 1e10  # upper clamp of the cone-growing step (nerfacc)


@wp.kernel(enable_backward=False)
def composite_forward(
    packed_info: wp.array2d(dtype=wp.int32),
    values: wp.array(dtype=wp.float32),
    dts: wp.array(dtype=wp.float32),
    mids: wp.array(dtype=wp.float32),
    colors: wp.array2d(dtype=wp.float32),
    background: wp.array(dtype=wp.float32),
    n_channels: int,
    use_density: int,
    use_background: int,
    weights: wp.array(dtype=wp.float32),
    trans: wp.array(dtype=wp.float32),
    alphas: wp.array(dtype=wp.float32),
    out_rgb: wp.array2d(dtype=wp.float32),
    out_opacity: wp.array(dtype=wp.float32),
    out_depth: wp.array(dtype=wp.float32),
    out_final_trans: wp.array(dtype=wp.float32),
):
    r = wp.tid()
    first = packed_info[r, 0]
    count = packed_info[r, 1]
    t = float(1.0)
    tau_sum = float(0.0)
    opacity = float(0.0)
    depth = float(0.0)
    for ch in range(n_channels):
        out_rgb[r, ch] = 0.0
    for i in range(first, first + count):
        a = float(0.0)
        if use_density == 1:
            tau = values[i] * dts[i]
            a = 1.0 - wp.exp(-tau)
            t = wp.exp(-tau_sum)  # T_i = exp(-sum_{j<i} tau_j) (spec), not a running product
            tau_sum += tau
        else:
            a = values[i]
        w = t * a
        weights[i] = w
        trans[i] = t
        alphas[i] = a
        opacity += w
        depth += w * mids[i]
        for ch in range(n_channels):
            out_rgb[r, ch] = out_rgb[r, ch] + w * colors[i, ch]
        if use_density == 0:
            t = t * (1.0 - a)
    if use_density == 1:
        t = wp.exp(-tau_sum)
    if use_background == 1:
        for ch in range(n_channels):
            out_rgb[r, ch] = out_rgb[r, ch] + t * background[ch]
    out_opacity[r] = opacity
    out_depth[r] = depth
    out_final_trans[r] = t


@wp.kernel(enable_backward=False)
def composite_backward(
    packed_info: wp.array2d(dtype=wp.int32),
    dts: wp.array(dtype=wp.float32),
    mids: wp.array(dtype=wp.float32),
    colors: wp.array2d(dtype=wp.float32),
    background: wp.array(dtype=wp.float32),
    n_channels: int,
    use_density: int,
    use_background: int,
    weights: wp.array(dtype=wp.float32),
    trans: wp.array(dtype=wp.float32),
    alphas: wp.array(dtype=wp.float32),
    grad_weights: wp.array(dtype=wp.float32),
    grad_trans: wp.array(dtype=wp.float32),
    grad_alphas: wp.array(dtype=wp.float32),
    grad_rgb: wp.array2d(dtype=wp.float32),
    grad_opacity: wp.array(dtype=wp.float32),
    grad_depth: wp.array(dtype=wp.float32),
    grad_values: wp.array(dtype=wp.float32),
    grad_colors: wp.array2d(dtype=wp.float32),
):
    r = wp.tid()
    first = packed_info[r, 0]
    count = packed_info[r, 1]
    acc_r = float(0.0)
    if use_background == 1:
        for ch in range(n_channels):
            acc_r += grad_rgb[r, ch] * background[ch]
    acc_q = float(0.0)
    g_a = grad_opacity[r]
    g_d = grad_depth[r]
    for k in range(count):
        i = first + count - 1 - k
        a = alphas[i]
        e = grad_weights[i] + g_a + g_d * mids[i]
        for ch in range(n_channels):
            e += grad_rgb[r, ch] * colors[i, ch]
            grad_colors[i, ch] = weights[i] * grad_rgb[r, ch]
        d_alpha = trans[i] * (e - acc_r - acc_q) + grad_alphas[i]
        if use_density == 1:
            grad_values[i] = dts[i] * (1.0 - a) * d_alpha
        else:
            grad_values[i] = d_alpha
        acc_r = e * a + (1.0 - a) * acc_r
        acc_q = grad_trans[i] + (1.0 - a) * acc_q


@wp.func
def slab(o: float, d: float, lo: float, hi: float, eps: float) -> wp.vec2:
    if wp.abs(d) < eps:
        if o >= lo and o <= hi:
            return wp.vec2(-wp.inf, wp.inf)
        return wp.vec2(wp.inf, -wp.inf)
    t0 = (lo - o) / d
    t1 = (hi - o) / d
    return wp.vec2(wp.min(t0, t1), wp.max(t0, t1))


@wp.kernel(enable_backward=False)
def ray_aabb(
    origins: wp.array(dtype=wp.vec3),
    directions: wp.array(dtype=wp.vec3),
    box_min: wp.vec3,
    box_max: wp.vec3,
    eps: float,
    t_near: wp.array(dtype=wp.float32),
    t_far: wp.array(dtype=wp.float32),
    hit: wp.array(dtype=wp.int32),
):
    r = wp.tid()
    o = origins[r]
    d = directions[r]
    sx = slab(o[0], d[0], box_min[0], box_max[0], eps)
    sy = slab(o[1], d[1], box_min[1], box_max[1], eps)
    sz = slab(o[2], d[2], box_min[2], box_max[2], eps)
    lo = wp.max(wp.max(sx[0], sy[0]), sz[0])
    hi = wp.min(wp.min(sx[1], sy[1]), sz[1])
    t_near[r] = lo
    t_far[r] = hi
    hit[r] = wp.where(hi >= wp.max(lo, 0.0), 1, 0)


@wp.func
def cell_index(p: wp.vec3, center: wp.vec3, half: wp.vec3, resolution: int, levels: int) -> int:
    """Flat cell of the finest level containing ``p`` (mirrors ``ref.grid_cell_index``); -1 if outside."""
    q = wp.cw_div(p - center, half)
    m = wp.max(wp.max(wp.abs(q[0]), wp.abs(q[1])), wp.abs(q[2]))
    level = int(0)
    span = float(1.0)
    for _ in range(levels - 1):
        if m > span:
            level += 1
            span = span * 2.0
    if m > span:
        return -1
    res_f = float(resolution)
    ix = wp.clamp(
        int(wp.floor(((p[0] - center[0]) / (half[0] * span) * 0.5 + 0.5) * res_f)), 0, resolution - 1
    )
    iy = wp.clamp(
        int(wp.floor(((p[1] - center[1]) / (half[1] * span) * 0.5 + 0.5) * res_f)), 0, resolution - 1
    )
    iz = wp.clamp(
        int(wp.floor(((p[2] - center[2]) / (half[2] * span) * 0.5 + 0.5) * res_f)), 0, resolution - 1
    )
    return ((level * resolution + ix) * resolution + iy) * resolution + iz


@wp.kernel(enable_backward=False)
def march(
    origins: wp.array(dtype=wp.vec3),
    directions: wp.array(dtype=wp.vec3),
    t_begin: wp.array(dtype=wp.float32),
    t_stop: wp.array(dtype=wp.float32),
    binaries: wp.array(dtype=wp.uint8),
    center: wp.vec3,
    half: wp.vec3,
    resolution: int,
    levels: int,
    step_size: float,
    cone_angle: float,
    count_only: int,
    offsets: wp.array(dtype=wp.int32),
    counts: wp.array(dtype=wp.int32),
    ray_indices: wp.array(dtype=wp.int32),
    t_starts: wp.array(dtype=wp.float32),
    t_ends: wp.array(dtype=wp.float32),
):
    """Two passes: ``count_only = 1`` writes ``counts``; ``0`` writes samples from ``offsets[r]`` on."""
    r = wp.tid()
    o = origins[r]
    d = directions[r]
    t = t_begin[r]
    stop = t_stop[r]
    n = int(0)
    base = int(0)
    if count_only == 0:
        base = offsets[r]
    while t < stop:
        dt = wp.clamp(t * cone_angle, step_size, MAX_CONE_STEP)
        t1 = t + dt
        if t1 > stop:
            break
        mid = 0.5 * (t + t1)
        c = cell_index(o + d * mid, center, half, resolution, levels)
        if c >= 0:  # noqa: SIM102  (Warp may evaluate both operands of `and`: c = -1 must not index)
            if binaries[c] != wp.uint8(0):
                if count_only == 0:
                    ray_indices[base + n] = r
                    t_starts[base + n] = t
                    t_ends[base + n] = t1
                n += 1
        t = t1
    if count_only == 1:
        counts[r] = n


@wp.kernel(enable_backward=False)
def inverse_cdf(
    t_edges: wp.array2d(dtype=wp.float32),
    cdf: wp.array2d(dtype=wp.float32),
    u: wp.array2d(dtype=wp.float32),
    out: wp.array2d(dtype=wp.float32),
):
    """``out[r, k]``: the bin ``b`` with ``cdf[b] <= u < cdf[b+1]`` by binary search, then linear inside it."""
    r, k = wp.tid()
    n_bins = cdf.shape[1] - 1
    x = u[r, k]
    lo = int(0)
    hi = n_bins + 1  # searchsorted(right=True) over cdf[0..n_bins]
    while lo < hi:
        m = (lo + hi) // 2
        if cdf[r, m] <= x:
            lo = m + 1
        else:
            hi = m
    b = wp.clamp(lo - 1, 0, n_bins - 1)
    c0 = cdf[r, b]
    c1 = cdf[r, b + 1]
    frac = wp.clamp((x - c0) / wp.max(c1 - c0, 1.0e-12), 0.0, 1.0)
    out[r, k] = t_edges[r, b] + frac * (t_edges[r, b + 1] - t_edges[r, b])
