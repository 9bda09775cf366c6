"""Pure-PyTorch FlexiCubes (Shen et al. 2023) on a list of surface cubes: the oracle of the Warp path.

Dense and sparse grids both reduce to the same inputs: deformed corner positions ``x (N, 3)``, scalars ``s (N,)``,
and the surface cubes (integer coordinates sorted by key, their 8 corner rows, their case ids). The stages
(spec sparseflex.md section 1) are private functions here: ``cube_cases`` / ``dense_cube_cases`` (1),
``fix_ambiguity`` (2), ``dual_vertices`` (3-4: alpha-weighted crossings and beta-weighted dual vertices),
``dual_mesh`` (5, quads on crossed edges shared by 4 surface cubes, and 6, L_dev) and ``triangulate`` (5, gamma
split or centre fan). Integer bookkeeping runs without autograd; positions stay differentiable w.r.t. ``x``, ``s``
and the activated weights.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from recon.renderers.isosurface.flexicubes_tables import (
    CHECK_TABLE,
    CORNER_OFFSETS,
    DMC_TABLE,
    EDGE_CORNERS,
    NUM_VD_TABLE,
)

__all__ = [
    "DualMesh",
    "SurfaceCubes",
    "activate_weights",
    "cube_cases",
    "dense_cube_cases",
    "dual_mesh",
    "dual_vertices",
    "dual_vertices_and_l_dev",
    "fix_ambiguity",
    "triangulate",
]

WEIGHT_SCALE = (
    0.99  # tanh/sigmoid scale of the FlexiCubes reference: beta, alpha in (0.01, 1.99), gamma > 0.005
)
DEFORM_SCALE = 1.0 - 1e-8  # a corner moves strictly less than half a cell, so cells never invert

_TABLES: dict[str, dict[str, Tensor]] = {}


def tables(device: torch.device) -> dict[str, Tensor]:
    """The FlexiCubes tables as int64 tensors on ``device`` (cached)."""
    key = str(device)
    if key not in _TABLES:
        offsets = torch.tensor(CORNER_OFFSETS, dtype=torch.int64)
        edge_corners = torch.tensor(EDGE_CORNERS, dtype=torch.int64)
        direction = offsets[edge_corners[:, 1]] - offsets[edge_corners[:, 0]]
        axis = direction.argmax(-1)
        lower = offsets[edge_corners[:, 0]]
        # Slot of the cube around its edge, counter-clockwise about +axis in the (axis+1, axis+2) plane:
        # cube on the (+, +) side -> 0, (-, +) -> 1, (-, -) -> 2, (+, -) -> 3 (an edge offset of 1 = cube on "-").
        b = lower.gather(1, ((axis + 1) % 3)[:, None])[:, 0]
        c = lower.gather(1, ((axis + 2) % 3)[:, None])[:, 0]
        slot = torch.tensor([[0, 3], [1, 2]])[b, c]
        _TABLES[key] = {
            name: t.to(device)
            for name, t in dict(
                dmc=torch.tensor(DMC_TABLE, dtype=torch.int64),
                num_vd=torch.tensor(NUM_VD_TABLE, dtype=torch.int64),
                check=torch.tensor(CHECK_TABLE, dtype=torch.int64),
                offsets=offsets,
                edge_corners=edge_corners,
                edge_axis=axis,
                edge_lower=lower,
                edge_slot=slot,
            ).items()
        }
    return _TABLES[key]


class SurfaceCubes(NamedTuple):
    """Cubes with a sign change: ``coords (M, 3)`` sorted by key, ``rows (M,)`` in the caller's voxel list,
    ``corners (M, 8)`` rows of ``x``/``s``, ``cases (M,)`` case ids after the ambiguity fix."""

    coords: Tensor
    rows: Tensor
    corners: Tensor
    cases: Tensor


class DualMesh(NamedTuple):
    """Dual vertices (``vd``, ``l_dev``, ``vd_row`` voxel row, ``vd_key = row * 4 + group``) and quads
    (``quads (Q, 4)`` dual vertex ids, counter-clockwise from outside; ``quad_edges (Q,)`` sorted edge keys)."""

    vd: Tensor
    l_dev: Tensor
    vd_row: Tensor
    vd_key: Tensor
    quads: Tensor
    quad_edges: Tensor


def linear_key(coords: Tensor, resolution: int) -> Tensor:
    """``(i (R+1) + j) (R+1) + k``: the sorting key of voxels and corners (spec section 2)."""
    n = resolution + 1
    return (coords[..., 0] * n + coords[..., 1]) * n + coords[..., 2]


def activate_weights(weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``(M, 21)`` weights ``[beta 12, alpha 8, gamma 1]`` -> activated ``(beta, alpha, gamma)``.

    ``beta, alpha = tanh(raw) 0.99 + 1``, ``gamma = sigmoid(raw) 0.99 + 0.005`` (FlexiCubes reference).
    """
    beta = torch.tanh(weights[:, :12]) * WEIGHT_SCALE + 1
    alpha = torch.tanh(weights[:, 12:20]) * WEIGHT_SCALE + 1
    gamma = torch.sigmoid(weights[:, 20]) * WEIGHT_SCALE + (1 - WEIGHT_SCALE) / 2
    return beta, alpha, gamma


def deformed_positions(
    coords: Tensor, deform: Tensor | None, resolution: int, box: tuple[float, float]
) -> Tensor:
    """Corner positions ``lo + c h + (h / 2)(1 - 1e-8) tanh(delta)`` with ``h = (hi - lo) / R``."""
    lo, hi = box
    h = (hi - lo) / resolution
    dtype = deform.dtype if deform is not None else torch.get_default_dtype()
    x = coords.to(dtype) * h + lo
    if deform is not None:
        x = x + (h / 2) * DEFORM_SCALE * torch.tanh(deform)
    return x


@torch.no_grad()
def dense_cube_cases(s: Tensor) -> Tensor:
    """(R, R, R) uint8 case ids of a dense ``(R+1)^3`` grid (bit ``c`` set when corner ``c`` has ``s < 0``).

    uint8 keeps the pass over all ``R^3`` cubes memory-light (8x less traffic than int64); callers widen the ids of
    the few surface cubes.
    """
    occ = (s < 0).to(torch.uint8)
    r = s.shape[0] - 1
    case = torch.zeros((r, r, r), dtype=torch.uint8, device=s.device)
    for c, (dx, dy, dz) in enumerate(CORNER_OFFSETS):
        case |= occ[dx : dx + r, dy : dy + r, dz : dz + r] << c
    return case


@torch.no_grad()
def cube_cases(s: Tensor, corners: Tensor) -> Tensor:
    """(M,) case ids of cubes given by their corner rows ``corners (M, 8)``."""
    bits = torch.arange(8, device=s.device)
    return ((s[corners] < 0).to(torch.int64) << bits).sum(-1)


@torch.no_grad()
def fix_ambiguity(cases: Tensor, coords: Tensor, resolution: int) -> Tensor:
    """Invert the case ids of pairs of C16/C19 cubes that share their ambiguous face (FlexiCubes supplement 1.3).

    ``coords`` must be sorted by key; the neighbour is found by ``searchsorted`` among the problematic cubes, so a
    missing neighbour (outside the grid or inactive) means no fix.
    """
    check = tables(cases.device)["check"][cases]
    problem = torch.nonzero(check[:, 0] == 1)[:, 0]
    if problem.numel() == 0:
        return cases
    keys = linear_key(coords[problem], resolution)
    neighbour = coords[problem] + check[problem, 1:4]
    in_grid = ((neighbour >= 0) & (neighbour < resolution)).all(-1)
    nb_keys = linear_key(neighbour, resolution)
    pos = torch.searchsorted(keys, nb_keys).clamp(max=keys.numel() - 1)
    found = in_grid & (keys[pos] == nb_keys)
    cases = cases.clone()
    cases[problem[found]] = check[problem[found], 4]
    return cases


class _Entries(NamedTuple):
    """One row per (surface cube, dual vertex, crossed edge): cube ``m``, edge ``e``, dual vertex id, and the
    lower / upper corner rows ``a`` / ``b`` of the edge."""

    m: Tensor
    e: Tensor
    vd_id: Tensor
    a: Tensor
    b: Tensor
    num_vd: Tensor


@torch.no_grad()
def _entries(cubes: SurfaceCubes) -> _Entries:
    t = tables(cubes.cases.device)
    groups = t["dmc"][cubes.cases]  # (M, 4, 7)
    m, g, j = torch.nonzero(groups >= 0, as_tuple=True)
    e = groups[m, g, j]
    num_vd = t["num_vd"][cubes.cases]
    vd_offset = torch.cumsum(num_vd, 0) - num_vd
    a = cubes.corners[m, t["edge_corners"][e, 0]]
    b = cubes.corners[m, t["edge_corners"][e, 1]]
    return _Entries(m, e, vd_offset[m] + g, a, b, num_vd)


def dual_vertices(
    x: Tensor, s: Tensor, cubes: SurfaceCubes, beta: Tensor, alpha: Tensor, entries: _Entries
) -> Tensor:
    """(Vd, 3) dual vertices ``v_d = sum_e beta_e u_e / sum_e beta_e`` over the crossed edges of each group, with
    the alpha-weighted crossing ``u_e = (w_b x_a - w_a x_b) / (w_b - w_a)``, ``w = s alpha`` (paper Eqs. 2-3)."""
    t = tables(s.device)
    m, e = entries.m, entries.e
    w_a = s[entries.a] * alpha[m, t["edge_corners"][e, 0]]
    w_b = s[entries.b] * alpha[m, t["edge_corners"][e, 1]]
    # w_a and w_b have opposite signs on a crossed edge, so |w_b - w_a| = |w_a| + |w_b| > 0.
    u = (w_b[:, None] * x[entries.a] - w_a[:, None] * x[entries.b]) / (w_b - w_a)[:, None]
    b = beta[m, e]
    count = int(entries.num_vd.sum())
    num = torch.zeros((count, 3), dtype=x.dtype, device=x.device).index_add(0, entries.vd_id, b[:, None] * u)
    den = torch.zeros(count, dtype=x.dtype, device=x.device).index_add(0, entries.vd_id, b)
    return num / den[:, None]


def _l_dev(x: Tensor, s: Tensor, vd: Tensor, entries: _Entries) -> Tensor:
    """Per dual vertex, mean over its edges of ``| |u0_e - v_d| - mean_e' |u0_e' - v_d| |`` (paper Eq. 8), with the
    plain linear crossing ``u0``."""
    s_a, s_b = s[entries.a][:, None], s[entries.b][:, None]
    u0 = (s_b * x[entries.a] - s_a * x[entries.b]) / (s_b - s_a)
    dist = (u0 - vd[entries.vd_id]).norm(dim=-1)
    count = torch.zeros(vd.shape[0], dtype=vd.dtype, device=vd.device).index_add(
        0, entries.vd_id, torch.ones_like(dist)
    )
    mean = torch.zeros_like(count).index_add(0, entries.vd_id, dist) / count
    return torch.zeros_like(count).index_add(0, entries.vd_id, (dist - mean[entries.vd_id]).abs()) / count


def dual_vertices_and_l_dev(
    x: Tensor, s: Tensor, cubes: SurfaceCubes, beta: Tensor, alpha: Tensor, entries: _Entries
) -> tuple[Tensor, Tensor]:
    """Stages 3-4 and 6: ``(vd (Vd, 3), l_dev (Vd,))`` (the stage the Warp path runs as one kernel pair)."""
    vd = dual_vertices(x, s, cubes, beta, alpha, entries)
    return vd, _l_dev(x, s, vd, entries)


DualVertexFn = Callable[[Tensor, Tensor, SurfaceCubes, Tensor, Tensor, _Entries], tuple[Tensor, Tensor]]


@torch.no_grad()
def _quads(s: Tensor, cubes: SurfaceCubes, entries: _Entries, resolution: int) -> tuple[Tensor, Tensor]:
    """Quads on crossed edges shared by 4 surface cubes: ``(quads (Q, 4) dual vertex ids, edge keys (Q,))``."""
    t = tables(s.device)
    lower = cubes.coords[entries.m] + t["edge_lower"][entries.e]
    edge_key = linear_key(lower, resolution) * 3 + t["edge_axis"][entries.e]
    order = torch.argsort(edge_key * 4 + t["edge_slot"][entries.e])
    sorted_keys = edge_key[order]
    _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    # An edge seen by fewer than 4 surface cubes lies on the grid border or next to an inactive voxel: no face.
    keep = torch.repeat_interleave(counts == 4, counts)
    quads = entries.vd_id[order][keep].reshape(-1, 4)
    quad_edges = sorted_keys[keep][::4]
    # Slots run counter-clockwise about +axis: keep when the edge's lower corner is inside (outward = +axis).
    lower_outside = s[entries.a[order][keep][::4]] >= 0
    quads[lower_outside] = quads[lower_outside][:, [0, 3, 2, 1]]
    return quads, quad_edges


def dual_mesh(
    x: Tensor,
    s: Tensor,
    cubes: SurfaceCubes,
    beta: Tensor,
    alpha: Tensor,
    resolution: int,
    dual_vertex_fn: DualVertexFn = dual_vertices_and_l_dev,
) -> DualMesh:
    """Dual vertices, L_dev and quads of the surface cubes (``beta (M, 12)``, ``alpha (M, 8)`` activated)."""
    entries = _entries(cubes)
    vd, l_dev = dual_vertex_fn(x, s, cubes, beta, alpha, entries)
    vd_cube = torch.repeat_interleave(torch.arange(len(cubes.rows), device=s.device), entries.num_vd)
    vd_group = (
        torch.arange(vd.shape[0], device=s.device)
        - (torch.cumsum(entries.num_vd, 0) - entries.num_vd)[vd_cube]
    )
    vd_row = cubes.rows[vd_cube]
    quads, quad_edges = _quads(s, cubes, entries, resolution)
    return DualMesh(vd, l_dev, vd_row, vd_row * 4 + vd_group, quads, quad_edges)


def triangulate(vd: Tensor, quads: Tensor, gamma_vd: Tensor, training: bool) -> tuple[Tensor, Tensor]:
    """Split quads into triangles: ``(vertices, faces)``.

    Inference: along diagonal 0-2 if ``gamma_0 gamma_2 > gamma_1 gamma_3``, else 1-3. Training: a centre vertex
    ``c = (g02 (v0 + v2) / 2 + g13 (v1 + v3) / 2) / (g02 + g13)`` and a fan of 4 triangles around it.
    """
    g = gamma_vd[quads]
    g02 = g[:, 0] * g[:, 2]
    g13 = g[:, 1] * g[:, 3]
    if not training:
        split_02 = (g02 > g13).detach()
        faces = torch.where(
            split_02[:, None],
            quads[:, [0, 1, 2, 0, 2, 3]],
            quads[:, [0, 1, 3, 1, 2, 3]],
        )
        return vd, faces.reshape(-1, 3)
    v = vd[quads]
    centre = (g02[:, None] * (v[:, 0] + v[:, 2]) + g13[:, None] * (v[:, 1] + v[:, 3])) / (2 * (g02 + g13))[
        :, None
    ]
    centre_id = torch.arange(quads.shape[0], device=quads.device) + vd.shape[0]
    ring = quads[:, [0, 1, 1, 2, 2, 3, 3, 0]].reshape(-1, 4, 2)
    faces = torch.cat([ring, centre_id[:, None, None].expand(-1, 4, 1)], -1).reshape(-1, 3)
    return torch.cat([vd, centre]), faces
