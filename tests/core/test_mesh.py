"""recon.core.Mesh helpers: floater removal keeps colours and alphas attached to what they belong to."""

import torch

from recon.core import Mesh
from recon.core.mesh import large_components


def _two_parts() -> Mesh:
    """A 4-face strip (vertices 0-5) and a lone face (vertices 6-8), with colours that name their part."""
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [2, 3, 4], [4, 3, 5], [6, 7, 8]])
    vertices = torch.rand(9, 3, generator=torch.Generator().manual_seed(0))
    part = torch.tensor([0.0] * 6 + [1.0] * 3)
    return Mesh(vertices, faces, vertex_colors=part[:, None].expand(9, 3).clone(),
                face_colors=torch.tensor([0.0] * 4 + [1.0])[:, None].expand(5, 3).clone(),
                face_alpha=torch.tensor([0.5] * 4 + [1.0]))  # fmt: skip


def test_without_small_components_drops_the_floater_and_its_vertices():
    mesh = _two_parts()
    kept = mesh.without_small_components(0.5)  # the lone face has 1/4 of the strip's faces
    assert kept.num_faces == 4 and kept.num_vertices == 6
    torch.testing.assert_close(kept.vertices, mesh.vertices[:6])
    assert torch.equal(kept.faces, mesh.faces[:4])
    assert kept.vertex_colors is not None and bool((kept.vertex_colors == 0).all())
    assert kept.face_colors is not None and bool((kept.face_colors == 0).all())
    assert kept.face_alpha is not None and torch.equal(kept.face_alpha, torch.full((4,), 0.5))
    assert mesh.without_small_components(0.25) is mesh  # 1 >= 0.25 * 4: nothing to drop
    assert mesh.without_small_components(0.0) is mesh


def test_large_components_is_reexported_for_sparseflex():
    from recon.scenes.sparseflex.components import large_components as sparseflex_large_components

    assert sparseflex_large_components is large_components
