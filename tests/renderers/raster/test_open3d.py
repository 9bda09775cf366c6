"""Layer-0 visibility agrees with Open3D's Embree ray caster (``o3d.t.geometry.RaycastingScene``)."""

import numpy as np
import pytest
import torch

from recon.renderers.raster import rasterize
from tests.renderers.raster.helpers import orbit_cameras, torus

o3d = pytest.importorskip("open3d", reason="Open3D is the independent visibility oracle")

MIN_AGREEMENT = 0.995  # pixels whose ray grazes a shared edge may hit either neighbour in float32


def _mesh():
    """A torus and a box (different winding orders, occluding each other): 1 100 faces."""
    v_torus, f_torus = torus(30, 16)
    box = o3d.geometry.TriangleMesh.create_box(0.8, 0.8, 1.2)
    v_box = torch.tensor(np.asarray(box.vertices), dtype=torch.float32) - torch.tensor([0.4, 0.4, 0.6])
    f_box = torch.tensor(np.asarray(box.triangles), dtype=torch.int64)
    return torch.cat([v_torus, v_box]), torch.cat([f_torus, f_box + len(v_torus)])


def test_layer0_matches_open3d_raycasting(backend):
    vertices, faces = _mesh()
    cams = orbit_cameras(2, 64, 48)
    frags = rasterize(vertices, faces, cams, backend=backend)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(vertices.numpy(), faces.numpy().astype(np.uint32))
    rays = cams.generate_rays()
    o3d_rays = torch.cat([rays.origins, rays.directions], dim=-1).numpy().astype(np.float32)
    hits = scene.cast_rays(o3d.core.Tensor(o3d_rays))["primitive_ids"].numpy().astype(np.int64)
    hits[hits == scene.INVALID_ID] = -1
    ours = frags.pix_to_face[..., 0].numpy()
    assert (hits >= 0).mean() > 0.2, "the mesh must fill a good part of the images"
    agreement = float((ours == hits).mean())
    assert agreement >= MIN_AGREEMENT, f"layer 0 agrees with Open3D on {agreement:.4%} of the pixels"
