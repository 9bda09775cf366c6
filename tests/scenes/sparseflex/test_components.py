"""Floater removal at export: small connected components of the extracted surface are dropped."""

from dataclasses import replace

import torch
import trimesh

from recon.renderers.encoding import HashGridConfig
from recon.scenes.base import ExportOptions
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.components import large_components

CONFIG = SparseFlexSceneConfig(
    resolution=24,
    color_grid=HashGridConfig(levels=2, log2_hashmap_size=8, max_resolution=16),
    color_hidden_dim=8,
)


def _two_balls(config) -> SparseFlexScene:
    """A ball of radius 0.25 and a floater of radius 0.06 (unit box)."""
    r = config.resolution
    axis = torch.arange(r + 1, dtype=torch.float32) / r - 0.5
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    big = pts.norm(dim=-1) - 0.25
    small = (pts - torch.tensor([0.36, 0.36, 0.0])).norm(dim=-1) - 0.06
    sdf = (torch.minimum(big, small) * r).clamp(-2, 2)
    return SparseFlexScene.from_corner_sdf(config, sdf, torch.zeros(3), 1.0)


def test_export_drops_the_floater_and_keeps_a_watertight_surface():
    kept_all = _two_balls(replace(CONFIG, export_min_component=0.0)).export_mesh(ExportOptions())
    cleaned = _two_balls(replace(CONFIG, export_min_component=0.1)).export_mesh(
        ExportOptions()
    )  # floater: 6%
    tm_all = trimesh.Trimesh(kept_all.vertices.numpy(), kept_all.faces.numpy(), process=False)
    tm = trimesh.Trimesh(cleaned.vertices.numpy(), cleaned.faces.numpy(), process=False)
    assert len(tm_all.split(only_watertight=False)) == 2 and len(tm.split(only_watertight=False)) == 1
    assert 0 < len(tm_all.faces) - len(tm.faces) < 0.2 * len(tm_all.faces)
    assert tm.is_watertight and len(tm.vertices) == len(tm.referenced_vertices)  # no unused vertices left
    assert float(tm.vertices[:, 0].max()) < 0.3  # what remains is the big ball
    assert cleaned.vertex_colors is not None and cleaned.vertex_colors.shape == cleaned.vertices.shape


def test_large_components_threshold():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 1, 4], [5, 6, 7]])
    assert large_components(faces, 8, min_fraction=0.5).tolist() == [True, True, True, False]
    assert large_components(faces, 8, min_fraction=0.3).tolist() == [True] * 4  # 1 >= 0.3 * 3
    assert large_components(faces, 8, min_fraction=0.0).all()
    assert large_components(torch.zeros(0, 3, dtype=torch.int64), 0, min_fraction=0.5).numel() == 0
