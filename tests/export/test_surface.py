"""TSDF fusion: exact depth maps of a closed object fuse into one connected, edge-manifold, watertight mesh."""

import open3d as o3d
import torch

from recon.core import Camera
from recon.core.transforms import fibonacci_sphere, look_at
from recon.export.surface import fuse_depth_maps

RADIUS = 0.8


def _sphere_depths(cams: Camera) -> torch.Tensor:
    """Camera z of the first hit of each pixel ray with a sphere of radius RADIUS at the origin (0 = miss)."""
    rays = cams.generate_rays()
    o, d = rays.origins.double(), rays.directions.double()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - RADIUS**2)
    t = -b - disc.clamp_min(0).sqrt()
    hit = disc > 0
    R = cams.T_cam_world[:, :3, :3].double()
    dz = torch.einsum("chwj,cj->chw", d, R[:, 2, :])  # z component of the direction in the camera frame
    z = torch.where(hit, t * dz, torch.zeros_like(t))
    return z[..., None].float()


def test_fused_sphere_is_one_closed_manifold(tmp_path):
    eyes = fibonacci_sphere(24) * 3.0
    poses = torch.stack([look_at(e, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]) if abs(float(e[2])) < 2.9
                                 else torch.tensor([0.0, 1.0, 0.0])) for e in eyes])  # fmt: skip
    K = torch.tensor([[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]]).expand(24, 3, 3).clone()
    cams = Camera(poses, K, 64, 64)
    depths = _sphere_depths(cams)
    mesh = fuse_depth_maps(cams, depths, empty=depths <= 0, resolution=64)
    om = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.double().numpy()),
                                   o3d.utility.Vector3iVector(mesh.faces.int().numpy()))  # fmt: skip
    clusters, counts, _ = om.cluster_connected_triangles()
    assert len(counts) == 1
    assert om.is_edge_manifold(allow_boundary_edges=False)  # every edge has exactly two faces: closed
    assert om.is_vertex_manifold()
    radii = mesh.vertices.norm(dim=-1)
    assert float((radii - RADIUS).abs().max()) < 0.05  # within ~1.5 voxels of the true surface
