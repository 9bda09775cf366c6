"""Base tessellations of the superquadric blocks, the background sphere and the ground (spec superquadrics.md 1-2).

Pure index/position maths, built here (no PyTorch3D): an icosphere subdivided from an icosahedron, a UV sphere,
the inward background sphere and the subdivided ground square. Faces are counter-clockwise seen from the side the
normal points to (outward for the spheres, +y for the ground), as ``recon.core.Mesh`` expects.
"""

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "BaseMesh",
    "background_sphere",
    "ground_square",
    "icosphere",
    "subdivide",
    "uv_sphere",
]

MAX_ICOSPHERE_LEVEL = 6  # 81 922 vertices; beyond that a block mesh is no longer "a few blocks"


@dataclass(frozen=True)
class BaseMesh:
    """A triangle mesh as two tensors (positions in float64 so that derived angles are exact).

    Attributes:
        vertices: (V, 3) positions.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from the normal side.
    """

    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]


def _icosahedron() -> BaseMesh:
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    verts = torch.tensor(
        [
            [-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0],
            [0, -1, phi], [0, 1, phi], [0, -1, -phi], [0, 1, -phi],
            [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1],
        ],
        dtype=torch.float64,
    )  # fmt: skip
    faces = torch.tensor(
        [
            [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
            [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
            [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
            [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
        ],
        dtype=torch.int64,
    )  # fmt: skip
    return BaseMesh(verts / verts.norm(dim=-1, keepdim=True), faces)


def subdivide(mesh: BaseMesh, *, project_to_sphere: bool = False) -> BaseMesh:
    """Split every triangle into four at its edge midpoints (shared edges share one new vertex).

    Args:
        mesh: the mesh to refine; V vertices, F faces, E unique edges.
        project_to_sphere: normalise every vertex to unit length afterwards (icosphere refinement).

    Returns:
        A mesh with ``V + E`` vertices and ``4 F`` faces; the first V vertices are the input ones.
    """
    faces = mesh.faces
    num_v = mesh.vertices.shape[0]
    edges = torch.cat(
        [faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]
    )  # (3F, 2): edge k of face f at k*F+f
    unique, inverse = torch.unique(edges.sort(dim=1).values, dim=0, return_inverse=True)
    mids = 0.5 * (mesh.vertices[unique[:, 0]] + mesh.vertices[unique[:, 1]])
    vertices = torch.cat([mesh.vertices, mids])
    if project_to_sphere:
        vertices = vertices / vertices.norm(dim=-1, keepdim=True)
    m01, m12, m20 = (num_v + inverse).reshape(3, -1)
    v0, v1, v2 = faces.unbind(-1)
    new_faces = torch.cat(
        [
            torch.stack([v0, m01, m20], -1),
            torch.stack([v1, m12, m01], -1),
            torch.stack([v2, m20, m12], -1),
            torch.stack([m01, m12, m20], -1),
        ]
    )
    return BaseMesh(vertices, new_faces)


def icosphere(level: int = 1) -> BaseMesh:
    """Unit icosphere: an icosahedron subdivided ``level`` times with vertices projected to the sphere.

    Level L has ``10·4^L + 2`` vertices and ``20·4^L`` faces (level 1: 42 / 80, level 2: 162 / 320). From level 1 on
    the poles ``(0, ±1, 0)`` are vertices (midpoints of the icosahedron edges ``(∓1, ±φ, 0)``).

    Example:
        >>> icosphere(1).vertices.shape, icosphere(1).faces.shape
        (torch.Size([42, 3]), torch.Size([80, 3]))
    """
    if not isinstance(level, int) or not 0 <= level <= MAX_ICOSPHERE_LEVEL:
        raise ValueError(f"icosphere level must be an int in [0, {MAX_ICOSPHERE_LEVEL}], got {level!r}")
    mesh = _icosahedron()
    for _ in range(level):
        mesh = subdivide(mesh, project_to_sphere=True)
    return mesh


def uv_sphere(n_lat: int = 16, n_lon: int = 32) -> BaseMesh:
    """Unit UV sphere with poles on the y axis: ``n_lat`` latitude bands, ``n_lon`` longitude segments.

    Vertices: the north pole ``(0, 1, 0)``, ``n_lat - 1`` rings of ``n_lon`` vertices (ring k at polar angle
    ``π k / n_lat``, longitude ``ω = atan2(x, z)``), the south pole. Faces: ``2 n_lon (n_lat - 1)``.
    """
    if n_lat < 2 or n_lon < 3:
        raise ValueError(f"uv_sphere needs n_lat >= 2 and n_lon >= 3, got n_lat={n_lat}, n_lon={n_lon}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat  # polar angle from +y
    omega = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon - math.pi
    th, om = torch.meshgrid(theta, omega, indexing="ij")
    ring = torch.stack([th.sin() * om.sin(), th.cos(), th.sin() * om.cos()], -1).reshape(-1, 3)
    vertices = torch.cat([ring.new_tensor([[0.0, 1.0, 0.0]]), ring, ring.new_tensor([[0.0, -1.0, 0.0]])])
    south = vertices.shape[0] - 1
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    faces = [torch.stack([torch.zeros_like(j), 1 + jn, 1 + j], -1)]  # north cap
    for k in range(n_lat - 2):
        a, b = 1 + k * n_lon, 1 + (k + 1) * n_lon
        faces += [torch.stack([a + j, a + jn, b + j], -1), torch.stack([a + jn, b + jn, b + j], -1)]
    last = 1 + (n_lat - 2) * n_lon
    faces.append(torch.stack([torch.full_like(j, south), last + j, last + jn], -1))  # south cap
    return BaseMesh(
        vertices, torch.cat(faces)[:, [2, 1, 0]]
    )  # the rings above run clockwise seen from outside


def background_sphere(z_far: float = 10.0, level: int = 2) -> BaseMesh:
    """The background: an icosphere of radius ``z_far`` with faces flipped so the normals point inward (spec 1)."""
    mesh = icosphere(level)
    return BaseMesh(mesh.vertices * z_far, mesh.faces[:, [2, 1, 0]])


def ground_square(extent: float = 10.0, subdivisions: int = 3) -> BaseMesh:
    """The ground: the square ``[-extent, extent]²`` in the x-z plane (y = 0), normal +y, split 4x per level.

    Two triangles at level 0, ``2·4^k`` after ``k`` subdivisions (k = 3: 81 vertices, 128 faces).
    """
    if subdivisions < 0:
        raise ValueError(f"ground subdivisions must be >= 0, got {subdivisions}")
    corners = torch.tensor([[1, 0, -1], [1, 0, 1], [-1, 0, 1], [-1, 0, -1]], dtype=torch.float64)
    mesh = BaseMesh(corners * extent, torch.tensor([[3, 1, 0], [3, 2, 1]]))
    for _ in range(subdivisions):
        mesh = subdivide(mesh)
    return mesh
