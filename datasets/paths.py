"""Where a dataset's files may live: every file a loader reads resolves inside the dataset root.

One mechanism for every loader: :func:`resolve_inside` turns a path named by a dataset file (``file_path``,
``mask_path``, ``depth_file_path``, ``gt_mesh``, ``ply_file_path``, COLMAP image names, listed LLFF/DTU images)
into an absolute path, following symlinks, and rejects one that lands outside the root (``..``, an absolute path,
or a symlink pointing elsewhere) unless the caller allows it (``load_dataset(..., allow_outside_root=True)``).

The module also finds the image folder of LLFF/COLMAP captures that ship only downscaled copies
(``images_8/`` without ``images/``, as the LLFF release's ``fern`` often is).
"""

import re
from pathlib import Path

from recon.datasets.errors import DatasetError

__all__ = ["copy_folder", "find_image_folder", "resolve_inside"]

COPY_FOLDER = re.compile(r"^(?P<base>.+)_(?P<factor>[1-9][0-9]*)$")  # images_8 -> (images, 8)


def resolve_inside(root: Path, relative: str | Path, *, what: str, allow_outside: bool = False) -> Path:
    """The absolute path of ``relative`` (a path named by a dataset file, relative to ``root``).

    Symlinks are resolved, so a link inside the root that points elsewhere counts as outside.

    Args:
        root: the dataset folder.
        relative: the path as written in the dataset (relative to ``root``, or absolute).
        what: the field and file that named it, for the error message (``"file_path of frame 3 in ..."``).
        allow_outside: accept paths outside ``root``.

    Returns:
        The resolved absolute path (it may not exist; callers check existence with their own message).

    Raises:
        DatasetError: the path resolves outside ``root`` and ``allow_outside`` is false.
    """
    root = Path(root).resolve()
    raw = Path(relative)
    resolved = (raw if raw.is_absolute() else root / raw).resolve()
    if not allow_outside and not resolved.is_relative_to(root):
        raise DatasetError(
            f"{what} names {str(relative)!r}, which resolves to {resolved}, outside the dataset root {root}: "
            "expected a file inside the dataset folder (pass allow_outside_root=True to allow it)"
        )
    return resolved


def copy_folder(folder: Path, factor: int) -> Path:
    """The sibling folder holding the ``factor``-times downscaled copies of ``folder``'s images
    (``images_4`` for ``images`` or ``images_2``)."""
    match = COPY_FOLDER.match(folder.name)
    base = match.group("base") if match else folder.name
    return folder.parent / f"{base}_{factor}"


def find_image_folder(root: Path, name: str = "images") -> Path | None:
    """``root/name`` if it is a folder, else the finest downscaled copy ``root/name_N`` (smallest N), else None."""
    if (root / name).is_dir():
        return root / name
    copies = []
    for child in root.iterdir() if root.is_dir() else ():
        match = COPY_FOLDER.match(child.name)
        if match and match.group("base") == name and child.is_dir():
            copies.append((int(match.group("factor")), child))
    return min(copies)[1] if copies else None
