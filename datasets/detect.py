"""Format detection and the one entry point, :func:`load_dataset`.

A folder is recognised by the files each format is defined by, checked in this order (the first match wins):

| format       | recognised by                                              |
|--------------|------------------------------------------------------------|
| ``blender``    | ``transforms_train.json`` (or ``transforms_test.json``)    |
| ``nerfstudio`` | ``transforms.json`` (nerfstudio and instant-ngp)           |
| ``dtu``        | ``cameras.npz``                                            |
| ``colmap``     | ``sparse/0/``, ``sparse/`` or ``./`` with ``cameras.bin``/``cameras.txt`` |
| ``llff``       | ``poses_bounds.npy``                                       |

COLMAP wins over LLFF when a folder has both (as the LLFF and mip-NeRF 360 releases do): the sparse model carries
the exact intrinsics and the SfM points.
"""

from collections.abc import Callable
from pathlib import Path

import torch

from recon.datasets.base import SceneDataset
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
    if (root / "cameras.npz").is_file():
        return "dtu"
    from recon.datasets.colmap import find_model

    if find_model(root) is not None:
        return "colmap"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    raise DatasetError(
        f"unknown dataset format in {root}: expected transforms_train.json (Blender), transforms.json "
        "(nerfstudio/instant-ngp), sparse/0/cameras.bin|txt (COLMAP), poses_bounds.npy (LLFF) or cameras.npz (DTU)"
    )


MARKER_FILES = ("transforms.json", "transforms_train.json", "cameras.npz", "poses_bounds.npy")


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
    downscale: float | int = 1.0,
    background: tuple[float | int, float | int, float | int] | None = None,
    format: str | None = None,
) -> SceneDataset:
    """Load a dataset folder in any supported format (detected unless ``format`` is given).

    Files are validated (existence, image headers, poses, mask sizes) but no image is decoded: pixels are decoded
    on first access and kept in a bounded LRU cache.

    Args:
        path: the dataset folder.
        downscale: image downscale factor; ``images_N`` folders are used when N == downscale, otherwise images are
            resized on the fly; intrinsics follow the loaded size exactly.
        background: RGB in [0, 1] that RGBA images are composited over (default: the format's, white for Blender).
        format: force a format instead of detecting it.

    Returns:
        The :class:`SceneDataset`.

    Raises:
        DatasetError: bad input, with a message naming the file and what was expected.
    """
    root = _folder(Path(path).expanduser())
    name = format if format is not None else detect_format(root)
    if name not in FORMATS:
        raise DatasetError(f"format {name!r} is not supported: expected one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (expected a {name} dataset folder)")
    bg = None
    if background is not None:
        bg = torch.as_tensor(background, dtype=torch.float32).flatten()
        if bg.shape != (3,) or not bool(((bg >= 0) & (bg <= 1)).all()):
            raise DatasetError(f"background must be three numbers in [0, 1], got {background}")
    try:
        downscale = float(downscale)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"downscale must be a positive number, got {downscale!r}") from exc
    if not downscale > 0:
        raise DatasetError(f"downscale must be a positive number, got {downscale}")
    return _loader(name)(root.resolve(), downscale=downscale, background=bg)
