"""``recon render RUN_DIR [--trajectory orbit|dataset|PATH.json] [--camera-path FILE] [--output DIR|FILE.mp4]``.

Images are written as PNGs into a folder, or as an H.264 ``.mp4`` through imageio-ffmpeg (a dependency, which
ships its own ffmpeg binary); if video writing fails the command says so and suggests a folder.
A JSON trajectory (``--trajectory PATH.json`` or ``--camera-path FILE``; poses in the run's normalised frame, or the
dataset's original frame with ``--path-frame original``) is either

- recon's camera path (saved by the viewer): ``{"frames": [{"T_cam_world": 4x4, "K": 3x3, "width": W,
  "height": H}, ...]}`` (OpenCV axes), or only its ``keyframes``, which are then interpolated at its ``fps``;
- a nerfstudio ``camera_path.json``: ``render_width``, ``render_height``, ``fps``/``seconds`` and a
  ``camera_path`` list of ``camera_to_world`` (4x4, OpenGL axes) with a vertical ``fov`` in degrees, converted
  once to OpenCV ``T_cam_world`` (:func:`recon.viewer.camera_path.nerfstudio_cameras`).

A video is written at the path's fps (recon's orbit and dataset trajectories: 30).
"""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from rich.console import Console

from recon.core import Camera, ReconError
from recon.core.transforms import look_at, transform_pose
from recon.scenes.base import RenderOptions
from recon.scenes.scene_type import camera_rig, camera_up, is_forward, look_at_centre, perpendicular_axes
from recon.train.run_io import load_run_dataset, open_run_config, resolve_device
from recon.train.trainer import load_scene

OUTPUTS = ("rgb", "depth", "normal", "alpha")
VIDEO_FPS = 30.0  # frame rate of orbit and dataset videos (camera paths carry their own)
OrbitArc = Literal["auto", "full", "captured"]


@dataclass(frozen=True)
class RenderArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory (its newest checkpoint)."""
    trajectory: str = "orbit"
    """orbit (around the training cameras' centre), dataset (the test cameras) or a trajectory .json."""
    output: str = ""
    """Output folder of PNGs, or a .mp4 file (default: RUN_DIR/renders/<trajectory>/)."""
    outputs: str = "rgb"
    """Comma-separated maps to write: rgb, depth, normal, alpha."""
    frames: int = 60
    """Frames of the orbit."""
    orbit: OrbitArc = "auto"
    """auto: the whole circle when the training cameras surround the subject, else back and forth over the arc
    they cover (a hand-held capture that went part of the way round: the rest was never seen); full; captured."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto (cuda when available, else cpu)."""
    camera_path: str = ""
    """A camera-path JSON file (recon's, from the viewer, or nerfstudio's camera_path.json); overrides
    --trajectory."""
    path_frame: Literal["normalized", "original"] = "normalized"
    """World frame of a JSON camera path's poses: the run's normalised frame (the viewer's; paths saved by the
    viewer) or the dataset's original frame (e.g. poses taken from its transforms.json)."""


# --orbit auto: the cameras surround the subject when no azimuth gap between neighbours is wider than this
ORBIT_MAX_GAP = math.radians(90.0)


def orbit_cameras(train: Camera, frames: int, arc: OrbitArc = "auto") -> Camera:
    """A fly-around of the training cameras' subject in the run's normalised frame, whatever way is up there.

    Up is the normal of the plane the camera centres lie in when they form a ring (plane fit: smallest covariance
    eigenvalue under half the middle one, normal within 45 degrees of the cameras' mean up), else −the mean camera y
    axis (OpenCV y points down; it leans towards where most cameras stand when they look down at the subject from
    uneven azimuths, which tilts the circle). Cameras that surround a subject
    (``recon.scenes.scene_type``: not forward) give a circle about the axis through their look-at centre along up,
    at their mean distance from that axis and their mean height along it, every frame looking at the centre (a
    NeRF-synthetic ring, whose frame has z up and the subject at the origin, keeps that circle). A forward capture
    (LLFF) gives a circle in the plane facing the cameras' mean axis, about their mean centre, of their mean spread
    from it, every frame looking along the mean axis. Intrinsics and size: the first training camera's.

    ``arc`` (cameras that surround a subject): ``full`` goes once round the circle; ``captured`` goes from one end of
    the arc of azimuths the cameras cover (the circle minus the widest gap between neighbouring cameras) to the
    other and back, slowing at the ends (``cos`` easing, so the video loops); ``auto`` is ``full`` when that gap
    is at most ``ORBIT_MAX_GAP`` (90 degrees), else ``captured``. Forward captures always give their circle.
    """
    centres, axes = camera_rig(train)
    up = _capture_up(train, centres)
    forward = is_forward(axes)
    if forward:
        axis = axes.mean(0) / axes.mean(0).norm()
        centre = centres.mean(0)
        normal = axis
    else:
        centre = look_at_centre(centres, axes)
        normal = up
    e1, e2 = perpendicular_axes(normal)
    offsets = centres - centre
    height = offsets @ normal
    radius = float((offsets - height[:, None] * normal).norm(dim=-1).mean())
    base = centre + normal * (0.0 if forward else float(height.mean()))
    angles = [2 * math.pi * k / frames for k in range(frames)]
    if not forward and arc != "full":
        start, span = _captured_arc(offsets @ e1, offsets @ e2)
        if arc == "captured" or 2 * math.pi - span > ORBIT_MAX_GAP:
            angles = [start + span * 0.5 * (1 - math.cos(a)) for a in angles]
    poses = []
    for angle in angles:
        eye = base + radius * (math.cos(angle) * e1 + math.sin(angle) * e2)
        target = eye + axis if forward else centre
        poses.append(look_at(eye, target, up))
    K = train.K[:1].expand(frames, 3, 3)
    return Camera(torch.stack(poses).float(), K.float(), train.width, train.height)


def _captured_arc(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(start, span)`` in radians of the arc of azimuths ``atan2(y, x)`` that the cameras cover: the circle minus
    its widest gap between neighbouring azimuths, going counter-clockwise from ``start``."""
    azimuths = torch.sort(torch.atan2(y, x)).values
    gaps = torch.diff(azimuths, append=azimuths[:1] + 2 * math.pi)
    widest = int(gaps.argmax())
    start = float(azimuths[(widest + 1) % len(azimuths)])
    return start, 2 * math.pi - float(gaps[widest])


RING_FLATNESS = (
    0.5  # camera centres form a ring when their smallest covariance eigenvalue is < 0.5 x the middle
)
RING_UP_COS = math.cos(math.radians(45.0))  # ... and the ring's normal lies within 45 degrees of the mean up


def _capture_up(train: Camera, centres: torch.Tensor) -> torch.Tensor:
    """Unit up direction of a capture (float64; see :func:`orbit_cameras`)."""
    mean_up = camera_up(train)
    if mean_up is None:
        return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if len(centres) < 3:
        return mean_up
    offsets = centres - centres.mean(0)
    values, vectors = torch.linalg.eigh(offsets.T @ offsets / len(centres))
    normal = vectors[:, 0] * torch.sign(vectors[:, 0] @ mean_up)
    if float(values[0]) < RING_FLATNESS * float(values[1]) and float(normal @ mean_up) > RING_UP_COS:
        return normal
    return mean_up


def json_cameras(path: Path) -> Camera:
    """The cameras of a camera-path JSON file (recon's or nerfstudio's); see :func:`path_cameras`."""
    return path_cameras(path)[0]


def path_cameras(path: Path, flag: str = "--trajectory") -> tuple[Camera, float]:
    """(cameras, fps) of a camera-path JSON file: recon's ``frames`` (or ``keyframes``) or nerfstudio's.

    Raises:
        ReconError: the file is missing, not JSON, or neither layout (naming ``flag`` and the file).
    """
    from recon.viewer.camera_path import (
        DEFAULT_FPS,
        interpolate_camera_path,
        is_nerfstudio_camera_path,
        nerfstudio_cameras,
        read_camera_path,
    )

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReconError(f"{flag} {path}: no such file; expected a camera-path JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReconError(f"{flag} {path}: not a readable JSON file ({exc})") from exc
    if is_nerfstudio_camera_path(data):
        return nerfstudio_cameras(path, data)
    fps = float(data.get("fps", DEFAULT_FPS)) if isinstance(data, dict) else DEFAULT_FPS
    if isinstance(data, dict) and "frames" not in data and "keyframes" in data:
        keyframes, fps = read_camera_path(path)
        return interpolate_camera_path(keyframes, fps=fps), fps
    try:
        frames = data["frames"]
        cams = [Camera(torch.tensor(f["T_cam_world"])[None].float(), torch.tensor(f["K"])[None].float(),
                       int(f["width"]), int(f["height"])) for f in frames]  # fmt: skip
        if not cams:
            raise ValueError("no frames")
    except (KeyError, ValueError, TypeError) as exc:
        raise ReconError(
            f"{flag} {path}: expected recon's {{'frames': [{{T_cam_world, K, width, height}}]}} or a nerfstudio "
            f"camera_path.json ({{'camera_path': [{{camera_to_world, fov}}], 'render_width', 'render_height'}}) "
            f"({exc})"
        ) from exc
    return Camera.cat(cams), fps


def to_normalized_frame(cams: Camera, S: torch.Tensor) -> Camera:
    """Cameras posed in the dataset's original frame re-expressed in the normalised frame ``x_norm = S x_orig``
    (``S`` a similarity; the camera frame is scaled with the world, so images are unchanged)."""
    T = transform_pose(cams.T_cam_world.double(), S.double()).float()
    return Camera(T_cam_world=T, K=cams.K, width=cams.width, height=cams.height)


def _trajectory(args: "RenderArgs", cfg, run) -> tuple[Camera, float, str]:
    """(cameras, video fps, output name) of --camera-path or --trajectory (JSON paths in --path-frame)."""
    if args.camera_path or args.trajectory not in ("orbit", "dataset"):
        flag, file = (
            ("--camera-path", args.camera_path) if args.camera_path else ("--trajectory", args.trajectory)
        )
        cams, fps = path_cameras(Path(file), flag)
        if args.path_frame == "original":
            S = run.read_dataset_json().get("normalization")
            if S is None:
                raise ReconError(
                    f"--path-frame original: {run.path}/dataset.json has no 'normalization' matrix"
                )
            cams = to_normalized_frame(cams, torch.tensor(S, dtype=torch.float64))
        return cams, fps, Path(file).stem
    if args.trajectory == "orbit":
        cams = orbit_cameras(load_run_dataset(cfg).cameras("train"), args.frames, args.orbit)
        return cams, VIDEO_FPS, "orbit"
    return load_run_dataset(cfg).cameras("test"), VIDEO_FPS, "dataset"


def main(argv: list[str]) -> int:
    import imageio.v3 as iio

    args = tyro.cli(RenderArgs, args=argv, prog="recon render")
    wanted = [o.strip() for o in args.outputs.split(",") if o.strip()]
    bad = [o for o in wanted if o not in OUTPUTS]
    if bad:
        raise ReconError(
            f"--outputs {args.outputs!r}: unknown {bad}; expected a comma list of {', '.join(OUTPUTS)}"
        )
    run, method, cfg = open_run_config(args.run_dir)
    device = resolve_device(args.device)
    cams, fps, name = _trajectory(args, cfg, run)  # a bad path fails before the scene loads
    scene, _ = load_scene(method, cfg, run, device=device)
    out = Path(args.output) if args.output else run.renders_dir / name
    video = out.suffix.lower() == ".mp4"
    dataset_bg = torch.tensor(run.read_dataset_json().get("background", [0.0, 0.0, 0.0]), dtype=torch.float32)
    options = RenderOptions(
        background=dataset_bg, backend=cfg.backend, depth=True, normals="normal" in wanted
    )
    frames: dict[str, list] = {o: [] for o in wanted}
    from rich.progress import track

    with torch.no_grad():
        for c in track(range(len(cams)), description="render", console=Console(stderr=True), transient=True):
            r = scene.render(cams[c], options)
            maps = {"rgb": r.rgb[0], "alpha": r.alpha[0].expand(-1, -1, 3)}
            if r.depth is not None:
                d = r.depth[0]
                maps["depth"] = (d / d.max().clamp_min(1e-6)).expand(-1, -1, 3)
            if r.normals is not None:
                n = r.normals[0]
                maps["normal"] = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-6) * 0.5 + 0.5
            for o in wanted:
                img = (maps[o].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
                if video:
                    frames[o].append(img)
                else:
                    (out / o).mkdir(parents=True, exist_ok=True)
                    iio.imwrite(out / o / f"{c:04d}.png", img)
    if video:
        for o in wanted:
            target = out if len(wanted) == 1 else out.with_name(f"{out.stem}_{o}.mp4")
            try:
                iio.imwrite(target, frames[o], fps=fps)
            except (ValueError, ImportError, RuntimeError) as exc:
                raise ReconError(
                    f"--output {target}: cannot write mp4 here ({exc}); write PNGs to a folder instead"
                ) from exc
            print(target)
    else:
        print(out)
    print(f"rendered {len(cams)} frames", file=sys.stderr)
    return 0
