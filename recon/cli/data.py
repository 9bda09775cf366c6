"""``recon data``: dataset tools.

- ``recon data info PATH [--json] [--downscale F] [--test-every N] [--no-verify]``: detect the format, load the
  dataset, decode every image once (a progress bar on stderr; a corrupt or truncated file is an error naming it)
  and print what a run would load (CLI.md layout with ``--json``).
- ``recon data synth NAME --output PATH [--views N] [--test-views N] [--resolution R] [--seed S]``: write a
  built-in synthetic scene as a Blender-format folder; ``recon data synth mesh --mesh FILE --output PATH ...``
  renders any mesh file the same way. Prints the written folder as the last line.
- ``recon data process IMAGES_DIR|VIDEO --output DIR [--matching M] [--num-frames N] ...``: structure from motion
  (pycolmap) into a COLMAP dataset; prints the report (registered images, reprojection error, points) and the
  written folder as the last line. Exit status 1 and no output folder when too few images register.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from recon.core.errors import NotAvailableYet, ReconError

__all__ = ["Info", "Process", "Synth", "main"]

MESH_SCENE = "mesh"  # the synth NAME that renders a user's mesh file (given with --mesh)


@dataclass(frozen=True)
class Info:
    """Detect a dataset folder's format and print what a run would load."""

    path: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="PATH")]]
    """Dataset folder (Blender, nerfstudio/instant-ngp, COLMAP, LLFF or DTU; detected automatically)."""
    json: bool = False
    """Print JSON: format, splits with per-camera name, size, K, T_cam_world, camera model and distortion."""
    downscale: float | None = None
    """Image downscale factor from the size the cameras state (default: 1, or the factor of the stored copies
    when the folder holds only images_N/ copies)."""
    test_every: int = 8
    """Every N-th image (sorted by name: 0, N, 2N, ...) is a test view where the format has no explicit split."""
    verify: bool = True
    """Decode every image, mask and depth map once (--no-verify checks headers only)."""


@dataclass(frozen=True)
class Synth:
    """Write a built-in synthetic scene (with ground-truth mesh) as a Blender-format dataset folder."""

    name: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="NAME")]]
    """Scene name ('object', 'tabletop', ...; see 'recon data synth --help'), or 'mesh' to render --mesh FILE."""
    output: Path
    """Folder to write (created)."""
    mesh: Path | None = None
    """Mesh file (OBJ, PLY, GLB, ...) to render; only with NAME 'mesh'."""
    up_axis: Literal["y", "z"] = "y"
    """Up axis of the --mesh file (y-up is the glTF rule and the common OBJ habit)."""
    upper_views: bool = False
    """With 'mesh': training cameras only above the object (10-75 degrees), so its underside is never seen."""
    views: int = 100
    """Number of training views."""
    test_views: int = 50
    """Number of test views."""
    resolution: int = 200
    """Image width = height in pixels."""
    seed: int = 0
    """Seed of the training-camera jitter (geometry does not depend on it)."""
    supersample: int = 1
    """Anti-aliasing: N x N rays per pixel, colour and alpha their box-filtered mean (as a camera pixel or Blender's
    NeRF-synthetic renders); 1 = one ray through each pixel centre (exact 0/1 alpha). Depth/normals: centre ray."""


@dataclass(frozen=True)
class Process:
    """Structure from motion (pycolmap): photos or a video in, a COLMAP dataset (images, images_2/4/8, sparse/0,
    process_report.json) out."""

    source: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="IMAGES_DIR|VIDEO")]]
    """A folder of photos (PNG/JPEG; EXIF orientation is applied) or a video file."""
    output: Path
    """Dataset folder to create (must not exist or be empty)."""
    matching: Literal["auto", "exhaustive", "sequential"] = "auto"
    """Feature matching: auto = exhaustive up to 120 images, else sequential."""
    num_frames: int = 100
    """Frames taken from a video: the sharpest (variance of the Laplacian) of each of N evenly spaced windows."""
    camera_model: Literal["SIMPLE_RADIAL", "OPENCV", "SIMPLE_PINHOLE", "PINHOLE"] = "SIMPLE_RADIAL"
    """Camera model SfM estimates; the written images are undistorted to pinhole."""
    camera_params: tuple[float, ...] | None = None
    """Known intrinsics in COLMAP's order for --camera-model (PINHOLE: fx fy cx cy), kept fixed; default:
    self-calibrated (from EXIF focal lengths when present)."""
    single_camera: bool = True
    """All images share one camera (--no-single-camera: images share one only when size and EXIF focal agree)."""
    min_init_inliers: int = 100
    """Verified matches the initial image pair needs (COLMAP default; lower for small captures)."""
    threads: int = -1
    """CPU threads (-1: all)."""


Command = (
    Annotated[Info, tyro.conf.subcommand("info")]
    | Annotated[Synth, tyro.conf.subcommand("synth")]
    | Annotated[Process, tyro.conf.subcommand("process")]
)


def _run_info(args: Info) -> int:
    if not args.path.exists():
        raise ReconError(f"{args.path}: no such file or directory (expected a dataset folder)")
    try:
        from recon.datasets import dataset_info, format_info, load_dataset, verify_files
    except ImportError as exc:
        raise NotAvailableYet(f"recon data info needs recon.datasets.dataset_info ({exc})") from exc
    ds = load_dataset(args.path, downscale=args.downscale, test_every=args.test_every)
    if args.verify:
        verify_files(ds, progress=True)
    info = dataset_info(ds)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0


def _run_synth(args: Synth) -> int:
    try:
        from recon.datasets.synthetic import SCENES, write_mesh_scene, write_scene
    except ImportError as exc:
        raise NotAvailableYet(f"recon data synth needs recon.datasets.synthetic ({exc})") from exc
    counts = {
        "views": args.views,
        "test_views": args.test_views,
        "resolution": args.resolution,
        "seed": args.seed,
        "supersample": args.supersample,
    }
    if args.name == MESH_SCENE:
        if args.mesh is None:
            raise ReconError("recon data synth mesh needs --mesh FILE (a mesh file to render)")
        output = write_mesh_scene(
            args.mesh, args.output, up_axis=args.up_axis, upper_views=args.upper_views, **counts
        )
    else:
        if args.mesh is not None:
            raise ReconError(f"--mesh is only used with NAME 'mesh', not with {args.name!r}")
        if args.upper_views:
            raise ReconError(f"--upper-views is only used with NAME 'mesh', not with {args.name!r}")
        if args.name not in SCENES:
            expected = ", ".join([*SCENES, MESH_SCENE])
            raise ReconError(f"unknown synthetic scene {args.name!r}; expected one of: {expected}")
        output = write_scene(args.name, args.output, **counts)
    print(output)
    return 0


def _run_process(args: Process) -> int:
    try:
        import pycolmap  # noqa: F401 -- checked here so that a missing install is a clear message, not a traceback

        from recon.datasets.process import ProcessOptions, process_capture
    except ImportError as exc:
        raise NotAvailableYet(f"recon data process needs pycolmap (pip install pycolmap): {exc}") from exc
    options = ProcessOptions(
        matching=args.matching, num_frames=args.num_frames, camera_model=args.camera_model,
        camera_params=args.camera_params, single_camera=args.single_camera, min_init_inliers=args.min_init_inliers, threads=args.threads,
    )  # fmt: skip
    report = process_capture(args.source, args.output, options, progress=True)
    print(report.summary())
    print(args.output)
    return 0


def main(argv: list[str]) -> int:
    """``recon data info ...`` / ``recon data synth ...`` / ``recon data process ...``."""
    args = tyro.cli(Command, args=argv, prog="recon data", description="Dataset tools.")
    if isinstance(args, Info):
        return _run_info(args)
    if isinstance(args, Process):
        return _run_process(args)
    return _run_synth(args)
