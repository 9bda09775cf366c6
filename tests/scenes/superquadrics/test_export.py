"""Export: primitives.json round trip, textured OBJ/MTL/PNG and GLB reloaded by trimesh and Open3D (spec 11)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from recon.core.camera import Camera
from recon.core.errors import ReconError
from recon.core.transforms import apply_T, look_at
from recon.scenes.superquadrics.blocks import init_block_set
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.export import (
    export_blocks,
    load_primitives,
    primitive_vertices,
    scene_parts,
    write_primitives,
)
from recon.scenes.superquadrics.frame import canonical_frame
from recon.scenes.superquadrics.geometry import base_angles, implicit_function
from recon.scenes.superquadrics.tessellation import icosphere
from recon.scenes.superquadrics.uv import build_atlas

TEX = 16  # small textures keep the PNG/GLB writing fast
CFG = SuperquadricsConfig(n_blocks=4, texture_size=TEX)
OPAQUE = [0, 2]


def _blocks():
    b = init_block_set(4, generator=torch.Generator().manual_seed(0), texture_size=TEX)
    logits = torch.tensor([2.0, -1.0, 3.0, -6.0])  # α ≈ 0.88, 0.27, 0.95, 0.0025 (killed)
    raw = torch.tensor([[-1.5, 0.7], [0.0, 0.0], [1.2, -2.0], [0.3, 0.3]])
    return replace(b, alpha_logits=logits, raw_exponents=raw)


def _frame():
    """A non-trivial similarity from a tilted camera ring (world units: ROI radius 0.7 around (1, -2, 0.5))."""
    center = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    up = torch.tensor([0.2, 0.3, 0.93], dtype=torch.float64)
    up = up / up.norm()
    side = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    side = side / side.norm()
    other = torch.linalg.cross(up, side)
    poses = [
        look_at(center + 3 * (np.cos(a) * side + np.sin(a) * other) + up, center, up)
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ]
    K = torch.eye(3, dtype=torch.float64).expand(8, 3, 3).clone()
    return canonical_frame(Camera(torch.stack(poses), K, 8, 8), roi_radius=0.7)


@pytest.mark.parametrize("frame", ["canonical", "world"])
def test_primitives_round_trip(tmp_path, frame):
    blocks, fr = _blocks(), _frame()
    path = write_primitives(blocks, tmp_path / "primitives.json", T_world_canon=fr.T_world_canon)
    prims = load_primitives(path)
    assert prims.block_index.tolist() == OPAQUE
    torch.testing.assert_close(prims.opacities, torch.sigmoid(blocks.alpha_logits[OPAQUE]).double())
    verts, faces = primitive_vertices(prims, frame=frame)
    eta, omega = base_angles(icosphere(1))
    original = blocks.vertices(eta, omega)[OPAQUE].double()  # float32 blocks, float64 angles
    if frame == "world":
        original = apply_T(fr.T_world_canon, original)
    assert faces.shape == (80, 3)
    torch.testing.assert_close(verts, original, rtol=0, atol=1e-5)
    doc = json.loads(path.read_text())
    assert len(doc["blocks"]) == 2 and len(doc["blocks"][0]["rotation_wxyz"]) == 4


def test_load_primitives_errors(tmp_path):
    with pytest.raises(ReconError, match="missing.json"):
        load_primitives(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ReconError, match="schema"):
        load_primitives(bad)
    path = write_primitives(_blocks(), tmp_path / "p.json", T_world_canon=torch.eye(4))
    doc = json.loads(path.read_text())
    del doc["blocks"][0]["scale"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ReconError, match="scale"):
        load_primitives(path)


def test_scene_parts_contents():
    blocks = _blocks()
    mesh = scene_parts(blocks, cfg=CFG, T_world_canon=torch.eye(4), frame="canonical")
    assert [p.name for p in mesh] == ["ground", "block_00", "block_02"]
    full = scene_parts(blocks, cfg=CFG, T_world_canon=torch.eye(4), frame="canonical", full=True)
    assert [p.name for p in full] == ["background", "ground"] + [f"block_{j:02d}" for j in range(4)]
    no_ground = replace(CFG, ground=False)  # a scene trained without its ground exports none
    assert [p.name for p in scene_parts(blocks, cfg=no_ground, T_world_canon=torch.eye(4))] == [
        "block_00",
        "block_02",
    ]
    assert "ground" not in [
        p.name for p in scene_parts(blocks, cfg=no_ground, T_world_canon=torch.eye(4), full=True)
    ]
    ground, full_ground = mesh[0], full[1]
    assert float(ground.vertices[:, [0, 2]].abs().max()) == pytest.approx(3.0, abs=1e-5)  # reduced ±3
    assert float(full_ground.vertices[:, [0, 2]].abs().max()) == pytest.approx(10.0, abs=1e-5)
    torch.testing.assert_close(ground.vertices[:, 1], torch.full((81,), -0.9, dtype=torch.float64))
    assert float(full[0].vertices.norm(dim=-1).min()) == pytest.approx(10.0)
    atlas = build_atlas(icosphere(1), texture_size=TEX)
    block = mesh[1]
    assert block.vertices.shape[0] == atlas.uv.shape[0] and torch.equal(block.faces, atlas.faces_uv)
    assert block.image.shape == (TEX, TEX, 3) and block.image.dtype == np.uint8  # padding removed
    expected = (torch.sigmoid(blocks.texture_logits[0].double()) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.array_equal(block.image, expected)


def test_finer_tessellation_lies_on_the_same_surface():
    blocks = _blocks()
    part = scene_parts(blocks, cfg=CFG, T_world_canon=torch.eye(4), frame="canonical", level=3)[1]
    assert part.faces.shape[0] == 1280
    b = blocks.detached()
    local = (part.vertices - b.translations[0].double()) @ b.rotations()[0].double()
    unit = local / (0.25 * b.scales()[0].double())
    F = implicit_function(unit[None], b.exponents()[0:1].double(), safe=False)
    torch.testing.assert_close(F, torch.ones_like(F), rtol=0, atol=1e-4)  # float32 parameters


def test_export_files_reload_with_textures(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    fr = _frame()
    paths = export_blocks(_blocks(), tmp_path, cfg=CFG, T_world_canon=fr.T_world_canon)
    for p in (paths.primitives, paths.mesh_obj, paths.mesh_glb, paths.mesh_full_obj, paths.mesh_full_glb):
        assert p.exists() and p.stat().st_size > 0
    assert (tmp_path / "mesh.mtl").exists() and (tmp_path / "mesh_block_02.png").exists()
    atlas = build_atlas(icosphere(1), texture_size=TEX)
    u_lo, u_hi = float(atlas.uv[:, 0].min()), float(atlas.uv[:, 0].max())
    for path, n_geometries in ((paths.mesh_glb, 3), (paths.mesh_obj, 3), (paths.mesh_full_glb, 6)):
        scene = trimesh.load(path)
        geometries = list(scene.geometry.values())
        assert len(geometries) == n_geometries, path
        for geom in geometries:
            uv = np.asarray(geom.visual.uv)
            assert uv.shape == (len(geom.vertices), 2)
            assert uv[:, 0].min() >= u_lo - 1e-6 and uv[:, 0].max() <= u_hi + 1e-6
            assert uv[:, 1].min() >= -1e-6 and uv[:, 1].max() <= 1 + 1e-6
            material = geom.visual.material
            image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
            assert image is not None and image.size == (TEX, TEX), path
    # world frame: the GLB's ground sits where T_world_canon puts the canonical ground
    glb = trimesh.load(paths.mesh_glb)
    ground = np.asarray(glb.geometry["ground"].vertices)
    expected = apply_T(
        fr.T_world_canon,
        scene_parts(_blocks(), cfg=CFG, T_world_canon=torch.eye(4), frame="canonical")[0].vertices,
    )
    assert np.abs(np.sort(ground, 0) - np.sort(expected.numpy(), 0)).max() < 1e-4


def test_open3d_reads_the_textured_obj(tmp_path):
    o3d = pytest.importorskip("open3d")
    paths = export_blocks(_blocks(), tmp_path, cfg=CFG, T_world_canon=torch.eye(4, dtype=torch.float64))
    mesh = o3d.io.read_triangle_mesh(str(paths.mesh_obj), enable_post_processing=True)
    assert len(mesh.triangles) == 128 + 2 * 80
    assert mesh.has_triangle_uvs() and len(mesh.triangle_uvs) == 3 * len(mesh.triangles)
    assert len(mesh.textures) == 3 and all(np.asarray(t).shape[:2] == (TEX, TEX) for t in mesh.textures)
    full = o3d.io.read_triangle_mesh(str(paths.mesh_full_obj), enable_post_processing=True)
    assert len(full.triangles) == 320 + 128 + 4 * 80 and len(full.textures) == 6


def test_export_without_ground_keeps_the_full_scene(tmp_path):
    """ground=False (``--objects-only``): mesh.* holds the opaque blocks alone; mesh_full is unchanged."""
    trimesh = pytest.importorskip("trimesh")
    paths = export_blocks(
        _blocks(), tmp_path, cfg=CFG, T_world_canon=torch.eye(4, dtype=torch.float64), ground=False
    )
    mesh = trimesh.load(paths.mesh_glb)
    assert sorted(mesh.geometry) == ["block_00", "block_02"]
    assert "ground" not in paths.mesh_obj.with_suffix(".mtl").read_text()
    assert len(trimesh.load(paths.mesh_full_glb).geometry) == 6


def test_uv_sphere_blocks_export_and_round_trip(tmp_path):
    from recon.scenes.superquadrics.template import block_template

    cfg = SuperquadricsConfig(
        n_blocks=4, texture_size=TEX, tessellation="uv_sphere", uv_sphere_lat=6, uv_sphere_lon=12
    )
    template = block_template(cfg)
    parts = scene_parts(_blocks(), cfg=cfg, T_world_canon=torch.eye(4), frame="canonical")
    assert parts[1].faces.shape[0] == 2 * 12 * 5 and torch.equal(parts[1].faces, template.atlas.faces_uv)
    prims = load_primitives(write_primitives(_blocks(), tmp_path / "p.json", T_world_canon=torch.eye(4)))
    verts, faces = primitive_vertices(prims, base=template.base)
    original = _blocks().vertices(template.eta, template.omega)[OPAQUE].double()
    torch.testing.assert_close(verts, original, rtol=0, atol=1e-5)
    torch.testing.assert_close(parts[1].vertices, original[0][template.atlas.vertex_index], rtol=0, atol=1e-6)
