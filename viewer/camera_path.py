"""Camera paths recorded in the viewer, as JSON keyframes that ``recon render --trajectory PATH.json`` reads.

File format (version 1)::

    {
      "format": "recon-camera-path",
      "version": 1,
      "frame": "scene",          # the world frame the viewer renders in (the run's normalised frame)
      "fps": 30.0,               # suggested frame rate for interpolation
      "keyframes": [
        {"T_cam_world": [[...4 floats...] x 4],   # world -> camera, OpenCV axes (x right, y down, z forward)
         "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # pixels, at width x height
         "width": 1024, "height": 768,
         "time": 0.0},           # seconds from the start, strictly increasing
        ...
      ],
      "frames": [                # the keyframes interpolated at fps (interpolate_camera_path), one per video frame
        {"T_cam_world": ..., "K": ..., "width": 1024, "height": 768}, ...
      ]
    }

``recon render --trajectory PATH.json`` renders ``frames``; :func:`read_camera_path` reads ``keyframes`` (only
that list, with ``T_cam_world``, ``K``, ``width``, ``height`` and ``time`` per keyframe, is required).
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, ReconError
from recon.core.transforms import invert_T, make_T, quat_to_rotmat, rotmat_to_quat

CAMERA_PATH_FORMAT = "recon-camera-path"
CAMERA_PATH_VERSION = 1
DEFAULT_FPS = 30.0
DEFAULT_SECONDS_PER_KEYFRAME = 2.0  # spacing of keyframes recorded in the viewer
RIGID_TOL = 1e-3  # deviation from a rotation accepted in a keyframe read from JSON (text round-off)
MAX_NAME_CHARS = 100  # longest camera-path file name the viewer accepts from a browser
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Keyframe:
    """One camera of a path.

    Attributes:
        T_cam_world: (4, 4) world -> camera, OpenCV axes.
        K: (3, 3) pixel intrinsics at ``width`` x ``height``.
        width: image width in pixels.
        height: image height in pixels.
        time: seconds from the start of the path.
    """

    T_cam_world: Float[Tensor, "4 4"]
    K: Float[Tensor, "3 3"]
    width: int
    height: int
    time: float

    @staticmethod
    def from_camera(camera: Camera, time: float) -> "Keyframe":
        if len(camera) != 1:
            raise ValueError(f"Keyframe.from_camera needs one camera, got {len(camera)}")
        return Keyframe(
            T_cam_world=camera.T_cam_world[0].detach().to("cpu", torch.float64),
            K=camera.K[0].detach().to("cpu", torch.float64),
            width=camera.width,
            height=camera.height,
            time=float(time),
        )

    def camera(self) -> Camera:
        return Camera(
            T_cam_world=self.T_cam_world[None].float(),
            K=self.K[None].float(),
            width=self.width,
            height=self.height,
        )


def write_camera_path(path: Path, keyframes: list[Keyframe], *, fps: float = DEFAULT_FPS) -> Path:
    """Write keyframes, and the frames interpolated from them at ``fps``, as a camera-path JSON file (parent
    folders are created; the write is atomic). Returns the path."""
    if not keyframes:
        raise ReconError(f"camera path {path}: no keyframes to save (add at least one)")
    frames = interpolate_camera_path(keyframes, fps=fps)
    data = {
        "format": CAMERA_PATH_FORMAT,
        "version": CAMERA_PATH_VERSION,
        "frame": "scene",
        "fps": float(fps),
        "frames": [
            {
                "T_cam_world": frames.T_cam_world[i].tolist(),
                "K": frames.K[i].tolist(),
                "width": frames.width,
                "height": frames.height,
            }
            for i in range(len(frames))
        ],
        "keyframes": [
            {
                "T_cam_world": kf.T_cam_world.tolist(),
                "K": kf.K.tolist(),
                "width": int(kf.width),
                "height": int(kf.height),
                "time": float(kf.time),
            }
            for kf in keyframes
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def camera_path_target(folder: Path, name: str) -> Path:
    """Where the viewer may save a camera path a browser named ``name``: a plain file inside ``folder``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` and ``.json`` is appended when
    missing. Names with a folder part (``/``, ``\\``), ``..``, absolute paths, hidden names and symbolic links
    are refused, as is an existing file that is not a camera path (it is never overwritten).

    Raises:
        ReconError: naming the refused name and the folder.
    """
    folder = Path(folder)
    raw = str(name).strip()
    if not raw or "/" in raw or "\\" in raw or raw.startswith(".") or Path(raw).is_absolute():
        raise ReconError(
            f"camera path name {str(name)!r}: expected a plain file name (no folders, '..' or leading '.'); "
            f"paths are saved inside {folder}"
        )
    clean = _UNSAFE_CHARS.sub("_", raw)[:MAX_NAME_CHARS]
    if not clean.lower().endswith(".json"):
        clean += ".json"
    target = folder / clean
    if target.is_symlink() or target.resolve().parent != folder.resolve():
        raise ReconError(
            f"camera path name {str(name)!r}: {target} is a link or leaves {folder}; not written"
        )
    if target.exists() and not _is_camera_path_file(target):
        raise ReconError(f"{target} exists and is not a camera path; not overwritten (choose another name)")
    return target


def _is_camera_path_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == CAMERA_PATH_FORMAT


def _parse_keyframe(path: Path, i: int, item: object) -> Keyframe:
    where = f"camera path {path}: keyframes[{i}]"
    if not isinstance(item, dict):
        raise ReconError(f"{where} must be an object with T_cam_world, K, width, height, time")
    missing = [k for k in ("T_cam_world", "K", "width", "height", "time") if k not in item]
    if missing:
        raise ReconError(f"{where} lacks {', '.join(missing)}")
    try:
        T = torch.tensor(item["T_cam_world"], dtype=torch.float64)
        K = torch.tensor(item["K"], dtype=torch.float64)
        width, height, time = int(item["width"]), int(item["height"]), float(item["time"])
    except (TypeError, ValueError) as exc:
        raise ReconError(f"{where}: expected numbers ({exc})") from exc
    if T.shape != (4, 4) or K.shape != (3, 3):
        raise ReconError(
            f"{where}: T_cam_world must be 4x4 and K 3x3, got {tuple(T.shape)} and {tuple(K.shape)}"
        )
    R = T[:3, :3]
    if (R.T @ R - torch.eye(3, dtype=R.dtype)).abs().max() > RIGID_TOL or abs(
        float(torch.linalg.det(R)) - 1
    ) > RIGID_TOL:
        raise ReconError(f"{where}: T_cam_world is not a rigid transform")
    if width <= 0 or height <= 0 or not math.isfinite(time):
        raise ReconError(f"{where}: width/height must be positive and time finite")
    return Keyframe(T_cam_world=T, K=K, width=width, height=height, time=time)


def read_camera_path(path: Path) -> tuple[list[Keyframe], float]:
    """Read a camera-path JSON file.

    Returns:
        ``(keyframes, fps)`` with strictly increasing times.

    Raises:
        ReconError: naming the file and the offending key when the file is not a valid camera path.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ReconError(f"camera path {path} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReconError(f"camera path {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keyframes"), list) or not data["keyframes"]:
        raise ReconError(f"camera path {path}: expected an object with a non-empty 'keyframes' list")
    keyframes = [_parse_keyframe(path, i, item) for i, item in enumerate(data["keyframes"])]
    times = [kf.time for kf in keyframes]
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ReconError(f"camera path {path}: keyframe times must be strictly increasing, got {times}")
    fps = float(data.get("fps", DEFAULT_FPS))
    if not fps > 0:
        raise ReconError(f"camera path {path}: fps must be positive, got {fps}")
    return keyframes, fps


def _slerp(q0: Tensor, q1: Tensor, u: float) -> Tensor:
    if float(q0 @ q1) < 0:  # take the short way round
        q1 = -q1
    dot = min(1.0, float(q0 @ q1))
    if dot > 0.9995:  # nearly equal: linear interpolation is exact to round-off and avoids 0/0
        q = q0 + u * (q1 - q0)
    else:
        theta = math.acos(dot)
        q = (math.sin((1 - u) * theta) * q0 + math.sin(u * theta) * q1) / math.sin(theta)
    return q / q.norm()


def interpolate_camera_path(keyframes: list[Keyframe], *, fps: float = DEFAULT_FPS) -> Camera:
    """Cameras at ``fps`` along a keyframed path: slerp of orientation, linear camera centre and intrinsics.

    All frames take the size of the first keyframe; other keyframes' ``K`` are rescaled to it. A single keyframe
    gives one camera.

    Returns:
        A :class:`Camera` batch with one camera per frame, ``round(duration * fps) + 1`` frames.
    """
    if not keyframes:
        raise ValueError("interpolate_camera_path needs at least one keyframe")
    width, height = keyframes[0].width, keyframes[0].height
    Ks = []
    for kf in keyframes:
        K = kf.K.clone()
        K[0] *= width / kf.width
        K[1] *= height / kf.height
        K[2] = kf.K[2]
        Ks.append(K)
    T_world_cams = [invert_T(kf.T_cam_world) for kf in keyframes]
    quats = [rotmat_to_quat(T[:3, :3]) for T in T_world_cams]
    times = [kf.time for kf in keyframes]
    num = max(1, round((times[-1] - times[0]) * fps) + 1)
    poses, intrinsics = [], []
    seg = 0
    for f in range(num):
        t = times[0] + f / fps if num > 1 else times[0]
        while seg < len(keyframes) - 2 and t > times[seg + 1]:
            seg += 1
        if len(keyframes) == 1:
            poses.append(keyframes[0].T_cam_world)
            intrinsics.append(Ks[0])
            continue
        u = min(1.0, max(0.0, (t - times[seg]) / (times[seg + 1] - times[seg])))
        R = quat_to_rotmat(_slerp(quats[seg], quats[seg + 1], u))
        c = (1 - u) * T_world_cams[seg][:3, 3] + u * T_world_cams[seg + 1][:3, 3]
        poses.append(invert_T(make_T(R, c)))
        intrinsics.append((1 - u) * Ks[seg] + u * Ks[seg + 1])
    return Camera(
        T_cam_world=torch.stack(poses).float(), K=torch.stack(intrinsics).float(), width=width, height=height
    )


# --- nerfstudio camera paths -----------------------------------------------------------------------------------
NERFSTUDIO_KEY = "camera_path"
"""The key that marks a nerfstudio ``camera_path.json`` (its list of rendered cameras)."""
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
"""Right-multiplied into a camera-to-world pose: OpenGL camera axes (x right, y up, z back) -> OpenCV (x right,
y down, z forward)."""


def is_nerfstudio_camera_path(data: object) -> bool:
    """Whether parsed JSON ``data`` is a nerfstudio camera path (an object with a ``camera_path`` list)."""
    return isinstance(data, dict) and isinstance(data.get(NERFSTUDIO_KEY), list)


def _positive_int(path: Path, data: dict, key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or int(value) != value:
        raise ReconError(f"nerfstudio camera path {path}: {key!r} must be a positive integer, got {value!r}")
    return int(value)


def _nerfstudio_pose(path: Path, i: int, item: object) -> tuple[Tensor, float]:
    """(T_world_cam in OpenCV axes, vertical field of view in degrees) of ``camera_path[i]``."""
    where = f"nerfstudio camera path {path}: camera_path[{i}]"
    if not isinstance(item, dict) or "camera_to_world" not in item or "fov" not in item:
        raise ReconError(
            f"{where} must be an object with camera_to_world (4x4, OpenGL axes) and fov (degrees)"
        )
    try:
        T = torch.tensor(item["camera_to_world"], dtype=torch.float64)
        fov = float(item["fov"])
    except (TypeError, ValueError) as exc:
        raise ReconError(f"{where}: expected numbers ({exc})") from exc
    if T.numel() != 16:
        raise ReconError(f"{where}: camera_to_world must have 16 numbers (4x4, row-major), got {T.numel()}")
    T = T.reshape(4, 4)
    R = T[:3, :3]
    rigid = (R.T @ R - torch.eye(3, dtype=R.dtype)).abs().max() <= RIGID_TOL
    if not rigid or abs(float(torch.linalg.det(R)) - 1) > RIGID_TOL or not torch.isfinite(T).all():
        raise ReconError(f"{where}: camera_to_world is not a rigid transform")
    if not 0 < fov < 180:
        raise ReconError(f"{where}: fov must be a vertical field of view in degrees in (0, 180), got {fov}")
    return T @ OPENGL_TO_OPENCV, fov


def nerfstudio_cameras(path: Path, data: dict) -> tuple[Camera, float]:
    """Cameras of a parsed nerfstudio ``camera_path.json``, converted once to OpenCV ``T_cam_world``, and its fps.

    nerfstudio writes ``render_width``/``render_height``, ``fps`` (or ``seconds``) and ``camera_path``: one
    object per rendered frame with ``camera_to_world`` (4x4, row-major, camera-to-world in OpenGL axes) and
    ``fov`` (vertical field of view in degrees; ``aspect`` is implied by the render size). Square pixels and
    a centred principal point, as nerfstudio renders them:

    .. math:: f_x = f_y = \\frac{H/2}{\\tan(\\mathrm{fov}/2)}, \\quad c_x = W/2, \\quad c_y = H/2

    The poses are taken in the run's normalised frame (the frame the viewer renders in), like recon's own paths.

    Raises:
        ReconError: naming the file and the offending key (only perspective cameras are supported).
    """
    path = Path(path)
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise ReconError(
            f"nerfstudio camera path {path}: camera_type {camera_type!r}; only perspective is supported"
        )
    width, height = _positive_int(path, data, "render_width"), _positive_int(path, data, "render_height")
    items = data[NERFSTUDIO_KEY]
    if not items:
        raise ReconError(f"nerfstudio camera path {path}: 'camera_path' is empty")
    poses, Ks = [], []
    for i, item in enumerate(items):
        T_world_cam, fov = _nerfstudio_pose(path, i, item)
        focal = 0.5 * height / math.tan(math.radians(fov) / 2)
        Ks.append(
            torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float64)
        )
        poses.append(invert_T(T_world_cam))
    fps = _nerfstudio_fps(path, data, len(items))
    camera = Camera(
        T_cam_world=torch.stack(poses).float(), K=torch.stack(Ks).float(), width=width, height=height
    )
    return camera, fps


def _nerfstudio_fps(path: Path, data: dict, frames: int) -> float:
    """``fps`` when given, else frames / ``seconds``, else :data:`DEFAULT_FPS`."""
    for key in ("fps", "seconds"):
        value = data.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > 0)
        ):
            raise ReconError(
                f"nerfstudio camera path {path}: {key!r} must be a positive number, got {value!r}"
            )
        return float(value) if key == "fps" else frames / float(value)
    return DEFAULT_FPS
