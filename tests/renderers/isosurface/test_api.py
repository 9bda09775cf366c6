"""Marching cubes (watertight, oriented, accurate) and the MeshSDF / DeepMesh vertex-gradient identity."""

import math

import pytest
import torch
import trimesh

from recon.core.errors import ReconError
from recon.renderers.isosurface import grid_points, isosurface_vertices, marching_cubes, sample_grid
from recon.renderers.isosurface.ref import EDGE_MARGIN
from tests.tolerances import assert_close

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _trimesh(mesh):
    return trimesh.Trimesh(mesh.vertices.detach().double().numpy(), mesh.faces.numpy(), process=False)


def _outward_fraction(mesh, center):
    centroids = mesh.vertices[mesh.faces].mean(1)
    return float(((mesh.face_normals() * (centroids - center)).sum(-1) > 0).float().mean())


def test_sphere_sdf_closed_accurate_outward(backend):
    radius = 0.61
    values = sample_grid(lambda p: p.norm(dim=-1) - radius, BOX, 64)
    mesh = marching_cubes(values, level=0.0, bbox=BOX, backend=backend)
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent and tm.euler_number == 2
    r = mesh.vertices.norm(dim=-1)
    assert float((r - radius).abs().max()) < 0.01 * radius  # within 1% of the radius (spec section 8)
    assert _outward_fraction(mesh, torch.zeros(3)) == 1.0 and tm.volume > 0


def test_density_field_orientation_and_level(backend):
    # Density 2 at the centre falling to 0 at radius 0.8: the level 1 surface is the sphere of radius 0.4.
    values = sample_grid(lambda p: (2.0 - 2.5 * p.norm(dim=-1)).clamp_min(0.0), BOX, 48)
    mesh = marching_cubes(values, level=1.0, bbox=BOX, inside="above", backend=backend)
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.volume > 0
    assert _outward_fraction(mesh, torch.zeros(3)) == 1.0
    assert float((mesh.vertices.norm(dim=-1) - 0.4).abs().max()) < 0.01


def test_torus_and_two_components():
    def torus(p):
        q = torch.stack([p[:, :2].norm(dim=-1) - 0.55, p[:, 2]], -1)
        return q.norm(dim=-1) - 0.2

    tm = _trimesh(marching_cubes(sample_grid(torus, BOX, 56), bbox=BOX))
    assert tm.is_watertight and tm.euler_number == 0  # genus 1

    def two_balls(p):
        return torch.minimum((p - 0.45).norm(dim=-1), (p + 0.45).norm(dim=-1)) - 0.3

    tm = _trimesh(marching_cubes(sample_grid(two_balls, BOX, 48), bbox=BOX))
    assert tm.is_watertight and len(tm.split(only_watertight=False)) == 2


def test_warp_matches_reference(device, gen):
    # Identical meshes: same cell order, same triangles, shared interpolation and merge.
    centers = torch.rand(6, 3, generator=gen) - 0.5
    values = sample_grid(lambda p: -torch.exp(-((p[:, None] - centers) ** 2).sum(-1) / 0.03).sum(-1), BOX, 24)
    values = values.to(device)
    ref_mesh = marching_cubes(values, level=-0.4, bbox=BOX, backend="torch")
    fast = marching_cubes(values, level=-0.4, bbox=BOX, backend="warp")
    assert ref_mesh.num_faces > 50
    assert torch.equal(fast.faces, ref_mesh.faces) and torch.equal(fast.vertices, ref_mesh.vertices)


def test_random_smooth_field_is_closed(gen):
    # A sum of Gaussian blobs (many saddle / ambiguous cells); the padded border keeps the surface inside.
    centers = torch.rand(12, 3, generator=gen, dtype=torch.float64) * 1.0 - 0.5
    values = sample_grid(
        lambda p: -torch.exp(-((p[:, None] - centers) ** 2).sum(-1) / 0.02).sum(-1), BOX.double(), 40
    )
    mesh = marching_cubes(values, level=-0.5, bbox=BOX)
    tm = _trimesh(mesh)
    assert mesh.num_faces > 100 and tm.is_watertight and tm.is_winding_consistent


def test_vertices_on_linear_level_set_and_nodes_on_level():
    # For a linear field the edge interpolation is exact: every vertex satisfies n.x = d, except those the
    # EDGE_MARGIN clamp keeps 1% of a cell (h = 0.25) off a node lying on the level (3a - 5b + 8c = 4 has
    # integer solutions, e.g. node (3, 1, 0) from the centre): there |n.x - d| <= EDGE_MARGIN * h * max|n_i|.
    n = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    values = grid_points(BOX.double(), 9) @ n - 0.1
    mesh = marching_cubes(values, bbox=BOX)
    error = (mesh.vertices @ n - 0.1).abs()
    assert float(error.max()) <= EDGE_MARGIN * 0.25 * 0.8 + 1e-12
    assert float(error.max()) > 0.5 * EDGE_MARGIN * 0.25 * 0.3  # the clamp did act on the on-level nodes
    assert int((error < 1e-12).sum()) > 0.8 * mesh.num_vertices  # all others exact
    # A level set through grid nodes (x = 0 on a 5-node axis): one vertex per crossing edge (25), all distinct,
    # EDGE_MARGIN of a cell (h = 0.5) below the node layer (on-level nodes count as above the level).
    values = grid_points(BOX.double(), 5)[..., 0]
    mesh = marching_cubes(values, bbox=BOX)
    assert mesh.num_vertices == 25 and torch.unique(mesh.vertices, dim=0).shape[0] == 25
    assert_close(
        mesh.vertices[:, 0], torch.full((25,), -0.5 * EDGE_MARGIN, dtype=torch.float64), rtol=0, atol=1e-15
    )


def test_empty_and_validation():
    assert marching_cubes(torch.ones(4, 4, 4)).num_faces == 0
    # ValueError from the api check, or jaxtyping's TypeCheckError (a TypeError) when runtime checking is on.
    with pytest.raises((ValueError, TypeError)):
        marching_cubes(torch.ones(4, 4))
    with pytest.raises(ReconError, match="float32"):
        marching_cubes(torch.ones(4, 4, 4, dtype=torch.float64), backend="warp")


def test_vertex_gradient_sphere_exact():
    # f = |x - c| - r: a vertex moves with dv/dr = n and dv/dc = n n^T (translation along the normal only).
    radius = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    center = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    mesh = marching_cubes(sample_grid(lambda p: p.norm(dim=-1) - 0.5, BOX.double(), 24), bbox=BOX)
    v = mesh.vertices.clone().requires_grad_()
    values = (v - center).norm(dim=-1) - radius
    (grad_f,) = torch.autograd.grad(values.sum(), v, retain_graph=True)
    out = isosurface_vertices(mesh.vertices, values, grad_f)
    a = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g_r, g_c = torch.autograd.grad((out * a).sum(), (radius, center))
    normals = grad_f / grad_f.norm(dim=-1, keepdim=True)
    assert_close(g_r, (a * normals).sum(), rtol=1e-10, atol=1e-10, name="d/dr")
    assert_close(
        g_c, ((a * normals).sum(-1, keepdim=True) * normals).sum(0), rtol=1e-10, atol=1e-10, name="d/dc"
    )


def _mesh_volume(vertices, faces):
    tri = vertices[faces]
    return torch.linalg.det(tri).sum() / 6.0  # signed volume (divergence theorem)


def test_refinement_gradient_matches_finite_difference():
    # Tiny float64 MLP SDF perturbation; loss = enclosed volume of the extracted mesh. The surrogate gradient
    # (identity above) must match a central finite difference of re-extracted meshes w.r.t. one parameter.
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    param = mlp[2].weight

    def field(p):
        return p.norm(dim=-1) - 0.5 + 0.1 * mlp(p * 2.0)[:, 0]

    box = BOX.double()
    resolution = 48
    mesh = marching_cubes(sample_grid(field, box, resolution), bbox=box)
    v = mesh.vertices.clone().requires_grad_()
    values = field(v)
    (grad_f,) = torch.autograd.grad(values.sum(), v, retain_graph=True)
    verts = isosurface_vertices(mesh.vertices, values, grad_f)
    (analytic,) = torch.autograd.grad(_mesh_volume(verts, mesh.faces), param)
    eps = 1e-4
    for index in [(0, 1), (0, 5)]:
        with torch.no_grad():
            param[index] += eps
            up = marching_cubes(sample_grid(field, box, resolution), bbox=box)
            param[index] -= 2 * eps
            down = marching_cubes(sample_grid(field, box, resolution), bbox=box)
            param[index] += eps
        fd = (_mesh_volume(up.vertices, up.faces) - _mesh_volume(down.vertices, down.faces)) / (2 * eps)
        assert math.isclose(float(analytic[index]), float(fd), rel_tol=0.02), (
            index,
            float(analytic[index]),
            float(fd),
        )
