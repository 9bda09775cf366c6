"""COLMAP sparse models, text (``cameras.txt``, ``images.txt``, ``points3D.txt``) and binary (``*.bin``).

Poses: ``images`` stores ``qvec`` (wxyz) and ``tvec`` of world -> camera in OpenCV axes already, so
``T_cam_world = [[R(qvec), tvec], [0, 1]]``. COLMAP puts the centre of the top-left pixel at (0.5, 0.5), as recon.

Every COLMAP camera model is parsed. Models recon can undistort map onto its lens models (SIMPLE_PINHOLE,
PINHOLE -> pinhole; SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV -> opencv; OPENCV_FISHEYE,
SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE and THIN_PRISM_FISHEYE without its prism/tangential terms ->
opencv_fisheye); FOV, THIN_PRISM_FISHEYE with prism terms and RAD_TAN_THIN_PRISM_FISHEYE raise a DatasetError
that says so. The model is searched in ``sparse/0``, ``sparse`` and the folder itself; images in ``images/``,
or, when only downscaled copies exist, the finest ``images_N/`` (K follows the file size, and ``downscale`` counts
from the cameras' stated size, as for LLFF). Image names must resolve inside the dataset folder.

Normalisation: translate + uniform scale only (never a rotation) so that the camera centres fit in the unit
sphere; the similarity is recorded. Splits: every ``test_every``-th image (default 8, sorted by name) is held out
for test.
"""

import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.core.transforms import make_T, quat_to_rotmat
from recon.datasets.base import (
    LoadOptions,
    SceneDataset,
    box_from_points,
    camera_centers,
    check_pose,
    every_nth_dataset,
    sphere_normalization,
)
from recon.datasets.errors import DatasetError
from recon.datasets.llff import stored_frame
from recon.datasets.paths import find_image_folder

# COLMAP's camera models: id -> (name, number of parameters), in the order of colmap/sensor/models.h.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: i for i, (name, _) in CAMERA_MODELS.items()}
MODEL_SEARCH = ("sparse/0", "sparse", ".", "colmap/sparse/0")
QUAT_NORM_TOL = 1e-3  # |‖q‖ - 1| accepted for a qvec (COLMAP writes unit quaternions with 17 digits)


@dataclass(frozen=True)
class ColmapCamera:
    """One entry of ``cameras.txt``/``cameras.bin``."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """One registered image of ``images.txt``/``images.bin`` (world -> camera pose, OpenCV axes)."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass(frozen=True)
class ColmapPoints:
    """``points3D``: ids (P,), xyz (P, 3) float64, rgb (P, 3) uint8, reprojection error (P,), and the tracks as
    ``(T, 2)`` int64 rows ``(point index into ids, IMAGE_ID)``: which registered images observe each point."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    tracks: np.ndarray | None = None

    def points_by_image(self) -> dict[int, np.ndarray]:
        """``IMAGE_ID -> indices (into ids)`` of the points each image observes (sorted, unique), from one sort of
        the tracks; empty without tracks."""
        if self.tracks is None or len(self.tracks) == 0:
            return {}
        rows = np.unique(self.tracks[:, [1, 0]], axis=0)  # (image, point) sorted by image, then point
        images, starts = np.unique(rows[:, 0], return_index=True)
        return {int(i): part[:, 1] for i, part in zip(images, np.split(rows, starts[1:]), strict=True)}


# --- text ------------------------------------------------------------------------------------------------------
def _data_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: expected a COLMAP text file ({exc})") from exc


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """Parse ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``."""
    cameras = {}
    for n, line in enumerate(_data_lines(path)):
        if not line.strip():
            continue
        parts = line.split()
        try:
            cam_id, model, width, height = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
            params = tuple(float(p) for p in parts[4:])
        except (IndexError, ValueError) as exc:
            raise DatasetError(
                f"{path}: malformed camera line {line!r}; expected CAMERA_ID MODEL W H PARAMS"
            ) from exc
        _check_params(model, params, path, cam_id, n)
        cameras[cam_id] = ColmapCamera(cam_id, model, width, height, params)
    return cameras


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    """Parse ``images.txt``: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then a line of 2D points."""
    lines = _data_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        parts = line.split(maxsplit=9)
        try:
            image_id = int(parts[0])
            q = tuple(float(v) for v in parts[1:5])
            t = tuple(float(v) for v in parts[5:8])
            camera_id, name = int(parts[8]), parts[9].strip()
        except (IndexError, ValueError) as exc:
            raise DatasetError(
                f"{path}: malformed image line {line!r}; expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"
            ) from exc
        images[image_id] = ColmapImage(image_id, q, t, camera_id, name)  # type: ignore[arg-type]
        i += 2  # skip the POINTS2D line
    return images


def read_points3d_text(path: Path) -> ColmapPoints:
    """Parse ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]``."""
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for line in _data_lines(path):
        parts = line.split()
        if not parts:
            continue
        try:
            ids.append(int(parts[0]))
            xyz.append([float(v) for v in parts[1:4]])
            rgb.append([int(v) for v in parts[4:7]])
            err.append(float(parts[7]))
            tracks.extend((len(ids) - 1, int(image_id)) for image_id in parts[8::2])
        except (IndexError, ValueError) as exc:
            raise DatasetError(
                f"{path}: malformed point line {line[:80]!r}; expected ID X Y Z R G B ERROR TRACK"
            ) from exc
    return ColmapPoints(
        ids=np.asarray(ids, dtype=np.int64),
        xyz=np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        rgb=np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
        error=np.asarray(err, dtype=np.float64),
        tracks=np.asarray(tracks, dtype=np.int64).reshape(-1, 2),
    )


# --- binary ----------------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: expected a COLMAP binary file ({exc})") from exc
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise DatasetError(
                f"{self.path} is truncated at byte {self.pos}: expected a complete COLMAP binary file"
            )
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def read_string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise DatasetError(
                f"{self.path} is truncated in an image name: expected a complete COLMAP binary file"
            )
        name = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return name

    def skip(self, nbytes: int) -> None:
        if self.pos + nbytes > len(self.data):
            raise DatasetError(
                f"{self.path} is truncated at byte {self.pos}: expected a complete COLMAP binary file"
            )
        self.pos += nbytes


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """Parse ``cameras.bin`` (uint64 count; per camera int32 id, int32 model, uint64 w, h, double params)."""
    r = _Reader(path)
    cameras = {}
    (count,) = r.read("Q")
    for n in range(count):
        cam_id, model_id, width, height = r.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise DatasetError(
                f"{path}: camera {cam_id} has unknown model id {model_id}; expected 0..{max(CAMERA_MODELS)}"
            )
        name, nparams = CAMERA_MODELS[model_id]
        params = r.read("d" * nparams)
        _check_params(name, params, path, cam_id, n)
        cameras[cam_id] = ColmapCamera(cam_id, name, int(width), int(height), tuple(params))
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    """Parse ``images.bin`` (per image: int32 id, 4+3 doubles, int32 camera id, name, 2D points)."""
    r = _Reader(path)
    images = {}
    (count,) = r.read("Q")
    for _ in range(count):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = r.read("idddddddi")
        name = r.read_string()
        (num_points2d,) = r.read("Q")
        r.skip(num_points2d * struct.calcsize("<ddq"))
        images[image_id] = ColmapImage(image_id, (qw, qx, qy, qz), (tx, ty, tz), camera_id, name)
    return images


def read_points3d_binary(path: Path) -> ColmapPoints:
    """Parse ``points3D.bin`` (per point: uint64 id, 3 doubles, 3 uint8, double error, track)."""
    r = _Reader(path)
    (count,) = r.read("Q")
    ids = np.empty(count, dtype=np.int64)
    xyz = np.empty((count, 3), dtype=np.float64)
    rgb = np.empty((count, 3), dtype=np.uint8)
    err = np.empty(count, dtype=np.float64)
    track_points, track_images = [], []
    for k in range(count):
        pid, x, y, z, cr, cg, cb, e, track_len = r.read("QdddBBBdQ")
        ids[k], xyz[k], rgb[k], err[k] = pid, (x, y, z), (cr, cg, cb), e
        track_images.extend(r.read("ii" * track_len)[0::2])  # (IMAGE_ID, POINT2D_IDX) pairs
        track_points.extend([k] * track_len)
    tracks = np.stack(
        [np.asarray(track_points, dtype=np.int64), np.asarray(track_images, dtype=np.int64)], -1
    )
    return ColmapPoints(ids=ids, xyz=xyz, rgb=rgb, error=err, tracks=tracks.reshape(-1, 2))


def _check_params(model: str, params: tuple, path: Path, cam_id: int, n: int) -> None:
    if model not in MODEL_IDS:
        names = ", ".join(MODEL_IDS)
        raise DatasetError(f"{path}: camera {cam_id} has unknown model {model!r}; expected one of {names}")
    expected = CAMERA_MODELS[MODEL_IDS[model]][1]
    if len(params) != expected:
        raise DatasetError(
            f"{path}: camera {cam_id} ({model}) has {len(params)} parameters; expected {expected}"
        )


def find_model(root: Path) -> Path | None:
    """The folder holding ``cameras.bin`` or ``cameras.txt`` under ``root`` (``sparse/0``, ``sparse``, ``.``)."""
    for sub in MODEL_SEARCH:
        folder = (root / sub).resolve()
        if (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file():
            return folder
    return None


def read_model(folder: Path) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], ColmapPoints | None]:
    """Read cameras, images and (if present) points3D of a model folder, binary preferred over text."""

    def pick(stem: str) -> tuple[Path, bool] | None:
        for ext, binary in ((".bin", True), (".txt", False)):
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext), binary
        return None

    cams, imgs, pts = pick("cameras"), pick("images"), pick("points3D")
    if cams is None or imgs is None:
        raise DatasetError(
            f"COLMAP model in {folder} is incomplete: expected cameras.bin|txt and images.bin|txt"
        )
    cameras = read_cameras_binary(cams[0]) if cams[1] else read_cameras_text(cams[0])
    images = read_images_binary(imgs[0]) if imgs[1] else read_images_text(imgs[0])
    points = None
    if pts is not None:
        points = read_points3d_binary(pts[0]) if pts[1] else read_points3d_text(pts[0])
    return cameras, images, points


def lens_from_colmap(cam: ColmapCamera, source: str) -> tuple[Tensor, str, Tensor | None]:
    """Map a COLMAP camera to ``(K (3, 3) float64, recon camera_model, distortion (D,) | None)``.

    Raises:
        DatasetError: for models recon cannot undistort (FOV, thin-prism terms, RAD_TAN_THIN_PRISM_FISHEYE).
    """
    p = cam.params
    m = cam.model
    if m in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
        fx = fy = p[0]
        cx, cy, extra = p[1], p[2], list(p[3:])
    else:
        fx, fy, cx, cy, extra = p[0], p[1], p[2], p[3], list(p[4:])
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def t(values: list) -> Tensor:
        return torch.tensor(values, dtype=torch.float64)

    if m in ("SIMPLE_PINHOLE", "PINHOLE"):
        return K, "pinhole", None
    if m == "SIMPLE_RADIAL":
        return K, "opencv", t([extra[0], 0, 0, 0, 0, 0, 0, 0])
    if m == "RADIAL":
        return K, "opencv", t([extra[0], extra[1], 0, 0, 0, 0, 0, 0])
    if m == "OPENCV":
        return K, "opencv", t(extra + [0, 0, 0, 0])
    if m == "FULL_OPENCV":  # k1 k2 p1 p2 k3 k4 k5 k6: recon's opencv layout
        return K, "opencv", t(extra)
    if m == "OPENCV_FISHEYE":
        return K, "opencv_fisheye", t(extra)
    if m == "SIMPLE_RADIAL_FISHEYE":
        return K, "opencv_fisheye", t([extra[0], 0, 0, 0])
    if m == "RADIAL_FISHEYE":
        return K, "opencv_fisheye", t([extra[0], extra[1], 0, 0])
    if m == "THIN_PRISM_FISHEYE":
        k1, k2, p1, p2, k3, k4, sx1, sy1 = extra
        if p1 == p2 == sx1 == sy1 == 0.0:
            return K, "opencv_fisheye", t([k1, k2, k3, k4])
    if m == "FOV" and extra[0] == 0.0:
        return K, "pinhole", None
    raise DatasetError(
        f"{source} uses COLMAP camera model {m} (params {list(p)}), which recon parses but cannot undistort; "
        "expected SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV or a fisheye model without "
        "thin-prism terms (undistort the images first, e.g. with `colmap image_undistorter`)"
    )


def load_colmap(root: Path, opts: LoadOptions) -> SceneDataset:
    """Load a COLMAP dataset folder (see the module docstring)."""
    model = find_model(root)
    if model is None:
        raise DatasetError(f"no COLMAP model under {root}: expected sparse/0/cameras.bin or cameras.txt")
    cameras, images, points = read_model(model)
    image_dir = find_image_folder(root) or root
    cam_file = next(p for p in (model / "cameras.bin", model / "cameras.txt") if p.is_file())
    lenses = {cid: lens_from_colmap(cam, f"camera {cid} in {cam_file}") for cid, cam in cameras.items()}
    observed = points.points_by_image() if points is not None and points.tracks is not None else None
    frames = []
    for image in sorted(images.values(), key=lambda im: im.name):
        source = f"image {image.image_id} ({image.name}) in {model}"
        if image.camera_id not in cameras:
            raise DatasetError(f"{source} refers to camera {image.camera_id}, which is not in {cam_file}")
        q = torch.tensor(image.qvec, dtype=torch.float64)
        if not bool(torch.isfinite(q).all()) or abs(float(q.norm()) - 1) > QUAT_NORM_TOL:
            raise DatasetError(f"{source}: qvec {list(image.qvec)} is not a finite unit quaternion (wxyz)")
        T = make_T(quat_to_rotmat(q), torch.tensor(image.tvec, dtype=torch.float64))
        T = check_pose(T, source)
        cam = cameras[image.camera_id]
        K, lens, dist = lenses[image.camera_id]
        frame = stored_frame(
            root, image_dir / image.name, K, T, (cam.width, cam.height), what=f"{source}: the image name",
            allow_outside=opts.allow_outside_root, camera_model=lens, distortion=dist,
        )  # fmt: skip
        if observed is not None:
            ids = observed.get(image.image_id, np.empty(0, dtype=np.int64))
            frame = replace(frame, points3d_ids=torch.from_numpy(ids))
        frames.append(frame)
    if not frames:
        raise DatasetError(f"COLMAP model in {model} has no registered images: expected at least one")
    centers = camera_centers(frames)
    S = sphere_normalization(centers)
    pts = rgb = None
    if points is not None and len(points.xyz) > 0:
        pts = torch.from_numpy(points.xyz) * S[0, 0] + S[:3, 3]
        rgb = torch.from_numpy(points.rgb.astype(np.float32) / 255.0)
        box = box_from_points(pts)
    else:
        box = box_from_points(centers * S[0, 0] + S[:3, 3], percentile=0.0)
    return every_nth_dataset(
        "colmap", root, frames, normalization=S, scene_box=box, background=opts.background,
        downscale=opts.downscale, test_every=opts.test_every, points3d=pts, points3d_rgb=rgb,
    )  # fmt: skip
