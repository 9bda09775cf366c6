"""Cameras and procedural meshes shared by the rasterize tests."""

import math

import torch

from recon.core.camera import Camera
from tests.renderers.raster import _tol  # noqa: F401  (registers the raster tolerances)


def pixel_camera(width: int, height: int, *, dtype=torch.float32, device="cpu") -> Camera:
    """Identity pose, f = 1 and c = 0: the camera-frame point ``(x z, y z, z)`` projects to pixel ``(x, y)``."""
    return Camera(torch.eye(4, dtype=dtype)[None], torch.eye(3, dtype=dtype)[None], width, height).to(device)


def lift(points: list[tuple[float, float]], z: float) -> list[list[float]]:
    """World vertices at depth ``z`` that project to the pixel points ``(x, y)`` in ``pixel_camera``."""
    return [[x * z, y * z, z] for x, y in points]


def look_at(eye: tuple[float, float, float], *, dtype=torch.float32) -> torch.Tensor:
    """(4, 4) ``T_cam_world`` of a camera at ``eye`` looking at the origin (OpenCV axes, world z up)."""
    eye_t = torch.tensor(eye, dtype=torch.float64)
    forward = -eye_t / eye_t.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye_t
    return T.to(dtype)


def orbit_cameras(
    count: int,
    width: int,
    height: int,
    *,
    distance: float = 4.0,
    focal: float | None = None,
    dtype=torch.float32,
) -> Camera:
    """``count`` cameras on a tilted orbit around the origin, looking at it."""
    focal = focal if focal is not None else 1.1 * max(width, height)
    poses = []
    for i in range(count):
        angle = 2 * math.pi * (i + 0.3) / count
        poses.append(
            look_at((distance * math.cos(angle), distance * math.sin(angle), 0.45 * distance), dtype=dtype)
        )
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return Camera(torch.stack(poses), K.expand(count, 3, 3).clone(), width, height)


def triangle_soup(n: int, gen: torch.Generator, *, size: float = 0.5, dtype=torch.float32):
    """n random, moderately shaped triangles around the origin (vertices (3n, 3), faces (n, 3)), interpenetrating
    so that pixels see several layers."""
    centers = torch.rand(n, 1, 3, generator=gen, dtype=dtype) * 2.0 - 1.0
    offsets = torch.randn(n, 3, 3, generator=gen, dtype=dtype) * size
    vertices = (centers + offsets).reshape(-1, 3)
    return vertices, torch.arange(3 * n).reshape(n, 3)


def torus(radial: int, tubular: int, *, radius: float = 1.0, tube: float = 0.4, dtype=torch.float32):
    """A closed torus mesh in the z = 0 plane: vertices (radial tubular, 3), faces (2 radial tubular, 3)."""
    u = torch.arange(radial, dtype=torch.float64) * (2 * math.pi / radial)
    v = torch.arange(tubular, dtype=torch.float64) * (2 * math.pi / tubular)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    ring = radius + tube * torch.cos(vv)
    vertices = torch.stack([ring * torch.cos(uu), ring * torch.sin(uu), tube * torch.sin(vv)], -1).reshape(
        -1, 3
    )
    i, j = torch.meshgrid(torch.arange(radial), torch.arange(tubular), indexing="ij")
    a = i * tubular + j
    b = ((i + 1) % radial) * tubular + j
    c = ((i + 1) % radial) * tubular + (j + 1) % tubular
    d = i * tubular + (j + 1) % tubular
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return vertices.to(dtype), faces
