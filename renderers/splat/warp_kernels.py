"""Warp kernels of the triangle-splat rasteriser (spec triangle_splats.md sections 4-7).

One source for CPU (LLVM) and CUDA (NVRTC). Imported lazily by ``warp_impl`` (never at ``import recon``); the
module compiles on its first launch and is cached on disk by Warp. All kernels are compiled without Warp's
generated adjoints (``enable_backward=False``): ``render_bwd`` is the hand-written adjoint of ``render_fwd``.

Thread layout of the per-pixel kernels: thread ``tid`` handles pixel ``tid % 64`` of raster tile ``tid // 64``
(8x8 raster tiles, tile-major). On CUDA the threads of one tile read the same list (coherent loads); on the CPU
Warp runs the threads of a launch serially, so the 64 pixels of a tile walk the same list back to back and it stays
in cache. The parameter layout is ``PARAM_*`` of ``types.py``: 19 floats per triangle. ``geom`` holds the first
12 of them (edge lines, 1/phi(s), sigma, o) gathered in sorted-list order, so the hot loop (the inside test that
rejects most candidates) streams through contiguous memory; the rest is read by triangle index only for blended
triangles.
"""

import warp as wp

from recon.renderers.splat.constants import (
    ALPHA_MAX,
    ALPHA_MIN,
    CULL_MARGIN_ABS_PX,
    CULL_MARGIN_REL,
    DIST_FAR,
    DIST_NEAR,
    MEDIAN_T,
    RASTER_TILE,
    T_EARLY_STOP,
)

wp.set_module_options({"enable_backward": False})

TILE_PIXELS = RASTER_TILE * RASTER_TILE
OUT_SIZE = 10  # packed per-pixel outputs: rgb(3), alpha, depth_sum, depth_median, normal(3), distortion
KEY_SHIFT = 4294967296  # 2^32: key = tile_id * 2^32 + bits_u32(zbar)
DIST_SCALE = DIST_FAR / (DIST_FAR - DIST_NEAR)  # 2DGS m = f/(f-n) (1 - n/z)

_TILE = wp.constant(RASTER_TILE)
_TILE_PIXELS = wp.constant(TILE_PIXELS)
_ALPHA_MAX = wp.constant(ALPHA_MAX)
_ALPHA_MIN = wp.constant(ALPHA_MIN)
_T_EARLY_STOP = wp.constant(T_EARLY_STOP)
_MEDIAN_T = wp.constant(MEDIAN_T)
_DIST_NEAR = wp.constant(DIST_NEAR)
_DIST_SCALE = wp.constant(DIST_SCALE)
_KEY_SHIFT = wp.constant(wp.int64(KEY_SHIFT))
_CULL_ABS = wp.constant(wp.float64(CULL_MARGIN_ABS_PX))
_CULL_REL = wp.constant(wp.float64(CULL_MARGIN_REL))


@wp.func
def subtile_outside(lines: wp.array2d(dtype=wp.float64), n: int, sx: int, sy: int) -> bool:
    """Raster tile (sx, sy) entirely outside one edge line of triangle n: the pair is dropped (exact, see the torch
    twin ``binning.subtile_outside`` for why this is conservative). float64, same formula and order as the twin."""
    x_lo = wp.float64(sx * _TILE) + wp.float64(0.5)
    y_lo = wp.float64(sy * _TILE) + wp.float64(0.5)
    x_hi = x_lo + wp.float64(_TILE - 1)
    y_hi = y_lo + wp.float64(_TILE - 1)
    for k in range(3):
        nx = lines[n, 3 * k]
        ny = lines[n, 3 * k + 1]
        d = lines[n, 3 * k + 2]
        xc = x_hi
        if nx > wp.float64(0.0):
            xc = x_lo
        yc = y_hi
        if ny > wp.float64(0.0):
            yc = y_lo
        l_min = nx * xc + ny * yc + d
        margin = _CULL_ABS + _CULL_REL * (wp.abs(d) + x_hi + y_hi)
        if l_min > margin:
            return True
    return False


@wp.func
def _bbox_tile(v: wp.float64, limit: int) -> int:
    # torch twin: floor(v).nan_to_num(0).clamp(min=0).to(int64).minimum(limit)
    f = wp.floor(v)
    if wp.isnan(f) or f < wp.float64(0.0):
        return 0
    if f >= wp.float64(limit):
        return limit
    return int(f)


@wp.kernel
def count_tiles(
    footprint: wp.array2d(dtype=wp.int32),
    bbox: wp.array2d(dtype=wp.float64),
    visible: wp.array(dtype=wp.bool),
    lines: wp.array2d(dtype=wp.float64),
    subtiles: int,
    tiles_x: int,
    tiles_y: int,
    bbox_margin: wp.float64,
    rect: wp.array2d(dtype=wp.int32),
    counts: wp.array(dtype=wp.int64),
):
    """One thread per triangle: its raster-tile rectangle (same as ``binning.raster_rects``, fused here to save
    the torch ops) and the number of its raster tiles that survive the edge culling."""
    n = wp.tid()
    tile = wp.float64(_TILE)
    lo_x = _bbox_tile((wp.ceil(bbox[n, 0] - wp.float64(0.5)) - bbox_margin) / tile, tiles_x)
    lo_y = _bbox_tile((wp.ceil(bbox[n, 1] - wp.float64(0.5)) - bbox_margin) / tile, tiles_y)
    hi_x = wp.min(
        _bbox_tile((wp.floor(bbox[n, 2] - wp.float64(0.5)) + bbox_margin) / tile, tiles_x) + 1, tiles_x
    )
    hi_y = wp.min(
        _bbox_tile((wp.floor(bbox[n, 3] - wp.float64(0.5)) + bbox_margin) / tile, tiles_y) + 1, tiles_y
    )
    x0 = wp.max(footprint[n, 0] * subtiles, lo_x)
    y0 = wp.max(footprint[n, 1] * subtiles, lo_y)
    x1 = wp.min(wp.min(footprint[n, 2] * subtiles, hi_x), tiles_x)
    y1 = wp.min(wp.min(footprint[n, 3] * subtiles, hi_y), tiles_y)
    if x1 <= x0 or y1 <= y0 or not visible[n]:
        x0 = 0
        y0 = 0
        x1 = 0
        y1 = 0
    rect[n, 0] = x0
    rect[n, 1] = y0
    rect[n, 2] = x1
    rect[n, 3] = y1
    c = wp.int64(0)
    for ty in range(y0, y1):
        for tx in range(x0, x1):
            if not subtile_outside(lines, n, tx, ty):
                c = c + wp.int64(1)
    counts[n] = c


@wp.kernel
def emit_keys(
    rect: wp.array2d(dtype=wp.int32),
    lines: wp.array2d(dtype=wp.float64),
    offsets: wp.array(dtype=wp.int64),
    depth_bits: wp.array(dtype=wp.int64),
    tiles_x: int,
    keys: wp.array(dtype=wp.int64),
    values: wp.array(dtype=wp.int32),
):
    """One thread per triangle: write a (tile, depth) key for every tile of its rectangle kept by the culling."""
    n = wp.tid()
    x0 = rect[n, 0]
    y0 = rect[n, 1]
    x1 = rect[n, 2]
    y1 = rect[n, 3]
    off = offsets[n]
    for ty in range(y0, y1):
        for tx in range(x0, x1):
            if subtile_outside(lines, n, tx, ty):
                continue
            keys[off] = wp.int64(ty * tiles_x + tx) * _KEY_SHIFT + depth_bits[n]
            values[off] = n
            off = off + wp.int64(1)


@wp.kernel
def tile_ranges(keys: wp.array(dtype=wp.int64), count: int, ranges: wp.array2d(dtype=wp.int32)):
    """One thread per sorted key: mark where each tile's run starts and ends."""
    i = wp.tid()
    tile = wp.int32(keys[i] // _KEY_SHIFT)
    if i == 0:
        ranges[tile, 0] = 0
    elif wp.int32(keys[i - 1] // _KEY_SHIFT) != tile:
        ranges[tile, 0] = i
    if i == count - 1:
        ranges[tile, 1] = count
    elif wp.int32(keys[i + 1] // _KEY_SHIFT) != tile:
        ranges[tile, 1] = i + 1


@wp.kernel
def gather_geometry(
    params: wp.array2d(dtype=wp.float32),
    point_list: wp.array(dtype=wp.int32),
    geom: wp.array2d(dtype=wp.float32),
):
    """geom[i] = params[point_list[i], :12]: window parameters in sorted-list order."""
    i = wp.tid()
    j = point_list[i]
    for k in range(12):
        geom[i, k] = params[j, k]


@wp.func
def thread_pixel(tid: int, tiles_x: int, row_start: int, row_step: int):
    """(px, py, tile) of raster thread ``tid``: threads walk tile rows row_start, row_start + row_step, ...,
    each tile's 16x16 pixels consecutively (so a warp/CPU batch stays inside one tile list)."""
    row_pixels = tiles_x * _TILE_PIXELS
    row = tid // row_pixels
    rem = tid - row * row_pixels
    tx = rem // _TILE_PIXELS
    local = rem - tx * _TILE_PIXELS
    ty = row_start + row * row_step
    return wp.vec3i(tx * _TILE + local % _TILE, ty * _TILE + local // _TILE, ty * tiles_x + tx)


@wp.kernel
def render_fwd(
    params: wp.array2d(dtype=wp.float32),
    geom: wp.array2d(dtype=wp.float32),
    point_list: wp.array(dtype=wp.int32),
    ranges: wp.array2d(dtype=wp.int32),
    background: wp.array(dtype=wp.float32),
    width: int,
    height: int,
    tiles_x: int,
    row_start: int,
    row_step: int,
    compute_distortion: int,
    out: wp.array2d(dtype=wp.float32),
    t_final: wp.array(dtype=wp.float32),
    last_contrib: wp.array(dtype=wp.int32),
    median_contrib: wp.array(dtype=wp.int32),
    moments: wp.array2d(dtype=wp.float32),
    max_blending: wp.array(dtype=wp.float32),
):
    """Front-to-back compositing of one pixel over its tile list (spec 4)."""
    # tile rows row_start, row_start + row_step, ... (one launch per CPU worker; row_step = 1 on CUDA)
    where = thread_pixel(wp.tid(), tiles_x, row_start, row_step)
    px = where[0]
    py = where[1]
    tile = where[2]
    if px >= width or py >= height:
        return
    pix = py * width + px
    fx = float(px) + 0.5  # pixel centres at +0.5
    fy = float(py) + 0.5
    start = ranges[tile, 0]
    end = ranges[tile, 1]

    T = wp.float32(1.0)
    cr = wp.float32(0.0)
    cg = wp.float32(0.0)
    cb = wp.float32(0.0)
    nx = wp.float32(0.0)
    ny = wp.float32(0.0)
    nz = wp.float32(0.0)
    depth = wp.float32(0.0)
    median = wp.float32(0.0)
    median_i = wp.int32(-1)
    m1 = wp.float32(0.0)
    m2 = wp.float32(0.0)
    dist = wp.float32(0.0)
    last = wp.int32(start)
    for i in range(start, end):
        j = point_list[i]
        # Branch-free inside test: one well-predicted branch (most candidates are outside) instead of three
        # unpredictable ones; phi(p) = max_k L_k(p) > 0 means outside (strict test of spec 4).
        l0 = geom[i, 0] * fx + geom[i, 1] * fy + geom[i, 2]
        l1 = geom[i, 3] * fx + geom[i, 4] * fy + geom[i, 5]
        l2 = geom[i, 6] * fx + geom[i, 7] * fy + geom[i, 8]
        phi = wp.max(wp.max(l0, l1), l2)
        if phi > 0.0:
            continue
        r = phi * geom[i, 9]
        if r <= 0.0:
            continue
        alpha = wp.min(_ALPHA_MAX, geom[i, 11] * wp.pow(r, geom[i, 10]))
        if alpha < _ALPHA_MIN:
            continue
        test_t = T * (1.0 - alpha)
        if test_t < _T_EARLY_STOP:
            break
        w = alpha * T
        wp.atomic_max(max_blending, j, w)
        z = params[j, 12]
        if compute_distortion != 0:
            m = _DIST_SCALE * (1.0 - _DIST_NEAR / z)
            dist += w * (m * m * (1.0 - T) + m2 - 2.0 * m * m1)
            m1 += w * m
            m2 += w * m * m
        depth += w * z
        if T > _MEDIAN_T:
            median = z
            median_i = i
        cr += w * params[j, 13]
        cg += w * params[j, 14]
        cb += w * params[j, 15]
        nx += w * params[j, 16]
        ny += w * params[j, 17]
        nz += w * params[j, 18]
        T = test_t
        last = i + 1
    out[pix, 0] = cr + T * background[0]
    out[pix, 1] = cg + T * background[1]
    out[pix, 2] = cb + T * background[2]
    out[pix, 3] = 1.0 - T
    out[pix, 4] = depth
    out[pix, 5] = median
    out[pix, 6] = nx
    out[pix, 7] = ny
    out[pix, 8] = nz
    out[pix, 9] = dist
    t_final[pix] = T
    last_contrib[pix] = last
    median_contrib[pix] = median_i
    moments[pix, 0] = m1
    moments[pix, 1] = m2


@wp.kernel
def render_bwd(
    params: wp.array2d(dtype=wp.float32),
    geom: wp.array2d(dtype=wp.float32),
    point_list: wp.array(dtype=wp.int32),
    ranges: wp.array2d(dtype=wp.int32),
    background: wp.array(dtype=wp.float32),
    width: int,
    height: int,
    tiles_x: int,
    row_start: int,
    row_step: int,
    compute_distortion: int,
    grad_out: wp.array2d(dtype=wp.float32),
    t_final: wp.array(dtype=wp.float32),
    last_contrib: wp.array(dtype=wp.int32),
    median_contrib: wp.array(dtype=wp.int32),
    moments: wp.array2d(dtype=wp.float32),
    grad_params: wp.array2d(dtype=wp.float32),
):
    """Adjoint of ``render_fwd``: walk the blended triangles back to front (spec 7), atomics into grad_params."""
    # tile rows row_start, row_start + row_step, ... (one launch per CPU worker; row_step = 1 on CUDA)
    where = thread_pixel(wp.tid(), tiles_x, row_start, row_step)
    px = where[0]
    py = where[1]
    tile = where[2]
    if px >= width or py >= height:
        return
    pix = py * width + px
    fx = float(px) + 0.5
    fy = float(py) + 0.5
    start = ranges[tile, 0]
    last = last_contrib[pix]
    median_i = median_contrib[pix]

    g_r = grad_out[pix, 0]
    g_g = grad_out[pix, 1]
    g_b = grad_out[pix, 2]
    g_a = grad_out[pix, 3]
    g_d = grad_out[pix, 4]
    g_med = grad_out[pix, 5]
    g_nx = grad_out[pix, 6]
    g_ny = grad_out[pix, 7]
    g_nz = grad_out[pix, 8]
    g_dist = grad_out[pix, 9]

    t_fin = t_final[pix]
    # d(T_final)/d(alpha_i) = -T_final / (1 - alpha_i): enters alpha (1 - T) and the background term of rgb.
    g_tfin = g_a - (g_r * background[0] + g_g * background[1] + g_b * background[2])
    a_fin = 1.0 - t_fin
    m1_fin = moments[pix, 0]
    m2_fin = moments[pix, 1]

    T = t_fin
    # "behind" accumulators B <- alpha v + (1 - alpha) B of the blended quantities, dotted with their gradients
    b_c = wp.float32(0.0)  # sum over rgb of B_c * g_C
    b_z = wp.float32(0.0)
    b_n = wp.float32(0.0)
    b_dist = wp.float32(0.0)
    i = last
    while i > start:
        i = i - 1
        j = point_list[i]
        # Branch-free inside test: one well-predicted branch (most candidates are outside) instead of three
        # unpredictable ones; phi(p) = max_k L_k(p) > 0 means outside (strict test of spec 4).
        l0 = geom[i, 0] * fx + geom[i, 1] * fy + geom[i, 2]
        l1 = geom[i, 3] * fx + geom[i, 4] * fy + geom[i, 5]
        l2 = geom[i, 6] * fx + geom[i, 7] * fy + geom[i, 8]
        phi = wp.max(wp.max(l0, l1), l2)
        if phi > 0.0:
            continue
        inv_phi_s = geom[i, 9]
        r = phi * inv_phi_s
        if r <= 0.0:
            continue
        sigma = geom[i, 10]
        opacity = geom[i, 11]
        window = wp.pow(r, sigma)
        alpha = wp.min(_ALPHA_MAX, opacity * window)
        if alpha < _ALPHA_MIN:
            continue
        one_minus = 1.0 - alpha
        T = T / one_minus  # T_i, transmittance before this triangle (alpha <= 0.99 keeps this safe)
        w = alpha * T
        z = params[j, 12]
        c_dot = params[j, 13] * g_r + params[j, 14] * g_g + params[j, 15] * g_b
        n_dot = params[j, 16] * g_nx + params[j, 17] * g_ny + params[j, 18] * g_nz

        g_alpha = T * ((c_dot - b_c) + (z - b_z) * g_d + (n_dot - b_n)) + t_fin / one_minus * g_tfin
        g_z = w * g_d
        if i == median_i:
            g_z += g_med
        dist_v = wp.float32(0.0)
        if compute_distortion != 0:
            m = _DIST_SCALE * (1.0 - _DIST_NEAR / z)
            # d dist / d w_i with final sums (the w_i terms cancel), pushed to alpha through the B recursion.
            dist_v = g_dist * (m * m * a_fin + m2_fin - 2.0 * m * m1_fin)
            g_alpha += T * (dist_v - b_dist)
            g_m = 2.0 * g_dist * w * (m * a_fin - m1_fin)
            g_z += g_m * _DIST_SCALE * _DIST_NEAR / (z * z)
            b_dist = alpha * dist_v + one_minus * b_dist
        b_c = alpha * c_dot + one_minus * b_c
        b_z = alpha * z + one_minus * b_z
        b_n = alpha * n_dot + one_minus * b_n

        # alpha = min(0.99, o I): straight through the clamp (spec 7).
        g_window = g_alpha * opacity
        g_r_ratio = g_window * sigma * window / r
        g_phi = g_r_ratio * inv_phi_s
        # phi = max_k L_k: the gradient goes to the arg-max edge.
        k = wp.int32(0)
        if l1 >= l0 and l1 >= l2:
            k = wp.int32(1)
        elif l2 >= l0 and l2 >= l1:
            k = wp.int32(2)
        wp.atomic_add(grad_params, j, 3 * k + 0, g_phi * fx)
        wp.atomic_add(grad_params, j, 3 * k + 1, g_phi * fy)
        wp.atomic_add(grad_params, j, 3 * k + 2, g_phi)
        wp.atomic_add(grad_params, j, 9, g_r_ratio * phi)
        wp.atomic_add(grad_params, j, 10, g_window * window * wp.log(r))
        wp.atomic_add(grad_params, j, 11, g_alpha * window)
        wp.atomic_add(grad_params, j, 12, g_z)
        wp.atomic_add(grad_params, j, 13, w * g_r)
        wp.atomic_add(grad_params, j, 14, w * g_g)
        wp.atomic_add(grad_params, j, 15, w * g_b)
        wp.atomic_add(grad_params, j, 16, w * g_nx)
        wp.atomic_add(grad_params, j, 17, w * g_ny)
        wp.atomic_add(grad_params, j, 18, w * g_nz)
