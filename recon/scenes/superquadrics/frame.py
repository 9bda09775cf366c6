"""Canonical scene frame of the blocks world from the training cameras (spec superquadrics.md 9).

The blocks live in a frame where up is +y and the region of interest (ROI) has radius 2 (the reference's DTU
similarity maps its unit sphere to radius ``1/s = 2``). ``T_canon_world`` is a similarity
``x_canon = s R (x_world − c)``; ``T_world_canon`` its inverse, used by export.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core.camera import Camera
from recon.core.transforms import make_T
from recon.scenes.scene_type import camera_up

__all__ = [
    "CANONICAL_ROI_RADIUS",
    "CanonicalFrame",
    "canonical_frame",
    "closest_point_to_axes",
    "rotation_to_y",
]

CANONICAL_ROI_RADIUS = 2.0  # 1/s with the reference's DTU scale s = 0.5
MIN_AXES_CONDITION = (
    1e-9  # smallest eigenvalue of sum(I - d d^T) / C below which the optical axes are parallel
)


@dataclass(frozen=True)
class CanonicalFrame:
    """The similarity between the dataset world frame and the canonical blocks frame.

    Attributes:
        T_canon_world: (4, 4) ``x_canon = s R (x_world − c)``.
        T_world_canon: (4, 4) the inverse, ``x_world = Rᵀ x_canon / s + c``.
        scale: s.
        center: (3,) c, the ROI centre in world coordinates.
        up: (3,) unit world up direction (mapped to +y).
    """

    T_canon_world: Float[Tensor, "4 4"]
    T_world_canon: Float[Tensor, "4 4"]
    scale: float
    center: Float[Tensor, "3"]
    up: Float[Tensor, "3"]


def closest_point_to_axes(
    origins: Float[Tensor, "C 3"], directions: Float[Tensor, "C 3"]
) -> Float[Tensor, "3"]:
    """Least-squares point closest to C lines: solves ``Σ (I − d dᵀ) p = Σ (I − d dᵀ) o`` (d normalised).

    Raises:
        ValueError: the lines are (nearly) parallel, so the point is not determined.
    """
    d = directions / directions.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=d.dtype, device=d.device) - d[:, :, None] * d[:, None, :]
    A = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    if float(torch.linalg.eigvalsh(A).min()) < MIN_AXES_CONDITION * len(d):
        raise ValueError(
            "cameras: the optical axes are parallel, their closest point is undefined; pass roi_center"
        )
    return torch.linalg.solve(A, b)


def rotation_to_y(up: Float[Tensor, "3"]) -> Float[Tensor, "3 3"]:
    """The smallest rotation taking the unit vector ``up`` to ``+y`` (Rodrigues; 180° about x when up = −y)."""
    y = torch.tensor([0.0, 1.0, 0.0], dtype=up.dtype, device=up.device)
    axis = torch.linalg.cross(up, y)
    s, c = axis.norm(), torch.dot(up, y)
    eye = torch.eye(3, dtype=up.dtype, device=up.device)
    if float(s) < 1e-12:
        return eye if float(c) > 0 else torch.diag(up.new_tensor([1.0, -1.0, -1.0]))
    k = axis / s
    Kx = torch.zeros(3, 3, dtype=up.dtype, device=up.device)
    Kx[0, 1], Kx[0, 2], Kx[1, 0], Kx[1, 2], Kx[2, 0], Kx[2, 1] = -k[2], k[1], k[2], -k[0], -k[1], k[0]
    return eye + s * Kx + (1 - c) * (Kx @ Kx)


def canonical_frame(
    cameras: Camera,
    *,
    roi_radius: float,
    roi_center: Float[Tensor, "3"] | None = None,
) -> CanonicalFrame:
    """``T_canon_world`` from the training cameras (OpenCV) and the dataset's region of interest.

    up = −mean of the cameras' y axes in world (OpenCV y points down), normalised; centre = ``roi_center`` or the
    least-squares point closest to all optical axes; scale ``s = 2 / roi_radius`` so the ROI maps to radius 2;
    the rotation is the smallest one taking up to +y.

    Args:
        cameras: C >= 1 cameras (C >= 2 with non-parallel axes when ``roi_center`` is None).
        roi_radius: ROI radius in world units (e.g. 1 for the DTU/NeuS unit sphere), > 0.
        roi_center: (3,) ROI centre in world coordinates, or None to use the optical axes.

    Returns:
        The frame in the cameras' dtype. Not differentiable (computed once).

    Raises:
        ValueError: non-positive radius, cancelling up vectors, or parallel optical axes without a centre.
    """
    if not roi_radius > 0:
        raise ValueError(f"roi_radius must be > 0, got {roi_radius}")
    R_world_cam = cameras.T_world_cam()[:, :3, :3].detach()
    up = camera_up(cameras)
    if up is None:
        raise ValueError("cameras: their y axes cancel out, no consistent up direction")
    up = up.to(R_world_cam)
    if roi_center is None:
        center = closest_point_to_axes(cameras.centers().detach(), R_world_cam[:, :, 2])
    else:
        if tuple(roi_center.shape) != (3,):
            raise ValueError(f"roi_center must have shape (3,), got {tuple(roi_center.shape)}")
        center = roi_center.to(up)
    scale = CANONICAL_ROI_RADIUS / float(roi_radius)
    R = rotation_to_y(up)
    T_canon_world = make_T(scale * R, -scale * (R @ center))
    T_world_canon = make_T(R.T / scale, center)
    return CanonicalFrame(T_canon_world, T_world_canon, scale, center, up)
