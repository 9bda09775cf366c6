"""Warp kernels of the mesh shading ops: interpolation, bilinear texture lookup, layered compositing, antialiasing.

One source for CPU (LLVM) and CUDA (NVRTC), imported lazily by ``shading_warp_impl`` (never at ``import recon``).
Compiled without Warp's generated adjoints: every ``*_bwd`` kernel is the hand-written adjoint of its ``*_fwd``
twin, and tests compare both with the torch reference (``shading_ref.py``), whose formulas and operation order
these kernels follow so that float32 results agree to a few ulps.

Launch layout: thread ``wp.tid() + offset`` handles one slot (or pixel), so that the CPU glue can split a launch
into ranges run by concurrent launches (Warp runs one CPU launch on one thread). Layouts: slots are flattened to ``S = C*H*W*K`` (interpolate, texture) or pixels to ``P = C*H*W`` with ``K`` slots
each (composite); face indices are int32. Scatter-adds into per-face or per-texel buffers use ``wp.atomic_add``.
"""

import warp as wp

wp.set_module_options({"enable_backward": False})

AA_EPS = 0.0625  # keep equal to shading_ref.AA_EPS (nvdiffrast's 1/16 px tolerance)
_AA_EPS = wp.constant(AA_EPS)
_NEG_BIG = wp.constant(-3.0e38)  # "no crossing" rank below any real crossing position


# ---------------------------------------------------------------------------------------------------------------
# interpolate
@wp.kernel
def interpolate_fwd(
    offset: int,
    corners: wp.array3d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int32),
    bary: wp.array2d(dtype=wp.float32),
    out: wp.array2d(dtype=wp.float32),
):
    s = wp.tid() + offset
    f = pix_to_face[s]
    if f < 0:
        return
    b0 = bary[s, 0]
    b1 = bary[s, 1]
    b2 = bary[s, 2]
    for d in range(out.shape[1]):
        out[s, d] = b0 * corners[f, 0, d] + b1 * corners[f, 1, d] + b2 * corners[f, 2, d]


@wp.kernel
def interpolate_bwd(
    offset: int,
    corners: wp.array3d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int32),
    bary: wp.array2d(dtype=wp.float32),
    grad_out: wp.array2d(dtype=wp.float32),
    need_corners: int,
    grad_corners: wp.array3d(dtype=wp.float32),
    grad_bary: wp.array2d(dtype=wp.float32),
):
    s = wp.tid() + offset
    f = pix_to_face[s]
    if f < 0:
        return
    b0 = bary[s, 0]
    b1 = bary[s, 1]
    b2 = bary[s, 2]
    g0 = wp.float32(0.0)
    g1 = wp.float32(0.0)
    g2 = wp.float32(0.0)
    for d in range(grad_out.shape[1]):
        g = grad_out[s, d]
        g0 += g * corners[f, 0, d]
        g1 += g * corners[f, 1, d]
        g2 += g * corners[f, 2, d]
        if need_corners != 0:
            wp.atomic_add(grad_corners, f, 0, d, b0 * g)
            wp.atomic_add(grad_corners, f, 1, d, b1 * g)
            wp.atomic_add(grad_corners, f, 2, d, b2 * g)
    grad_bary[s, 0] = g0
    grad_bary[s, 1] = g1
    grad_bary[s, 2] = g2


# ---------------------------------------------------------------------------------------------------------------
# sample_texture
@wp.func
def texel_axis(coord: float, size: int, wrap: int) -> wp.vec4:
    """(i0, i1, frac, d x / d coord) along one axis; the torch twin is ``shading_ref._texel_coords``."""
    if wrap != 0:
        x = coord * float(size)
        x0f = wp.floor(x)
        i0 = int(x0f) % size
        if i0 < 0:
            i0 += size
        i1 = (i0 + 1) % size
        return wp.vec4(float(i0), float(i1), x - x0f, float(size))
    hi = float(size - 1)
    x = coord * hi
    scale = hi
    # torch.clamp passes the gradient on [lo, hi] inclusive: zero it only strictly outside.
    if x < 0.0:
        x = 0.0
        scale = 0.0
    if x > hi:
        x = hi
        scale = 0.0
    i0 = wp.min(wp.max(int(wp.floor(x)), 0), wp.max(size - 2, 0))
    i1 = wp.min(i0 + 1, size - 1)
    return wp.vec4(float(i0), float(i1), x - float(i0), scale)


@wp.kernel
def sample_fwd(
    offset: int,
    textures: wp.array4d(dtype=wp.float32),
    uv: wp.array2d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int32),
    face_to_texture: wp.array(dtype=wp.int32),
    wrap_u: int,
    out: wp.array2d(dtype=wp.float32),
):
    s = wp.tid() + offset
    f = pix_to_face[s]
    if f < 0:
        return
    t = face_to_texture[f]
    ax = texel_axis(uv[s, 0], textures.shape[2], wrap_u)
    ay = texel_axis(uv[s, 1], textures.shape[1], 0)
    x0 = int(ax[0])
    x1 = int(ax[1])
    y0 = int(ay[0])
    y1 = int(ay[1])
    fx = ax[2]
    fy = ay[2]
    for d in range(out.shape[1]):
        top = textures[t, y0, x0, d] * (1.0 - fx) + textures[t, y0, x1, d] * fx
        bottom = textures[t, y1, x0, d] * (1.0 - fx) + textures[t, y1, x1, d] * fx
        out[s, d] = top * (1.0 - fy) + bottom * fy


@wp.kernel
def sample_bwd(
    offset: int,
    textures: wp.array4d(dtype=wp.float32),
    uv: wp.array2d(dtype=wp.float32),
    pix_to_face: wp.array(dtype=wp.int32),
    face_to_texture: wp.array(dtype=wp.int32),
    wrap_u: int,
    grad_out: wp.array2d(dtype=wp.float32),
    need_textures: int,
    grad_textures: wp.array4d(dtype=wp.float32),
    grad_uv: wp.array2d(dtype=wp.float32),
):
    s = wp.tid() + offset
    f = pix_to_face[s]
    if f < 0:
        return
    t = face_to_texture[f]
    ax = texel_axis(uv[s, 0], textures.shape[2], wrap_u)
    ay = texel_axis(uv[s, 1], textures.shape[1], 0)
    x0 = int(ax[0])
    x1 = int(ax[1])
    y0 = int(ay[0])
    y1 = int(ay[1])
    fx = ax[2]
    fy = ay[2]
    gu = wp.float32(0.0)
    gv = wp.float32(0.0)
    for d in range(grad_out.shape[1]):
        g = grad_out[s, d]
        t00 = textures[t, y0, x0, d]
        t01 = textures[t, y0, x1, d]
        t10 = textures[t, y1, x0, d]
        t11 = textures[t, y1, x1, d]
        gu += g * ((1.0 - fy) * (t01 - t00) + fy * (t11 - t10))
        gv += g * ((t10 * (1.0 - fx) + t11 * fx) - (t00 * (1.0 - fx) + t01 * fx))
        if need_textures != 0:
            wp.atomic_add(grad_textures, t, y0, x0, d, g * (1.0 - fx) * (1.0 - fy))
            wp.atomic_add(grad_textures, t, y0, x1, d, g * fx * (1.0 - fy))
            wp.atomic_add(grad_textures, t, y1, x0, d, g * (1.0 - fx) * fy)
            wp.atomic_add(grad_textures, t, y1, x1, d, g * fx * fy)
    grad_uv[s, 0] = gu * ax[3]
    grad_uv[s, 1] = gv * ay[3]


# ---------------------------------------------------------------------------------------------------------------
# soft_composite / silhouette: front-to-back over the K slots of a pixel
@wp.func
def coverage(dist: float, sigma: float) -> float:
    """``exp(-max(d, 0) / sigma)``, or the hard limit ``[d <= 0]`` for ``sigma == 0``."""
    if sigma > 0.0:
        return wp.exp(-wp.max(dist, 0.0) / sigma)
    if dist <= 0.0:
        return 1.0
    return 0.0


@wp.kernel
def composite_fwd(
    offset: int,
    pix_to_face: wp.array2d(dtype=wp.int32),
    dists: wp.array2d(dtype=wp.float32),
    colors: wp.array3d(dtype=wp.float32),
    opacities: wp.array(dtype=wp.float32),
    has_opacities: int,
    sigma: float,
    fg: wp.array2d(dtype=wp.float32),
    trans_final: wp.array(dtype=wp.float32),
    trans: wp.array2d(dtype=wp.float32),
):
    p = wp.tid() + offset
    T = wp.float32(1.0)
    for k in range(pix_to_face.shape[1]):
        trans[p, k] = T
        f = pix_to_face[p, k]
        if f >= 0:
            a = coverage(dists[p, k], sigma)
            if has_opacities != 0:
                a = a * opacities[f]
            w = a * T
            for d in range(fg.shape[1]):
                fg[p, d] += colors[p, k, d] * w
            T = T * (1.0 - a)
    trans_final[p] = T


@wp.kernel
def composite_bwd(
    offset: int,
    pix_to_face: wp.array2d(dtype=wp.int32),
    dists: wp.array2d(dtype=wp.float32),
    colors: wp.array3d(dtype=wp.float32),
    opacities: wp.array(dtype=wp.float32),
    has_opacities: int,
    sigma: float,
    trans: wp.array2d(dtype=wp.float32),
    grad_fg: wp.array2d(dtype=wp.float32),
    grad_trans_final: wp.array(dtype=wp.float32),
    need_opacities: int,
    grad_colors: wp.array3d(dtype=wp.float32),
    grad_dists: wp.array2d(dtype=wp.float32),
    grad_opacities: wp.array(dtype=wp.float32),
):
    # Back to front with B_k = g.c_k a_k + (1 - a_k) B_{k+1}, B_K = dL/dT_K (the loss from slot k on is T_k B_k),
    # so dL/da_k = T_k (g.c_k - B_{k+1}) without dividing by (1 - a_k), which is 0 inside opaque faces.
    p = wp.tid() + offset
    num_slots = pix_to_face.shape[1]
    B = grad_trans_final[p]
    for i in range(num_slots):
        k = num_slots - 1 - i
        f = pix_to_face[p, k]
        if f >= 0:
            cov = coverage(dists[p, k], sigma)
            op = wp.float32(1.0)
            if has_opacities != 0:
                op = opacities[f]
            a = cov * op
            T = trans[p, k]
            gc = wp.float32(0.0)
            for d in range(grad_fg.shape[1]):
                g = grad_fg[p, d]
                gc += g * colors[p, k, d]
                grad_colors[p, k, d] = g * a * T
            da = T * (gc - B)
            B = gc * a + (1.0 - a) * B
            if sigma > 0.0 and dists[p, k] >= 0.0:  # torch.clamp_min passes the gradient at 0
                grad_dists[p, k] = -da * a / sigma
            if need_opacities != 0:
                wp.atomic_add(grad_opacities, f, da * cov)


# ---------------------------------------------------------------------------------------------------------------
# antialias: one thread per (pixel, direction); the torch twin is shading_ref._pair_deltas
@wp.func
def aa_front(f0: int, f1: int, z0: float, z1: float) -> int:
    if f0 < 0:
        return f1
    if f1 < 0:
        return f0
    if z0 < z1:
        return f0
    return f1


@wp.func
def aa_point(screen: wp.array2d(dtype=wp.float32), v: int, cx: float, cy: float, vertical: int) -> wp.vec2:
    """Vertex position relative to the pixel centre, x/y swapped for vertical pairs (x = along the pair)."""
    px = screen[v, 0] - cx
    py = screen[v, 1] - cy
    if vertical != 0:
        return wp.vec2(py, px)
    return wp.vec2(px, py)


@wp.func
def orient(a: wp.vec2, b: wp.vec2, c: wp.vec2) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])


@wp.func
def aa_corner(faces: wp.array2d(dtype=wp.int32), tri: int, i: int, vbase: int) -> int:
    return vbase + faces[tri, i]


@wp.func
def aa_edge(
    screen: wp.array2d(dtype=wp.float32),
    faces: wp.array2d(dtype=wp.int32),
    opposite: wp.array2d(dtype=wp.int32),
    tri: int,
    vbase: int,
    cx: float,
    cy: float,
    vertical: int,
    ds: float,
) -> wp.vec2:
    """(edge index or -1, dc): the silhouette edge of ``tri`` crossing the pair segment and its position."""
    q0 = aa_point(screen, aa_corner(faces, tri, 0, vbase), cx, cy, vertical)
    q1 = aa_point(screen, aa_corner(faces, tri, 1, vbase), cx, cy, vertical)
    q2 = aa_point(screen, aa_corner(faces, tri, 2, vbase), cx, cy, vertical)
    bb = orient(q0, q1, q2)
    best = wp.int32(-1)
    best_dc = float(_NEG_BIG)
    for e in range(3):
        qa = q1
        qb = q2
        if e == 1:
            qa = q2
            qb = q0
        if e == 2:
            qa = q0
            qb = q1
        if (qa[1] < 0.0) != (qb[1] < 0.0):
            dx = qb[0] - qa[0]
            dy = qb[1] - qa[1]
            dc = ds * (qa[0] * dy - qa[1] * dx) / dy
            if dc > best_dc:
                best = e
                best_dc = dc
    if best < 0:
        return wp.vec2(-1.0, 0.0)
    qa = q1
    qb = q2
    qe = q0
    if best == 1:
        qa = q2
        qb = q0
        qe = q1
    if best == 2:
        qa = q0
        qb = q1
        qe = q2
    o = opposite[tri, best]
    qo = qe
    if o >= 0:
        qo = aa_point(screen, vbase + o, cx, cy, vertical)
    wing = orient(qo, qa, qb)
    steep = wp.abs(qb[1] - qa[1]) >= wp.abs(qb[0] - qa[0])
    if steep and ((wing < 0.0) == (bb < 0.0)) and best_dc > -_AA_EPS and best_dc < 1.0 + _AA_EPS:
        return wp.vec2(float(best), best_dc)
    return wp.vec2(-1.0, 0.0)


@wp.func
def aa_pair(tid: int, height: int, width: int) -> wp.vec3i:
    """(p0, p1, vertical) of thread ``tid``; p0 = -1 when the neighbour is outside the image."""
    vertical = tid % 2
    p0 = tid // 2
    rem = p0 % (height * width)
    y = rem // width
    x = rem % width
    if vertical != 0:
        if y == height - 1:
            return wp.vec3i(-1, -1, 1)
        return wp.vec3i(p0, p0 + width, 1)
    if x == width - 1:
        return wp.vec3i(-1, -1, 0)
    return wp.vec3i(p0, p0 + 1, 0)


@wp.func
def aa_face_ok(
    depth_ok: wp.array(dtype=wp.int32), faces: wp.array2d(dtype=wp.int32), tri: int, vbase: int
) -> bool:
    ok0 = depth_ok[vbase + faces[tri, 0]] != 0
    ok1 = depth_ok[vbase + faces[tri, 1]] != 0
    return ok0 and ok1 and depth_ok[vbase + faces[tri, 2]] != 0


@wp.func
def aa_setup(
    tid: int,
    face0: wp.array(dtype=wp.int32),
    depth0: wp.array(dtype=wp.float32),
    depth_ok: wp.array(dtype=wp.int32),
    faces: wp.array2d(dtype=wp.int32),
    height: int,
    width: int,
    num_vertices: int,
) -> wp.vec4i:
    """(p0, p1, vertical, front face) of thread ``tid``'s pixel pair; front face -1 when the pair is skipped (outside
    the image, same face, or a front-face vertex behind the camera)."""
    pair = aa_pair(tid, height, width)
    p0 = pair[0]
    p1 = pair[1]
    if p0 < 0:
        return wp.vec4i(0, 0, 0, -1)
    f0 = face0[p0]
    f1 = face0[p1]
    tri = aa_front(f0, f1, depth0[p0], depth0[p1])
    if f0 == f1 or tri < 0:
        return wp.vec4i(0, 0, 0, -1)
    vbase = (p0 // (height * width)) * num_vertices
    if not aa_face_ok(depth_ok, faces, tri, vbase):
        return wp.vec4i(0, 0, 0, -1)
    return wp.vec4i(p0, p1, pair[2], tri)


@wp.kernel
def antialias_fwd(
    color: wp.array2d(dtype=wp.float32),
    face0: wp.array(dtype=wp.int32),
    depth0: wp.array(dtype=wp.float32),
    screen: wp.array2d(dtype=wp.float32),
    depth_ok: wp.array(dtype=wp.int32),
    faces: wp.array2d(dtype=wp.int32),
    opposite: wp.array2d(dtype=wp.int32),
    height: int,
    width: int,
    num_vertices: int,
    out: wp.array2d(dtype=wp.float32),
):
    setup = aa_setup(wp.tid(), face0, depth0, depth_ok, faces, height, width, num_vertices)
    tri = setup[3]
    if tri < 0:
        return
    p0 = setup[0]
    p1 = setup[1]
    vbase = (p0 // (height * width)) * num_vertices
    ds = wp.float32(-1.0)
    pt = p1
    if tri == face0[p0]:
        ds = 1.0
        pt = p0
    rem = pt % (height * width)
    edge = aa_edge(
        screen, faces, opposite, tri, vbase, float(rem % width) + 0.5, float(rem // width) + 0.5, setup[2], ds
    )
    if edge[0] < 0.0:
        return
    alpha = ds * (0.5 - wp.min(wp.max(edge[1], 0.0), 1.0))
    target = p1
    if alpha > 0.0:
        target = p0
    for d in range(color.shape[1]):
        wp.atomic_add(out, target, d, alpha * (color[p1, d] - color[p0, d]))


@wp.kernel
def antialias_bwd(
    color: wp.array2d(dtype=wp.float32),
    face0: wp.array(dtype=wp.int32),
    depth0: wp.array(dtype=wp.float32),
    screen: wp.array2d(dtype=wp.float32),
    depth_ok: wp.array(dtype=wp.int32),
    faces: wp.array2d(dtype=wp.int32),
    opposite: wp.array2d(dtype=wp.int32),
    height: int,
    width: int,
    num_vertices: int,
    grad_out: wp.array2d(dtype=wp.float32),
    grad_color: wp.array2d(dtype=wp.float32),
    grad_screen: wp.array2d(dtype=wp.float32),
):
    setup = aa_setup(wp.tid(), face0, depth0, depth_ok, faces, height, width, num_vertices)
    tri = setup[3]
    if tri < 0:
        return
    p0 = setup[0]
    p1 = setup[1]
    vbase = (p0 // (height * width)) * num_vertices
    ds = wp.float32(-1.0)
    pt = p1
    if tri == face0[p0]:
        ds = 1.0
        pt = p0
    rem = pt % (height * width)
    cx = float(rem % width) + 0.5
    cy = float(rem // width) + 0.5
    vertical = setup[2]
    edge = aa_edge(screen, faces, opposite, tri, vbase, cx, cy, vertical, ds)
    if edge[0] < 0.0:
        return
    dc = edge[1]
    alpha = ds * (0.5 - wp.min(wp.max(dc, 0.0), 1.0))
    target = p1
    if alpha > 0.0:
        target = p0
    dd = wp.float32(0.0)
    for d in range(color.shape[1]):
        g = grad_out[target, d]
        dd += g * (color[p1, d] - color[p0, d])
        wp.atomic_add(grad_color, p0, d, -alpha * g)
        wp.atomic_add(grad_color, p1, d, alpha * g)
    # dc = ds * x*, x* = (xa yb - xb ya) / (yb - ya) the crossing of edge (a, b) with the pair axis; the clamp to
    # [0, 1] passes gradients on the closed interval (as torch.clamp does).
    if dc < 0.0 or dc > 1.0 or dd == 0.0:
        return
    g_x = -dd  # dL/dx* = dL/dalpha * dalpha/ddc * ddc/dx* = dd * (-ds) * ds
    e = int(edge[0])
    va = aa_corner(faces, tri, (e + 1) % 3, vbase)
    vb = aa_corner(faces, tri, (e + 2) % 3, vbase)
    qa = aa_point(screen, va, cx, cy, vertical)
    qb = aa_point(screen, vb, cx, cy, vertical)
    dy = qb[1] - qa[1]
    xs = (qa[0] * qb[1] - qb[0] * qa[1]) / dy
    ga = wp.vec2(g_x * qb[1] / dy, g_x * (xs - qb[0]) / dy)
    gb = wp.vec2(-g_x * qa[1] / dy, g_x * (qa[0] - xs) / dy)
    if vertical != 0:
        ga = wp.vec2(ga[1], ga[0])
        gb = wp.vec2(gb[1], gb[0])
    wp.atomic_add(grad_screen, va, 0, ga[0])
    wp.atomic_add(grad_screen, va, 1, ga[1])
    wp.atomic_add(grad_screen, vb, 0, gb[0])
    wp.atomic_add(grad_screen, vb, 1, gb[1])
