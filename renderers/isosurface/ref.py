"""Pure-PyTorch marching cubes on a dense grid (vectorised over cells; any device, float32 or float64)."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.renderers.isosurface.tables import CORNER_OFFSETS, EDGE_CORNERS, TRI_TABLE

__all__ = ["face_edge_ids", "marching_cubes", "mesh_from_edge_ids"]


def _edge_geometry(device: torch.device) -> tuple[Tensor, Tensor]:
    """Per cell edge: the offset (3,) of its lower node from the cell origin and its axis (0, 1, 2)."""
    corners = torch.tensor(CORNER_OFFSETS, dtype=torch.long)
    a = corners[torch.tensor([e[0] for e in EDGE_CORNERS])]
    b = corners[torch.tensor([e[1] for e in EDGE_CORNERS])]
    return torch.minimum(a, b).to(device), (b - a).abs().argmax(-1).to(device)


def face_edge_ids(values: Float[Tensor, "X Y Z"], level: float) -> Int[Tensor, " T"]:
    """Global grid-edge id of every triangle corner (3 per triangle, cells in row-major order).

    A cell's case sets bit ``k`` when corner ``k`` has ``value >= level``; the id of the grid edge from node
    ``(i, j, k)`` along ``axis`` is ``axis * X * Y * Z + (i * Y + j) * Z + k``.
    """
    device = values.device
    nx, ny, nz = values.shape
    n_nodes = nx * ny * nz
    above = values >= level
    case = torch.zeros((nx - 1, ny - 1, nz - 1), dtype=torch.long, device=device)
    for k, (dx, dy, dz) in enumerate(CORNER_OFFSETS):
        case |= above[dx : nx - 1 + dx, dy : ny - 1 + dy, dz : nz - 1 + dz].long() << k
    active = torch.nonzero((case > 0) & (case < 255))  # (A, 3) cells the surface crosses, row-major
    tri_table = torch.tensor(TRI_TABLE, dtype=torch.long, device=device)  # (256, 15)
    local_edges = tri_table[case[active[:, 0], active[:, 1], active[:, 2]]]  # (A, 15), -1 padded
    valid = local_edges >= 0
    cell_of = active[:, None, :].expand(-1, 15, -1)[valid]  # (3F, 3)
    edges = local_edges[valid]
    lower, axis = _edge_geometry(device)
    node = cell_of + lower[edges]
    return axis[edges] * n_nodes + (node[:, 0] * ny + node[:, 1]) * nz + node[:, 2]


def mesh_from_edge_ids(
    values: Float[Tensor, "X Y Z"], level: float, edge_ids: Int[Tensor, " T"], flip: bool
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """One vertex per distinct grid edge, linearly interpolated; merge coincident vertices; drop degenerate faces.

    Shared by both backends (``torch.unique`` and elementwise interpolation).
    """
    nx, ny, nz = values.shape
    n_nodes = nx * ny * nz
    if edge_ids.numel() == 0:
        return values.new_zeros((0, 3)), torch.zeros((0, 3), dtype=torch.long, device=values.device)
    unique_edges, face_vertex = torch.unique(edge_ids, return_inverse=True)
    e_axis = unique_edges // n_nodes
    e_node = unique_edges % n_nodes
    a = torch.stack([e_node // (ny * nz), (e_node // nz) % ny, e_node % nz], -1)
    b = a + torch.nn.functional.one_hot(e_axis, 3)
    va = values[a[:, 0], a[:, 1], a[:, 2]]
    vb = values[b[:, 0], b[:, 1], b[:, 2]]
    t = ((level - va) / (vb - va)).clamp(0.0, 1.0)  # vb != va: the edge crosses the level
    vertices = a.to(values.dtype) + t[:, None] * (b - a).to(values.dtype)
    faces = face_vertex.reshape(-1, 3)
    if flip:
        faces = faces.flip(-1)
    # Merge coincident vertices (t = 0 or 1 on several edges around one node) and drop collapsed faces.
    vertices, remap = torch.unique(vertices, dim=0, return_inverse=True)
    faces = remap[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    used, compact = torch.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], compact.reshape(-1, 3)


def marching_cubes(
    values: Float[Tensor, "X Y Z"], level: float, flip: bool
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """Triangles of the level set in grid-index coordinates (node ``(i, j, k)`` at ``(i, j, k)``).

    Vertices are created once per grid edge (shared by the up to four cells around it), at
    ``t = (level - v_a) / (v_b - v_a)`` along the edge; vertices that coincide (a node exactly at the level) are
    merged and the degenerate faces they leave are dropped. ``flip`` reverses the winding.
    """
    return mesh_from_edge_ids(values, level, face_edge_ids(values, level), flip)
