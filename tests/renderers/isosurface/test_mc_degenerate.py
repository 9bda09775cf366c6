"""Marching cubes on fields with grid nodes exactly on (or within 1e-9 / 1e-5 of) the level: no slivers, no
degenerate or duplicate faces, no self-intersections, watertight and manifold (Open3D's and trimesh's checks), on
both backends.

Before ``EDGE_MARGIN`` such nodes produced coincident vertices whose merge left zero-area, duplicate faces and
non-manifold edges, or slivers of area ~1e-10 cell^2 that Open3D reports as intersecting their neighbours (the NeuS
export failure, issue 18 item 7); 19 of the cases below failed then.
"""

from fractions import Fraction

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from recon.renderers.isosurface import marching_cubes
from recon.renderers.isosurface.ref import EDGE_MARGIN

N = 20  # grid nodes per axis; index coordinates (cell size 1) unless a bbox is given
# Smallest face the margin allows is a corner cut with its three vertices EDGE_MARGIN from the corner:
# area (sqrt(3) / 2) EDGE_MARGIN^2; the bound below leaves a factor 1.7 for float32 round-off.
MIN_AREA_FRACTION = 0.5 * EDGE_MARGIN**2  # of cell area (cell edge length squared)
# Offsets "within round-off of the level": 1e-9 (below float32 resolution of the vertex positions, so the old
# extractor merged the vertices) and 1e-5 (the NeuS failure: t ~ 1e-5 slivers that float32 keeps apart).
NEAR = (1e-9, 1e-5)


def _index_grid() -> torch.Tensor:
    axis = torch.arange(N, dtype=torch.float32)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)


def _closed(values: torch.Tensor, outside: float = 1.0) -> torch.Tensor:
    """Set the outer layer of nodes outside, so every surface cut by the grid border is capped (closed)."""
    values = values.clone()
    for dim in range(3):
        values.select(dim, 0).fill_(outside)
        values.select(dim, N - 1).fill_(outside)
    return values


def _jitter_on_level(values: torch.Tensor, seed: int, near: float) -> torch.Tensor:
    """Move the nodes exactly on the level 0 by -near, 0 or +near at random (float32 holds 1e-9 next to 0)."""
    gen = torch.Generator().manual_seed(seed)
    on = values == 0
    step = (torch.randint(-1, 2, values.shape, generator=gen) * near).to(values.dtype)
    return torch.where(on, step, values)


def _plane_through_nodes() -> torch.Tensor:
    """x = 9 (a node layer) capped at the border: 256 nodes exactly on the level."""
    return _closed(_index_grid()[..., 0] - 9.0)


def _tilted_plane_through_nodes() -> torch.Tensor:
    """x + y = 19 through nodes (the diagonal plane); many nodes exactly on the level."""
    p = _index_grid()
    return _closed(p[..., 0] + p[..., 1] - 19.0)


def _box_through_nodes() -> torch.Tensor:
    """max-norm box of half-size 5 cells around node (9, 9, 9): faces, edges and corners on nodes."""
    return (_index_grid() - 9.0).abs().amax(-1) - 5.0


def _sphere_through_nodes() -> torch.Tensor:
    """|p - c| - 5 around node c = (9, 9, 9): nodes such as c + (3, 4, 0) lie exactly on the sphere."""
    return (_index_grid() - 9.0).norm(dim=-1) - 5.0


def _sphere_off_centre_through_nodes() -> torch.Tensor:
    """A sphere centred at (9.5, 9.5, 9) of radius sqrt(0.5 + 16): nodes c + (+-0.5, +-0.5, +-4) on it."""
    centre = torch.tensor([9.5, 9.5, 9.0])
    return (_index_grid() - centre).norm(dim=-1) - float(np.sqrt(16.5))


PATTERNS = {
    "plane": _plane_through_nodes,
    "tilted_plane": _tilted_plane_through_nodes,
    "box": _box_through_nodes,
    "sphere": _sphere_through_nodes,
    "sphere_off_centre": _sphere_off_centre_through_nodes,
}
FLAT = {"tilted_plane"}  # level sets where Open3D's intersection test needs the exact re-check (see below)


def _orient(a, b, c, d) -> int:
    """Sign of det[b - a, c - a, d - a] in exact rational arithmetic (points are lists of Fractions)."""
    u, v, w = ([q[i] - a[i] for i in range(3)] for q in (b, c, d))
    det = (
        u[0] * (v[1] * w[2] - v[2] * w[1])
        - u[1] * (v[0] * w[2] - v[2] * w[0])
        + u[2] * (v[0] * w[1] - v[1] * w[0])
    )
    return (det > 0) - (det < 0)


def _segment_hits_triangle(p, q, tri) -> bool:
    """Non-coplanar case: the closed segment pq meets the closed triangle (exact orientation predicates)."""
    s_p, s_q = _orient(*tri, p), _orient(*tri, q)
    if s_p * s_q > 0 or s_p == s_q == 0:
        return False  # both ends strictly on one side (coplanar segments are decided by the 2D test)
    sides = [_orient(p, q, tri[k], tri[(k + 1) % 3]) for k in range(3)]
    return not (min(sides) < 0 < max(sides))


def _coplanar_overlap(tri_a, tri_b) -> bool:
    """Coplanar triangles: overlap in the projection that drops the normal's largest axis (exact)."""
    d1, d2 = ([tri_a[k][i] - tri_a[0][i] for i in range(3)] for k in (1, 2))
    normal = [d1[1] * d2[2] - d1[2] * d2[1], d1[2] * d2[0] - d1[0] * d2[2], d1[0] * d2[1] - d1[1] * d2[0]]
    i, j = [k for k in range(3) if k != max(range(3), key=lambda k: abs(normal[k]))]

    def side(a, b, c) -> int:
        det = (b[i] - a[i]) * (c[j] - a[j]) - (b[j] - a[j]) * (c[i] - a[i])
        return (det > 0) - (det < 0)

    def inside(tri, point) -> bool:
        sides = [side(tri[k], tri[(k + 1) % 3], point) for k in range(3)]
        return not (min(sides) < 0 < max(sides))

    for k in range(3):
        for m in range(3):
            a, b, c, d = tri_a[k], tri_a[(k + 1) % 3], tri_b[m], tri_b[(m + 1) % 3]
            if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0:
                return True
    return any(inside(tri_b, p) for p in tri_a) or any(inside(tri_a, p) for p in tri_b)


def _triangles_intersect_exactly(tri_a: np.ndarray, tri_b: np.ndarray) -> bool:
    """Closed triangles (3, 3) meet, decided exactly on their float coordinates (Fractions, no epsilon)."""
    a = [[Fraction(float(c)) for c in p] for p in tri_a]
    b = [[Fraction(float(c)) for c in p] for p in tri_b]
    if all(_orient(*a, p) == 0 for p in b):
        return _coplanar_overlap(a, b)
    return any(_segment_hits_triangle(s[k], s[(k + 1) % 3], t) for s, t in ((a, b), (b, a)) for k in range(3))


def test_exact_triangle_test_on_known_pairs():
    # The exact re-check used below: crossing, touching, coplanar overlapping and coplanar disjoint pairs.
    base = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert _triangles_intersect_exactly(base, np.array([[0.2, 0.2, -1.0], [0.2, 0.2, 1.0], [2.0, 2.0, 1.0]]))
    assert _triangles_intersect_exactly(base, np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 1.0], [2.0, 2.0, 1.0]]))
    assert not _triangles_intersect_exactly(
        base, np.array([[0.2, 0.2, 0.1], [0.2, 0.3, 1.0], [2.0, 2.0, 1.0]])
    )
    assert _triangles_intersect_exactly(base, np.array([[0.2, 0.2, 0.0], [2.0, 0.2, 0.0], [2.0, 2.0, 0.0]]))
    assert not _triangles_intersect_exactly(
        base, np.array([[0.6, 0.6, 0.0], [2.0, 0.6, 0.0], [2.0, 2.0, 0.0]])
    )


def _assert_no_self_intersections(vertices: np.ndarray, faces: np.ndarray, *, flat: bool) -> None:
    o3 = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    assert o3.is_edge_manifold(allow_boundary_edges=False) and o3.is_vertex_manifold()
    flagged = np.asarray(o3.get_self_intersecting_triangles())
    if not flat:
        assert len(flagged) == 0 and o3.is_watertight(), flagged[:5]
        return
    # Open3D's pair test (Moller's, with an absolute epsilon after normalising each pair) misreports disjoint
    # triangles that are coplanar up to float32 round-off, which a flat level set (a tilted plane) is full of:
    # every pair it flags there is re-decided exactly and must be disjoint.
    real = [tuple(pair) for pair in flagged if _triangles_intersect_exactly(*vertices[faces[pair]])]
    assert not real, real[:5]


def _assert_clean(mesh, cell: float = 1.0, *, flat: bool = False) -> None:
    vertices = mesh.vertices.double().numpy()
    faces = mesh.faces.numpy()
    assert len(faces) > 100
    tm = trimesh.Trimesh(vertices, faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    _assert_no_self_intersections(vertices, faces, flat=flat)
    areas = mesh.face_areas().double()
    assert float(areas.min()) >= MIN_AREA_FRACTION * cell**2, float(areas.min())
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == len(faces)  # no duplicate faces
    assert len(np.unique(vertices, axis=0)) == len(vertices)  # no coincident vertices


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_nodes_exactly_on_level(pattern, backend):
    values = PATTERNS[pattern]()
    assert int((values == 0).sum()) >= 24  # the pattern really puts nodes on the level
    _assert_clean(marching_cubes(values, backend=backend), flat=pattern in FLAT)


@pytest.mark.parametrize("near", NEAR)
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_nodes_within_round_off_of_level(pattern, near, backend):
    values = _jitter_on_level(PATTERNS[pattern](), seed=len(pattern), near=near)
    assert int(((values.abs() <= near) & (values != 0)).sum()) >= 12
    _assert_clean(marching_cubes(values, backend=backend), flat=pattern in FLAT)


def test_world_bbox_and_density_orientation(backend):
    # The same guarantees in world units (cell 2 / (N - 1)) and for inside="above" (a density-like field).
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    values = _jitter_on_level(_sphere_through_nodes(), seed=3, near=1e-5)
    mesh = marching_cubes(-values, bbox=box, inside="above", backend=backend)
    _assert_clean(mesh, cell=2.0 / (N - 1))


def test_margin_bounds_vertex_displacement():
    # Nodes on the level put vertices EDGE_MARGIN (of a cell) inside their edges: the plane x = 9 comes out at
    # x = 9 - EDGE_MARGIN (the on-level nodes count as above the level, so crossing edges end at them).
    mesh = marching_cubes(_plane_through_nodes(), backend="torch")
    x = mesh.vertices[:, 0]
    interior = (
        (mesh.vertices[:, 1:] > 1.5).all(-1) & (mesh.vertices[:, 1:] < N - 2.5).all(-1) & (x > 2) & (x < 16)
    )
    assert int(interior.sum()) > 200
    torch.testing.assert_close(
        x[interior], torch.full_like(x[interior], 9.0 - EDGE_MARGIN), rtol=0, atol=1e-6
    )


def test_backends_identical_on_degenerate_fields():
    for pattern in sorted(PATTERNS):
        values = _jitter_on_level(PATTERNS[pattern](), seed=7, near=1e-5)
        ref_mesh = marching_cubes(values, backend="torch")
        fast = marching_cubes(values, backend="warp")
        assert torch.equal(fast.faces, ref_mesh.faces) and torch.equal(fast.vertices, ref_mesh.vertices), (
            pattern
        )
