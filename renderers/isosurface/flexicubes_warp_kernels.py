# ruff: noqa: UP018  (Warp needs int(0) / float(0.0) to declare loop-carried dynamic variables)
"""Warp kernels of FlexiCubes: case ids of dense / listed cubes, and the dual-vertex stage (alpha-weighted edge
crossings, beta-weighted dual vertices, L_dev) with its hand-written adjoint. float32 only."""

import warp as wp

from recon.renderers.isosurface.flexicubes_tables import CORNER_OFFSETS


@wp.kernel(enable_backward=False)
def dense_cases(s: wp.array3d(dtype=wp.float32), cases: wp.array3d(dtype=wp.int32)):
    """Case id of cube ``(i, j, k)``: bit ``c`` set when corner ``c`` has ``s < 0``."""
    i, j, k = wp.tid()
    case = int(0)
    for c in range(8):
        value = s[
            i + wp.static(CORNER_OFFSETS[c][0]),
            j + wp.static(CORNER_OFFSETS[c][1]),
            k + wp.static(CORNER_OFFSETS[c][2]),
        ]
        if value < 0.0:
            case += wp.static(2**c)
    cases[i, j, k] = case


@wp.kernel(enable_backward=False)
def list_cases(
    s: wp.array(dtype=wp.float32), corners: wp.array2d(dtype=wp.int64), cases: wp.array(dtype=wp.int32)
):
    """Case id of the cube with corner rows ``corners[m]``."""
    m = wp.tid()
    case = int(0)
    for c in range(8):
        if s[corners[m, c]] < 0.0:
            case += wp.static(2**c)
    cases[m] = case


@wp.func
def crossing(x_a: wp.vec3, x_b: wp.vec3, w_a: float, w_b: float) -> wp.vec3:
    """``u = (w_b x_a - w_a x_b) / (w_b - w_a)``; ``w_a``, ``w_b`` have opposite signs (no cancellation)."""
    return (w_b * x_a - w_a * x_b) / (w_b - w_a)


@wp.func
def plain_crossing(
    x: wp.array(dtype=wp.vec3),
    s: wp.array(dtype=wp.float32),
    corners: wp.array2d(dtype=wp.int64),
    edge_corners: wp.array2d(dtype=wp.int32),
    m: int,
    e: int,
) -> wp.vec3:
    """Unweighted crossing ``u0`` of edge ``e`` of cube ``m`` (the reference point of L_dev)."""
    ia = corners[m, edge_corners[e, 0]]
    ib = corners[m, edge_corners[e, 1]]
    return crossing(x[ia], x[ib], s[ia], s[ib])


@wp.func
def sign0(value: float) -> float:
    """``sign`` with ``sign(0) = 0`` (the subgradient autograd uses for ``abs``)."""
    if value > 0.0:
        return 1.0
    if value < 0.0:
        return -1.0
    return 0.0


@wp.kernel(enable_backward=False)
def dual_vertices_fwd(
    x: wp.array(dtype=wp.vec3),
    s: wp.array(dtype=wp.float32),
    corners: wp.array2d(dtype=wp.int64),
    cases: wp.array(dtype=wp.int32),
    vd_offset: wp.array(dtype=wp.int32),
    alpha: wp.array2d(dtype=wp.float32),
    beta: wp.array2d(dtype=wp.float32),
    dmc: wp.array3d(dtype=wp.int32),
    edge_corners: wp.array2d(dtype=wp.int32),
    vd: wp.array(dtype=wp.vec3),
    l_dev: wp.array(dtype=wp.float32),
):
    """Thread ``(m, g)``: dual vertex ``g`` of surface cube ``m`` (paper Eqs. 2-3) and its L_dev (Eq. 8): the mean
    absolute deviation of the distances ``|u0_e - v|`` to the plain linear crossings ``u0_e``."""
    m, g = wp.tid()
    case = cases[m]
    if dmc[case, g, 0] < 0:
        return
    num = wp.vec3(0.0, 0.0, 0.0)
    den = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            ca = edge_corners[e, 0]
            cb = edge_corners[e, 1]
            ia = corners[m, ca]
            ib = corners[m, cb]
            u = crossing(x[ia], x[ib], s[ia] * alpha[m, ca], s[ib] * alpha[m, cb])
            num += beta[m, e] * u
            den += beta[m, e]
    v = num / den
    vd[vd_offset[m] + g] = v
    total = float(0.0)
    count = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            total += wp.length(plain_crossing(x, s, corners, edge_corners, m, e) - v)
            count += 1.0
    mean = total / count
    deviation = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            deviation += wp.abs(wp.length(plain_crossing(x, s, corners, edge_corners, m, e) - v) - mean)
    l_dev[vd_offset[m] + g] = deviation / count


@wp.func
def l_dev_adjoint(
    x: wp.array(dtype=wp.vec3),
    s: wp.array(dtype=wp.float32),
    corners: wp.array2d(dtype=wp.int64),
    edge_corners: wp.array2d(dtype=wp.int32),
    dmc: wp.array3d(dtype=wp.int32),
    case: int,
    m: int,
    g: int,
    v: wp.vec3,
    grad_l: float,
    grad_x: wp.array(dtype=wp.vec3),
    grad_s: wp.array(dtype=wp.float32),
) -> wp.vec3:
    """Adjoint of L_dev: scatters into ``grad_x``/``grad_s`` through the plain crossings and returns dL/dv.

    With ``d_e = |u0_e - v|``, mean ``mu``, ``sigma_e = sign(d_e - mu)``, ``S = sum sigma``:
    ``dL_dev/dd_e = (sigma_e - S / n) / n``; ``dd_e/du0_e = (u0_e - v) / d_e = -dd_e/dv`` (0 at ``d_e = 0``, as
    autograd); ``u0 = (s_b x_a - s_a x_b) / (s_b - s_a)`` as ``crossing`` with ``w = s``."""
    grad_v = wp.vec3(0.0, 0.0, 0.0)
    if grad_l == 0.0:
        return grad_v
    total = float(0.0)
    count = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            total += wp.length(plain_crossing(x, s, corners, edge_corners, m, e) - v)
            count += 1.0
    mean = total / count
    signs = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            signs += sign0(wp.length(plain_crossing(x, s, corners, edge_corners, m, e) - v) - mean)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            ia = corners[m, edge_corners[e, 0]]
            ib = corners[m, edge_corners[e, 1]]
            u0 = crossing(x[ia], x[ib], s[ia], s[ib])
            dist = wp.length(u0 - v)
            if dist > 0.0:
                g_dist = grad_l * (sign0(dist - mean) - signs / count) / count
                g_u0 = (u0 - v) * (g_dist / dist)
                grad_v -= g_u0
                d = s[ib] - s[ia]
                wp.atomic_add(grad_x, ia, g_u0 * (s[ib] / d))
                wp.atomic_add(grad_x, ib, g_u0 * (-s[ia] / d))
                wp.atomic_add(grad_s, ia, wp.dot(g_u0, u0 - x[ib]) / d)
                wp.atomic_add(grad_s, ib, wp.dot(g_u0, x[ia] - u0) / d)
    return grad_v


@wp.kernel(enable_backward=False)
def dual_vertices_bwd(
    x: wp.array(dtype=wp.vec3),
    s: wp.array(dtype=wp.float32),
    corners: wp.array2d(dtype=wp.int64),
    cases: wp.array(dtype=wp.int32),
    vd_offset: wp.array(dtype=wp.int32),
    alpha: wp.array2d(dtype=wp.float32),
    beta: wp.array2d(dtype=wp.float32),
    dmc: wp.array3d(dtype=wp.int32),
    edge_corners: wp.array2d(dtype=wp.int32),
    vd: wp.array(dtype=wp.vec3),
    grad_vd: wp.array(dtype=wp.vec3),
    grad_l_dev: wp.array(dtype=wp.float32),
    grad_x: wp.array(dtype=wp.vec3),
    grad_s: wp.array(dtype=wp.float32),
    grad_alpha: wp.array2d(dtype=wp.float32),
    grad_beta: wp.array2d(dtype=wp.float32),
):
    """Adjoint of ``dual_vertices_fwd``. With ``B = sum beta``, ``v = sum beta_e u_e / B`` and
    ``D = w_b - w_a``: ``dv/dbeta_e = (u_e - v) / B``, ``dv/du_e = beta_e / B``, ``du/dx_a = w_b / D``,
    ``du/dx_b = -w_a / D``, ``du/dw_a = (u - x_b) / D``, ``du/dw_b = (x_a - u) / D``, ``w = s alpha``.
    Corners and corner weights are shared between threads: atomics."""
    m, g = wp.tid()
    case = cases[m]
    if dmc[case, g, 0] < 0:
        return
    slot = vd_offset[m] + g
    v = vd[slot]
    gv = grad_vd[slot] + l_dev_adjoint(
        x, s, corners, edge_corners, dmc, case, m, g, v, grad_l_dev[slot], grad_x, grad_s
    )
    den = float(0.0)
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            den += beta[m, e]
    for j in range(7):
        e = dmc[case, g, j]
        if e >= 0:
            ca = edge_corners[e, 0]
            cb = edge_corners[e, 1]
            ia = corners[m, ca]
            ib = corners[m, cb]
            w_a = s[ia] * alpha[m, ca]
            w_b = s[ib] * alpha[m, cb]
            d = w_b - w_a
            u = crossing(x[ia], x[ib], w_a, w_b)
            wp.atomic_add(grad_beta, m, e, wp.dot(gv, u - v) / den)
            gu = gv * (beta[m, e] / den)
            wp.atomic_add(grad_x, ia, gu * (w_b / d))
            wp.atomic_add(grad_x, ib, gu * (-w_a / d))
            g_wa = wp.dot(gu, u - x[ib]) / d
            g_wb = wp.dot(gu, x[ia] - u) / d
            wp.atomic_add(grad_s, ia, g_wa * alpha[m, ca])
            wp.atomic_add(grad_s, ib, g_wb * alpha[m, cb])
            wp.atomic_add(grad_alpha, m, ca, g_wa * s[ia])
            wp.atomic_add(grad_alpha, m, cb, g_wb * s[ib])
