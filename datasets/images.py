"""Image, mask and depth files: header checks at load time, lazy decoding, resizing and a bounded LRU cache.

Nothing here decodes pixels at load time: loaders call :func:`image_header` (which parses only the file header)
to validate every file, and :class:`SceneDataset` decodes on first access through an :class:`LRUCache`.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from recon.datasets.errors import DatasetError
from recon.datasets.paths import resolve_inside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG", ".exr", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_CACHE_BYTES = 1 << 30  # 1 GiB of decoded float32 images: ~1300 images of 400x400 RGBA stay resident


@dataclass(frozen=True)
class ImageHeader:
    """Size and channel layout of an image file, read without decoding its pixels."""

    width: int
    height: int
    has_alpha: bool


def image_header(path: Path, *, what: str = "image") -> ImageHeader:
    """Read an image file's header (size, alpha channel) without decoding pixels.

    Raises:
        DatasetError: the file is missing or is not a readable image.
    """
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path} (expected a PNG or JPEG {what} there)")
    try:
        with Image.open(path) as im:
            width, height = im.size
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"corrupt or unreadable {what} file {path}: expected a PNG or JPEG image ({exc})"
        ) from exc
    return ImageHeader(width=int(width), height=int(height), has_alpha=bool(has_alpha))


def decode_image(path: Path, *, what: str = "image") -> Float[Tensor, "H W D"]:
    """Decode an 8- or 16-bit image to float32 in [0, 1] with 1 (L), 3 (RGB) or 4 (RGBA) channels.

    Raises:
        DatasetError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = arr[..., None]
            else:
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode == "LA" or im.mode == "PA":
                    im = im.convert("RGBA")
                elif im.mode not in ("L", "RGB", "RGBA"):
                    im = im.convert("RGB")
                arr = np.asarray(im, dtype=np.float32) / 255.0
                if arr.ndim == 2:
                    arr = arr[..., None]
    except FileNotFoundError as exc:
        raise DatasetError(f"{what} file not found: {path} (expected a PNG or JPEG {what} there)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"corrupt or unreadable {what} file {path}: expected a PNG or JPEG image ({exc})"
        ) from exc
    return torch.from_numpy(np.ascontiguousarray(arr))


def decode_depth(path: Path) -> Float[Tensor, "H W 1"]:
    """Decode a depth map: ``.npy`` (float, any unit) or 16-bit PNG (raw integer values, unit given elsewhere).

    Returns raw stored values as float32; the caller multiplies by the format's unit scale.
    """
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"corrupt or unreadable depth file {path}: expected a float .npy array ({exc})"
            ) from exc
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise DatasetError(
                f"depth file {path} holds an array of shape {arr.shape}: expected (H, W) numbers"
            )
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[..., None]
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im).astype(np.float32)
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"corrupt or unreadable depth file {path}: expected a 16-bit PNG or .npy ({exc})"
        ) from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(np.ascontiguousarray(arr))[..., None]


def resize_image(image: Float[Tensor, "H W D"], width: int, height: int, *, nearest: bool = False) -> Tensor:
    """Resize an (H, W, D) image to ``height`` x ``width``.

    Integer downscales use box filtering (``area``), which is what ``images_N`` folders hold; other factors use
    antialiased bilinear. ``nearest`` (for depth, where averaging across edges invents surfaces) samples the
    source pixel whose centre is closest to each target pixel centre.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if nearest:
        rows = (
            ((torch.arange(height, dtype=torch.float64) + 0.5) * h / height).floor().long().clamp_(0, h - 1)
        )
        cols = ((torch.arange(width, dtype=torch.float64) + 0.5) * w / width).floor().long().clamp_(0, w - 1)
        return image[rows][:, cols]
    x = image.permute(2, 0, 1)[None]
    if h % height == 0 and w % width == 0 and h // height == w // width:
        out = F.interpolate(x, size=(height, width), mode="area")
    else:
        out = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).clamp_(0.0, 1.0).contiguous()


class LRUCache:
    """A least-recently-used cache of tensors bounded by total bytes; safe to share between threads (a viewer
    thread reads thumbnails while the trainer reads images). Pickling (DataLoader workers) drops the contents."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        """Return the cached tensor for ``key``, computing it with ``make()`` on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # decoded outside the lock: two threads may decode the same image once each
        size = value.numel() * value.element_size()
        with self._lock:
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = value
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.numel() * old.element_size()
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def resolve_image_path(root: Path, file_path: str, *, what: str, allow_outside: bool = False) -> Path:
    """The image file ``root/file_path``, adding an image suffix when the path has none (Blender writes
    ``./train/r_0`` for ``train/r_0.png``); it must resolve inside ``root`` (see :func:`resolve_inside`)."""
    name = str(file_path)
    path = Path(root) / name  # an absolute file_path stays absolute
    if not path.is_file() and path.suffix.lower() not in {s.lower() for s in IMAGE_SUFFIXES}:
        suffixes = (".png", ".jpg", ".jpeg", ".JPG", ".PNG")
        name += next((s for s in suffixes if path.with_name(path.name + s).is_file()), ".png")
    return resolve_inside(root, name, what=what, allow_outside=allow_outside)
