"""Every kind of GLB recon writes passes the Khronos glTF validator without errors or warnings (Node package
pinned in tests/export/threejs, installed by ``npm ci`` at set-up time)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from recon.core import Mesh
from recon.export.mesh_io import Texture, write_mesh

from .procedural import face_colors, sphere_mesh

THREEJS = Path(__file__).resolve().parent / "threejs"
VALIDATOR_TIMEOUT_S = 120


def _superquadric_glbs(folder: Path) -> list[Path]:
    """mesh.glb and mesh_full.glb of a two-block world (one texture per part, unlit; superquadrics export)."""
    from recon.scenes.superquadrics.blocks import init_block_set
    from recon.scenes.superquadrics.config import SuperquadricsConfig
    from recon.scenes.superquadrics.export import export_blocks

    cfg = SuperquadricsConfig(n_blocks=2, texture_size=8, decimate_factor=4)
    blocks = init_block_set(
        2, generator=torch.Generator().manual_seed(0), texture_size=8
    )  # α 0.5 + ε: opaque
    paths = export_blocks(blocks, folder, cfg=cfg, T_world_canon=torch.eye(4, dtype=torch.float64))
    return [paths.mesh_glb, paths.mesh_full_glb]


def test_glbs_pass_the_khronos_validator(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/setup.sh installs it with npm)")
    if not (THREEJS / "node_modules" / "gltf-validator").is_dir():
        pytest.skip(f"{THREEJS / 'node_modules'} is missing: run `npm ci --prefix tests/export/threejs`")
    sphere = sphere_mesh(1)
    soup = Mesh(vertices=sphere.vertices, faces=sphere.faces, face_colors=face_colors(sphere))
    closed = Mesh(
        vertices=sphere.vertices, faces=sphere.faces, vertex_colors=torch.rand(sphere.num_vertices, 3)
    )
    texture = Texture(uv=torch.rand(sphere.num_vertices, 2), image=torch.rand(16, 16, 3))
    files = [write_mesh(soup, tmp_path / "soup.glb")[0], write_mesh(closed, tmp_path / "closed.glb")[0],
             write_mesh(sphere, tmp_path / "textured.glb", texture=texture)[0]]  # fmt: skip
    files += _superquadric_glbs(tmp_path / "blocks")
    result = subprocess.run([node, str(THREEJS / "validate.mjs"), *map(str, files)], capture_output=True, text=True,
                            timeout=VALIDATOR_TIMEOUT_S, check=True)  # fmt: skip
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 5
    for report in reports:
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report
