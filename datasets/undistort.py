"""Remove lens distortion up front: resample distorted images onto a pinhole camera with the same ``K``.

recon's renderers use pinhole projection only, so every loader hands out pinhole cameras; images taken through
an ``opencv`` (radial-tangential, rational) or ``opencv_fisheye`` (equidistant) lens are resampled once, on first
access, with a remap grid precomputed per distinct camera (``K``, distortion, size) and ``grid_sample``.

For each output pixel centre ``u`` the grid holds ``K distort(K^-1 u)``: the position in the distorted source
image that sees the same ray. Output pixels whose source position falls outside the source image are black
(and have alpha 0 when the image has an alpha channel or mask).
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

FISHEYE_MIN_RADIUS = (
    1e-12  # below this normalised radius the equidistant map is the identity (theta_d/r -> 1)
)


def distort_points(
    xy: Float[Tensor, "*batch 2"], camera_model: str, distortion: Float[Tensor, " D"]
) -> Float[Tensor, "*batch 2"]:
    """Apply a lens model to normalised image coordinates ``(x, y) = (X/Z, Y/Z)``.

    .. math::
        \\text{opencv: } r^2 = x^2 + y^2,\\; x_d = x\\,\\frac{1 + k_1 r^2 + k_2 r^4 + k_3 r^6}{1 + k_4 r^2 + k_5 r^4
        + k_6 r^6} + 2 p_1 x y + p_2 (r^2 + 2 x^2)  \\quad (y_d \\text{ likewise})

        \\text{opencv\\_fisheye: } \\theta = \\arctan r,\\; \\theta_d = \\theta (1 + k_1 \\theta^2 + k_2 \\theta^4
        + k_3 \\theta^6 + k_4 \\theta^8),\\; x_d = x\\,\\theta_d / r

    Args:
        xy: normalised coordinates.
        camera_model: ``"pinhole"``, ``"opencv"`` (``[k1, k2, p1, p2, k3, k4, k5, k6]``) or ``"opencv_fisheye"``
            (``[k1, k2, k3, k4]``).
        distortion: the model's parameters.

    Returns:
        Distorted normalised coordinates. Differentiable w.r.t. ``xy`` and ``distortion``.

    Example:
        >>> distort_points(torch.tensor([0.5, 0.0]), "opencv", torch.tensor([0.1, 0, 0, 0, 0, 0, 0, 0.0]))
        tensor([0.5125, 0.0000])
    """
    x, y = xy[..., 0], xy[..., 1]
    if camera_model == "pinhole":
        return xy
    if camera_model == "opencv":
        k1, k2, p1, p2, k3, k4, k5, k6 = distortion.unbind(-1)
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return torch.stack([xd, yd], dim=-1)
    if camera_model == "opencv_fisheye":
        k1, k2, k3, k4 = distortion.unbind(-1)
        r = torch.sqrt(x * x + y * y)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        ratio = torch.where(
            r > FISHEYE_MIN_RADIUS, theta_d / r.clamp_min(FISHEYE_MIN_RADIUS), torch.ones_like(r)
        )
        return torch.stack([x * ratio, y * ratio], dim=-1)
    raise ValueError(f"camera_model must be 'pinhole', 'opencv' or 'opencv_fisheye', got {camera_model!r}")


def undistort_grid(
    K: Float[Tensor, "3 3"], camera_model: str, distortion: Float[Tensor, " D"], width: int, height: int
) -> Float[Tensor, "1 H W 2"]:
    """The ``grid_sample`` grid (``align_corners=False``) that undistorts a ``width`` x ``height`` image.

    The output camera is the pinhole camera with the same ``K`` and size.
    """
    K = K.to(torch.float64)
    j, i = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (j - cy) / fy
    x = (i - cx - skew * y) / fx
    xd = distort_points(torch.stack([x, y], dim=-1), camera_model, distortion.to(torch.float64))
    u = fx * xd[..., 0] + skew * xd[..., 1] + cx
    v = fy * xd[..., 1] + cy
    # align_corners=False: normalised -1 is the left edge of pixel 0, i.e. continuous pixel coordinate 0.
    grid = torch.stack([2.0 * u / width - 1.0, 2.0 * v / height - 1.0], dim=-1)
    return grid[None].to(torch.float32)


class Undistorter:
    """Undistorts images, caching one remap grid per distinct (K, lens, size)."""

    def __init__(self) -> None:
        self._grids: dict[tuple, Tensor] = {}

    def __call__(
        self,
        image: Float[Tensor, "H W D"],
        K: Float[Tensor, "3 3"],
        camera_model: str,
        distortion: Float[Tensor, " D2"] | None,
        *,
        nearest: bool = False,
    ) -> Float[Tensor, "H W D"]:
        """Resample ``image`` (taken with ``K`` and the given lens) onto the pinhole camera with the same ``K``.

        Args:
            image: (H, W, D) image of any channel count.
            K: (3, 3) intrinsics at the image's resolution.
            camera_model: lens model of ``image``; ``"pinhole"`` returns the image unchanged.
            distortion: (D2,) lens parameters.
            nearest: nearest-neighbour sampling (depth maps) instead of bilinear.

        Returns:
            The undistorted (H, W, D) image; pixels that see outside the source image are 0.
        """
        if camera_model == "pinhole" or distortion is None or not bool(distortion.abs().gt(0).any()):
            return image
        h, w = image.shape[:2]
        key = (tuple(K.flatten().tolist()), camera_model, tuple(distortion.tolist()), w, h)
        grid = self._grids.get(key)
        if grid is None:
            grid = undistort_grid(K, camera_model, distortion, w, h)
            self._grids[key] = grid
        src = image.permute(2, 0, 1)[None].to(torch.float32)
        mode = "nearest" if nearest else "bilinear"
        out = F.grid_sample(src, grid.to(src.device), mode=mode, padding_mode="zeros", align_corners=False)
        return out[0].permute(1, 2, 0).contiguous()
