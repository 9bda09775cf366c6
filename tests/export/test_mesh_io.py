"""Mesh export round trips: every format loads back in trimesh and Open3D with the same vertex and face counts."""

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from recon.core import Mesh, ReconError
from recon.export.mesh_io import unshare_faces, write_mesh


def _soup(gen: torch.Generator, faces: int = 40) -> Mesh:
    verts = torch.randn(faces * 3, 3, generator=gen)
    return Mesh(vertices=verts, faces=torch.arange(faces * 3).reshape(-1, 3), face_colors=torch.rand(faces, 3, generator=gen),
                face_alpha=torch.rand(faces, generator=gen))  # fmt: skip


def _closed(gen: torch.Generator) -> Mesh:
    box = trimesh.creation.icosphere(subdivisions=2)
    return Mesh(vertices=torch.tensor(box.vertices, dtype=torch.float32), faces=torch.tensor(box.faces),
                vertex_colors=torch.rand(len(box.vertices), 3, generator=gen))  # fmt: skip


def _counts_trimesh(path) -> tuple[int, int]:
    loaded = trimesh.load(str(path), process=False, force="mesh")
    return len(loaded.vertices), len(loaded.faces)


def _counts_open3d(path) -> tuple[int, int]:
    loaded = o3d.io.read_triangle_mesh(str(path))
    return len(loaded.vertices), len(loaded.triangles)


@pytest.mark.parametrize("fmt", ["ply", "obj", "glb"])
@pytest.mark.parametrize("kind", ["soup", "closed"])
def test_round_trip_counts(fmt, kind, gen, tmp_path):
    mesh = _soup(gen) if kind == "soup" else _closed(gen)
    path = write_mesh(mesh, tmp_path / f"mesh.{fmt}")
    # OBJ/GLB have no face colours: a face-coloured mesh is written with 3 own vertices per face
    expected = unshare_faces(mesh) if (fmt != "ply" and mesh.face_colors is not None) else mesh
    want = (expected.num_vertices, expected.num_faces)
    assert _counts_trimesh(path) == want
    assert _counts_open3d(path) == want


def test_ply_keeps_face_colours(gen, tmp_path):
    mesh = _soup(gen, faces=5)
    path = write_mesh(mesh, tmp_path / "soup.ply")
    loaded = trimesh.load(str(path), process=False)
    expected = (mesh.face_colors * 255 + 0.5).to(torch.uint8).numpy()
    assert np.array_equal(loaded.visual.face_colors[:, :3], expected)


def test_vertex_positions_survive(gen, tmp_path):
    mesh = _closed(gen)
    for fmt in ("ply", "obj", "glb"):
        loaded = trimesh.load(str(write_mesh(mesh, tmp_path / f"m.{fmt}")), process=False, force="mesh")
        assert np.allclose(loaded.vertices, mesh.vertices.numpy(), atol=1e-5), fmt


def test_unknown_format_is_a_clear_error(gen, tmp_path):
    with pytest.raises(ReconError, match="unsupported mesh format"):
        write_mesh(_closed(gen), tmp_path / "mesh.stl")
