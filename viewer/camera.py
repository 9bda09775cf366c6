"""Conversions between viser's browser camera and :class:`recon.core.Camera`, and render-size rules.

viser (1.1) reports a client camera as ``wxyz`` and ``position``: the rotation and translation of
``P_world = R p_camera + t``, i.e. camera -> world, with OpenCV camera axes (+z looks forward, -y is up on
screen), plus ``fov``, the vertical field of view in radians, and the canvas size in pixels. That is exactly
recon's camera frame, so the conversion is an inversion and a pinhole ``K`` with square pixels and the principal
point at the image centre.
"""

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera
from recon.core.transforms import invert_T, make_T, quat_to_rotmat, rotmat_to_quat


def viser_to_camera(
    wxyz: Float[Tensor, "4"] | Float[np.ndarray, "4"] | tuple[float, ...],
    position: Float[Tensor, "3"] | Float[np.ndarray, "3"] | tuple[float, ...],
    *,
    fov_y: float,
    width: int,
    height: int,
    dtype: torch.dtype = torch.float32,
) -> Camera:
    """The recon camera (C=1) of a viser client camera.

    .. math:: T_{world,cam} = [R(q) \\mid p], \\quad f_y = \\frac{H/2}{\\tan(\\mathrm{fov}_y / 2)}, f_x = f_y,
              c = (W/2, H/2)

    Args:
        wxyz: (4,) camera -> world rotation as a quaternion (w first).
        position: (3,) camera centre in world coordinates.
        fov_y: vertical field of view in radians, in (0, pi).
        width: image width in pixels.
        height: image height in pixels.
        dtype: dtype of the returned camera.

    Returns:
        A pinhole :class:`Camera` with one camera of size ``width`` x ``height``. Not differentiable (built from
        plain numbers).

    Example:
        >>> cam = viser_to_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -2.0), fov_y=1.0, width=64, height=48)
        >>> cam.centers().tolist()
        [[0.0, 0.0, -2.0]]
    """
    if not 0.0 < float(fov_y) < math.pi:
        raise ValueError(f"fov_y must lie in (0, pi) radians, got {fov_y}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    q = torch.as_tensor(wxyz, dtype=torch.float64).reshape(4)
    t = torch.as_tensor(position, dtype=torch.float64).reshape(3)
    T_world_cam = make_T(quat_to_rotmat(q), t)
    fy = 0.5 * height / math.tan(0.5 * float(fov_y))
    K = torch.tensor([[fy, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return Camera(
        T_cam_world=invert_T(T_world_cam)[None].to(dtype),
        K=K[None].to(dtype),
        width=int(width),
        height=int(height),
    )


def camera_to_viser(
    camera: Camera,
) -> tuple[tuple[float, float, float, float], tuple[float, float, float], float, float]:
    """viser pose and frustum parameters of one recon camera.

    Args:
        camera: a camera batch of size 1 (OpenCV axes).

    Returns:
        ``(wxyz, position, fov_y, aspect)``: camera -> world quaternion, camera centre, vertical field of view in
        radians (from ``fy`` and the height) and ``width / height``.
    """
    if len(camera) != 1:
        raise ValueError(f"camera_to_viser needs a single camera, got {len(camera)}")
    T_world_cam = camera.T_world_cam()[0].detach().to("cpu", torch.float64)
    q = rotmat_to_quat(T_world_cam[:3, :3])
    fy = float(camera.K[0, 1, 1])
    fov_y = 2.0 * math.atan(0.5 * camera.height / fy)
    wxyz = tuple(float(v) for v in q)
    position = tuple(float(v) for v in T_world_cam[:3, 3])
    return wxyz, position, fov_y, camera.width / camera.height  # type: ignore[return-value]


def render_size(
    canvas_width: int, canvas_height: int, *, max_resolution: int, scale: float = 1.0
) -> tuple[int, int]:
    """Image size of a render for a canvas: keep the aspect ratio, cap the longest side, then apply ``scale``.

    Args:
        canvas_width: browser canvas width in pixels.
        canvas_height: browser canvas height in pixels.
        max_resolution: cap on the longest side of the full-resolution image.
        scale: extra factor in (0, 1] (the preview factor while the camera moves).

    Returns:
        ``(width, height)``, each at least 1 pixel.
    """
    if canvas_width <= 0 or canvas_height <= 0:
        raise ValueError(f"canvas size must be positive, got {canvas_width}x{canvas_height}")
    longest = max(canvas_width, canvas_height)
    factor = min(1.0, max_resolution / longest) * scale
    return max(1, round(canvas_width * factor)), max(1, round(canvas_height * factor))


def average_up_direction(cameras: list[Camera]) -> tuple[float, float, float]:
    """World "up" as seen by a set of cameras: the mean of their -y axes (OpenCV y points down), normalised.

    Falls back to +z when the cameras disagree so much that the mean vanishes.
    """
    ups = [-c.T_world_cam()[0, :3, 1].detach().to("cpu", torch.float64) for c in cameras]
    if not ups:
        return (0.0, 0.0, 1.0)
    mean = torch.stack(ups).mean(0)
    norm = float(mean.norm())
    if norm < 1e-6:  # cameras all around with no shared up: keep viser's default
        return (0.0, 0.0, 1.0)
    return tuple(float(v) for v in mean / norm)  # type: ignore[return-value]
