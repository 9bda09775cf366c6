"""Mesh files open correctly in trimesh and Open3D: normals everywhere, colours kept (sRGB in PLY/OBJ, linear in
GLB), face colours of a soup survive as vertex colours, GLB materials unlit with the right sidedness."""

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from recon.core import Mesh, ReconError
from recon.export.gltf import UNLIT, accessor_array, read_glb
from recon.export.mesh_io import Texture, srgb_to_linear, unshare_faces, write_mesh

U8 = 0.5 / 255 + 1e-6  # one rounding step of an 8-bit colour


def _soup(gen: torch.Generator, faces: int = 40) -> Mesh:
    verts = torch.randn(faces * 3, 3, generator=gen)
    return Mesh(vertices=verts, faces=torch.arange(faces * 3).reshape(-1, 3), face_colors=torch.rand(faces, 3, generator=gen),
                face_alpha=torch.rand(faces, generator=gen))  # fmt: skip


def _closed(gen: torch.Generator) -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    return Mesh(vertices=torch.tensor(sphere.vertices, dtype=torch.float32), faces=torch.tensor(sphere.faces),
                vertex_colors=torch.rand(len(sphere.vertices), 3, generator=gen))  # fmt: skip


def _primitive(path):
    doc, binary = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    arrays = {name: accessor_array(doc, binary, index) for name, index in prim["attributes"].items()}
    return doc, prim, arrays, accessor_array(doc, binary, prim["indices"]).reshape(-1, 3)


def test_srgb_to_linear_known_values():
    # 0 -> 0, 1 -> 1, 0.04045 -> 0.04045 / 12.92 (linear segment), 0.5 -> ((0.5 + 0.055) / 1.055)^2.4 = 0.21404
    out = srgb_to_linear(torch.tensor([0.0, 1.0, 0.04045, 0.5], dtype=torch.float64))
    assert torch.allclose(
        out, torch.tensor([0.0, 1.0, 0.04045 / 12.92, 0.214041], dtype=torch.float64), atol=1e-6
    )


def test_glb_closed_mesh_linear_colours_normals_unlit(gen, tmp_path):
    mesh = _closed(gen)
    path = write_mesh(mesh, tmp_path / "m.glb")[0]
    doc, prim, arrays, faces = _primitive(path)
    assert UNLIT in doc["extensionsUsed"]
    material = doc["materials"][prim["material"]]
    assert UNLIT in material["extensions"] and material["doubleSided"] is False
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert np.array_equal(faces, mesh.faces.numpy())
    assert np.allclose(arrays["COLOR_0"], srgb_to_linear(mesh.vertex_colors).numpy(), atol=1e-6)
    normals = arrays["NORMAL"]
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # the icosphere is centred at the origin: outward normals point along the position
    assert (np.sum(normals * arrays["POSITION"], axis=1) > 0.9).all()
    loaded = trimesh.load(str(path), force="mesh", process=False)
    assert len(loaded.faces) == mesh.num_faces


def test_glb_soup_is_double_sided_with_face_colours_per_vertex(gen, tmp_path):
    mesh = _soup(gen)
    path = write_mesh(mesh, tmp_path / "s.glb")[0]
    doc, prim, arrays, faces = _primitive(path)
    assert doc["materials"][0]["doubleSided"] is True
    assert arrays["POSITION"].shape == (3 * mesh.num_faces, 3)
    expected = srgb_to_linear(mesh.face_colors).repeat_interleave(3, dim=0).numpy()
    assert np.allclose(arrays["COLOR_0"], expected, atol=1e-6)
    face_n = mesh.face_normals().repeat_interleave(3, dim=0).numpy()
    assert np.allclose(arrays["NORMAL"], face_n, atol=1e-5)


def test_ply_soup_colours_read_by_open3d(gen, tmp_path):
    mesh = _soup(gen)
    path = write_mesh(mesh, tmp_path / "s.ply")[0]
    om = o3d.io.read_triangle_mesh(str(path))
    assert (len(om.vertices), len(om.triangles)) == (3 * mesh.num_faces, mesh.num_faces)
    assert om.has_vertex_colors() and om.has_vertex_normals()
    colours = np.asarray(om.vertex_colors)[np.asarray(om.triangles)[:, 0]]
    assert np.abs(colours - mesh.face_colors.numpy()).max() < U8  # sRGB kept as is in PLY
    tm = trimesh.load(str(path), process=False)
    assert len(tm.faces) == mesh.num_faces


def test_ply_face_alpha_written_as_vertex_alpha(gen, tmp_path):
    mesh = _soup(gen)
    path = write_mesh(mesh, tmp_path / "a.ply", face_alpha=True)[0]
    tm = trimesh.load(str(path), process=False)
    alpha = np.asarray(tm.visual.vertex_colors)[::3, 3] / 255.0
    assert np.abs(alpha - mesh.face_alpha.numpy()).max() < U8


def test_obj_vertex_colours_and_normals(gen, tmp_path):
    mesh = _closed(gen)
    path = write_mesh(mesh, tmp_path / "m.obj")[0]
    tm = trimesh.load(str(path), process=False, force="mesh")
    assert (len(tm.vertices), len(tm.faces)) == (mesh.num_vertices, mesh.num_faces)
    colours = np.asarray(tm.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(colours - mesh.vertex_colors.numpy()).max() < 1.0 / 255 + 1e-6
    om = o3d.io.read_triangle_mesh(str(path))
    assert om.has_vertex_normals() and len(om.triangles) == mesh.num_faces


def test_textured_obj_and_glb(gen, tmp_path):
    mesh = Mesh(vertices=torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), faces=torch.tensor([[0, 1, 2]]))
    image = torch.zeros(8, 8, 3)
    image[..., 0] = 1.0  # red texture
    texture = Texture(uv=torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), image=image)
    files = write_mesh(mesh, tmp_path / "t.obj", texture=texture)
    assert [f.name for f in files] == ["t.obj", "t.mtl", "t.png"] and all(f.is_file() for f in files)
    assert "map_Kd t.png" in (tmp_path / "t.mtl").read_text()
    tm = trimesh.load(str(files[0]), process=False, force="mesh")
    assert tm.visual.kind == "texture" and tm.visual.material.image.size == (8, 8)
    assert np.allclose(np.asarray(tm.visual.uv)[:, 1], [1.0, 1.0, 0.0])  # OBJ v = 1 - glTF v
    glb = write_mesh(mesh, tmp_path / "t.glb", texture=texture)[0]
    doc, prim, arrays, _ = _primitive(glb)
    assert "COLOR_0" not in arrays and np.allclose(arrays["TEXCOORD_0"], texture.uv.numpy())
    assert doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    assert doc["images"][0]["mimeType"] == "image/png"
    loaded = trimesh.load(str(glb), force="mesh", process=False)
    assert np.asarray(loaded.visual.material.baseColorTexture).shape[:2] == (8, 8)


def test_unshare_faces_copies_face_colours(gen):
    mesh = _soup(gen, faces=5)
    flat = unshare_faces(mesh)
    assert flat.num_vertices == 15 and torch.equal(flat.vertex_colors[3:6], mesh.face_colors[1].expand(3, 3))


@pytest.mark.parametrize("name", ["mesh.stl", "mesh"])
def test_unsupported_suffix_names_the_file(gen, tmp_path, name):
    with pytest.raises(ReconError, match=name):
        write_mesh(_closed(gen), tmp_path / name)


def test_texture_for_ply_is_refused(gen, tmp_path):
    mesh = _closed(gen)
    texture = Texture(uv=torch.zeros(mesh.num_vertices, 2), image=torch.zeros(4, 4, 3))
    with pytest.raises(ReconError, match="glb or obj"):
        write_mesh(mesh, tmp_path / "m.ply", texture=texture)


def test_degenerate_soup_faces_get_unit_normals(tmp_path):
    verts = torch.tensor(
        [[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0]]
    )  # 2nd face: a line
    mesh = Mesh(vertices=verts, faces=torch.arange(6).reshape(2, 3), face_colors=torch.rand(2, 3))
    _, _, arrays, _ = _primitive(write_mesh(mesh, tmp_path / "d.glb")[0])
    assert np.allclose(np.linalg.norm(arrays["NORMAL"], axis=1), 1.0, atol=1e-6)  # glTF requires unit normals
