"""Cameras and the exact ray caster of the synthetic scenes (Open3D RaycastingScene on the CPU, Embree).

Independent of ``recon.renderers`` on purpose: the synthetic scenes are the ground truth the differentiable
renderers are tested against. By default one ray per pixel through the pixel centre (no anti-aliasing), so alpha
is exactly 0 or 1 and depth, normals and colour all belong to the same surface point. With ``supersample`` N > 1
colour and alpha are the box-filtered mean of an N x N grid of rays per pixel, as a camera pixel integrates light
(Blender's NeRF-synthetic renders are anti-aliased the same way); depth and normals stay the centre ray's.

Shading is view independent (so every method can represent the scene): albedo times a fixed Lambertian term from
world-space directional lights plus ambient,

.. math::  c = \\mathrm{clip}(a(x) \\, (k_a + \\sum_l I_l \\max(0, n \\cdot \\ell_l)), 0, 1).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from recon.core.errors import ReconError
from recon.core.transforms import look_at
from recon.datasets.synthetic.shapes import Part

CAMERA_ANGLE_X = math.radians(40.0)  # horizontal field of view of every synthetic camera (square images)
FRAME_FILL = 0.85  # the scene's bounding sphere spans at most this fraction of the half field of view
AMBIENT = 0.3
# (direction towards the light in the z-up world, intensity): key from above, fill from the side, weak from below
LIGHTS = (((0.35, -0.5, 0.8), 0.65), ((-0.6, 0.55, 0.3), 0.3), ((0.1, 0.3, -1.0), 0.2))
RAYS_PER_BATCH = 1 << 20  # rays cast per Open3D call (~50 MB of buffers)
TRAIN_JITTER = 0.35  # training-view jitter as a fraction of the mean angular spacing of the spiral


@dataclass(frozen=True)
class Renders:
    """Ray-cast images of C views.

    Attributes:
        rgba: (C, H, W, 4) uint8; colour is 0 where alpha is 0.
        depth: (C, H, W) float32 camera-frame z (OpenCV, +z forward); 0 = background.
        normals: (C, H, W, 3) float32 unit world-space geometric normals of the hit faces, turned towards the
            camera (open surfaces are seen from both sides); 0 = background.
    """

    rgba: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


def intrinsics(resolution: int) -> np.ndarray:
    """(3, 3) pinhole K of a square image, principal point at the image centre (Blender convention)."""
    focal = 0.5 * resolution / math.tan(0.5 * CAMERA_ANGLE_X)
    return np.array([[focal, 0.0, 0.5 * resolution], [0.0, focal, 0.5 * resolution], [0.0, 0.0, 1.0]])


def bounding_sphere(parts: list[Part]) -> tuple[np.ndarray, float]:
    """Centre (bounding-box centre) and radius of a sphere holding every vertex."""
    vertices = np.concatenate([p.vertices for p in parts])
    center = 0.5 * (vertices.min(0) + vertices.max(0))
    return center, float(np.linalg.norm(vertices - center, axis=-1).max())


def camera_distance(radius: float) -> float:
    """Distance from the centre at which a sphere of ``radius`` is fully in view (with FRAME_FILL margin)."""
    return radius / math.sin(FRAME_FILL * 0.5 * CAMERA_ANGLE_X)


def _poses(directions: np.ndarray, center: np.ndarray, distance: float) -> np.ndarray:
    """(N, 4, 4) float64 OpenCV ``T_cam_world`` of cameras at ``center + distance * dir`` looking at the centre."""
    if len(directions) == 0:
        return np.zeros((0, 4, 4))
    c = torch.as_tensor(center, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eyes = torch.as_tensor(center[None] + distance * directions, dtype=torch.float64)
    return torch.stack([look_at(e, c, up) for e in eyes]).numpy()


def train_poses(
    n: int, *, seed: int, center: np.ndarray, distance: float, z_range: tuple[float, float]
) -> np.ndarray:
    """Training cameras on a golden-angle spiral over the zone ``z_range`` of the unit sphere, jittered by seed.

    Returns:
        (n, 4, 4) float64 ``T_cam_world``.
    """
    rng = np.random.default_rng(seed)
    z_lo, z_hi = z_range
    i = np.arange(n) + 0.5 + TRAIN_JITTER * rng.uniform(-0.5, 0.5, n)
    z = z_lo + (z_hi - z_lo) * i / n
    spacing = math.sqrt(4 * math.pi * 0.5 * (z_hi - z_lo) / max(n, 1))  # mean angular spacing of the points
    azimuth = math.pi * (3.0 - math.sqrt(5.0)) * np.arange(n) + rng.uniform(0.0, 2 * math.pi)
    azimuth += TRAIN_JITTER * spacing * rng.uniform(-1.0, 1.0, n)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    directions = np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], -1)
    return _poses(directions, center, distance)


def orbit_poses(n: int, *, center: np.ndarray, distance: float, elevation: float) -> np.ndarray:
    """Test cameras on a ring at ``elevation`` (radians), evenly spaced, starting half a step from azimuth 0."""
    azimuth = 2 * math.pi * (np.arange(n) + 0.5) / max(n, 1)
    directions = np.stack(
        [
            math.cos(elevation) * np.cos(azimuth),
            math.cos(elevation) * np.sin(azimuth),
            np.full(n, math.sin(elevation)),
        ],
        -1,
    )
    return _poses(directions, center, distance)


def _shade(normals: np.ndarray) -> np.ndarray:
    shade = np.full(normals.shape[0], AMBIENT)
    for direction, intensity in LIGHTS:
        d = np.asarray(direction, dtype=np.float64)
        shade += intensity * np.clip(normals @ (d / np.linalg.norm(d)), 0.0, None)
    return shade


class Caster:
    """The scene's triangles in an Open3D RaycastingScene plus what is needed to colour a hit."""

    def __init__(self, parts: list[Part]) -> None:
        import open3d as o3d  # heavy (~1 s): imported when a scene is rendered, not when recon.datasets loads

        self._o3d = o3d
        self.parts = parts
        self.vertices = np.concatenate([p.vertices for p in parts]).astype(np.float64)
        self.vertex_offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
        self.face_offsets = np.cumsum([0] + [len(p.faces) for p in parts])
        self.faces = np.concatenate([p.faces + o for p, o in zip(parts, self.vertex_offsets[:-1])]).astype(
            np.int64
        )
        self.face_part = np.concatenate([np.full(len(p.faces), k) for k, p in enumerate(parts)])
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.face_normals = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-300)
        self.scene = o3d.t.geometry.RaycastingScene()
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor(self.vertices.astype(np.float32))  # pyright: ignore[reportCallIssue]  # open3d's stubs omit the ndarray constructor
        mesh.triangle.indices = o3d.core.Tensor(self.faces.astype(np.int32))  # pyright: ignore[reportCallIssue]  # open3d's stubs omit the ndarray constructor
        self.scene.add_triangles(mesh)

    def albedo(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """(R, 3) albedo at hits given by face index and barycentrics (u, v) of vertices 1 and 2."""
        w = np.concatenate([1.0 - bary.sum(-1, keepdims=True), bary], -1)  # (R, 3) weights of the 3 vertices
        points = (self.vertices[self.faces[face]] * w[..., None]).sum(1)
        out = np.zeros((len(face), 3))
        part_of_hit = self.face_part[face]
        for k, part in enumerate(self.parts):
            sel = part_of_hit == k
            if not sel.any():
                continue
            if part.vertex_colors is not None:
                colors = part.vertex_colors[self.faces[face[sel]] - self.vertex_offsets[k]]
                out[sel] = (colors * w[sel][..., None]).sum(1)
            elif part.face_colors is not None:
                out[sel] = part.face_colors[face[sel] - self.face_offsets[k]]
            else:
                assert part.albedo is not None  # Part: a part without colour arrays has an albedo function
                out[sel] = part.albedo(points[sel])
        return out

    def _cast(
        self, T_cam_world: np.ndarray, K: np.ndarray, resolution: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One ray through each pixel centre of C views: (hit (R,) bool, rgb (R, 3) float64 in [0, 1], depth (R,),
        normals (R, 3)) with R = C * resolution^2 in row-major pixel order; rgb, depth and normals are 0 on a miss."""
        H = W = resolution
        j, i = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
        # Camera-frame directions with unit z, so the caster's t_hit is the camera-frame depth itself.
        dirs_cam = np.stack([(i - K[0, 2]) / K[0, 0], (j - K[1, 2]) / K[1, 1], np.ones_like(i)], -1).reshape(
            -1, 3
        )
        T_world_cam = np.linalg.inv(T_cam_world)
        origins = np.repeat(T_world_cam[:, None, :3, 3], H * W, axis=1).reshape(-1, 3)
        directions = np.einsum("cij,rj->cri", T_world_cam[:, :3, :3], dirs_cam).reshape(-1, 3)
        rays = np.concatenate([origins, directions], -1).astype(np.float32)
        t_hit = np.empty(len(rays), np.float32)
        face = np.empty(len(rays), np.int64)
        bary = np.empty((len(rays), 2), np.float32)
        for start in range(0, len(rays), RAYS_PER_BATCH):
            batch = self._o3d.core.Tensor(rays[start : start + RAYS_PER_BATCH])  # pyright: ignore[reportCallIssue]  # open3d's stubs omit the ndarray constructor
            out = self.scene.cast_rays(batch)
            t_hit[start : start + RAYS_PER_BATCH] = out["t_hit"].numpy()
            face[start : start + RAYS_PER_BATCH] = out["primitive_ids"].numpy().astype(np.int64)
            bary[start : start + RAYS_PER_BATCH] = out["primitive_uvs"].numpy()
        hit = np.isfinite(t_hit)
        normals = self.face_normals[face[hit]]
        flip = (normals * directions[hit]).sum(-1) > 0  # seen from behind (open surfaces): face the camera
        normals[flip] *= -1.0
        rgb = np.zeros((len(rays), 3))
        rgb[hit] = np.clip(
            self.albedo(face[hit], bary[hit].astype(np.float64)) * _shade(normals)[:, None], 0.0, 1.0
        )
        depth = np.where(hit, t_hit, 0.0).astype(np.float32)
        normal_map = np.zeros((len(rays), 3), np.float32)
        normal_map[hit] = normals
        return hit, rgb, depth, normal_map

    def render(
        self, T_cam_world: np.ndarray, K: np.ndarray, resolution: int, supersample: int = 1
    ) -> Renders:
        """Ray-cast C views.

        Args:
            T_cam_world: (C, 4, 4) OpenCV world-to-camera poses.
            K: (3, 3) pixel intrinsics.
            resolution: image width = height in pixels.
            supersample: N: colour and alpha are the mean over an N x N grid of rays per pixel (alpha = the
                covered fraction, colour = the mean colour of the covered rays); 1 = one ray through the centre.
                Depth and normals are always the centre ray's (0 where it misses, even if alpha > 0).
        """
        if supersample < 1:
            raise ReconError(f"supersample must be >= 1 rays per pixel side, got {supersample}")
        C, H, W = len(T_cam_world), resolution, resolution
        hit, rgb, depth, normals = self._cast(T_cam_world, K, resolution)
        alpha = hit.astype(np.float64)
        if supersample > 1:
            n = supersample
            K_fine = K.copy()
            K_fine[:2] *= n  # fine pixel (x + 0.5) / n of the N x N grid inside each pixel
            fine_hit, fine_rgb, _, _ = self._cast(T_cam_world, K_fine, n * resolution)
            alpha = fine_hit.reshape(C, H, n, W, n).mean(axis=(2, 4)).reshape(-1)
            premultiplied = fine_rgb.reshape(C, H, n, W, n, 3).mean(axis=(2, 4)).reshape(-1, 3)
            rgb = np.where(alpha[:, None] > 0, premultiplied / np.maximum(alpha, 1e-12)[:, None], 0.0)
        rgba = np.zeros((C * H * W, 4), np.uint8)
        rgba[:, :3] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
        rgba[:, 3] = np.round(alpha * 255.0).astype(np.uint8)
        rgba[rgba[:, 3] == 0, :3] = 0
        return Renders(rgba.reshape(C, H, W, 4), depth.reshape(C, H, W), normals.reshape(C, H, W, 3))
