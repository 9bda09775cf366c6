"""Which kind of capture a posed image set is: object-centric, forward-facing or unbounded 360 (``nerf`` sampling).

``detect_scene_type(cameras, points)`` states its rule (in this order):

1. ``forward``: the cameras' optical axes all point one way: the mean of the unit forward vectors has length
   ``>= FORWARD_COHERENCE`` (0.9: the axes lie within roughly 25 degrees of their mean), as in LLFF captures.
2. Otherwise the cameras surround something. The *look-at centre* ``p`` is the least-squares point closest to all
   optical axes and ``r`` the median camera distance to it.
   * With at least ``MIN_POINTS`` SfM points: ``unbounded`` when more than ``FAR_POINT_FRACTION`` (5 %) of them lie
     farther than ``FAR_POINT_RADIUS * r`` (1.5 r) from ``p`` (a background seen behind the subject: SfM outliers
     alone stay below a few per cent, while a hand-held capture in a room, colmap_beer_can, has 10 % of its points
     on the walls), else ``bounded`` (the points are concentrated inside the camera ring).
   * Without points (synthetic renders have none): ``bounded`` when the cameras look at ``p`` (median angle between
     an optical axis and the direction to ``p`` below ``LOOK_AT_DEGREES``, 30 degrees), else ``unbounded`` (cameras
     looking outward, e.g. walking through a room).

``foreground_box(kind, cameras, points, fallback)`` is the region a contracted field keeps un-contracted: for
``unbounded`` the cube about ``p`` holding every camera (``half = max camera distance``); for ``forward`` the cube
centred ``d`` in front of the mean camera along the mean axis with ``half = d``, ``d`` the median depth of the
points along it (so the box spans the cameras to twice the median depth; beyond is contracted); for ``bounded``
the dataset's box ``fallback``.

``object_region(cameras, points)`` is the subject a surrounding capture looks at, from its SfM points (superquadric
blocks frame their canonical box on it): the points within ``OBJECT_INNER_FRACTION`` (0.5) of the median camera
distance from the look-at centre, expressed along the cameras' up (``−`` mean camera y axis) and two horizontal
axes; per axis the ``OBJECT_QUANTILE`` (2 %) and 98 % quantiles bound the subject (a few stray points do not widen
it); ``centre`` is that box's centre, ``radius = OBJECT_MARGIN`` (1.25) x its half diagonal and ``floor`` the
height of its bottom below the centre along up (where the subject stands). None for forward captures and for
fewer than ``MIN_POINTS`` points near the centre.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera

__all__ = [
    "SceneKind",
    "SceneTypeDecision",
    "SceneTypeSetting",
    "ObjectRegion",
    "detect_scene_type",
    "camera_rig",
    "camera_up",
    "foreground_box",
    "is_forward",
    "look_at_centre",
    "object_region",
    "perpendicular_axes",
    "resolve_scene_type",
]

SceneKind = Literal["bounded", "unbounded", "forward"]
SceneTypeSetting = Literal["auto", "bounded", "unbounded", "forward"]
SCENE_KINDS: tuple[SceneKind, ...] = ("bounded", "unbounded", "forward")

FORWARD_COHERENCE = 0.9  # |mean unit optical axis| above which all cameras face one way (LLFF-like)
MIN_POINTS = 20  # fewer SfM points than this say nothing about the background
FAR_POINT_RADIUS = 1.5  # points beyond 1.5x the median camera distance from the look-at centre are "far"
FAR_POINT_FRACTION = 0.05  # more than 5 % far points: a background (SfM outliers stay below)
LOOK_AT_DEGREES = 30.0  # cameras whose axes point within 30 degrees of the look-at centre surround an object
MIN_DEPTH = 1e-6  # floor of the forward box's depth (points behind or at the cameras)
OBJECT_INNER_FRACTION = 0.5  # subject points lie within half the median camera distance of the look-at centre
OBJECT_QUANTILE = 0.02  # per-axis quantiles 2 % / 98 % bound the subject's points
OBJECT_MARGIN = 1.25  # region radius = 1.25 x the half diagonal of the subject's box


@dataclass(frozen=True)
class SceneTypeDecision:
    """The kind of capture and why (``reason`` is one human-readable sentence with the measured numbers)."""

    kind: SceneKind
    reason: str


def _centres_and_axes(cameras: Camera) -> tuple[Tensor, Tensor]:
    T = cameras.T_cam_world.to(torch.float64)
    R, t = T[:, :3, :3], T[:, :3, 3]
    centres = -(R.transpose(1, 2) @ t[..., None])[..., 0]
    return centres, R[:, 2, :]  # the camera z axis (forward, OpenCV) in world coordinates


def _look_at_centre(centres: Tensor, axes: Tensor) -> Tensor:
    """Least-squares point closest to the lines ``c_i + s a_i``: ``sum (I - a a^T) p = sum (I - a a^T) c``."""
    eye = torch.eye(3, dtype=centres.dtype)
    proj = eye - axes[:, :, None] * axes[:, None, :]
    A = proj.sum(0) + 1e-9 * eye  # regularised: parallel axes leave A singular
    b = (proj @ centres[..., None]).sum(0)
    return torch.linalg.solve(A, b)[:, 0]


def camera_rig(cameras: Camera) -> tuple[Float[Tensor, "C 3"], Float[Tensor, "C 3"]]:
    """(centres, unit optical axes) of the cameras in float64 (OpenCV: the axis is the camera's +z)."""
    return _centres_and_axes(cameras)


def is_forward(axes: Float[Tensor, "C 3"]) -> bool:
    """The unit optical ``axes`` (``camera_rig``) all face one way (rule 1 of the module docstring)."""
    return float(axes.mean(0).norm()) >= FORWARD_COHERENCE


def look_at_centre(centres: Float[Tensor, "C 3"], axes: Float[Tensor, "C 3"]) -> Float[Tensor, "3"]:
    """The least-squares point closest to the optical axes of a ``camera_rig`` (regularised, so parallel axes
    give a point near the cameras rather than an error)."""
    return _look_at_centre(centres, axes)


def camera_up(cameras: Camera) -> Float[Tensor, "3"] | None:
    """Unit up direction of a capture: −the mean camera y axis (OpenCV y points down), float64 on the CPU; None
    when the y axes cancel out (norm of the mean below ``MIN_DEPTH``)."""
    up = -cameras.T_world_cam()[:, :3, 1].detach().to(device="cpu", dtype=torch.float64).mean(0)
    return None if float(up.norm()) < MIN_DEPTH else up / up.norm()


def perpendicular_axes(normal: Float[Tensor, "3"]) -> tuple[Float[Tensor, "3"], Float[Tensor, "3"]]:
    """Unit ``(e1, e2)`` with ``(e1, normal, e2)`` orthonormal and right-handed (``e2 = e1 x normal``)."""
    helper = torch.zeros_like(normal)
    helper[int(normal.abs().argmin())] = 1.0
    e1 = torch.linalg.cross(normal, helper)
    e1 = e1 / e1.norm()
    return e1, torch.linalg.cross(e1, normal)


def detect_scene_type(cameras: Camera, points: Float[Tensor, "P 3"] | None) -> SceneTypeDecision:
    """Classify a capture from its cameras and optional SfM points (rule in the module docstring).

    Args:
        cameras: the training cameras (at least one).
        points: (P, 3) sparse points in the same frame, or None.

    Returns:
        ``SceneTypeDecision(kind, reason)``.
    """
    if len(cameras) < 1:
        raise ValueError("cameras must hold at least one camera")
    if points is not None and (points.ndim != 2 or points.shape[-1] != 3):
        raise ValueError(f"points must have shape (P, 3) or be None, got {tuple(points.shape)}")
    centres, axes = _centres_and_axes(cameras)
    coherence = float(axes.mean(0).norm())
    if is_forward(axes):
        return SceneTypeDecision(
            "forward",
            f"the optical axes all face one way (|mean axis| = {coherence:.3f} >= {FORWARD_COHERENCE})",
        )
    p = _look_at_centre(centres, axes)
    radius = float((centres - p).norm(dim=-1).median())
    if points is not None and len(points) >= MIN_POINTS:
        dist = (points.to(torch.float64) - p).norm(dim=-1)
        far = float((dist > FAR_POINT_RADIUS * radius).double().mean())
        kind: SceneKind = "unbounded" if far > FAR_POINT_FRACTION else "bounded"
        return SceneTypeDecision(
            kind, f"cameras surround a centre (|mean axis| = {coherence:.3f}); {100 * far:.1f} % of the "
            f"{len(points)} SfM points lie beyond {FAR_POINT_RADIUS} x the camera distance {radius:.3g} "
            f"(threshold {100 * FAR_POINT_FRACTION:.0f} %)",
        )  # fmt: skip
    to_centre = p - centres
    cos = (to_centre * axes).sum(-1) / to_centre.norm(dim=-1).clamp_min(MIN_DEPTH)
    angle = math.degrees(math.acos(max(-1.0, min(1.0, float(cos.median())))))
    kind = "bounded" if angle < LOOK_AT_DEGREES else "unbounded"
    return SceneTypeDecision(
        kind, f"no SfM points; the median angle between an optical axis and the look-at centre is {angle:.1f} "
        f"degrees (bounded below {LOOK_AT_DEGREES})",
    )  # fmt: skip


def resolve_scene_type(
    setting: SceneTypeSetting, cameras: Camera, points: Float[Tensor, "P 3"] | None
) -> SceneTypeDecision:
    """``setting`` itself when it names a kind (the ``scene_type`` config override), else ``detect_scene_type``."""
    if setting == "auto":
        return detect_scene_type(cameras, points)
    if setting not in SCENE_KINDS:
        raise ValueError(f"scene_type must be one of auto|bounded|unbounded|forward, got {setting!r}")
    return SceneTypeDecision(setting, f"set by the config (scene_type={setting!r})")


def foreground_box(
    kind: SceneKind, cameras: Camera, points: Float[Tensor, "P 3"] | None, fallback: Float[Tensor, "2 3"]
) -> Float[Tensor, "2 3"]:
    """The (2, 3) box a contracted field keeps un-contracted (rule in the module docstring)."""
    if kind == "bounded":
        return fallback.to(torch.float32)
    centres, axes = _centres_and_axes(cameras)
    if kind == "unbounded":
        centre = _look_at_centre(centres, axes)
        half = float((centres - centre).norm(dim=-1).max())
    else:
        axis = axes.mean(0) / axes.mean(0).norm()
        origin = centres.mean(0)
        if points is not None and len(points) >= MIN_POINTS:
            depth = float(((points.to(torch.float64) - origin) @ axis).median())
        else:  # no points: the depth of the dataset box's centre along the mean axis
            depth = float((0.5 * (fallback[0] + fallback[1]).to(torch.float64) - origin) @ axis)
        half = max(depth, MIN_DEPTH)
        centre = origin + axis * half
    half = max(half, MIN_DEPTH)
    return torch.stack([centre - half, centre + half]).to(torch.float32)


@dataclass(frozen=True)
class ObjectRegion:
    """The subject of a surrounding capture (``object_region``), in the cameras' frame.

    Attributes:
        centre: (3,) centre of the subject's box.
        radius: ``OBJECT_MARGIN`` x the box's half diagonal (> 0).
        up: (3,) unit up direction (−mean camera y axis, OpenCV).
        floor: height of the box's bottom below ``centre`` along ``up`` (>= 0).
        num_points: SfM points the box was measured on.
    """

    centre: Float[Tensor, "3"]
    radius: float
    up: Float[Tensor, "3"]
    floor: float
    num_points: int


def object_region(cameras: Camera, points: Float[Tensor, "P 3"] | None) -> ObjectRegion | None:
    """The subject the cameras surround, measured on the SfM ``points`` (rule in the module docstring).

    Args:
        cameras: the training cameras.
        points: (P, 3) sparse points in the cameras' frame, or None.

    Returns:
        The region in float64, or None (forward capture, no points, or fewer than ``MIN_POINTS`` near the centre).
        Not differentiable.
    """
    if points is None or len(points) < MIN_POINTS or len(cameras) < 2:
        return None
    centres, axes = _centres_and_axes(cameras)
    if is_forward(axes):
        return None
    p = _look_at_centre(centres, axes)
    distance = float((centres - p).norm(dim=-1).median())
    pts = points.detach().to(device="cpu", dtype=torch.float64)
    near = pts[(pts - p).norm(dim=-1) < OBJECT_INNER_FRACTION * distance]
    if len(near) < MIN_POINTS:
        return None
    up = camera_up(cameras)
    if up is None:
        return None
    e1, e2 = perpendicular_axes(up)
    basis = torch.stack([e1, up, e2])
    local = (near - p) @ basis.T
    lo = local.quantile(OBJECT_QUANTILE, dim=0)
    hi = local.quantile(1.0 - OBJECT_QUANTILE, dim=0)
    half = 0.5 * (hi - lo)
    radius = OBJECT_MARGIN * float(half.norm())
    if not radius > MIN_DEPTH:
        return None
    centre = p + basis.T @ (0.5 * (lo + hi))
    return ObjectRegion(centre, radius, up, float(half[1]), len(near))
