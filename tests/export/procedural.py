"""Procedural scenes of the export tests: an opaque triangle-splat sphere (red above z = 0, blue below) and a
ring of cameras around it, with a non-trivial dataset normalisation."""

import math

import torch
import trimesh

from recon.core import Mesh
from recon.core.transforms import look_at, transform_pose
from recon.export.service import DatasetFrame
from recon.export.splat_formats import CameraRecord
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene

RADIUS = 0.8
RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)


def sphere_mesh(subdivisions: int = 2) -> Mesh:
    ico = trimesh.creation.icosphere(subdivisions=subdivisions, radius=RADIUS)
    return Mesh(vertices=torch.tensor(ico.vertices, dtype=torch.float32), faces=torch.tensor(ico.faces))


def face_colors(mesh: Mesh) -> torch.Tensor:
    z = mesh.vertices[mesh.faces].mean(1)[:, 2:]
    return torch.where(z > 0, torch.tensor(RED), torch.tensor(BLUE))


def sphere_scene(subdivisions: int = 2) -> TriangleSplatScene:
    """Opaque, nearly solid triangles (sigma ~ 0.02) on a sphere; SH degree 0 so colours are exact."""
    mesh = sphere_mesh(subdivisions)
    cfg = TriangleSceneConfig(sh_degree=0, init_opacity=0.995, init_sigma=0.02)
    return TriangleSplatScene(cfg, mesh.vertices[mesh.faces], face_colors(mesh))


def normalization() -> torch.Tensor:
    """Original -> normalised: x_norm = 0.5 x_orig + (0.1, -0.2, 0.3) (scale + translation, no rotation)."""
    S = torch.diag(torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=torch.float64))
    S[:3, 3] = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    return S


def ring_frame(views: int = 12, size: int = 64, distance: float = 3.0) -> DatasetFrame:
    """Cameras on two rings (elevation +-35 deg) looking at the origin of the NORMALISED frame; recorded in the
    original frame like a dataset; the first half is "train", the rest "test"."""
    S = normalization()
    f = 0.5 * size / math.tan(math.radians(25))
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float64)
    records = []
    for i in range(views):
        az = 2 * math.pi * i / views
        el = math.radians(35 if i % 2 else -35)
        eye = distance * torch.tensor(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        T_norm = look_at(
            eye.double(), torch.zeros(3, dtype=torch.float64), torch.tensor([0, 0, 1.0]).double()
        )
        T_orig = transform_pose(T_norm, torch.linalg.inv(S))
        records.append(
            CameraRecord(f"r_{i}.png", "train" if i < views * 3 // 4 else "test", size, size, K, T_orig)
        )
    return DatasetFrame(S, tuple(records))
