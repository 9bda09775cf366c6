# ruff: noqa: UP018  (Warp needs int(0) / float(0.0) to declare loop-carried dynamic variables)
"""Warp kernels of FlexiCubes: case ids of dense / listed cubes, and the dual-vertex stage (alpha-weighted edge
crossings, beta-weighted dual vertices) with its hand-written adjoint. float32 only."""

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
):
    """Thread ``(m, g)``: dual vertex ``g`` of surface cube ``m`` (paper Eqs. 2-3)."""
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
    vd[vd_offset[m] + g] = num / den


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
    gv = grad_vd[slot]
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
