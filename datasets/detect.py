"""Format detection and the one entry point, :func:`load_dataset`.

A folder is recognised by the files each format is defined by, checked in this order (the first match wins):

| format       | recognised by                                              |
|--------------|------------------------------------------------------------|
| ``blender``    | ``transforms_train.json`` (or ``transforms_test.json``)    |
| ``nerfstudio`` | ``transforms.json`` (nerfstudio and instant-ngp)           |
| ``dtu``        | ``cameras.npz`` (IDR) or ``cameras_sphere.npz`` (NeuS)     |
| ``colmap``     | ``sparse/0/``, ``sparse/`` or ``./`` with ``cameras.bin``/``cameras.txt`` |
| ``llff``       | ``poses_bounds.npy`` (with ``images/`` or ``images_N/``)   |

COLMAP wins over LLFF when a folder has both (as the LLFF and mip-NeRF 360 releases do): the sparse model carries
the exact intrinsics and the SfM points.
"""

import math
from collections.abc import Callable
from pathlib import Path

import torch

from recon.datasets.base import HOLDOUT_EVERY, LoadOptions, SceneDataset
from recon.datasets.errors import DatasetError

FORMATS = ("blender", "nerfstudio", "colmap", "llff", "dtu")


def detect_format(path: str | Path) -> str:
    """Name the format of a dataset folder: ``"blender" | "nerfstudio" | "colmap" | "llff" | "dtu"``.

    Raises:
        DatasetError: the path is not a folder or holds nothing recognisable.
    """
    root = _folder(Path(path))
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root} (expected a folder in a supported format)")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file: expected a dataset folder (pass the folder that contains it)")
    if (root / "transforms_train.json").is_file() or (root / "transforms_test.json").is_file():
        return "blender"
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "cameras.npz").is_file() or (root / "cameras_sphere.npz").is_file():
        return "dtu"
    from recon.datasets.colmap import find_model

    if find_model(root) is not None:
        return "colmap"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    raise DatasetError(
        f"unknown dataset format in {root}: expected transforms_train.json (Blender), transforms.json "
        "(nerfstudio/instant-ngp), sparse/0/cameras.bin|txt (COLMAP), poses_bounds.npy (LLFF) or cameras.npz / cameras_sphere.npz (DTU)"
    )


MARKER_FILES = (
    "transforms.json",
    "transforms_train.json",
    "cameras.npz",
    "cameras_sphere.npz",
    "poses_bounds.npy",
)


def _folder(path: Path) -> Path:
    """A dataset's defining file (``.../transforms.json``) stands for its folder."""
    return path.parent if path.is_file() and path.name in MARKER_FILES else path


def _loader(name: str) -> Callable[..., SceneDataset]:
    if name == "blender":
        from recon.datasets.blender import load_blender

        return load_blender
    if name == "nerfstudio":
        from recon.datasets.nerfstudio import load_nerfstudio

        return load_nerfstudio
    if name == "colmap":
        from recon.datasets.colmap import load_colmap

        return load_colmap
    if name == "llff":
        from recon.datasets.llff import load_llff

        return load_llff
    from recon.datasets.dtu import load_dtu

    return load_dtu


def load_dataset(
    path: str | Path,
    *,
    downscale: float | int | None = None,
    background: tuple[float | int, float | int, float | int] | None = None,
    format: str | None = None,
    test_every: int = HOLDOUT_EVERY,
    allow_outside_root: bool = False,
) -> SceneDataset:
    """Load a dataset folder in any supported format (detected unless ``format`` is given).

    Files are validated (existence, image headers, poses, intrinsics, mask sizes, one image size per split, paths
    inside the folder) but no image is decoded: pixels are decoded on first access and kept in a bounded LRU cache.

    Args:
        path: the dataset folder.
        downscale: image downscale factor, counted from the size the poses/cameras state; ``images_N`` folders are
            used when N == downscale, otherwise images are resized on the fly; intrinsics follow the loaded size
            exactly. None (default): 1, or the factor of the stored copies when the folder holds only downscaled
            copies (an LLFF/COLMAP folder with ``images_8/`` and no ``images/`` loads at 8).
        background: RGB in [0, 1] that RGBA images are composited over (default: the format's, white for Blender);
            recorded as ``SceneDataset.background``.
        format: force a format instead of detecting it.
        test_every: where a format has no explicit split (COLMAP, LLFF, DTU, nerfstudio without lists), images
            sorted by name with index 0, N, 2N, ... are the test split (N = 8: the LLFF / mip-NeRF 360 protocol).
        allow_outside_root: accept files named by the dataset that resolve outside its folder (``..``, absolute
            paths, symlinks pointing elsewhere); by default they are an error.

    Returns:
        The :class:`SceneDataset`.

    Raises:
        DatasetError: bad input, with a message naming the file (or argument) and what was expected.
    """
    root = _folder(Path(path).expanduser())
    name = format if format is not None else detect_format(root)
    if name not in FORMATS:
        raise DatasetError(f"format {name!r} is not supported: expected one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (expected a {name} dataset folder)")
    opts = LoadOptions(
        downscale=_downscale(downscale),
        background=_background(background),
        test_every=_test_every(test_every),
        allow_outside_root=bool(allow_outside_root),
    )
    return _loader(name)(root.resolve(), opts)


def _background(background: object) -> torch.Tensor | None:
    if background is None:
        return None
    try:
        bg = torch.as_tensor(background, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DatasetError(f"background must be three numbers in [0, 1], got {background!r}") from exc
    if bg.shape != (3,) or not bool(((bg >= 0) & (bg <= 1)).all()):
        raise DatasetError(f"background must be three numbers in [0, 1], got {background}")
    return bg


def _downscale(downscale: object) -> float | None:
    if downscale is None:
        return None
    try:
        value = float(downscale)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"downscale must be a positive number, got {downscale!r}") from exc
    if not (math.isfinite(value) and value > 0):
        raise DatasetError(f"downscale must be a positive number, got {downscale}")
    return value


def _test_every(test_every: object) -> int:
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 2:
        raise DatasetError(
            f"test_every must be a whole number >= 2 (every N-th image is a test view), got {test_every!r}"
        )
    return test_every
