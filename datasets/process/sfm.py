"""``recon data process``: photos or a video in, a COLMAP dataset out (pycolmap structure from motion).

Stages (one progress bar each, rich, on stderr): input images (EXIF orientation applied, or sharp video frames),
SIFT feature extraction, matching (exhaustive up to ``EXHAUSTIVE_MAX_IMAGES`` images, else sequential), incremental
mapping, undistortion to pinhole, downscaled copies ``images_2/4/8``. The output folder holds ``images/``,
``images_N/``, ``sparse/0/`` (cameras, images, points3D; PINHOLE cameras) and ``process_report.json``, which
``recon data info`` and the COLMAP loader read directly.

Everything is written into a temporary sibling folder that is renamed to the output only when SfM succeeded; too
few registered images (fewer than ``MIN_REGISTERED`` or than ``MIN_REGISTERED_FRACTION`` of the input) is a
DatasetError and leaves no output behind.
"""

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from recon.datasets.errors import DatasetError
from recon.datasets.process.frames import VIDEO_SUFFIXES, extract_video_frames, ingest_images, list_photos

__all__ = ["ProcessOptions", "ProcessReport", "process_capture"]

Matching = Literal["auto", "exhaustive", "sequential"]
EXHAUSTIVE_MAX_IMAGES = (
    120  # above this many images, matching every pair costs more than sequential + overlap
)
SEQUENTIAL_OVERLAP = 15  # sequential matching pairs each image with the next N (video frames, ordered photos)
MIN_REGISTERED = 3  # fewer registered images cannot define a scene for training
MIN_REGISTERED_FRACTION = 0.5  # a model that leaves half the input out is treated as a failure
DOWNSCALE_FACTORS = (2, 4, 8)
CAMERA_PARAM_COUNTS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "OPENCV": 8}
LOG_ERRORS_ONLY = 2  # glog level of pycolmap's own log lines: errors only (the progress bars say the rest)  # copies written next to images/ (the LLFF / mip-NeRF 360 convention)


@dataclass(frozen=True)
class ProcessOptions:
    """Options of :func:`process_capture` (the ``recon data process`` flags)."""

    matching: Matching = "auto"
    """Feature matching: every pair (exhaustive), each image with its next neighbours (sequential), or auto
    (exhaustive up to 120 images)."""
    num_frames: int = 100
    """Frames taken from a video (the sharpest of each of N evenly spaced windows)."""
    camera_model: Literal["SIMPLE_RADIAL", "OPENCV", "SIMPLE_PINHOLE", "PINHOLE"] = "SIMPLE_RADIAL"
    """COLMAP camera model estimated by SfM (images are undistorted to pinhole afterwards)."""
    camera_params: tuple[float, ...] | None = None
    """Known intrinsics in COLMAP's parameter order of ``camera_model`` (PINHOLE: fx, fy, cx, cy, in pixels of
    the input images); they are then kept fixed instead of self-calibrated."""
    single_camera: bool = True
    """All images share one camera (one phone or camera, fixed zoom); otherwise COLMAP's AUTO mode (images
    with the same size and EXIF focal length share a camera; without EXIF, every image gets its own, which
    self-calibrates poorly). Undistorted images are then centre-cropped to one common size."""
    min_init_inliers: int = 100
    """Verified matches the initial image pair needs (COLMAP's default 100; lower it for small or weakly
    textured captures)."""
    threads: int = -1
    """CPU threads for extraction, matching and mapping (-1: all)."""
    seed: int = 0
    """Random seed of RANSAC and mapping."""


@dataclass
class ProcessReport:
    """What ``recon data process`` did (also written as ``process_report.json``)."""

    source: str
    output: str
    images_total: int
    images_registered: int
    points3d: int
    mean_reprojection_error_px: float
    matching: str
    camera_model: str
    image_size: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)
    video_frames: list[int] | None = None

    def summary(self) -> str:
        """One readable paragraph of the report."""
        total = sum(self.seconds.values())
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (
            f"registered {self.images_registered}/{self.images_total} images, {self.points3d} points, mean "
            f"reprojection error {self.mean_reprojection_error_px:.3f} px, {self.matching} matching, "
            f"{self.image_size[0]}x{self.image_size[1]} pinhole images; {total:.1f}s ({stages})\n"
            f"dataset: {self.output}"
        )


StageFn = Callable[[str, int], "Callable[[], None]"]


def process_capture(
    source: Path, output: Path, options: ProcessOptions = ProcessOptions(), *, progress: bool = False
) -> ProcessReport:
    """Run structure from motion on a folder of photos or a video and write a COLMAP dataset to ``output``.

    Args:
        source: a folder of images (PNG/JPEG) or a video file.
        output: the dataset folder to create (must not exist, or be empty).
        options: see :class:`ProcessOptions`.
        progress: show progress bars on stderr.

    Returns:
        The :class:`ProcessReport` (also in ``output/process_report.json``).

    Raises:
        DatasetError: bad input (naming the file or argument), or too few registered images; nothing is left at
            ``output`` then.
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    _check_arguments(source, output, options)
    tmp = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with _stages(progress) as stage:
            report = _run(source, tmp, output, options, stage)
        shutil.rmtree(tmp / "work")
        (tmp / "process_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        if output.exists():
            output.rmdir()  # empty (checked above): the rename below needs the name free
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_arguments(source: Path, output: Path, options: ProcessOptions) -> None:
    if not source.exists():
        raise DatasetError(f"source not found: {source} (expected a folder of photos or a video file)")
    if source.is_file() and source.suffix not in VIDEO_SUFFIXES:
        raise DatasetError(
            f"source {source} is not a video ({', '.join(VIDEO_SUFFIXES)}): expected a video or a folder of photos"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DatasetError(
            f"output {output} already exists and is not an empty folder: expected a new folder"
        )
    if options.matching not in ("auto", "exhaustive", "sequential"):
        raise DatasetError(f"matching must be auto, exhaustive or sequential, got {options.matching!r}")
    expected = CAMERA_PARAM_COUNTS[options.camera_model]
    if options.camera_params is not None and len(options.camera_params) != expected:
        raise DatasetError(
            f"camera_params has {len(options.camera_params)} values: expected {expected} for {options.camera_model}"
        )
    if options.num_frames < MIN_REGISTERED:
        raise DatasetError(f"num_frames must be >= {MIN_REGISTERED}, got {options.num_frames}")


def _run(source: Path, tmp: Path, output: Path, options: ProcessOptions, stage: StageFn) -> ProcessReport:
    import pycolmap  # lazy: a large native module, only needed here

    pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, LOG_ERRORS_ONLY)
    work, seconds = tmp / "work", {}
    inputs, video_frames = work / "input", None
    clock = time.perf_counter()
    if source.is_dir():
        photos = list_photos(source)
        if len(photos) < MIN_REGISTERED:
            raise DatasetError(f"{source} holds {len(photos)} images: expected at least {MIN_REGISTERED}")
        ingest_images(photos, inputs, stage("reading images", len(photos)))
    else:
        video_frames = extract_video_frames(
            source, inputs, options.num_frames, stage("picking frames", options.num_frames)
        )
    names = sorted(p.name for p in inputs.iterdir())
    seconds["input"], clock = time.perf_counter() - clock, time.perf_counter()
    database = work / "database.db"
    _extract(pycolmap, database, inputs, options, stage("extracting SIFT features", 1))
    seconds["features"], clock = time.perf_counter() - clock, time.perf_counter()
    matching = _match(pycolmap, database, len(names), options, stage("matching features", 1))
    seconds["matching"], clock = time.perf_counter() - clock, time.perf_counter()
    model = _map(
        pycolmap, database, inputs, work / "sparse", options, stage("mapping (images registered)", len(names))
    )
    registered = model.num_reg_images()
    _check_registered(registered, len(names), source)
    seconds["mapping"], clock = time.perf_counter() - clock, time.perf_counter()
    model_dir = work / "model"
    model_dir.mkdir()
    model.write(str(model_dir))
    tick = stage("undistorting to pinhole", 1)
    pycolmap.undistort_images(str(work / "undistorted"), str(model_dir), str(inputs))
    tick()
    _arrange(work / "undistorted", tmp)
    _crop_to_common_size(pycolmap, tmp)
    size = _write_copies(tmp / "images", stage("writing images_2/4/8", registered))
    seconds["undistort"] = time.perf_counter() - clock
    return ProcessReport(
        source=str(source), output=str(output), images_total=len(names), images_registered=registered,
        points3d=model.num_points3D(), mean_reprojection_error_px=float(model.compute_mean_reprojection_error()),
        matching=matching, camera_model=options.camera_model, image_size=size, seconds=seconds,
        video_frames=video_frames,
    )  # fmt: skip


def _extract(
    pycolmap, database: Path, images: Path, options: ProcessOptions, tick: Callable[[], None]
) -> None:
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    if options.camera_params is not None:
        reader.camera_params = ",".join(repr(float(v)) for v in options.camera_params)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = options.threads
    mode = pycolmap.CameraMode.SINGLE if options.single_camera else pycolmap.CameraMode.AUTO
    pycolmap.extract_features(
        str(database), str(images), camera_mode=mode, reader_options=reader, extraction_options=extraction,
        device=pycolmap.Device.auto,
    )  # fmt: skip
    tick()


def _match(pycolmap, database: Path, count: int, options: ProcessOptions, tick: Callable[[], None]) -> str:
    matching = options.matching
    if matching == "auto":
        matching = "exhaustive" if count <= EXHAUSTIVE_MAX_IMAGES else "sequential"
    matcher = pycolmap.FeatureMatchingOptions()
    matcher.num_threads = options.threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    if matching == "exhaustive":
        pycolmap.match_exhaustive(
            str(database),
            matching_options=matcher,
            verification_options=verification,
            device=pycolmap.Device.auto,
        )
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = SEQUENTIAL_OVERLAP
        pycolmap.match_sequential(
            str(database), matching_options=matcher, pairing_options=pairing, verification_options=verification,
            device=pycolmap.Device.auto,
        )  # fmt: skip
    tick()
    return matching


def _map(
    pycolmap, database: Path, images: Path, out: Path, options: ProcessOptions, tick: Callable[[], None]
):
    """Incremental mapping; the largest model (most registered images) is the result."""
    out.mkdir(parents=True)
    pipeline = pycolmap.IncrementalPipelineOptions()
    pipeline.num_threads = options.threads
    pipeline.random_seed = options.seed
    pipeline.mapper.init_min_num_inliers = options.min_init_inliers
    if options.camera_params is not None:  # a known calibration: bundle adjustment must not move it
        pipeline.ba_refine_focal_length = False
        pipeline.ba_refine_principal_point = False
        pipeline.ba_refine_extra_params = False
    models = pycolmap.incremental_mapping(
        str(database), str(images), str(out), options=pipeline, next_image_callback=tick
    )
    if not models:
        raise DatasetError(
            f"structure from motion registered no images: no initial image pair of {images} has "
            f"{options.min_init_inliers} verified matches (expected overlapping, textured photos)"
        )
    return max(models.values(), key=lambda m: m.num_reg_images())


def _check_registered(registered: int, total: int, source: Path) -> None:
    if registered < MIN_REGISTERED:
        raise DatasetError(
            f"structure from motion registered only {registered} of {total} images of {source}: expected at least "
            f"{MIN_REGISTERED} (too few images overlap or have texture)"
        )
    if registered < MIN_REGISTERED_FRACTION * total:
        raise DatasetError(
            f"structure from motion registered only {registered} of {total} images of {source}: expected at least "
            f"{MIN_REGISTERED_FRACTION:.0%} of them (the photos may form disconnected groups or lack overlap)"
        )


def _arrange(undistorted: Path, dataset: Path) -> None:
    """Move pycolmap's undistorted output into the dataset layout: images/ and sparse/0/."""
    (undistorted / "images").rename(dataset / "images")
    model = dataset / "sparse" / "0"
    model.mkdir(parents=True)
    for path in (undistorted / "sparse").iterdir():
        path.rename(model / path.name)


def _crop_to_common_size(pycolmap, dataset: Path) -> None:
    """Centre-crop every undistorted image to the smallest width and height among the cameras (shifting each
    camera's principal point by its crop offset): undistortion sizes each camera's image differently, and a split
    must hold one image size. A no-op with one shared camera."""
    model = pycolmap.Reconstruction(str(dataset / "sparse" / "0"))
    sizes = {(c.width, c.height) for c in model.cameras.values()}
    if len(sizes) <= 1:
        return
    width, height = min(w for w, _ in sizes), min(h for _, h in sizes)
    offsets = {}
    for camera_id, camera in model.cameras.items():
        dx, dy = (camera.width - width) // 2, (camera.height - height) // 2
        params = camera.params
        params[2] -= dx  # PINHOLE params: fx, fy, cx, cy
        params[3] -= dy
        camera.params, camera.width, camera.height = params, width, height
        offsets[camera_id] = (dx, dy)
    for image in model.images.values():
        dx, dy = offsets[image.camera_id]
        for point in image.points2D:  # keypoints move with the crop, so the model stays self-consistent
            point.xy = point.xy - np.array([dx, dy], dtype=np.float64)
        path = dataset / "images" / image.name
        with Image.open(path) as im:
            cropped = im.crop((dx, dy, dx + width, dy + height))
        cropped.save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    model.write(str(dataset / "sparse" / "0"))


def _write_copies(images: Path, tick: Callable[[], None]) -> tuple[int, int]:
    """Write box-filtered ``images_N`` copies (N in DOWNSCALE_FACTORS) of every image; return the image size."""
    size = (0, 0)
    for path in sorted(images.iterdir()):
        with Image.open(path) as im:
            im.load()
            size = im.size
            for n in DOWNSCALE_FACTORS:
                folder = images.parent / f"images_{n}"
                folder.mkdir(exist_ok=True)
                small = im.resize(
                    (max(1, round(im.width / n)), max(1, round(im.height / n))), Image.Resampling.BOX
                )
                small.save(
                    folder / path.name,
                    **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}),
                )
        tick()
    return size


@contextmanager
def _stages(enabled: bool):
    """Yield ``stage(description, total) -> tick``: a new progress bar per stage (rich, stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:

        def stage(description: str, total: int) -> Callable[[], None]:
            task = bar.add_task(description, total=total)
            return lambda: bar.advance(task)

        yield stage
