"""Remove lens distortion up front: resample distorted images onto a pinhole camera with the same ``K``.

recon's renderers use pinhole projection only, so every loader hands out pinhole cameras; images taken through
an ``opencv`` (radial-tangential, rational) or ``opencv_fisheye`` (equidistant) lens are resampled once, on first
access, with a remap grid precomputed per distinct camera (``K``, distortion, size) and ``grid_sample``.

For each output pixel centre ``u`` the grid holds ``K distort(K^-1 u)``: the position in the distorted source
image that sees the same ray. With the same ``K`` in and out, some output pixels (the corners, for a pincushion
lens) would see outside the source image and be black; supervised as black, they are a camera-fixed border that
no scene explains, which a field fits with floaters near the cameras. So the output camera zooms in just enough
that no pixel is blank, as COLMAP's ``image_undistorter`` does with ``blank_pixels = 0``: ``pinhole_K`` scales the focal lengths by the smallest
``blank_free_zoom`` >= 1 (found by bisection on the output image's border pixels) for which every output pixel sees
the source image; the principal point and the image size stay. Lenses whose undistorted image has no blank pixel
at the same ``K`` (most barrel distortion) keep ``K``. Loaders hand out cameras with ``pinhole_K``.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

ZOOM_MAX = 4.0  # a lens needing more zoom than this to lose its blank pixels is left at this zoom
ZOOM_ITERATIONS = 40  # bisection steps of blank_free_zoom (relative precision ~1e-12)
EDGE_MARGIN = 0.5  # a source position within half a pixel of the border blends with the zero padding

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


def is_pinhole(camera_model: str, distortion: Tensor | None) -> bool:
    """No lens to remove: a pinhole model or all distortion parameters zero."""
    return camera_model == "pinhole" or distortion is None or not bool(distortion.abs().gt(0).any())


def _source_positions(
    K_src: Tensor, K_out: Tensor, camera_model: str, distortion: Tensor, u: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """Source pixel coordinates seen by output pixel coordinates ``(u, v)`` (float64)."""
    fx, fy, cx, cy, skew = K_out[0, 0], K_out[1, 1], K_out[0, 2], K_out[1, 2], K_out[0, 1]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    xd = distort_points(torch.stack([x, y], dim=-1), camera_model, distortion)
    sx, sy, scx, scy, sskew = K_src[0, 0], K_src[1, 1], K_src[0, 2], K_src[1, 2], K_src[0, 1]
    return sx * xd[..., 0] + sskew * xd[..., 1] + scx, sy * xd[..., 1] + scy


def zoomed_K(K: Float[Tensor, "3 3"], zoom: float) -> Float[Tensor, "3 3"]:
    """``K`` with its focal lengths (and skew) multiplied by ``zoom``; the principal point stays."""
    out = K.clone()
    out[0, :2] = K[0, :2] * zoom
    out[1, 1] = K[1, 1] * zoom
    return out


def blank_free_zoom(
    K: Float[Tensor, "3 3"], camera_model: str, distortion: Float[Tensor, " D"], width: int, height: int
) -> float:
    """The smallest focal zoom >= 1 for which every pixel of the undistorted ``width`` x ``height`` image sees the
    source image (within ``EDGE_MARGIN`` of its border), capped at ``ZOOM_MAX``; 1 for pinhole cameras.

    Bisection on the output border's pixel centres (the extreme rays of a monotone lens lie on the border).
    """
    if is_pinhole(camera_model, distortion):
        return 1.0
    K = K.to(torch.float64)
    dist = distortion.to(torch.float64)
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    u = torch.cat([xs, xs, torch.full_like(ys, 0.5), torch.full_like(ys, width - 0.5)])
    v = torch.cat([torch.full_like(xs, 0.5), torch.full_like(xs, height - 0.5), ys, ys])

    def blank_free(zoom: float) -> bool:
        su, sv = _source_positions(K, zoomed_K(K, zoom), camera_model, dist, u, v)
        inside = (
            (su >= EDGE_MARGIN)
            & (su <= width - EDGE_MARGIN)
            & (sv >= EDGE_MARGIN)
            & (sv <= height - EDGE_MARGIN)
        )
        return bool((inside & su.isfinite() & sv.isfinite()).all())

    if blank_free(1.0):
        return 1.0
    if not blank_free(ZOOM_MAX):
        return ZOOM_MAX
    lo, hi = 1.0, ZOOM_MAX
    for _ in range(ZOOM_ITERATIONS):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if blank_free(mid) else (mid, hi)
    return hi


@lru_cache(maxsize=256)
def _pinhole_K_cached(K: tuple, camera_model: str, distortion: tuple, width: int, height: int) -> Tensor:
    K_t = torch.tensor(K, dtype=torch.float64).reshape(3, 3)
    zoom = blank_free_zoom(K_t, camera_model, torch.tensor(distortion, dtype=torch.float64), width, height)
    return zoomed_K(K_t, zoom)


def pinhole_K(
    K: Float[Tensor, "3 3"],
    camera_model: str,
    distortion: Float[Tensor, " D"] | None,
    width: int,
    height: int,
) -> Float[Tensor, "3 3"]:
    """The intrinsics of the undistorted image (``zoomed_K(K, blank_free_zoom(...))``; ``K`` itself for pinhole
    cameras), float64, cached per distinct camera."""
    if distortion is None or is_pinhole(camera_model, distortion):
        return K.to(torch.float64)
    key = tuple(K.to(torch.float64).flatten().tolist())
    return _pinhole_K_cached(key, camera_model, tuple(distortion.tolist()), width, height).clone()


def undistort_grid(
    K: Float[Tensor, "3 3"],
    camera_model: str,
    distortion: Float[Tensor, " D"],
    width: int,
    height: int,
    K_out: Float[Tensor, "3 3"] | None = None,
) -> Float[Tensor, "1 H W 2"]:
    """The ``grid_sample`` grid (``align_corners=False``) that undistorts a ``width`` x ``height`` image taken with
    ``K`` onto the pinhole camera ``K_out`` of the same size (default: ``K`` itself)."""
    K = K.to(torch.float64)
    K_out = K if K_out is None else K_out.to(torch.float64)
    j, i = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    u, v = _source_positions(K, K_out, camera_model, distortion.to(torch.float64), i, j)
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
        K_out: Float[Tensor, "3 3"] | None = None,
    ) -> Float[Tensor, "H W D"]:
        """Resample ``image`` (taken with ``K`` and the given lens) onto the pinhole camera ``K_out`` of the same
        size (default ``K``; loaders pass ``pinhole_K``).

        Args:
            image: (H, W, D) image of any channel count.
            K: (3, 3) intrinsics at the image's resolution.
            camera_model: lens model of ``image``; ``"pinhole"`` returns the image unchanged.
            distortion: (D2,) lens parameters.
            nearest: nearest-neighbour sampling (depth maps) instead of bilinear.
            K_out: (3, 3) intrinsics of the output pinhole camera, or None for ``K``.

        Returns:
            The undistorted (H, W, D) image; pixels that see outside the source image are 0.
        """
        if distortion is None or is_pinhole(camera_model, distortion):
            return image
        h, w = image.shape[:2]
        out_key = None if K_out is None else tuple(K_out.flatten().tolist())
        key = (tuple(K.flatten().tolist()), out_key, camera_model, tuple(distortion.tolist()), w, h)
        grid = self._grids.get(key)
        if grid is None:
            grid = undistort_grid(K, camera_model, distortion, w, h, K_out)
            self._grids[key] = grid
        src = image.permute(2, 0, 1)[None].to(torch.float32)
        mode = "nearest" if nearest else "bilinear"
        out = F.grid_sample(src, grid.to(src.device), mode=mode, padding_mode="zeros", align_corners=False)
        return out[0].permute(1, 2, 0).contiguous()
