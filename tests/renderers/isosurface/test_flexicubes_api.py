"""FlexiCubes extraction: closed accurate spheres, orientation, sparse == dense, open surfaces, shared corners,
chunking, input validation."""

import math
from collections import Counter

import pytest
import torch
import trimesh

from recon.renderers.isosurface import (
    dense_voxel_grid,
    flexicubes_dense,
    flexicubes_sparse,
    merge_corner_values,
    sparse_voxel_grid,
)
from recon.renderers.isosurface import flexicubes_ref as ref
from tests.typecheck import assert_rejected

RADIUS = 0.3


def _corner_positions(resolution: int) -> torch.Tensor:
    """((R+1)^3, 3) rest positions of the dense grid over the unit box [-0.5, 0.5]^3."""
    g = torch.linspace(-0.5, 0.5, resolution + 1, dtype=torch.float64)
    return torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def _sphere(resolution: int) -> torch.Tensor:
    """(R+1)^3 signed distance to a sphere, in voxel units (centre slightly off the grid nodes)."""
    p = _corner_positions(resolution) - torch.tensor([0.013, -0.021, 0.007], dtype=torch.float64)
    return ((p.norm(dim=-1) - RADIUS) * resolution).reshape((resolution + 1,) * 3)


def _random_band(resolution: int, gen: torch.Generator):
    """A noisy sphere (band of surface cubes with random topology nearby), deformations and raw weights."""
    n = resolution + 1
    s = _sphere(resolution) + 0.8 * torch.randn(n, n, n, generator=gen, dtype=torch.float64)
    deform = 0.5 * torch.randn(n**3, 3, generator=gen, dtype=torch.float64)
    weights = torch.randn(resolution**3, 21, generator=gen, dtype=torch.float64)
    return s, deform, weights


def _trimesh(out) -> trimesh.Trimesh:
    return trimesh.Trimesh(out.vertices.detach().numpy(), out.faces.numpy(), process=False)


def _edge_use(faces: torch.Tensor) -> Counter:
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values
    return Counter(map(tuple, edges.tolist()))


@pytest.mark.parametrize("training", [False, True])
def test_sphere_32_watertight_manifold_accurate_outward(training):
    out = flexicubes_dense(_sphere(32), training=training, backend="torch")
    tm = _trimesh(out)
    assert tm.is_watertight and tm.is_winding_consistent and tm.euler_number == 2
    assert set(_edge_use(out.faces).values()) == {2}  # every edge has exactly two faces: manifold
    centre = torch.tensor([0.013, -0.021, 0.007], dtype=torch.float64)
    dual = out.vertices[: out.num_dual_vertices]
    error = ((dual - centre).norm(dim=-1) - RADIUS).abs().max() / RADIUS
    assert float(error) < 0.005
    assert 0.97 < tm.volume / (4 / 3 * math.pi * RADIUS**3) < 1.0  # positive: faces wind outward; inscribed
    assert out.faces.shape[0] == (4 if training else 2) * out.quad_edges.shape[0]
    mesh = out.mesh()
    assert mesh.num_faces == out.faces.shape[0] and float(mesh.face_areas().min()) > 0


def test_inverting_s_flips_every_face():
    s = _sphere(16)
    out, flipped = (flexicubes_dense(v, backend="torch") for v in (s, -s))
    assert torch.equal(out.vertices, flipped.vertices)

    def canonical(faces):  # rotate each triangle so that its smallest index comes first (keeps the winding)
        shift = faces.argmin(-1, keepdim=True)
        return {tuple(r) for r in faces.gather(1, (shift + torch.arange(3)) % 3).tolist()}

    assert canonical(flipped.faces) == canonical(out.faces[:, [0, 2, 1]])
    assert canonical(flipped.faces).isdisjoint(canonical(out.faces))


def test_sparse_with_all_voxels_equals_dense(gen):
    s, deform, weights = _random_band(10, gen)
    for training in (False, True):
        dense = flexicubes_dense(s, deform, weights, training=training, backend="torch")
        sparse = flexicubes_sparse(
            dense_voxel_grid(10), s.reshape(-1), deform, weights, training=training, backend="torch"
        )
        assert dense.faces.shape[0] > 100
        # identical order by construction of both paths; compare as sets too (the spec's "up to order")
        assert torch.equal(sparse.faces, dense.faces) and torch.equal(sparse.vertices, dense.vertices)
        assert torch.equal(sparse.l_dev, dense.l_dev) and torch.equal(sparse.vertex_voxel, dense.vertex_voxel)


def _sparse_band(resolution: int, width: float):
    """Voxels whose centre is within ``width`` voxels of the sphere, with the sphere field at their corners."""
    grid = dense_voxel_grid(resolution)
    centre = (grid.voxels.to(torch.float64) + 0.5) / resolution - 0.5
    keep = ((centre.norm(dim=-1) - RADIUS).abs() * resolution) < width
    band = sparse_voxel_grid(grid.voxels[keep], resolution)
    s = _sphere(resolution).reshape(-1)[_dense_corner_rows(band)]
    return band, s


def _dense_corner_rows(grid) -> torch.Tensor:
    n = grid.resolution + 1
    return (grid.corners[:, 0] * n + grid.corners[:, 1]) * n + grid.corners[:, 2]


def test_removing_one_voxel_opens_exactly_its_faces():
    band, s = _sparse_band(16, 2.0)
    full = flexicubes_sparse(band, s, backend="torch")
    assert _trimesh(full).is_watertight
    # drop one surface voxel
    row = int(full.vertex_voxel[full.num_dual_vertices // 2])
    removed = band.voxels[row]
    keep = (band.voxels != removed).any(-1)
    holed_grid = sparse_voxel_grid(band.voxels[keep], 16)
    holed = flexicubes_sparse(holed_grid, s[_rows_of(band, holed_grid)], backend="torch")

    def faces_by_position(out):
        return {tuple(sorted(tuple(v) for v in out.vertices[f].tolist())) for f in out.faces}

    lost = {tuple(f) for f in faces_by_position(full)} - faces_by_position(holed)
    # inference: quad q owns faces 2q, 2q+1; a quad is lost when one of its 4 dual vertices belongs to the voxel
    quads_using = (full.vertex_voxel[full.faces.reshape(-1, 6)] == row).any(-1)
    assert faces_by_position(holed) <= faces_by_position(full)
    assert len(lost) == 2 * int(quads_using.sum()) > 0
    boundary = [e for e, n in _edge_use(holed.faces).items() if n == 1]
    assert len(boundary) > 0 and not _trimesh(holed).is_watertight
    assert max(_edge_use(holed.faces).values()) == 2


def _rows_of(grid, subgrid) -> torch.Tensor:
    """Rows in ``grid.corners`` of ``subgrid.corners`` (both sorted by key)."""
    return torch.searchsorted(_dense_corner_rows(grid), _dense_corner_rows(subgrid))


def test_corner_shared_by_8_voxels_receives_the_mean(gen):
    grid = sparse_voxel_grid(torch.cartesian_prod(*[torch.arange(2)] * 3), 4)  # 2x2x2 voxels around (1, 1, 1)
    values = torch.randn(8, 8, 2, generator=gen, dtype=torch.float64)
    merged, consistency = merge_corner_values(grid, values)
    centre = int(((grid.corners == 1).all(-1)).nonzero())
    owners = (grid.voxel_corners == centre).nonzero()
    assert owners.shape[0] == 8
    torch.testing.assert_close(merged[centre], values[owners[:, 0], owners[:, 1]].mean(0))
    assert float(consistency) > 0
    # consistent inputs (each voxel predicts the same value per corner): merged is that value, loss 0
    truth = torch.randn(grid.num_corners, generator=gen, dtype=torch.float64)
    merged, consistency = merge_corner_values(grid, truth[grid.voxel_corners])
    torch.testing.assert_close(merged, truth)
    assert float(consistency) < 1e-28  # zero up to the rounding of a mean of equal values


@pytest.mark.parametrize("chunks", [2, 3])
@pytest.mark.parametrize("training", [False, True])
def test_chunked_equals_unchunked(gen, chunks, training):
    band, s = _sparse_band(12, 2.5)
    s = s + 0.5 * torch.randn(s.shape, generator=gen, dtype=s.dtype)
    deform = 0.5 * torch.randn(band.num_corners, 3, generator=gen, dtype=s.dtype)
    weights = torch.randn(band.num_voxels, 21, generator=gen, dtype=s.dtype)
    inputs = [t.clone().requires_grad_() for t in (s, deform, weights)]
    whole = flexicubes_sparse(band, *inputs, training=training, backend="torch")
    parts = flexicubes_sparse(band, *inputs, training=training, chunks=chunks, backend="torch")
    for name in ("vertices", "faces", "l_dev", "vertex_voxel", "quad_edges"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name
    cot = torch.randn(whole.vertices.shape, generator=gen, dtype=s.dtype)
    g_whole = torch.autograd.grad((whole.vertices * cot).sum() + whole.l_dev.sum(), inputs)
    g_parts = torch.autograd.grad((parts.vertices * cot).sum() + parts.l_dev.sum(), inputs)
    for a, b in zip(g_parts, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # the same float64 sums per dual vertex


def test_no_sign_change_gives_empty_mesh():
    out = flexicubes_dense(torch.ones(5, 5, 5), backend="torch")
    assert out.vertices.shape == (0, 3) and out.faces.shape == (0, 3) and out.l_dev.shape == (0,)
    band, s = _sparse_band(8, 1.0)
    out = flexicubes_sparse(band, s.abs() + 1, chunks=2, backend="torch")
    assert out.faces.shape == (0, 3)


def test_sparse_voxel_grid_sorts_merges_and_shares_corners():
    grid = sparse_voxel_grid(torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0]]), 4)
    assert grid.voxels.tolist() == [[0, 0, 0], [1, 0, 0]] and grid.num_corners == 12
    rebuilt = grid.corners[grid.voxel_corners] - grid.voxels[:, None, :]
    offsets = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
    assert bool((rebuilt == offsets).all())


def test_bad_inputs_name_the_argument():
    s = torch.zeros(5, 5, 5)
    assert_rejected(lambda: flexicubes_dense(torch.zeros(5, 5, 4)), match="s must have shape")
    assert_rejected(
        lambda: flexicubes_dense(torch.zeros(5, 5, 5, dtype=torch.int64)),
        match="s must be a floating",
        error=TypeError,
    )
    assert_rejected(lambda: flexicubes_dense(s, torch.zeros(5, 3)), match="deform must have shape")
    assert_rejected(
        lambda: flexicubes_dense(s, torch.zeros(5, 25, 3)), match="deform must have shape"
    )  # right number of rows, wrong layout
    assert_rejected(lambda: flexicubes_dense(s, weights=torch.zeros(64, 20)), match="weights must have shape")
    assert_rejected(
        lambda: flexicubes_dense(s, weights=torch.zeros(64, 21, dtype=torch.float64)),
        match="weights must match s",
        error=TypeError,
    )
    assert_rejected(lambda: flexicubes_dense(s, box=(1.0, -1.0)), match="box")
    assert_rejected(lambda: sparse_voxel_grid(torch.tensor([[0, 0, 4]]), 4), match="voxels must lie in")
    assert_rejected(
        lambda: sparse_voxel_grid(torch.zeros(1, 3), 4), match="voxels must be an integer", error=TypeError
    )
    grid = sparse_voxel_grid(torch.tensor([[0, 0, 0]]), 4)
    assert_rejected(lambda: flexicubes_sparse(grid, torch.zeros(7)), match="s must have shape")
    assert_rejected(lambda: flexicubes_sparse(grid, torch.zeros(8), chunks=0), match="chunks")
    assert_rejected(
        lambda: flexicubes_sparse(grid.voxels, torch.zeros(8)),
        match="grid must be a SparseVoxelGrid",
        error=TypeError,
    )
    assert_rejected(lambda: merge_corner_values(grid, torch.zeros(1, 7)), match="values must have shape")


def test_random_fields_give_edge_manifold_meshes_thanks_to_the_ambiguity_fix(gen, monkeypatch):
    s = torch.randn(
        13, 13, 13, generator=gen, dtype=torch.float64
    )  # white noise: every case, many C16/C19 pairs
    for training in (False, True):
        out = flexicubes_dense(s, training=training, backend="torch")
        assert out.faces.shape[0] > 1000 and max(_edge_use(out.faces).values()) == 2
    # Without the fix, two C16/C19 cubes sharing their ambiguous face make an edge of 4 quads (non-manifold).
    monkeypatch.setattr(ref, "fix_ambiguity", lambda cases, coords, resolution: cases)
    assert max(_edge_use(flexicubes_dense(s, backend="torch").faces).values()) == 4
