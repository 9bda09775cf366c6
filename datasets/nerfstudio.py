"""nerfstudio and instant-ngp ``transforms.json``.

Poses: ``transform_matrix`` is camera -> world in OpenGL camera axes (x right, y up, z back); OpenCV axes are
``T_world_cam_cv = T_world_cam_gl @ diag(1, -1, -1, 1)`` and ``T_cam_world = inverse(T_world_cam_cv)``.

Intrinsics are shared (top level) or per frame: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (or
``camera_angle_x`` / ``camera_angle_y``), lens ``camera_model`` (``OPENCV``, ``OPENCV_FISHEYE``, ``PINHOLE``) with
``k1 k2 k3 k4 p1 p2``. ``applied_transform`` (3x4, written by ``ns-process-data``) maps the original (COLMAP) world
to the frame of the stored poses: recon keeps the stored poses as the normalised frame and records
``applied_transform`` as the normalisation, so the original world frame is recoverable. Splits come from
``train_filenames`` / ``val_filenames`` / ``test_filenames`` when present, otherwise every 8th image is held out.
"""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.core.transforms import invert_T, similarity_scale, transform_pose
from recon.datasets.base import (
    Frame,
    LoadOptions,
    SceneDataset,
    box_from_points,
    check_mask,
    check_pose,
    every_nth_rule,
    every_nth_split,
    fit_intrinsics,
    image_frame,
    read_json,
)
from recon.datasets.errors import DatasetError
from recon.datasets.images import image_header, resolve_image_path
from recon.datasets.paths import resolve_inside

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
DEFAULT_DEPTH_UNIT = 1e-3  # nerfstudio's default depth_unit_scale_factor: 16-bit PNG depth in millimetres
SIMILARITY_TOL = 1e-4  # max deviation of applied_transform's linear part from a scaled rotation


def opengl_c2w_to_T_cam_world(matrix: object, source: str) -> Tensor:
    """Convert a camera -> world pose in OpenGL axes (Blender, nerfstudio) to OpenCV ``T_cam_world`` (float64)."""
    try:
        T = torch.tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{source}: transform_matrix is not a numeric matrix; expected a 4x4 (or 3x4) list"
        ) from exc
    if T.shape == (3, 4):
        T = torch.cat([T, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if T.shape != (4, 4):
        raise DatasetError(f"{source}: transform_matrix has shape {tuple(T.shape)}; expected 4x4")
    T = check_pose(T, source)
    return invert_T(T @ OPENGL_TO_OPENCV)


def _get(key: str, frame: dict, top: dict, default: object = None) -> object:
    return frame[key] if key in frame else top.get(key, default)


def _number(key: str, frame: dict, top: dict, source: str, default: object = None) -> float | None:
    """A numeric intrinsics field (per frame or top level) as a finite float, None when absent."""
    value = _get(key, frame, top, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetError(f"{source}: {key} is {value!r}; expected a finite number")
    return float(value)


def _size(key: str, frame: dict, top: dict, source: str, default: int) -> int:
    value = _number(key, frame, top, source, default)
    if value is None or value != int(value) or value <= 0:
        raise DatasetError(f"{source}: {key} is {value!r}; expected a positive whole number of pixels")
    return int(value)


def _focal_from_angle(key: str, frame: dict, top: dict, size: int, source: str) -> float | None:
    """``0.5 * size / tan(0.5 * angle)`` from a field of view in radians, which must lie in (0, pi)."""
    angle = _number(key, frame, top, source)
    if angle is None:
        return None
    if not 0.0 < angle < math.pi:
        raise DatasetError(f"{source}: {key} is {angle!r}; expected a field of view in radians in (0, pi)")
    return 0.5 * size / math.tan(0.5 * angle)


def json_intrinsics(
    top: dict, frame: dict, size: tuple[int, int], source: str
) -> tuple[Tensor, str, Tensor | None, tuple[int, int]]:
    """Intrinsics from a transforms.json frame (per-frame keys override top-level ones).

    Args:
        top: the top-level JSON object.
        frame: the frame's JSON object.
        size: (w, h) of the image file, used when the JSON gives none.
        source: file and frame, for error messages.

    Returns:
        ``(K, camera_model, distortion, (w, h))``: K (3, 3) float64 for the calibrated size ``(w, h)``; lens
        parameters in recon's layout (``opencv``: ``[k1, k2, p1, p2, k3, 0, 0, 0]``).
    """
    w = _size("w", frame, top, source, size[0])
    h = _size("h", frame, top, source, size[1])
    fx, fy = _number("fl_x", frame, top, source), _number("fl_y", frame, top, source)
    if fx is None:
        fx = _focal_from_angle("camera_angle_x", frame, top, w, source)
    if fy is None:
        fy = _focal_from_angle("camera_angle_y", frame, top, h, source)
    fx, fy = (fy, fy) if fx is None else (fx, fx if fy is None else fy)  # one given: square pixels
    if fx is None or fy is None:
        raise DatasetError(f"{source}: no focal length; expected fl_x/fl_y or camera_angle_x")
    fx, fy = float(fx), float(fy)
    cx = float(_number("cx", frame, top, source, w / 2.0))  # type: ignore[arg-type]
    cy = float(_number("cy", frame, top, source, h / 2.0))  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        raise DatasetError(
            f"{source}: invalid intrinsics fx={fx} fy={fy} cx={cx} cy={cy}; expected finite, f > 0"
        )
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    coeffs = {k: float(_number(k, frame, top, source, 0.0)) for k in ("k1", "k2", "k3", "k4", "p1", "p2")}  # type: ignore[arg-type]
    model = str(_get("camera_model", frame, top, "")).upper()
    if bool(_get("is_fisheye", frame, top, False)):  # instant-ngp's spelling
        model = "OPENCV_FISHEYE"
    if model == "OPENCV_FISHEYE":
        dist = torch.tensor([coeffs[k] for k in ("k1", "k2", "k3", "k4")], dtype=torch.float64)
        return K, "opencv_fisheye", dist, (w, h)
    if model not in ("", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise DatasetError(
            f"{source}: camera_model {model!r} is not supported; expected OPENCV, OPENCV_FISHEYE or PINHOLE"
        )
    if coeffs["k4"] != 0.0:
        raise DatasetError(
            f"{source}: perspective distortion with k4={coeffs['k4']} (an r^8 term) cannot be undistorted by recon; "
            "expected k1, k2, k3, p1, p2 only"
        )
    if all(v == 0.0 for v in coeffs.values()):
        return K, "pinhole", None, (w, h)
    dist = torch.tensor(
        [coeffs["k1"], coeffs["k2"], coeffs["p1"], coeffs["p2"], coeffs["k3"], 0.0, 0.0, 0.0],
        dtype=torch.float64,
    )
    return K, "opencv", dist, (w, h)


def applied_similarity(top: dict, source: Path) -> Tensor:
    """``applied_transform`` as a (4, 4) float64 similarity (identity when absent)."""
    if "applied_transform" not in top:
        return torch.eye(4, dtype=torch.float64)
    try:
        A = torch.tensor(top["applied_transform"], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{source}: applied_transform is not numeric; expected a 3x4 matrix") from exc
    if A.shape == (3, 4):
        A = torch.cat([A, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if A.shape != (4, 4) or not bool(torch.isfinite(A).all()):
        raise DatasetError(
            f"{source}: applied_transform has shape {tuple(A.shape)}; expected a finite 3x4 matrix"
        )
    s = float(similarity_scale(A))
    R = A[:3, :3] / max(s, 1e-12)
    if s <= 0 or float((R.T @ R - torch.eye(3, dtype=torch.float64)).abs().max()) > SIMILARITY_TOL:
        raise DatasetError(f"{source}: applied_transform is not a similarity (rotation, translation, scale)")
    return A


def _read_points(path: Path) -> tuple[Tensor, Tensor | None]:
    import trimesh  # lazy: heavy import, only for datasets that ship a point cloud

    try:
        cloud = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many exception types for a bad file
        raise DatasetError(f"cannot read point cloud {path}: expected a PLY point cloud ({exc})") from exc
    vertices = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), dtype=np.float64)
    colors = getattr(cloud, "colors", None)
    if colors is None or len(colors) != len(vertices):
        visual = getattr(cloud, "visual", None)
        colors = getattr(visual, "vertex_colors", None)
    rgb = None
    if colors is not None and len(colors) == len(vertices):
        rgb = torch.from_numpy(np.asarray(colors, dtype=np.float32)[:, :3] / 255.0)
    return torch.from_numpy(vertices), rgb


def frame_from_json(
    root: Path, top: dict, item: dict, index: int, source: Path, *, allow_outside: bool = False
) -> Frame:
    """One frame of a transforms JSON (Blender or nerfstudio) as a :class:`Frame` in the file's world frame.

    Validates the image (exists, readable header, inside ``root`` unless ``allow_outside``), the pose (finite,
    rigid), the mask size and that depth and normal files exist; decodes no pixels.
    """
    where = f"{source} (frame {index})"
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: a frame is a JSON {type(item).__name__}; expected an object")
    if "file_path" not in item:
        raise DatasetError(f"{where}: missing 'file_path'; expected the image path of each frame")
    if "transform_matrix" not in item:
        raise DatasetError(f"{where}: missing 'transform_matrix'; expected a 4x4 camera-to-world pose")

    def inside(key: str) -> Path:
        what = f"{key} of {where}"
        return resolve_inside(root, str(item[key]), what=what, allow_outside=allow_outside)

    image_path = resolve_image_path(
        root, str(item["file_path"]), what=f"file_path of {where}", allow_outside=allow_outside
    )
    header = image_header(image_path)
    K, model, dist, meta_size = json_intrinsics(top, item, (header.width, header.height), where)
    K = fit_intrinsics(K, meta_size, (header.width, header.height), image_path)
    T = opengl_c2w_to_T_cam_world(item["transform_matrix"], where)
    mask_path = None
    if item.get("mask_path"):
        mask_path = inside("mask_path")
        check_mask(mask_path, header.width, header.height, image_path)
    depth_path, depth_scale = None, 1.0
    if item.get("depth_file_path"):
        depth_path = inside("depth_file_path")
        if not depth_path.is_file():
            raise DatasetError(
                f"depth file not found: {depth_path} (named by {where}); expected a depth map there"
            )
        default_unit = (
            1.0
            if depth_path.suffix == ".npy" and "depth_unit_scale_factor" not in top
            else DEFAULT_DEPTH_UNIT
        )
        depth_scale = float(top.get("depth_unit_scale_factor", default_unit))
    normal_path = None
    if item.get("normal_file_path"):
        normal_path = inside("normal_file_path")
        if not normal_path.is_file():
            raise DatasetError(
                f"normal map not found: {normal_path} (named by {where}); expected a .npy file there"
            )
    try:
        name = image_path.relative_to(root.resolve()).as_posix()
    except ValueError:
        name = str(item["file_path"])
    frame = image_frame(
        name, image_path, header, K, T,
        camera_model=model,  # type: ignore[arg-type]
        distortion=dist, mask_path=mask_path,
    )  # fmt: skip
    return replace(frame, depth_path=depth_path, depth_scale=depth_scale, normal_path=normal_path)


def _explicit_splits(
    root: Path, top: dict, frames: list[Frame], source: Path, allow_outside: bool
) -> tuple[dict[str, list[Frame]], str]:
    by_path = {f.image_path: f for f in frames}
    splits: dict[str, list[Frame]] = {}
    for split in ("train", "val", "test"):
        names = top.get(f"{split}_filenames")
        if names is None:
            continue
        chosen = []
        for name in names:
            what = f"{split}_filenames of {source}"
            path = resolve_image_path(root, str(name), what=what, allow_outside=allow_outside)
            if path not in by_path:
                raise DatasetError(
                    f"{source}: {split}_filenames lists {name!r}, which is not the file_path of any frame"
                )
            chosen.append(by_path[path])
        splits[split] = chosen
    rule = "explicit lists (" + ", ".join(f"{s}_filenames" for s in splits) + ")"
    if "test" not in splits and "val" in splits:
        splits["test"] = splits["val"]
        rule += "; test = val_filenames"
    if "train" not in splits:
        held = {id(f) for s in splits.values() for f in s}
        splits["train"] = [f for f in frames if id(f) not in held]
        rule += "; train = all other frames"
    return splits, rule


def load_nerfstudio(root: Path, opts: LoadOptions) -> SceneDataset:
    """Load a nerfstudio / instant-ngp ``transforms.json`` folder (see the module docstring)."""
    source = root / "transforms.json"
    top = read_json(source)
    items = top.get("frames")
    if not isinstance(items, list) or not items:
        raise DatasetError(
            f"{source}: no 'frames' list; expected a list of frames with file_path and transform_matrix"
        )
    A = applied_similarity(top, source)
    A_inv = torch.linalg.inv(A)
    frames = []
    for index, item in enumerate(items):
        frame = frame_from_json(root, top, item, index, source, allow_outside=opts.allow_outside_root)
        # Stored poses live in the applied frame; the original world frame is A^-1 of it.
        frames.append(replace(frame, T_cam_world=transform_pose(frame.T_cam_world, A_inv)))
    if any(f"{s}_filenames" in top for s in ("train", "val", "test")):
        splits, rule = _explicit_splits(root, top, frames, source, opts.allow_outside_root)
    else:
        splits, rule = every_nth_split(frames, opts.test_every), every_nth_rule(opts.test_every)
    points, rgb = None, None
    if top.get("ply_file_path"):
        what = f"ply_file_path of {source}"
        ply = resolve_inside(
            root, str(top["ply_file_path"]), what=what, allow_outside=opts.allow_outside_root
        )
        if not ply.is_file():
            raise DatasetError(f"point cloud not found: {ply} (named by ply_file_path in {source})")
        points, rgb = _read_points(ply)  # already in the stored (= normalised) frame
    if points is not None and len(points) > 0:
        box = box_from_points(points)
    else:
        centers = torch.stack([invert_T(transform_pose(f.T_cam_world, A))[:3, 3] for f in frames])
        box = box_from_points(centers, percentile=0.0)
    white = bool(top.get("white_background", False))
    bg = opts.background if opts.background is not None else (torch.ones(3) if white else torch.zeros(3))
    return SceneDataset(
        format="nerfstudio",
        root=root,
        splits=splits,
        split_rule=rule,
        normalization=A,
        scene_box=box,
        background=bg,
        points3d=points,
        points3d_rgb=rgb,
        downscale=opts.downscale,
    )
