"""Corner values ``s`` of a SparseFlex grid from a trained field (spec sparseflex.md section 4.1, "Alternatively
sample ``s`` from a trained neural field").

The dense ``(R+1)^3`` corners of the scene cube are sampled in chunks:

* an SDF (neus; world units, inside negative) becomes ``s = sdf R / size`` (voxel units), clipped to
  ``[-clip, clip]``: the sign is the field's own, so the zero level set is kept to sub-voxel precision;
* a density (nerf) has no metric scale: a corner is inside when ``sigma > tau`` (the level the nerf itself exports
  its mesh at), and ``s`` is the signed distance transform of that occupancy in voxel units, as for the visual
  hull (:func:`occupancy_corner_sdf`).

Corners outside the source field's box (a nerf foreground box smaller than the scene cube) count as outside.
"""

from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from recon.core.errors import ReconError

__all__ = ["HALF_VOXEL", "corner_points", "density_corner_sdf", "occupancy_corner_sdf", "sdf_corner_values"]

HALF_VOXEL = 0.5  # a surface between an inside and an outside corner lies half a voxel from each
SAMPLE_CHUNK = 65_536  # corners per field query (bounded memory at R = 128: 2.1M corners)


def corner_points(resolution: int, center: Float[Tensor, "3"], size: float) -> Float[Tensor, "N 3"]:
    """World positions of the ``(R+1)^3`` grid corners, row ``(i (R+1) + j) (R+1) + k`` (float32, CPU)."""
    axis = torch.arange(resolution + 1, dtype=torch.float32) / resolution - 0.5
    unit = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return center.float().cpu() + size * unit


def occupancy_corner_sdf(
    inside: Bool[Tensor, "R1 R1 R1"], *, clip: float, what: str
) -> Float[Tensor, "R1 R1 R1"]:
    """Signed distance (voxel units, inside negative, clipped) to the boundary of a corner occupancy.

    The Euclidean distance transform to the nearest corner of the other class, offset by half a voxel so the
    surface sits between an inside and an outside corner.

    Raises:
        ReconError: ``inside`` is empty or full (``what`` names its source in the message).
    """
    occ = inside.cpu().numpy()
    if not occ.any() or occ.all():
        state = "empty" if not occ.any() else "the whole box"
        raise ReconError(f"{what} at resolution {occ.shape[0] - 1} is {state}: no surface to start from")
    # np.asarray: scipy annotates a union of return forms
    inside_dist, outside_dist = (
        np.asarray(distance_transform_edt(occ)),
        np.asarray(distance_transform_edt(~occ)),
    )
    sdf = np.where(occ, -(inside_dist - HALF_VOXEL), outside_dist - HALF_VOXEL)
    return torch.from_numpy(np.clip(sdf, -clip, clip)).float()


def _sample(
    fn: Callable[[Tensor], Tensor], points: Tensor, box: Float[Tensor, "2 3"], outside: float, device
) -> Tensor:
    """``fn`` at ``points`` (chunked, no grad) where inside ``box``; ``outside`` elsewhere."""
    values = torch.full((points.shape[0],), outside, dtype=torch.float32)
    box = box.float().cpu()
    within = ((points >= box[0]) & (points <= box[1])).all(-1)
    index = within.nonzero()[:, 0]
    with torch.no_grad():
        for chunk in index.split(SAMPLE_CHUNK):
            values[chunk] = fn(points[chunk].to(device)).float().reshape(-1).cpu()
    return values


def sdf_corner_values(
    sdf: Callable[[Tensor], Tensor],
    *,
    resolution: int,
    center: Float[Tensor, "3"],
    size: float,
    field_box: Float[Tensor, "2 3"],
    clip: float,
    device: torch.device | str = "cpu",
) -> Float[Tensor, "R1 R1 R1"]:
    """``s = clip(sdf(x) R / size)`` at the corners of the cube (``center``, ``size``; world units).

    Args:
        sdf: world points (N, 3) -> signed distance (N,) in world units, inside negative (neus).
        resolution: R voxels per axis.
        center: (3,) cube centre; size: its side (world units).
        field_box: (2, 3) box where ``sdf`` is defined; corners outside it are outside (``+clip``).
        clip: |s| bound in voxels.
        device: where ``sdf`` runs.
    """
    points = corner_points(resolution, center, size)
    values = _sample(sdf, points, field_box, clip * size / resolution, device) * (resolution / size)
    n = resolution + 1
    return values.clamp(-clip, clip).reshape(n, n, n)


def density_corner_sdf(
    density: Callable[[Tensor], Tensor],
    *,
    threshold: float,
    resolution: int,
    center: Float[Tensor, "3"],
    size: float,
    field_box: Float[Tensor, "2 3"],
    clip: float,
    device: torch.device | str = "cpu",
) -> Float[Tensor, "R1 R1 R1"]:
    """Signed distance (voxel units) to the ``density > threshold`` region at the corners (nerf).

    Args:
        density: world points (N, 3) -> sigma (N,).
        threshold: the density level of the surface.
        resolution, center, size, field_box, clip, device: as :func:`sdf_corner_values`.
    """
    points = corner_points(resolution, center, size)
    n = resolution + 1
    inside = (_sample(density, points, field_box, 0.0, device) > threshold).reshape(n, n, n)
    return occupancy_corner_sdf(inside, clip=clip, what=f"the density > {threshold:g} region")
