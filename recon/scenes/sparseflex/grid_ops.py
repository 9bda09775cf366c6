"""Rule-based edits of a SparseFlex voxel band (spec sparseflex.md section 4, direct fitting).

Pure functions on ``SparseVoxelGrid`` + parameter values; the strategy applies their row maps to the parameters and
their Adam moments through the ``ParamOptimizer``.

* :func:`band_voxels`: surface voxels (a sign change among their corners) dilated by ``radius`` voxels
  (26-connectivity: a box dilation, done separably along x, y, z).
* :func:`remap`: row maps from an old grid to a new one (``-1`` for new rows) and ``s`` for the new corners (mean of
  the known 6-neighbour corners, propagated a few rings, else +1 voxel).
* :func:`subdivide`: split every voxel into 8; child corner ``s`` is the trilinear interpolation of the parent
  corners' ``s``, doubled (the voxel unit halves); weights copied from the parent;
  :func:`subdivide_deform`: the fine ``deform`` that keeps the coarse corners' displacements.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core import Mesh
from recon.renderers.isosurface import merge_corner_values, sparse_voxel_grid
from recon.renderers.isosurface.flexicubes_types import SparseVoxelGrid

__all__ = ["GridRemap", "band_voxels", "corner_offsets", "dilate", "linear_key", "remap", "subdivide",
           "subdivide_deform", "surface_corner_s", "surface_voxel_mask"]  # fmt: skip

FILL_PASSES = 3  # rings of new corners filled from their neighbours (a band of radius 2 needs at most 2)
UNKNOWN_S = 1.0  # s (voxel units) of a new corner with no known neighbour: just outside (spec section 4.2)
SURFACE_SIGN_BAND = (
    2.0  # surface_corner_s: within this many fine voxels the closest face's side gives the sign
)
FACE_INTERIOR = 1e-4  # surface_corner_s: barycentric margin of a closest point inside its face
DEFORM_KEEP = 0.99  # subdivide_deform: the largest |tanh(delta)| a fine corner keeps (atanh stays finite)


def linear_key(coords: Int[Tensor, "... 3"], resolution: int) -> Int[Tensor, "..."]:
    """``(i (R+1) + j) (R+1) + k``: the sort key of voxels and corners (``SparseVoxelGrid``)."""
    n = resolution + 1
    return (coords[..., 0] * n + coords[..., 1]) * n + coords[..., 2]


def corner_offsets(device: torch.device) -> Int[Tensor, "8 3"]:
    """The 8 corner offsets of a voxel in the order ``c = dx + 2 dy + 4 dz``."""
    c = torch.arange(8, device=device)
    return torch.stack([c % 2, (c // 2) % 2, c // 4], -1)


def surface_voxel_mask(grid: SparseVoxelGrid, s: Float[Tensor, " Nc"]) -> Tensor:
    """(Nv,) bool: the voxel's corners are not all on one side of ``s = 0`` (inside is ``s < 0``)."""
    inside = s.detach()[grid.voxel_corners] < 0
    return inside.any(-1) & ~inside.all(-1)


def dilate(voxels: Int[Tensor, "M 3"], radius: int, resolution: int) -> Int[Tensor, "K 3"]:
    """Unique voxels within ``radius`` (Chebyshev, i.e. ``radius`` steps of 26-connectivity) of ``voxels``,
    clipped to ``[0, resolution)``."""
    out = voxels
    steps = torch.arange(-radius, radius + 1, device=voxels.device)
    for axis in range(3):
        shifted = out[:, None, :].repeat(1, len(steps), 1)
        shifted[..., axis] += steps
        shifted = shifted.reshape(-1, 3)
        shifted = shifted[((shifted >= 0) & (shifted < resolution)).all(-1)]
        keys = torch.unique(linear_key(shifted, resolution))
        n = resolution + 1
        out = torch.stack([keys // (n * n), (keys // n) % n, keys % n], -1)
    return out


def band_voxels(grid: SparseVoxelGrid, s: Float[Tensor, " Nc"], radius: int) -> Int[Tensor, "K 3"]:
    """Surface voxels of ``grid`` dilated by ``radius`` voxels (spec section 4.2); empty when no voxel is crossed."""
    surface = grid.voxels[surface_voxel_mask(grid, s)]
    return dilate(surface, radius, grid.resolution)


def _lookup(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """Row of each of ``keys`` in ``sorted_keys`` (unique, ascending), or -1 where absent."""
    if sorted_keys.numel() == 0:
        return torch.full_like(keys, -1)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[pos] == keys, pos, torch.full_like(pos, -1))


@dataclass(frozen=True)
class GridRemap:
    """How the rows of a new grid relate to an old one.

    Attributes:
        grid: the new grid.
        corner_source: (Nc_new,) old corner row of each new corner, -1 for new corners.
        voxel_source: (Nv_new,) old voxel row of each new voxel, -1 for new voxels.
        new_corner_s: (number of new corners,) ``s`` of the new corners, in the order of their rows.
    """

    grid: SparseVoxelGrid
    corner_source: Int[Tensor, " Nc"]
    voxel_source: Int[Tensor, " Nv"]
    new_corner_s: Float[Tensor, " M"]


def _fill_new_corners(grid: SparseVoxelGrid, s: Tensor, known: Tensor) -> Tensor:
    """Fill unknown ``s`` with the mean of known 6-neighbour corners, ring by ring; +1 where none is known."""
    keys = linear_key(grid.corners, grid.resolution)
    eye = torch.eye(3, dtype=torch.int64, device=s.device)
    neighbours = torch.cat([eye, -eye])  # (6, 3)
    s, known = s.clone(), known.clone()
    for _ in range(FILL_PASSES):
        todo = (~known).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        rows = _lookup(keys, linear_key(grid.corners[todo, None, :] + neighbours, grid.resolution))
        valid = rows >= 0
        valid &= known[rows.clamp_min(0)]
        count = valid.sum(-1)
        total = torch.where(valid, s[rows.clamp_min(0)], torch.zeros_like(s[rows.clamp_min(0)])).sum(-1)
        filled = count > 0
        s[todo[filled]] = total[filled] / count[filled].to(s.dtype)
        known[todo[filled]] = True
    s[~known] = UNKNOWN_S
    return s


def remap(old: SparseVoxelGrid, s: Float[Tensor, " Nc"], voxels: Int[Tensor, "K 3"]) -> GridRemap:
    """Row maps from ``old`` to the grid of ``voxels`` (same resolution) and ``s`` of its new corners.

    Args:
        old: the current grid.
        s: (Nc_old,) its corner values.
        voxels: (K, 3) the new active voxels.

    Returns:
        ``GridRemap``; kept rows carry their old values, new corners get the mean of their known 6-neighbours.
    """
    r = old.resolution
    grid = sparse_voxel_grid(voxels, r)
    corner_source = _lookup(linear_key(old.corners, r), linear_key(grid.corners, r))
    voxel_source = _lookup(linear_key(old.voxels, r), linear_key(grid.voxels, r))
    known = corner_source >= 0
    values = torch.zeros(grid.num_corners, dtype=s.dtype, device=s.device)
    values[known] = s.detach()[corner_source[known]]
    filled = _fill_new_corners(grid, values, known)
    return GridRemap(grid, corner_source, voxel_source, filled[~known])


def _trilinear_weights(device: torch.device, dtype: torch.dtype) -> Float[Tensor, "27 8"]:
    """Weights of the 8 parent corners at the 27 points ``t in {0, 1/2, 1}^3`` (row ``(tx 3 + ty) 3 + tz``
    in half-voxel steps)."""
    half = torch.tensor([0.0, 0.5, 1.0], device=device, dtype=dtype)
    t = torch.stack(torch.meshgrid(half, half, half, indexing="ij"), -1).reshape(27, 1, 3)
    bits = corner_offsets(device).to(dtype)[None]  # (1, 8, 3)
    return torch.where(bits > 0, t, 1 - t).prod(-1)


def subdivide(
    grid: SparseVoxelGrid, s: Float[Tensor, " Nc"], weights: Float[Tensor, "Nv 21"]
) -> tuple[SparseVoxelGrid, Float[Tensor, " Nc2"], Float[Tensor, "Nv2 21"], Int[Tensor, " Nv2"]]:
    """Split every voxel into 8 at resolution ``2 R`` (spec section 4.3).

    .. math:: s_{child}(x) = 2 \\sum_{c} w_c(x)\\, s_{parent, c}

    with trilinear weights ``w_c`` at the child corner's position in its parent; corners shared by children of
    different parents receive the mean (``merge_corner_values``; trilinear interpolation agrees on shared faces,
    so the mean equals each value).

    Returns:
        ``(grid, s, weights, parent)``: the fine grid, its corner ``s`` (fine voxel units), per-voxel weights copied
        from the parents and the parent row of every fine voxel. Not differentiable (detached values).
    """
    fine, parent = _children(grid)
    values = _child_corner_values(grid, fine, parent, s.detach())
    return fine, 2.0 * values, weights.detach()[parent].clone(), parent


def subdivide_deform(
    grid: SparseVoxelGrid, deform: Float[Tensor, "Nc 3"], fine: SparseVoxelGrid, parent: Int[Tensor, " Nv2"]
) -> Float[Tensor, "Nc2 3"]:
    """Raw ``deform`` of the fine grid of ``subdivide`` that keeps the coarse grid's corner displacements.

    A coarse corner moves by ``D = (h / 2) k tanh(delta)`` (``k = DEFORM_SCALE``); the displacement field inside a
    coarse voxel is the trilinear interpolation of its corners' ``D``, and every fine corner takes that value, so
    the fine cells tile the same deformed space (a trilinear map restricted to a sub-cell is trilinear). In fine
    units (``h_f = h / 2``): ``delta_f = atanh(clamp(2 tanh(delta), -DEFORM_KEEP, DEFORM_KEEP))``; a coarse
    displacement beyond ``DEFORM_KEEP`` of half a fine cell is cut to it. Resetting ``deform`` to 0 instead moves
    the surface by up to half a coarse voxel at the split. Not differentiable (detached values).
    """
    displacement = 2.0 * torch.tanh(deform.detach())  # in half fine cells
    values = _child_corner_values(grid, fine, parent, displacement)
    return torch.atanh(values.clamp(-DEFORM_KEEP, DEFORM_KEEP))


def surface_corner_s(
    fine: SparseVoxelGrid,
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    fallback: Float[Tensor, " Nc2"],
    *,
    clip: float,
    box: tuple[float, float] = (-0.5, 0.5),
) -> Float[Tensor, " Nc2"]:
    """Corner ``s`` of ``fine`` (fine voxel units) re-measured on the surface a coarse grid extracts: the signed
    distance from each fine corner to the mesh ``(vertices, faces)`` (same box coordinates, outward faces).

    The magnitude is the exact point-to-triangle distance (``recon.metrics.geometry.surface_distance``). The sign
    is the side of the closest point's pseudo-normal (``+`` outward) within ``SURFACE_SIGN_BAND`` fine voxels of the
    mesh: the face normal inside a face, and on an edge or a vertex the barycentric blend of the angle-weighted
    vertex normals (the one face reported there can put a point outside a sharp vertex on the inside). Farther
    out it is the sign of ``fallback`` (the trilinear ``s`` of ``subdivide``; 0 counts as outside), which an
    open surface's boundary cannot mislead. Values are clipped to
    ``[-clip, clip]``. Extracted at ``fine``'s resolution, this field gives back the coarse surface up to the fine
    grid's own interpolation error, whatever the coarse weights and deformations were; an empty mesh returns
    ``fallback``. Not differentiable.
    """
    from recon.metrics.geometry import surface_distance

    if faces.shape[0] == 0 or fine.num_corners == 0:
        return fallback.detach().clone()
    lo, hi = box
    h = (hi - lo) / fine.resolution
    points = fine.corners.to(torch.float64) * h + lo
    found = surface_distance(points, Mesh(vertices.detach().double(), faces))
    distance = found.distances / h
    v64 = vertices.detach().double()
    tri = v64[faces[found.faces]]
    bary = _barycentric(found.closest, tri)
    normals = found.normals.clone()
    on_rim = (bary <= FACE_INTERIOR).any(-1)  # on an edge or a vertex: the pseudo-normal there
    if bool(on_rim.any()):
        vertex_normals = _angle_weighted_normals(v64, faces)
        normals[on_rim] = (bary[on_rim, :, None] * vertex_normals[faces[found.faces[on_rim]]]).sum(1)
    side = torch.sign(((points - found.closest) * normals).sum(-1))
    outer = torch.where(fallback.detach() < 0, -1.0, 1.0).to(distance)
    sign = torch.where((distance < SURFACE_SIGN_BAND) & (side != 0), side, outer)
    return (sign * distance).clamp(-clip, clip).to(fallback.dtype)


def _barycentric(x: Float[Tensor, "P 3"], tri: Float[Tensor, "P 3 3"]) -> Float[Tensor, "P 3"]:
    """Barycentric coordinates of points ``x`` on the planes of their triangles."""
    e0, e1, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], x - tri[:, 0]
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (d * e0).sum(-1), (d * e1).sum(-1)
    denom = (d00 * d11 - d01 * d01).clamp_min(1e-30)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    return torch.stack([1 - v - w, v, w], -1)


def _angle_weighted_normals(
    vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]
) -> Float[Tensor, "V 3"]:
    """Unit vertex normals: the face normals around a vertex weighted by the face's angle there (Baerentzen and
    Aanaes 2005: their sign tells inside from outside at vertices, and their blend along an edge at edges)."""
    tri = vertices[faces]  # (F, 3, 3)
    n = Mesh(vertices, faces).face_normals()
    out = torch.zeros_like(vertices)
    for k in range(3):
        a = tri[:, (k + 1) % 3] - tri[:, k]
        b = tri[:, (k + 2) % 3] - tri[:, k]
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)
        out.index_add_(0, faces[:, k], n * torch.arccos(cos.clamp(-1, 1))[:, None])
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _children(grid: SparseVoxelGrid) -> tuple[SparseVoxelGrid, Int[Tensor, " Nv2"]]:
    """The grid of every voxel's 8 children at ``2 R`` and the parent row of each fine voxel."""
    r = grid.resolution
    children = (2 * grid.voxels[:, None, :] + corner_offsets(grid.voxels.device)).reshape(-1, 3)
    fine = sparse_voxel_grid(children, 2 * r)
    parent = _lookup(
        linear_key(grid.voxels, r), linear_key(torch.div(fine.voxels, 2, rounding_mode="floor"), r)
    )
    return fine, parent


def _child_corner_values(
    grid: SparseVoxelGrid, fine: SparseVoxelGrid, parent: Tensor, values: Float[Tensor, "Nc ..."]
) -> Float[Tensor, "Nc2 ..."]:
    """Trilinear interpolation of coarse corner ``values`` at the fine corners (mean over sharing voxels)."""
    offsets = corner_offsets(values.device)
    # child corner position in its parent in half-voxel steps: fine corner - 2 parent, each in {0, 1, 2}
    local = fine.voxels[:, None, :] + offsets - 2 * grid.voxels[parent][:, None, :]  # (Nv2, 8, 3)
    table = _trilinear_weights(values.device, values.dtype)[
        (local[..., 0] * 3 + local[..., 1]) * 3 + local[..., 2]
    ]
    parent_values = values[grid.voxel_corners[parent]]  # (Nv2, 8, *D)
    child = torch.einsum("vcp,vp...->vc...", table, parent_values)
    merged, _ = merge_corner_values(fine, child)
    return merged
