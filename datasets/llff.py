"""LLFF ``poses_bounds.npy``: one row of 17 numbers per image (images sorted by file name in ``images/``).

A row is a 3x5 matrix ``[R | t | hwf]`` (row-major, 15 numbers) followed by the near and far depth bounds. ``R``'s
columns are the camera's axes in world coordinates in LLFF's order ``[down, right, backwards]`` and ``t`` is the
camera centre, so in OpenCV axes (x right, y down, z forward)
``R_world_cam = [R[:, 1], R[:, 0], -R[:, 2]]``, ``T_world_cam = [[R_world_cam, t], [0, 1]]`` and
``T_cam_world = inverse(T_world_cam)``. ``hwf`` holds the height, width and focal length (pixels) of the images in
``images/``; ``cx = w / 2``, ``cy = h / 2``. Images of another size in ``images/`` rescale K accordingly.

A folder without ``images/`` but with downscaled copies (``images_8/``, as the LLFF ``fern`` copy here) loads the
finest copy; its factor (hwf size / file size) is recorded per frame, and ``downscale`` counts from the hwf size,
so ``downscale=8`` (or leaving it unset) loads ``images_8`` as is.

Normalisation: translate + uniform scale only (no rotation) so that camera centres fit in the unit sphere.
SfM points: ``points3D.bin|txt`` in ``sparse/0/`` or ``colmap_points/`` (the LLFF release's COLMAP model, in the
world frame of ``poses_bounds.npy``) become ``points3d`` / ``points3d_rgb`` (normalised like the cameras); the
scene box stays the frustum box of the near/far bounds.
Splits: every ``test_every``-th image (default 8) held out for test.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.core.transforms import apply_T, invert_T, make_T
from recon.datasets.base import (
    Frame,
    LoadOptions,
    SceneDataset,
    box_from_points,
    camera_centers,
    check_pose,
    every_nth_dataset,
    fit_intrinsics,
    image_frame,
    sphere_normalization,
)
from recon.datasets.errors import DatasetError
from recon.datasets.images import IMAGE_SUFFIXES, image_header
from recon.datasets.paths import find_image_folder, resolve_inside

LLFF_ROW = 17  # 15 pose/hwf numbers + near + far


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and not p.name.startswith("."))


def llff_row_to_pose(
    row: np.ndarray, source: str
) -> tuple[Tensor, Tensor, tuple[int, int], tuple[float, float]]:
    """Decode one poses_bounds row: ``(T_cam_world (4, 4), K (3, 3), (w, h), (near, far))`` in float64."""
    M = torch.from_numpy(np.asarray(row[:15], dtype=np.float64).reshape(3, 5))
    h, w, f = (float(v) for v in M[:, 4])
    R_llff, t = M[:, :3], M[:, 3]
    R_world_cam = torch.stack([R_llff[:, 1], R_llff[:, 0], -R_llff[:, 2]], dim=1)
    T_world_cam = make_T(R_world_cam, t)
    T_world_cam = check_pose(T_world_cam, source)
    if not (np.isfinite([h, w, f]).all() and h > 0 and w > 0 and f > 0):
        raise DatasetError(f"{source}: hwf = {h, w, f}; expected positive height, width and focal length")
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return invert_T(T_world_cam), K, (round(w), round(h)), (float(row[15]), float(row[16]))


def stored_frame(
    root: Path,
    path: Path,
    K: Tensor,
    T: Tensor,
    size: tuple[int, int],
    *,
    what: str,
    allow_outside: bool,
    **lens,
) -> Frame:
    """The frame of image ``path`` (inside ``root`` unless allowed) whose camera ``K`` is stated for ``size``
    (w, h): K follows the file's size and ``file_factor`` records how much smaller the file is."""
    path = resolve_inside(root, path, what=what, allow_outside=allow_outside)
    header = image_header(path)
    K = fit_intrinsics(K, size, (header.width, header.height), path)
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    frame = image_frame(name, path, header, K, T, **lens)
    return replace(frame, file_factor=size[0] / header.width)


def load_llff(root: Path, opts: LoadOptions) -> SceneDataset:
    """Load an LLFF folder (``poses_bounds.npy`` + ``images/`` or ``images_N/``; see the module docstring)."""
    source = root / "poses_bounds.npy"
    try:
        data = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {source}: expected an (N, 17) float array ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != LLFF_ROW:
        raise DatasetError(f"{source} has shape {data.shape}: expected (N, {LLFF_ROW})")
    folder = find_image_folder(root) or root / "images"
    paths = list_images(folder)
    if len(paths) != len(data):
        raise DatasetError(
            f"{folder} holds {len(paths)} images but {source} has {len(data)} poses: expected one image per row"
        )
    frames, corners = [], []
    for i, (row, path) in enumerate(zip(data, paths)):
        T, K, size, (near, far) = llff_row_to_pose(row, f"{source} (row {i})")
        what = f"image {path.name} of {folder}"
        frame = stored_frame(root, path, K, T, size, what=what, allow_outside=opts.allow_outside_root)
        frames.append(frame)
        corners.append(_frustum_points(T, frame.K, frame.width, frame.height, near, far))
    S = sphere_normalization(camera_centers(frames))
    box = box_from_points(apply_T(S, torch.cat(corners)), percentile=0.0, margin=0.0)
    pts, rgb = _sfm_points(root, S)
    return every_nth_dataset(
        "llff", root, frames, normalization=S, scene_box=box, background=opts.background,
        downscale=opts.downscale, test_every=opts.test_every, points3d=pts, points3d_rgb=rgb,
    )  # fmt: skip


def _sfm_points(root: Path, S: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """The SfM points of ``sparse/0`` or ``colmap_points`` (first found), normalised by ``S``; None without."""
    from recon.datasets.colmap import read_points3d_binary, read_points3d_text

    for folder in (root / "sparse" / "0", root / "colmap_points"):
        for name, reader in (("points3D.bin", read_points3d_binary), ("points3D.txt", read_points3d_text)):
            if (folder / name).is_file():
                points = reader(folder / name)
                if len(points.xyz) == 0:
                    return None, None
                pts = apply_T(S, torch.from_numpy(np.asarray(points.xyz, dtype=np.float64)))
                return pts, torch.from_numpy(points.rgb.astype(np.float32) / 255.0)
    return None, None


def _frustum_points(T: Tensor, K: Tensor, width: int, height: int, near: float, far: float) -> Tensor:
    """World positions of the image corners at the near and far bounds (the scene box spans these)."""
    uv = torch.tensor([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]], dtype=torch.float64)
    dirs = torch.cat([uv, torch.ones(4, 1, dtype=torch.float64)], dim=-1) @ torch.linalg.inv(K).T
    pts_cam = torch.cat([dirs * max(near, 0.0), dirs * far])
    return apply_T(invert_T(T), pts_cam)
