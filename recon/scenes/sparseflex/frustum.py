"""Frustum-aware sectional voxels for image supervision (spec sparseflex.md section 3, "crop frusta").

Each training step renders a crop of a view; only the voxels whose bounding sphere (radius ``sqrt(3)/2 h`` plus a
margin, conservative) reaches the crop's frustum are extracted and rasterised, so the per-step cost and memory
follow the crop, not the whole band. The lateral planes test the sphere; there is no near plane cutting the
object (real images show its exterior), only "in front of the camera" (``z > -radius``).

* :func:`voxel_spheres`: world centres and the bounding radius of a grid's voxels;
* :func:`frustum_mask`: which voxels reach the frustum of any of C cameras (pinhole, full image of each camera);
* :func:`sub_grid`: the grid of a voxel subset with the parent's corner and voxel rows;
* :func:`choose_crop`: a crop window centred on a random voxel in view, its size bisected so about ``target``
  voxels fall inside.

Why the margin: a quad of the extracted mesh spans the dual vertices of the 4 voxels around a grid edge, so a face
seen in the crop may lie up to ``FACE_REACH`` voxel sizes from the centre of one of the 4 voxels that must be active
for it to be emitted (2 x 2 x 1 voxels around the edge, plus half a voxel of corner deformation).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.core import Camera
from recon.renderers.isosurface import sparse_voxel_grid
from recon.renderers.isosurface.flexicubes_types import SparseVoxelGrid
from recon.scenes.sparseflex.grid_ops import linear_key

__all__ = ["FACE_REACH", "CropWindow", "choose_crop", "frustum_mask", "sub_grid", "voxel_spheres"]

FACE_REACH = 3.1  # voxels: |(1.5, 1.5, 0.5)| = 2.18 from a voxel centre to the far end of its quads' box + 0.87 (delta)
BISECTION_STEPS = (
    8  # crop-size bisection: 2^-8 of the image size is finer than a pixel for images up to 256 px
)


@dataclass(frozen=True)
class CropWindow:
    """Columns ``[x0, x0 + width)`` and rows ``[y0, y0 + height)`` of each of C views (one size for all).

    Attributes:
        x0: (C,) int64 left column per view. y0: (C,) int64 top row per view.
        width, height: crop size in pixels.
    """

    x0: Int[Tensor, " C"]
    y0: Int[Tensor, " C"]
    width: int
    height: int

    def camera(self, camera: Camera) -> Camera:
        """The cameras of the crops: ``K`` shifted by the crop offset, size ``width x height``."""
        K = camera.K.clone()
        K[:, 0, 2] -= self.x0.to(K)
        K[:, 1, 2] -= self.y0.to(K)
        return Camera(camera.T_cam_world, K, self.width, self.height)

    def image(self, images: Float[Tensor, "C H W *D"]) -> Float[Tensor, "C h w *D"]:
        """The crops of per-view images (C, H, W, ...)."""
        rows = [images[c, int(y) : int(y) + self.height, int(x) : int(x) + self.width]
                for c, (x, y) in enumerate(zip(self.x0.tolist(), self.y0.tolist(), strict=True))]  # fmt: skip
        return torch.stack(rows)


def voxel_spheres(
    grid: SparseVoxelGrid, box_center: Float[Tensor, "3"], box_size: float, *, margin: float = FACE_REACH
) -> tuple[Float[Tensor, "Nv 3"], float]:
    """World centres of the voxels and the radius of the test spheres: ``(sqrt(3)/2 + margin) h`` (world)."""
    h = 1.0 / grid.resolution
    centres = box_center.float() + box_size * ((grid.voxels.float() + 0.5) * h - 0.5)
    return centres, (0.5 * 3**0.5 + margin) * h * box_size


def _plane_mask(centres: Tensor, radius: float, camera: Camera, window: Tensor) -> Bool[Tensor, "C Nv"]:
    """Spheres reaching the frusta of ``window`` (C, 4) = ``[u0, v0, u1, v1]`` pixels per camera."""
    cam = camera.to(device=centres.device, dtype=centres.dtype)
    p = cam.world_to_camera(centres[None].expand(len(cam), -1, -1))  # (C, N, 3)
    fx, fy, cx, cy = cam.K[:, 0, 0], cam.K[:, 1, 1], cam.K[:, 0, 2], cam.K[:, 1, 2]
    ok = p[..., 2] > -radius
    # plane through the camera centre and the image line u = a: normal (fx, 0, cx - a) (inside: u > a), etc.
    for axis, f, c, lo, hi in (
        (0, fx, cx, window[:, 0], window[:, 2]),
        (1, fy, cy, window[:, 1], window[:, 3]),
    ):
        for bound, sign in ((lo, 1.0), (hi, -1.0)):
            n_axis, n_z = sign * f, sign * (c - bound)
            dist = (n_axis[:, None] * p[..., axis] + n_z[:, None] * p[..., 2]) / torch.sqrt(
                n_axis**2 + n_z**2
            )[:, None]
            ok &= dist > -radius
    return ok


def frustum_mask(centres: Float[Tensor, "Nv 3"], radius: float, camera: Camera) -> Bool[Tensor, " Nv"]:
    """(Nv,) bool: the sphere of the voxel reaches the frustum (full image) of at least one of the cameras."""
    window = torch.tensor([0.0, 0.0, camera.width, camera.height], device=centres.device, dtype=centres.dtype)
    return _plane_mask(centres, radius, camera, window.expand(len(camera), 4)).any(0)


def sub_grid(grid: SparseVoxelGrid, mask: Bool[Tensor, " Nv"]) -> tuple[SparseVoxelGrid, Tensor, Tensor]:
    """``(grid of the voxels in mask, their corner rows in grid, their voxel rows in grid)``."""
    voxel_rows = mask.nonzero()[:, 0]
    sub = sparse_voxel_grid(grid.voxels[voxel_rows], grid.resolution)
    r = grid.resolution
    corner_rows = torch.searchsorted(linear_key(grid.corners, r), linear_key(sub.corners, r))
    return sub, corner_rows, voxel_rows


def choose_crop(
    centres: Float[Tensor, "Nv 3"],
    radius: float,
    camera: Camera,
    *,
    target: int,
    min_size: int,
    generator: torch.Generator,
) -> CropWindow:
    """A crop per view (one size for all): centred on the projection of a random voxel in view 0, its size (the
    image's aspect) the largest found by bisection whose frustum holds at most ``target`` voxels (``min_size``
    pixels on the shorter side at least; the full image when it holds fewer).

    Draws exactly one number from ``generator``. Host syncs: the voxel count of each bisection step.
    """
    c, w, h = len(camera), camera.width, camera.height
    # one draw whatever the outcome: data-parallel ranks (different views) keep one generator state
    u = float(torch.rand((), generator=generator))
    in_view = frustum_mask(centres, radius, camera[0:1]).nonzero()[:, 0]
    full = CropWindow(torch.zeros(c, dtype=torch.int64), torch.zeros(c, dtype=torch.int64), w, h)
    if in_view.numel() <= target:
        return full
    pick = in_view[min(int(u * in_view.numel()), in_view.numel() - 1)]
    uv, _ = camera.to(device=centres.device, dtype=centres.dtype).project(centres[pick].expand(c, 1, 3))
    centre = uv[:, 0].cpu()  # (C, 2) the picked voxel in each view (clamped into the image below)
    lo_scale, hi_scale = min(1.0, min_size / min(w, h)), 1.0
    best = _window(centre, lo_scale, w, h)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo_scale + hi_scale)
        crop = _window(centre, mid, w, h)
        count = int(_plane_mask(centres, radius, crop.camera(camera), _full(crop, centres)).any(0).sum())
        if count <= target:
            lo_scale, best = mid, crop
        else:
            hi_scale = mid
    return best


def _window(centre: Tensor, scale: float, w: int, h: int) -> CropWindow:
    cw, ch = max(1, min(w, round(scale * w))), max(1, min(h, round(scale * h)))
    x0 = (centre[:, 0] - cw / 2).round().long().clamp(0, w - cw)
    y0 = (centre[:, 1] - ch / 2).round().long().clamp(0, h - ch)
    return CropWindow(x0, y0, cw, ch)


def _full(crop: CropWindow, like: Tensor) -> Tensor:
    window = torch.tensor([0.0, 0.0, crop.width, crop.height], device=like.device, dtype=like.dtype)
    return window.expand(len(crop.x0), 4)
