"""Batched pinhole cameras with OpenCV axes; ray generation, projection and unprojection.

Conventions (docs/conventions.md is normative): camera frame x right, y down, z forward; ``T_cam_world`` maps
world points into the camera frame; ``K`` is in pixels; pixel ``(i, j)`` (column i, row j) has its centre at
``(i + 0.5, j + 0.5)``.
"""

from dataclasses import dataclass, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.rays import Rays
from recon.core.transforms import invert_T

CameraModel = Literal["pinhole", "opencv", "opencv_fisheye"]
"""Lens models: ``pinhole`` (no distortion), ``opencv`` (distortion ``[k1, k2, p1, p2, k3, k4, k5, k6]``, the
radial-tangential model of OpenCV/COLMAP FULL_OPENCV with unused terms zero) and ``opencv_fisheye``
(``[k1, k2, k3, k4]``, equidistant model)."""

DISTORTION_SIZE = {"pinhole": 0, "opencv": 8, "opencv_fisheye": 4}
MIN_DEPTH = 1e-8  # depth below which a point is treated as on the camera plane in projection


@dataclass(frozen=True)
class Camera:
    """A batch of ``C`` cameras sharing one image size.

    Attributes:
        T_cam_world: (C, 4, 4) world -> camera (OpenCV axes).
        K: (C, 3, 3) pixel intrinsics at ``width`` x ``height``.
        width: image width in pixels.
        height: image height in pixels.
        camera_model: lens model; renderers use pinhole projection, datasets undistort images up front.
        distortion: (C, D) distortion parameters of ``camera_model`` or None for pinhole.
    """

    T_cam_world: Float[Tensor, "C 4 4"]
    K: Float[Tensor, "C 3 3"]
    width: int
    height: int
    camera_model: CameraModel = "pinhole"
    distortion: Float[Tensor, "C D"] | None = None

    def __post_init__(self) -> None:
        T, K = self.T_cam_world, self.K
        if T.ndim != 3 or T.shape[-2:] != (4, 4):
            raise ValueError(f"Camera.T_cam_world must have shape (C, 4, 4), got {tuple(T.shape)}")
        if K.ndim != 3 or K.shape[-2:] != (3, 3) or K.shape[0] != T.shape[0]:
            raise ValueError(f"Camera.K must have shape ({T.shape[0]}, 3, 3), got {tuple(K.shape)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera width/height must be positive, got {self.width}x{self.height}")
        if self.camera_model not in DISTORTION_SIZE:
            raise ValueError(
                f"Camera.camera_model must be one of {list(DISTORTION_SIZE)}, got {self.camera_model!r}"
            )
        if self.distortion is not None and self.distortion.shape != (
            T.shape[0],
            DISTORTION_SIZE[self.camera_model],
        ):
            raise ValueError(
                f"Camera.distortion for {self.camera_model} must have shape "
                f"({T.shape[0]}, {DISTORTION_SIZE[self.camera_model]}), got {tuple(self.distortion.shape)}"
            )

    # --- batch handling -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.T_cam_world.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> "Camera":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        dist = None if self.distortion is None else self.distortion[index]
        return replace(self, T_cam_world=self.T_cam_world[index], K=self.K[index], distortion=dist)

    @property
    def device(self) -> torch.device:
        return self.T_cam_world.device

    @property
    def dtype(self) -> torch.dtype:
        return self.T_cam_world.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Camera":
        dist = None if self.distortion is None else self.distortion.to(device=device, dtype=dtype)
        return replace(
            self,
            T_cam_world=self.T_cam_world.to(device=device, dtype=dtype),
            K=self.K.to(device=device, dtype=dtype),
            distortion=dist,
        )

    @staticmethod
    def cat(cameras: "list[Camera]") -> "Camera":
        """Concatenate cameras of one image size and lens model into one batch."""
        first = cameras[0]
        for cam in cameras[1:]:
            if (cam.width, cam.height, cam.camera_model) != (first.width, first.height, first.camera_model):
                raise ValueError("Camera.cat needs one image size and camera model across the batch")
        dist = None if first.distortion is None else torch.cat([c.distortion for c in cameras])  # type: ignore[misc]
        return replace(
            first,
            T_cam_world=torch.cat([c.T_cam_world for c in cameras]),
            K=torch.cat([c.K for c in cameras]),
            distortion=dist,
        )

    # --- derived quantities ---------------------------------------------------------------------------------
    def T_world_cam(self) -> Float[Tensor, "C 4 4"]:
        """Camera -> world transforms."""
        return invert_T(self.T_cam_world)

    def centers(self) -> Float[Tensor, "C 3"]:
        """Camera centres in world coordinates."""
        return self.T_world_cam()[:, :3, 3]

    def scaled(self, factor: float, width: int | None = None, height: int | None = None) -> "Camera":
        """The same cameras for images resized by ``1/factor`` (``width``/``height`` override the rounding).

        With pixel centres at +0.5, resizing an image from W to W' maps x to x * W'/W exactly, so fx and cx scale
        by W'/W (and fy, cy by H'/H).
        """
        new_w = width if width is not None else max(1, int(round(self.width / factor)))
        new_h = height if height is not None else max(1, int(round(self.height / factor)))
        sx, sy = new_w / self.width, new_h / self.height
        K = self.K.clone()
        K[:, 0, :] *= sx
        K[:, 1, :] *= sy
        K[:, 2, :] = self.K[:, 2, :]
        return replace(self, K=K, width=new_w, height=new_h)

    # --- rays and projection --------------------------------------------------------------------------------
    def pixel_grid(self) -> Int[Tensor, "H W 2"]:
        """Integer pixel indices ``(i, j)`` = (column, row) of the full image."""
        j, i = torch.meshgrid(
            torch.arange(self.height, device=self.device),
            torch.arange(self.width, device=self.device),
            indexing="ij",
        )
        return torch.stack([i, j], dim=-1)

    def generate_rays(self, pixels: Int[Tensor, "C R 2"] | None = None) -> Rays:
        """World-space rays through pixel centres.

        Args:
            pixels: (C, R, 2) integer pixel indices ``(i, j)`` = (column, row) per camera, or None for the full
                image, in which case the rays have shape (C, H, W, 3).

        Returns:
            Rays with unit ``directions``; ``origins`` are the camera centres. Differentiable w.r.t. ``K`` and
            ``T_cam_world``.
        """
        if pixels is None:
            grid = self.pixel_grid().to(self.dtype) + 0.5
            uv = grid.reshape(1, -1, 2).expand(len(self), -1, -1)
            out_shape = (len(self), self.height, self.width)
        else:
            if pixels.ndim != 3 or pixels.shape[0] != len(self) or pixels.shape[-1] != 2:
                raise ValueError(f"pixels must have shape ({len(self)}, R, 2), got {tuple(pixels.shape)}")
            uv = pixels.to(self.dtype) + 0.5
            out_shape = tuple(pixels.shape[:2])
        dirs_cam = self.pixels_to_camera_dirs(uv)
        T_world_cam = self.T_world_cam()
        dirs = dirs_cam @ T_world_cam[:, :3, :3].transpose(-1, -2)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = T_world_cam[:, None, :3, 3].expand_as(dirs)
        return Rays(origins=origins.reshape(*out_shape, 3), directions=dirs.reshape(*out_shape, 3))

    def pixels_to_camera_dirs(self, uv: Float[Tensor, "C R 2"]) -> Float[Tensor, "C R 3"]:
        """Camera-frame directions ``K^-1 (u, v, 1)`` (z = 1, not normalised) for continuous pixel coordinates."""
        fx, fy = self.K[:, 0, 0, None], self.K[:, 1, 1, None]
        cx, cy = self.K[:, 0, 2, None], self.K[:, 1, 2, None]
        skew = self.K[:, 0, 1, None]
        y = (uv[..., 1] - cy) / fy
        x = (uv[..., 0] - cx - skew * y) / fx
        return torch.stack([x, y, torch.ones_like(x)], dim=-1)

    def world_to_camera(self, points: Float[Tensor, "C N 3"]) -> Float[Tensor, "C N 3"]:
        """Points from world to camera frame."""
        T = self.T_cam_world
        return points @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]

    def project(self, points: Float[Tensor, "C N 3"]) -> tuple[Float[Tensor, "C N 2"], Float[Tensor, "C N"]]:
        """Project world points to continuous pixel coordinates (pinhole; lens distortion is not applied).

        Returns:
            ``(uv, depth)``: pixel coordinates (pixel centres at +0.5) and camera-frame z. Points with
            ``depth <= 0`` project through the camera plane; callers mask them. Differentiable.
        """
        if points.ndim != 3 or points.shape[0] != len(self) or points.shape[-1] != 3:
            raise ValueError(f"points must have shape ({len(self)}, N, 3), got {tuple(points.shape)}")
        x_cam = self.world_to_camera(points)
        z = x_cam[..., 2]
        z_safe = torch.where(z.abs() < MIN_DEPTH, torch.full_like(z, MIN_DEPTH), z)
        xy = x_cam[..., :2] / z_safe[..., None]
        uv = xy @ self.K[:, :2, :2].transpose(-1, -2) + self.K[:, None, :2, 2]
        return uv, z

    def unproject(self, uv: Float[Tensor, "C N 2"], depth: Float[Tensor, "C N"]) -> Float[Tensor, "C N 3"]:
        """World points at camera-frame depth ``z = depth`` behind continuous pixel coordinates ``uv``."""
        x_cam = self.pixels_to_camera_dirs(uv) * depth[..., None]
        T_world_cam = self.T_world_cam()
        return x_cam @ T_world_cam[:, :3, :3].transpose(-1, -2) + T_world_cam[:, None, :3, 3]
