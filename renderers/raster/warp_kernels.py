"""Warp kernels of the mesh rasterizer: tile binning, per-pixel top-K visibility, attribute forward and backward.

One source for CPU (LLVM) and CUDA (NVRTC), imported lazily by ``warp_impl`` (never at ``import recon``), compiled
on its first launch and cached on disk by Warp. No generated adjoints (``enable_backward=False``):
``attributes_bwd`` is the hand-written adjoint of ``attributes_fwd``. The arithmetic follows ``ref.py`` formula
for formula (same operand order) so that float32 results agree to rounding.

Layouts (``cf = c * F + f`` indexes a (camera, face) pair): ``poly`` (C F, 8) float32 = 4 polygon corners
``(u, v)``; ``plane`` (C F, 4) = ``(N, D)``; ``rays`` (C, 5) = ``(fx, fy, cx, cy, skew)``; ``v_cam`` (C V) vec3;
per-pixel outputs are row-major ``((c * H + y) * W + x) * K + k``.
"""

import warp as wp

wp.set_module_options({"enable_backward": False})

# Tile side in pixels: the 16x16 tiles of the spec halved (measured on the 2-core CPU: visibility 20% faster at
# 10k faces, 256^2; fewer faces per pixel to reject for a few more (tile, face) pairs).
TILE = 8
BBOX_MARGIN_PX = (
    0.01  # widens each face's bounding box so rounding never drops a pixel the inside test accepts
)

_TILE = wp.constant(TILE)
_MARGIN = wp.constant(BBOX_MARGIN_PX)
_EMPTY_DEPTH = wp.constant(1.0e30)  # depth of empty list slots: beyond any face, so they sort last


@wp.func
def pixel_ray(rays: wp.array2d(dtype=wp.float32), c: int, u: float, v: float) -> wp.vec3:
    """``d = K^-1 (u, v, 1)``, as ``ref.pixel_rays``."""
    y = (v - rays[c, 3]) / rays[c, 1]
    x = (u - rays[c, 2] - rays[c, 4] * y) / rays[c, 0]
    return wp.vec3(x, y, 1.0)


@wp.func
def corner(poly: wp.array2d(dtype=wp.float32), cf: int, i: int) -> wp.vec2:
    return wp.vec2(poly[cf, 2 * i], poly[cf, 2 * i + 1])


@wp.func
def inside(poly: wp.array2d(dtype=wp.float32), cf: int, p: wp.vec2) -> bool:
    """Inclusive point-in-convex-polygon test for either winding (``ref.polygon_inside``)."""
    n_pos = wp.int32(0)
    n_neg = wp.int32(0)
    for i in range(4):
        q0 = corner(poly, cf, i)
        e = corner(poly, cf, (i + 1) % 4) - q0
        rel = p - q0
        edge = e[0] * rel[1] - e[1] * rel[0]
        if edge > 0.0:
            n_pos += 1
        if edge < 0.0:
            n_neg += 1
    return n_pos == 0 or n_neg == 0


@wp.func
def edge_param(q0: wp.vec2, e: wp.vec2, p: wp.vec2) -> float:
    """Clamped parameter of the point of segment ``q0 + t e`` closest to ``p`` (0 for zero-length edges)."""
    length_sq = e[0] * e[0] + e[1] * e[1]
    t = wp.float32(0.0)
    if length_sq > 0.0:
        rel = p - q0
        t = wp.clamp((rel[0] * e[0] + rel[1] * e[1]) / length_sq, 0.0, 1.0)
    return t


@wp.func
def nearest_edge(poly: wp.array2d(dtype=wp.float32), cf: int, p: wp.vec2) -> wp.vec3:
    """``(squared distance, edge index, t)`` of the polygon edge nearest to ``p`` (first one on ties)."""
    best = wp.float32(1.0e30)
    best_i = wp.int32(0)
    best_t = wp.float32(0.0)
    for i in range(4):
        q0 = corner(poly, cf, i)
        e = corner(poly, cf, (i + 1) % 4) - q0
        t = edge_param(q0, e, p)
        off = q0 + t * e - p
        dist_sq = off[0] * off[0] + off[1] * off[1]
        if dist_sq < best:
            best = dist_sq
            best_i = i
            best_t = t
    return wp.vec3(best, float(best_i), best_t)


@wp.func
def covers(
    poly: wp.array2d(dtype=wp.float32), cf: int, p: wp.vec2, orientation: float, blur_sq: float
) -> bool:
    """``inside(p) or nearest_edge(p) <= blur_sq`` with early exits: a pixel beyond ``sqrt(blur_sq)`` of one edge
    line on its outer side (``orientation`` is the sign of the polygon's area) is out of a convex polygon."""
    outside_edges = wp.int32(0)
    for i in range(4):
        q0 = corner(poly, cf, i)
        e = corner(poly, cf, (i + 1) % 4) - q0
        rel = p - q0
        edge = orientation * (e[0] * rel[1] - e[1] * rel[0])
        if edge < 0.0:
            if edge * edge > blur_sq * (e[0] * e[0] + e[1] * e[1]):
                return False
            outside_edges += 1
    if outside_edges == 0:
        return True
    if blur_sq == 0.0:
        return False
    return nearest_edge(poly, cf, p)[0] <= blur_sq


@wp.kernel
def face_tiles(
    poly: wp.array2d(dtype=wp.float32),
    valid: wp.array(dtype=wp.int32),
    num_faces: int,
    radius: float,
    width: int,
    height: int,
    tiles_x: int,
    tiles_y: int,
    rect: wp.array2d(dtype=wp.int32),
    box: wp.array2d(dtype=wp.float32),
    tile_count: wp.array(dtype=wp.int32),
):
    """Tile rectangle of every (camera, face) from its blur-expanded bounding box (kept in ``box`` as
    ``(u_min, u_max, v_min, v_max, orientation)`` for the per-pixel early rejection); counts faces per tile."""
    cf = wp.tid()
    box[cf, 4] = 1.0
    box[cf, 0] = 1.0
    box[cf, 1] = -1.0
    box[cf, 2] = 1.0
    box[cf, 3] = -1.0
    rect[cf, 0] = 0
    rect[cf, 1] = -1
    rect[cf, 2] = 0
    rect[cf, 3] = -1
    if valid[cf] == 0:
        return
    lo = corner(poly, cf, 0)
    hi = lo
    for i in range(1, 4):
        lo = wp.min(lo, corner(poly, cf, i))
        hi = wp.max(hi, corner(poly, cf, i))
    pad = radius + _MARGIN
    area = wp.float32(0.0)
    for i in range(4):
        a = corner(poly, cf, i)
        b = corner(poly, cf, (i + 1) % 4)
        area += a[0] * b[1] - a[1] * b[0]
    if area < 0.0:
        box[cf, 4] = -1.0
    box[cf, 0] = lo[0] - pad
    box[cf, 1] = hi[0] + pad
    box[cf, 2] = lo[1] - pad
    box[cf, 3] = hi[1] + pad
    # Pixel x is covered by [lo, hi] when lo <= x + 0.5 <= hi.
    x0 = wp.max(int(wp.ceil(lo[0] - pad - 0.5)), 0)
    x1 = wp.min(int(wp.floor(hi[0] + pad - 0.5)), width - 1)
    y0 = wp.max(int(wp.ceil(lo[1] - pad - 0.5)), 0)
    y1 = wp.min(int(wp.floor(hi[1] + pad - 0.5)), height - 1)
    if x0 > x1 or y0 > y1:
        return
    rect[cf, 0] = x0 / _TILE
    rect[cf, 1] = x1 / _TILE
    rect[cf, 2] = y0 / _TILE
    rect[cf, 3] = y1 / _TILE
    base = (cf / num_faces) * tiles_x * tiles_y
    for ty in range(y0 / _TILE, y1 / _TILE + 1):
        for tx in range(x0 / _TILE, x1 / _TILE + 1):
            wp.atomic_add(tile_count, base + ty * tiles_x + tx, 1)


@wp.kernel
def fill_tiles(
    rect: wp.array2d(dtype=wp.int32),
    num_faces: int,
    tiles_x: int,
    tiles_y: int,
    box: wp.array2d(dtype=wp.float32),
    tile_start: wp.array(dtype=wp.int32),
    tile_fill: wp.array(dtype=wp.int32),
    tile_faces: wp.array(dtype=wp.int32),
    tile_boxes: wp.array(dtype=wp.vec4),
):
    """Write every (camera, face) into the lists of its tiles (order within a tile does not matter: the top-K
    insertion compares (depth, face index))."""
    cf = wp.tid()
    base = (cf / num_faces) * tiles_x * tiles_y
    for ty in range(rect[cf, 2], rect[cf, 3] + 1):
        for tx in range(rect[cf, 0], rect[cf, 1] + 1):
            tile = base + ty * tiles_x + tx
            slot = wp.atomic_add(tile_fill, tile, 1)
            tile_faces[tile_start[tile] + slot] = cf % num_faces
            tile_boxes[tile_start[tile] + slot] = wp.vec4(box[cf, 0], box[cf, 1], box[cf, 2], box[cf, 3])


@wp.func
def insert_top_k(
    face_out: wp.array(dtype=wp.int64),
    depth_out: wp.array(dtype=wp.float32),
    base: int,
    layers: int,
    f: int,
    z: float,
):
    """Insert (z, f) into the list at ``base``, sorted by depth then face index; empty slots hold (EMPTY_DEPTH,
    -1) and so sort last. The caller has checked that (z, f) beats the last slot."""
    j = layers - 1
    while j > 0 and (
        z < depth_out[base + j - 1] or (z == depth_out[base + j - 1] and wp.int64(f) < face_out[base + j - 1])
    ):
        depth_out[base + j] = depth_out[base + j - 1]
        face_out[base + j] = face_out[base + j - 1]
        j -= 1
    depth_out[base + j] = z
    face_out[base + j] = wp.int64(f)


@wp.kernel
def visibility(
    poly: wp.array2d(dtype=wp.float32),
    plane: wp.array2d(dtype=wp.float32),
    box: wp.array2d(dtype=wp.float32),
    rays: wp.array2d(dtype=wp.float32),
    tile_start: wp.array(dtype=wp.int32),
    tile_count: wp.array(dtype=wp.int32),
    tile_faces: wp.array(dtype=wp.int32),
    tile_boxes: wp.array(dtype=wp.vec4),
    num_faces: int,
    blur_sq: float,
    width: int,
    height: int,
    tiles_x: int,
    tiles_y: int,
    layers: int,
    tile_offset: int,
    face_out: wp.array(dtype=wp.int64),
    depth_out: wp.array(dtype=wp.float32),
):
    """Per tile row (TILE pixels): the ``layers`` nearest candidate faces of every pixel (``ref.visibility``).

    One thread walks its tile's list once for a whole row: the face's box is tested against the row and clipped to
    the pixels it spans, so most faces are rejected once per row instead of once per pixel.
    """
    tid = wp.tid()
    tile = tile_offset + tid / _TILE
    c = tile / (tiles_x * tiles_y)
    in_cam = tile % (tiles_x * tiles_y)
    x0 = (in_cam % tiles_x) * _TILE
    x1 = wp.min(x0 + _TILE, width) - 1
    y = (in_cam / tiles_x) * _TILE + tid % _TILE
    if y >= height:
        return
    row = (c * height + y) * width
    for x in range(x0, x1 + 1):
        for k in range(layers):
            face_out[(row + x) * layers + k] = wp.int64(-1)
            depth_out[(row + x) * layers + k] = _EMPTY_DEPTH
    v = float(y) + 0.5
    start = tile_start[tile]
    for i in range(start, start + tile_count[tile]):
        # Cheapest rejections first: the (blur-expanded) bounding box against the row, stored with the list so
        # that this loop streams through contiguous memory; then per pixel the depth against the list's last
        # slot; the inside and distance tests run only for the faces that survive both.
        b = tile_boxes[i]
        if v < b[2] or v > b[3]:
            continue
        xa = wp.max(x0, int(wp.ceil(b[0] - 0.5)))
        xb = wp.min(x1, int(wp.floor(b[1] - 0.5)))
        if xa > xb:
            continue
        f = tile_faces[i]
        cf = c * num_faces + f
        normal = wp.vec3(plane[cf, 0], plane[cf, 1], plane[cf, 2])
        for x in range(xa, xb + 1):
            p = wp.vec2(float(x) + 0.5, v)
            s = wp.dot(pixel_ray(rays, c, p[0], p[1]), normal)
            if s == 0.0:
                continue
            z = plane[cf, 3] / s
            base = (row + x) * layers
            last_z = depth_out[base + layers - 1]
            if z <= 0.0 or z > last_z or (z == last_z and wp.int64(f) > face_out[base + layers - 1]):
                continue
            if covers(poly, cf, p, box[cf, 4], blur_sq):
                insert_top_k(face_out, depth_out, base, layers, f, z)


@wp.func
def triple(a: wp.vec3, b: wp.vec3, c: wp.vec3) -> float:
    return wp.dot(a, wp.cross(b, c))


@wp.kernel
def attributes_fwd(
    v_cam: wp.array(dtype=wp.vec3),
    faces: wp.array2d(dtype=wp.int32),
    poly: wp.array2d(dtype=wp.float32),
    rays: wp.array2d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int64),
    num_vertices: int,
    num_faces: int,
    width: int,
    height: int,
    layers: int,
    slot_offset: int,
    pad_dist: float,
    bary: wp.array2d(dtype=wp.float32),
    depth: wp.array(dtype=wp.float32),
    dists: wp.array(dtype=wp.float32),
):
    """Barycentrics, camera-z and signed squared distance of every filled slot (``ref.attributes``)."""
    slot = slot_offset + wp.tid()
    f = int(pix_to_face[slot])
    bary[slot, 0] = 0.0
    bary[slot, 1] = 0.0
    bary[slot, 2] = 0.0
    depth[slot] = 0.0
    dists[slot] = pad_dist
    if f < 0:
        return
    pix = slot / layers
    c = pix / (width * height)
    x = pix % width
    y = (pix / width) % height
    p = wp.vec2(float(x) + 0.5, float(y) + 0.5)
    d = pixel_ray(rays, c, p[0], p[1])
    v0 = v_cam[c * num_vertices + faces[f, 0]]
    v1 = v_cam[c * num_vertices + faces[f, 1]]
    v2 = v_cam[c * num_vertices + faces[f, 2]]
    n0 = wp.dot(d, wp.cross(v1, v2))
    n1 = wp.dot(d, wp.cross(v2, v0))
    n2 = wp.dot(d, wp.cross(v0, v1))
    s = n0 + n1 + n2
    if s == 0.0:
        s = 1.0
    bary[slot, 0] = n0 / s
    bary[slot, 1] = n1 / s
    bary[slot, 2] = n2 / s
    depth[slot] = triple(v0, v1, v2) / s
    cf = c * num_faces + f
    near = nearest_edge(poly, cf, p)
    if inside(poly, cf, p):
        dists[slot] = -near[0]
    else:
        dists[slot] = near[0]


@wp.kernel
def attributes_bwd(
    v_cam: wp.array(dtype=wp.vec3),
    faces: wp.array2d(dtype=wp.int32),
    poly: wp.array2d(dtype=wp.float32),
    rays: wp.array2d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int64),
    num_vertices: int,
    num_faces: int,
    width: int,
    height: int,
    layers: int,
    slot_offset: int,
    grad_bary: wp.array2d(dtype=wp.float32),
    grad_depth: wp.array(dtype=wp.float32),
    grad_dists: wp.array(dtype=wp.float32),
    grad_v_cam: wp.array(dtype=wp.vec3),
    grad_poly: wp.array2d(dtype=wp.float32),
):
    """Adjoint of ``attributes_fwd``: accumulates (atomics) into the camera-frame vertices and polygon corners.

    With ``n_i`` the triple products, ``s = sum n_i`` and ``D = [v0, v1, v2]``:
    ``dL/dn_j = gb_j / s - (gb . n) / s^2 - gz D / s^2``, ``dL/dD = gz / s``, and the gradient of a triple product
    ``[a, b, c]`` is ``(b x c, c x a, a x b)``. For ``dists`` only the nearest edge ``q0 -> q1`` with closest
    point ``q0 + t (q1 - q0)`` matters: ``d|p - c|^2/dq0 = 2 (1 - t)(c - p)`` and ``d/dq1 = 2 t (c - p)`` (the
    derivative through ``t`` vanishes: t is optimal, or clamped and locally constant).
    """
    slot = slot_offset + wp.tid()
    f = int(pix_to_face[slot])
    if f < 0:
        return
    pix = slot / layers
    c = pix / (width * height)
    x = pix % width
    y = (pix / width) % height
    p = wp.vec2(float(x) + 0.5, float(y) + 0.5)
    d = pixel_ray(rays, c, p[0], p[1])
    i0 = c * num_vertices + faces[f, 0]
    i1 = c * num_vertices + faces[f, 1]
    i2 = c * num_vertices + faces[f, 2]
    v0 = v_cam[i0]
    v1 = v_cam[i1]
    v2 = v_cam[i2]
    n = wp.vec3(wp.dot(d, wp.cross(v1, v2)), wp.dot(d, wp.cross(v2, v0)), wp.dot(d, wp.cross(v0, v1)))
    s = n[0] + n[1] + n[2]
    if s == 0.0:
        s = 1.0
    gb = wp.vec3(grad_bary[slot, 0], grad_bary[slot, 1], grad_bary[slot, 2])
    gz = grad_depth[slot]
    big_d = triple(v0, v1, v2)
    common = (wp.dot(gb, n) + gz * big_d) / (s * s)
    gn = gb / s - wp.vec3(common, common, common)
    g_big_d = gz / s
    g0 = gn[1] * wp.cross(d, v2) + gn[2] * wp.cross(v1, d) + g_big_d * wp.cross(v1, v2)
    g1 = gn[0] * wp.cross(v2, d) + gn[2] * wp.cross(d, v0) + g_big_d * wp.cross(v2, v0)
    g2 = gn[0] * wp.cross(d, v1) + gn[1] * wp.cross(v0, d) + g_big_d * wp.cross(v0, v1)
    wp.atomic_add(grad_v_cam, i0, g0)
    wp.atomic_add(grad_v_cam, i1, g1)
    wp.atomic_add(grad_v_cam, i2, g2)
    cf = c * num_faces + f
    gd = grad_dists[slot]
    if gd != 0.0:
        near = nearest_edge(poly, cf, p)
        if inside(poly, cf, p):
            gd = -gd
        i = int(near[1])
        j = (i + 1) % 4
        t = near[2]
        q0 = corner(poly, cf, i)
        off = q0 + t * (corner(poly, cf, j) - q0) - p
        wp.atomic_add(grad_poly, cf, 2 * i, 2.0 * (1.0 - t) * gd * off[0])
        wp.atomic_add(grad_poly, cf, 2 * i + 1, 2.0 * (1.0 - t) * gd * off[1])
        wp.atomic_add(grad_poly, cf, 2 * j, 2.0 * t * gd * off[0])
        wp.atomic_add(grad_poly, cf, 2 * j + 1, 2.0 * t * gd * off[1])
