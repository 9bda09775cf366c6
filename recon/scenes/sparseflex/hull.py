"""Visual-hull initialisation of a SparseFlex band (spec sparseflex.md section 4.1).

A grid point is inside the hull when it projects onto the mask in every training view that sees it, with a
tolerance of ``tolerance`` views (a point projecting onto background in at most ``tolerance`` views stays in).
The rule is applied at the grid's corners (the points where ``s`` lives); the signed distance to the hull is the
Euclidean distance transform in voxel units, offset by half a voxel so the surface sits between an inside and an
outside corner, and clipped to ``[-clip, clip]``.
"""

import numpy as np
import torch
from jaxtyping import Float
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from recon.core.errors import ReconError

__all__ = ["MASK_THRESHOLD", "hull_corner_sdf"]

MASK_THRESHOLD = 0.5  # alpha below which a pixel is background
HALF_VOXEL = 0.5  # the hull surface lies half-way between the last inside and the first outside corner


def _view_indices(num_views: int, max_views: int) -> list[int]:
    count = min(num_views, max_views)
    return torch.linspace(0, num_views - 1, count).round().long().unique().tolist()


def hull_corner_sdf(
    dataset,
    *,
    resolution: int,
    center: Float[Tensor, "3"],
    size: float,
    tolerance: int = 1,
    max_views: int = 64,
    clip: float = 2.0,
) -> Float[Tensor, "R1 R1 R1"]:
    """Signed distance (voxel units, inside negative) to the visual hull at the ``(R+1)^3`` grid corners.

    Args:
        dataset: a ``recon.datasets.SceneDataset`` with masks (alpha) on its training views.
        resolution: ``R`` voxels per axis over the cube of side ``size`` centred at ``center`` (world units).
        center: (3,) world centre of the cube.
        size: world side length of the cube.
        tolerance: number of views that may see a point on background before it is carved.
        max_views: at most this many training views, spread over the split, are used.
        clip: |s| is clipped to this many voxels.

    Returns:
        (R+1, R+1, R+1) float32 ``s``, indexed ``[i, j, k]`` along x, y, z.

    Raises:
        ReconError: the dataset has no training masks, or the hull is empty / fills the whole box.
    """
    n = resolution + 1
    axis = torch.arange(n, dtype=torch.float32) / resolution - 0.5
    unit = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    points = center.float().cpu() + size * unit
    misses = torch.zeros(len(points), dtype=torch.int32)
    used = 0
    for i in _view_indices(len(dataset.splits["train"]), max_views):
        alpha = dataset.alpha("train", i)
        if alpha is None:
            continue
        used += 1
        cam = dataset.camera("train", i)
        uv, z = cam.project(points[None].to(cam.dtype))
        px = uv[0].floor().long()
        in_frame = (z[0] > 0) & (px >= 0).all(-1) & (px[:, 0] < cam.width) & (px[:, 1] < cam.height)
        flat = px[:, 1].clamp(0, cam.height - 1) * cam.width + px[:, 0].clamp(0, cam.width - 1)
        background = alpha.reshape(-1)[flat].float() < MASK_THRESHOLD
        misses += (in_frame & background).to(torch.int32)
    if used == 0:
        raise ReconError("sparseflex initialisation needs training masks (RGBA images or mask files)")
    inside = (misses <= tolerance).reshape(n, n, n).numpy()
    if not inside.any() or inside.all():
        raise ReconError(
            f"the visual hull at resolution {resolution} is {'empty' if not inside.any() else 'the whole box'}: "
            "check the masks and the scene box"
        )
    # outside points: distance to the nearest inside corner (np.asarray: scipy annotates a union of return forms)
    outside_dist = np.asarray(distance_transform_edt(~inside))
    inside_dist = np.asarray(distance_transform_edt(inside))
    sdf = np.where(inside, -(inside_dist - HALF_VOXEL), outside_dist - HALF_VOXEL)
    return torch.from_numpy(np.clip(sdf, -clip, clip)).float()
