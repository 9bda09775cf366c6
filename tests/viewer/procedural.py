"""A deterministic scene for viewer tests, built only from recon.core: a ray-traced, textured unit sphere.

It stands in for a trained scene so the viewer tests do not depend on any representation.
"""

import math

import torch

from recon.core import Camera, RenderOutput
from recon.core.transforms import look_at
from recon.viewer import CameraView, ViewState

SPHERE_RADIUS = 1.0
CHECKER_FREQUENCY = 6.0  # checker cells per radian of longitude/latitude (a texture the eye can follow)


def sphere_render_fn(camera: Camera, state: ViewState) -> RenderOutput:
    """Render a unit sphere at the origin: checkered colours, camera-z depth, world normals, hard alpha."""
    rays = camera.generate_rays()
    o, d = rays.origins.double(), rays.directions.double()
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - SPHERE_RADIUS**2
    disc = b * b - c
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
    hit = hit & (t > 0)
    points = o + t[..., None] * d
    normals = points / SPHERE_RADIUS
    lon = torch.atan2(points[..., 1], points[..., 0])
    lat = torch.asin(points[..., 2].clamp(-1, 1))
    checker = (
        (torch.floor(lon * CHECKER_FREQUENCY / math.pi) + torch.floor(lat * CHECKER_FREQUENCY / math.pi)) % 2
    )[..., None]
    base = 0.5 + 0.5 * normals  # colour by normal, darkened on alternate checker cells
    colour = base * (0.55 + 0.45 * checker)
    alpha = hit[..., None].double()
    background = torch.tensor(state.background, dtype=torch.float64)
    rgb = colour * alpha + background * (1 - alpha)
    z = (
        camera.to(dtype=torch.float64)
        .world_to_camera(points.reshape(len(camera), -1, 3))[..., 2]
        .reshape(t.shape)
    )
    depth = torch.where(hit, z, torch.zeros_like(z))[..., None]
    return RenderOutput(
        rgb=rgb.float(),
        alpha=alpha.float(),
        depth=depth.float(),
        normals=(normals * alpha).float(),
    )


def orbit_cameras(count: int = 8, *, radius: float = 3.5, size: int = 64) -> list[CameraView]:
    """Training-camera stand-ins on a ring around the sphere, with their rendered images as thumbnails."""
    views = []
    focal = 1.2 * size
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    for i in range(count):
        angle = 2 * math.pi * i / count
        eye = torch.tensor([radius * math.cos(angle), radius * math.sin(angle), 1.0])
        T = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
        camera = Camera(T_cam_world=T[None], K=K[None], width=size, height=size)
        image = sphere_render_fn(camera, ViewState()).rgb[0]
        views.append(CameraView(camera=camera, image=image, name=f"orbit_{i:02d}"))
    return views
