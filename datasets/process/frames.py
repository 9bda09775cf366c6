"""Input images for structure from motion: photos (EXIF orientation applied) or frames picked from a video.

Video frames are chosen by sharpness: the frame sequence is cut into ``num_frames`` evenly spaced windows and the
frame with the largest variance of the Laplacian (a standard blur measure: Pech-Pacheco et al., ICPR 2000) is
taken from each window, so motion-blurred frames are skipped while the views stay spread over the whole video.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recon.datasets.errors import DatasetError
from recon.datasets.images import IMAGE_SUFFIXES

__all__ = ["VIDEO_SUFFIXES", "extract_video_frames", "ingest_images", "laplacian_variance", "list_photos"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".MP4", ".MOV")
SHARPNESS_WIDTH = 640  # frames are measured at most this wide: blur shows at any size, and it is 10x cheaper
JPEG_QUALITY = 95  # quality of the JPEG files written for video frames and re-oriented photos
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how the camera was held

Tick = Callable[[], None]


def list_photos(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def ingest_images(paths: list[Path], output: Path, tick: Tick | None = None) -> list[Path]:
    """Copy photos into ``output`` as 8-bit RGB, upright: the EXIF orientation is applied to the pixels (COLMAP
    and recon read raw pixels), alpha is composited over white. Files that need no change are copied as is.

    Raises:
        DatasetError: naming a file that is not a readable image.
    """
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        try:
            with Image.open(path) as im:
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
                if orientation == 1 and im.mode == "RGB" and im.format in ("JPEG", "PNG"):
                    target = output / path.name
                    target.write_bytes(path.read_bytes())
                else:
                    target = output / (path.stem + (".png" if im.format == "PNG" else ".jpg"))
                    upright = ImageOps.exif_transpose(im)  # reads the orientation from im's EXIF
                    exif = im.getexif()
                    exif.pop(EXIF_ORIENTATION, None)  # applied to the pixels; the rest (focal length) stays
                    _save_rgb(upright, target, exif)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"cannot read photo {path}: expected a PNG or JPEG image ({exc})") from exc
        written.append(target)
        if tick is not None:
            tick()
    return written


def _save_rgb(im: Image.Image, target: Path, exif: Image.Exif) -> None:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(canvas, rgba)
    im = im.convert("RGB")
    if target.suffix == ".png":
        im.save(target, exif=exif)
    else:
        im.save(target, quality=JPEG_QUALITY, exif=exif)


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image: high for sharp frames, low for blurred ones."""
    gray = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    step = max(1, int(np.ceil(gray.shape[1] / SHARPNESS_WIDTH)))
    gray = gray[::step, ::step]
    lap = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    )  # discrete Laplacian at interior pixels
    return float(lap.var()) if lap.size else 0.0


def _video_frames(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    import imageio_ffmpeg  # lazy: only video input needs ffmpeg

    try:
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise DatasetError(
            f"cannot read video {path}: expected a video file ffmpeg can decode ({exc})"
        ) from exc
    if count is None:
        raise DatasetError(f"cannot read video {path}: ffmpeg could not count its frames")
    width, height = meta["size"]

    def frames() -> Iterator[np.ndarray]:
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)

    return count, frames()


def extract_video_frames(path: Path, output: Path, num_frames: int, tick: Tick | None = None) -> list[int]:
    """Write the sharpest frame of each of ``num_frames`` evenly spaced windows of a video as JPEG files
    ``frame_00000.jpg``, ... into ``output`` (one pass over the video; one window's best frame held in memory).

    Returns:
        The index in the video of each written frame.

    Raises:
        DatasetError: the video cannot be decoded or has fewer frames than ``num_frames``.
    """
    if num_frames < 1:
        raise DatasetError(f"num_frames must be >= 1, got {num_frames}")
    count, frames = _video_frames(path)
    if count < num_frames:
        raise DatasetError(f"video {path} has {count} frames: expected at least num_frames = {num_frames}")
    output.mkdir(parents=True, exist_ok=True)
    chosen: list[int] = []
    best: tuple[float, int, np.ndarray] | None = None
    window = 0

    def flush() -> None:
        assert best is not None
        Image.fromarray(best[2]).save(output / f"frame_{len(chosen):05d}.jpg", quality=JPEG_QUALITY)
        chosen.append(best[1])
        if tick is not None:
            tick()

    for index, frame in enumerate(frames):
        w = min(index * num_frames // count, num_frames - 1)  # window of this frame
        if w != window and best is not None:
            flush()
            best, window = None, w
        score = laplacian_variance(frame)
        if best is None or score > best[0]:
            best = (score, index, frame.copy())
    if best is not None:
        flush()
    return chosen
