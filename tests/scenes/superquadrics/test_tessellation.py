"""Base tessellations: counts, unit radius, orientation, closedness (spec superquadrics.md 1-2)."""

import pytest
import torch

from recon.scenes.superquadrics.tessellation import (
    BaseMesh,
    background_sphere,
    ground_square,
    icosphere,
    uv_sphere,
)


def _face_normals(mesh: BaseMesh) -> torch.Tensor:
    v = mesh.vertices[mesh.faces]
    return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])


def _is_closed_manifold(mesh: BaseMesh) -> bool:
    """Every directed edge appears once and its reverse once: closed and consistently oriented."""
    f = mesh.faces
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    keys = directed[:, 0] * 100_000 + directed[:, 1]
    reverse = directed[:, 1] * 100_000 + directed[:, 0]
    return keys.unique().numel() == keys.numel() and bool(torch.isin(reverse, keys).all())


@pytest.mark.parametrize(
    ("level", "n_verts", "n_faces"), [(0, 12, 20), (1, 42, 80), (2, 162, 320), (3, 642, 1280)]
)
def test_icosphere_counts_radius_orientation(level, n_verts, n_faces):
    mesh = icosphere(level)
    assert mesh.vertices.shape == (n_verts, 3) and mesh.faces.shape == (n_faces, 3)
    torch.testing.assert_close(mesh.vertices.norm(dim=-1), torch.ones(n_verts, dtype=torch.float64))
    centroids = mesh.vertices[mesh.faces].mean(1)
    assert bool(((_face_normals(mesh) * centroids).sum(-1) > 0).all()), "faces must be CCW seen from outside"
    assert _is_closed_manifold(mesh)
    # no duplicated vertices (shared edge midpoints are created once)
    assert torch.cdist(mesh.vertices, mesh.vertices).add(torch.eye(n_verts) * 10).min() > 1e-3


def test_icosphere_level1_has_poles_on_y():
    v = icosphere(1).vertices
    for pole in ([0.0, 1.0, 0.0], [0.0, -1.0, 0.0]):
        assert (v - torch.tensor(pole, dtype=v.dtype)).norm(dim=-1).min() < 1e-12


def test_icosphere_rejects_bad_level():
    with pytest.raises(ValueError, match="icosphere level"):
        icosphere(-1)


@pytest.mark.parametrize(("n_lat", "n_lon"), [(2, 3), (4, 8), (16, 32)])
def test_uv_sphere(n_lat, n_lon):
    mesh = uv_sphere(n_lat, n_lon)
    assert mesh.vertices.shape[0] == (n_lat - 1) * n_lon + 2
    assert mesh.faces.shape[0] == 2 * n_lon * (n_lat - 1)
    torch.testing.assert_close(
        mesh.vertices.norm(dim=-1), torch.ones(mesh.vertices.shape[0], dtype=torch.float64)
    )
    centroids = mesh.vertices[mesh.faces].mean(1)
    assert bool(((_face_normals(mesh) * centroids).sum(-1) > 0).all())
    assert _is_closed_manifold(mesh)


def test_background_is_inward_sphere_of_radius_z_far():
    mesh = background_sphere(10.0, level=2)
    assert mesh.vertices.shape == (162, 3) and mesh.faces.shape == (320, 3)
    torch.testing.assert_close(mesh.vertices.norm(dim=-1), torch.full((162,), 10.0, dtype=torch.float64))
    centroids = mesh.vertices[mesh.faces].mean(1)
    assert bool(((_face_normals(mesh) * centroids).sum(-1) < 0).all()), "background normals point inward"


def test_ground_square():
    mesh = ground_square(10.0, subdivisions=3)
    assert mesh.vertices.shape == (81, 3) and mesh.faces.shape == (128, 3)  # 9x9 grid, 2 * 4^3 faces
    assert bool((mesh.vertices[:, 1] == 0).all())
    assert mesh.vertices[:, [0, 2]].abs().max() == 10.0
    assert bool((_face_normals(mesh)[:, 1] > 0).all()), "ground normals point up (+y)"
    # total area of the square (20 x 20) is preserved by the subdivision
    assert float(_face_normals(mesh).norm(dim=-1).sum() / 2) == pytest.approx(400.0)
