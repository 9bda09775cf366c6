"""Band edits of SparseFlex grids: dilation, remapping of rows, subdivision (spec sparseflex.md section 4)."""

import torch

from recon.core import Mesh
from recon.metrics.geometry import surface_distance
from recon.renderers.isosurface import flexicubes_sparse, sparse_voxel_grid
from recon.scenes.sparseflex.grid_ops import (
    DEFORM_KEEP,
    band_voxels,
    dilate,
    linear_key,
    remap,
    subdivide,
    subdivide_deform,
    surface_voxel_mask,
)


def _sphere_grid(r: int, radius: float, band: int = 2):
    """Band of a sphere of ``radius`` (unit box) at resolution ``r``; ``s`` is the exact SDF in voxel units."""
    axes = torch.arange(r)
    every = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    dense = sparse_voxel_grid(every, r)
    s_dense = ((dense.corners.double() / r - 0.5).norm(dim=-1) - radius) * r
    surface = dense.voxels[surface_voxel_mask(dense, s_dense)]
    grid = sparse_voxel_grid(dilate(surface, band, r), r)
    s = ((grid.corners.double() / r - 0.5).norm(dim=-1) - radius) * r
    return grid, s


def test_dilate_is_the_chebyshev_ball():
    voxels = torch.tensor([[3, 3, 3], [0, 0, 7]])
    out = dilate(voxels, 1, 8)
    every = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cheb = (every[:, None, :] - voxels[None]).abs().amax(-1).amin(-1)
    expected = every[cheb <= 1]
    assert sorted(linear_key(out, 8).tolist()) == sorted(linear_key(expected, 8).tolist())
    assert len(out) == 27 + 8  # a full 3^3 block and the clipped corner block 2x2x2


def test_band_voxels_keeps_surface_and_its_ring():
    grid, s = _sphere_grid(16, 0.3, band=3)
    band = band_voxels(grid, s, 1)
    surface = grid.voxels[surface_voxel_mask(grid, s)]
    keys = set(linear_key(band, 16).tolist())
    assert set(linear_key(surface, 16).tolist()) <= keys
    cheb = (band[:, None, :] - surface[None]).abs().amax(-1).amin(-1)
    assert int(cheb.max()) == 1 and len(band) < grid.num_voxels  # the radius-3 band shrinks to radius 1


def test_remap_keeps_values_and_fills_new_corners_from_neighbours():
    old = sparse_voxel_grid(torch.tensor([[0, 0, 0]]), 4)
    s = torch.arange(8, dtype=torch.float64)  # corner rows of a single voxel: keys sorted = rows 0..7
    rm = remap(old, s, torch.tensor([[0, 0, 0], [1, 0, 0]]))
    assert rm.grid.num_corners == 12 and rm.grid.num_voxels == 2
    kept = rm.corner_source >= 0
    assert int(kept.sum()) == 8
    full = torch.zeros(12, dtype=torch.float64)
    full[kept] = s[rm.corner_source[kept]]
    full[~kept] = rm.new_corner_s
    for row in range(12):  # kept corners keep their value, addressed by coordinates
        c = rm.grid.corners[row]
        if bool(kept[row]):
            assert torch.equal(old.corners[rm.corner_source[row]], c)
    # new corner (2, j, k) has the single known 6-neighbour (1, j, k): s = s(1, j, k) = the old corner's value
    for row in (~kept).nonzero()[:, 0].tolist():
        c = rm.grid.corners[row].clone()
        c[0] -= 1
        src = (old.corners == c).all(-1).nonzero()[0, 0]
        assert float(full[row]) == float(s[src])
    assert rm.voxel_source.tolist() == [0, -1]


def test_subdivide_keeps_the_zero_level_set_within_a_quarter_voxel():
    r, radius = 12, 0.31
    grid, s = _sphere_grid(r, radius)
    weights = torch.randn(
        grid.num_voxels, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    fine, s_fine, w_fine, parent = subdivide(grid, s, weights)
    assert fine.resolution == 2 * r and fine.num_voxels == 8 * grid.num_voxels
    assert torch.equal(w_fine, weights[parent])
    assert torch.equal(torch.div(fine.voxels, 2, rounding_mode="floor"), grid.voxels[parent])
    # shared corners agree: the merged s is exactly the interpolation, doubled (fine voxel units)
    coarse = flexicubes_sparse(grid, s, backend="torch")
    refined = flexicubes_sparse(fine, s_fine, backend="torch")
    h = 1.0 / r
    assert refined.faces.shape[0] > 2 * coarse.faces.shape[0]
    # the fine surface stays within 1/4 coarse voxel of the coarse zero level set (the sphere, up to the
    # coarse grid's own linear-interpolation error, which the coarse mesh measures)
    coarse_err = float((coarse.vertices.norm(dim=-1) - radius).abs().max())
    fine_err = float((refined.vertices.norm(dim=-1) - radius).abs().max())
    assert fine_err < 0.25 * h, (fine_err, h)
    assert fine_err <= coarse_err + 0.05 * h
    # corner values at the coarse corners are the coarse values doubled
    coarse_keys = linear_key(2 * grid.corners, 2 * r)
    pos = torch.searchsorted(linear_key(fine.corners, 2 * r), coarse_keys)
    torch.testing.assert_close(s_fine[pos], 2 * s)


def test_subdivide_deform_keeps_the_coarse_displacements_and_the_deformed_surface():
    r, radius = 12, 0.31
    grid, s = _sphere_grid(r, radius)
    # a smooth displacement field (what training learns: corners moved towards the surface), in half coarse cells
    u = grid.corners.double() / r
    shift = torch.stack(
        [torch.full_like(u[:, 0], 0.45), 0.4 * torch.sin(2 * torch.pi * u[:, 2]), 0.3 * u[:, 0]], -1
    )
    deform = torch.atanh(shift)
    weights = torch.zeros(grid.num_voxels, 21, dtype=torch.float64)
    fine, s_fine, _, parent = subdivide(grid, s, weights)
    fine_deform = subdivide_deform(grid, deform, fine, parent)
    h = 1.0 / r
    coarse_disp = (h / 2) * torch.tanh(deform)
    fine_disp = (h / 4) * torch.tanh(fine_deform)
    # at the coarse corners the fine corners move as the coarse ones (cut at DEFORM_KEEP half fine cells)
    pos = torch.searchsorted(linear_key(fine.corners, 2 * r), linear_key(2 * grid.corners, 2 * r))
    expected = coarse_disp.clamp(-DEFORM_KEEP * h / 4, DEFORM_KEEP * h / 4)
    torch.testing.assert_close(fine_disp[pos], expected, rtol=0, atol=1e-12)
    assert bool(torch.isfinite(fine_deform).all())
    # the fine surface follows the deformed coarse surface far better than with deform reset to 0 (the spec rule)
    box = (-0.5, 0.5)
    coarse = flexicubes_sparse(grid, s, deform, backend="torch", box=box)
    kept = flexicubes_sparse(fine, s_fine, fine_deform, backend="torch", box=box)
    reset = flexicubes_sparse(fine, s_fine, None, backend="torch", box=box)
    target = Mesh(coarse.vertices, coarse.faces)
    d_kept = surface_distance(kept.vertices, target).distances
    d_reset = surface_distance(reset.vertices, target).distances
    # without any deformation the fine and coarse meshes differ too (the coarse mesh's own interpolation error):
    # keeping the deformation brings the fine mesh as close to the deformed coarse one as that
    plain = flexicubes_sparse(grid, s, None, backend="torch", box=box)
    plain_fine = flexicubes_sparse(fine, s_fine, None, backend="torch", box=box)
    d_plain = surface_distance(plain_fine.vertices, Mesh(plain.vertices, plain.faces)).distances
    print(
        f"mean distance to the coarse mesh: kept {float(d_kept.mean()):.5f}, reset {float(d_reset.mean()):.5f}, "
        f"undeformed {float(d_plain.mean()):.5f} (h = {h:.4f})"
    )
    assert float(d_kept.mean()) < 0.5 * float(d_reset.mean())
    assert float(d_kept.mean()) < 1.5 * float(d_plain.mean())
