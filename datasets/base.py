"""What every loader returns: :class:`Frame` (one posed image as stored) and :class:`SceneDataset`.

A loader converts its format once, at load time, into ``Frame`` records in OpenCV conventions and the dataset's
ORIGINAL world frame, at the STORED image resolution, with the lens model of the files. ``SceneDataset`` then
hands out everything in the NORMALISED world frame (``x_norm = normalization @ x_orig``), at the LOADED
resolution (after ``downscale``), as pinhole cameras (images are undistorted up front), decoding images lazily.
"""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.camera import Camera, CameraModel
from recon.core.transforms import apply_T, invert_T, rigidity_error, similarity_scale, transform_pose
from recon.datasets.errors import DatasetError
from recon.datasets.images import (
    DEFAULT_CACHE_BYTES,
    ImageHeader,
    LRUCache,
    decode_depth,
    decode_image,
    image_header,
    resize_image,
)
from recon.datasets.paths import copy_folder
from recon.datasets.undistort import Undistorter, pinhole_K

__all__ = [
    "DatasetError",
    "Frame",
    "LoadOptions",
    "SceneDataset",
    "box_from_points",
    "camera_centers",
    "check_mask",
    "check_pose",
    "read_json",
    "every_nth_dataset",
    "every_nth_split",
    "fit_intrinsics",
    "image_frame",
    "sphere_normalization",
]

POSE_RIGID_TOL = 1e-3  # max deviation from a rotation accepted in a pose read from a file (float32 JSON/txt)
HOLDOUT_EVERY = 8  # LLFF/COLMAP/DTU convention: images 0, 8, 16, ... (sorted by name) form the test split
ASPECT_TOL = 0.01  # relative aspect-ratio mismatch below which an image of another size is a rescaled copy
SPLIT_ORDER = ("train", "val", "test")
MIN_CAMERA_SPREAD = 1e-9  # camera centres closer than this to their mean give no scale to normalise by
MIN_IMAGE_SIDE = 11  # smallest loaded image side: the 11x11 Gaussian window of SSIM (Wang et al. 2004)
FACTOR_TOL = 1e-6  # relative slack when comparing a requested downscale with the factor of a stored copy
MAX_QUANTILE_POINTS = 1_000_000  # points used for the robust scene box (torch.quantile input limit is 2^24)
MIN_BOX_EXTENT = 1e-6  # floor of a scene box's extent, so a degenerate point set still gets a non-empty box


@dataclass(frozen=True, eq=False)
class Frame:
    """One posed image as stored on disk.

    Attributes:
        name: image path relative to the dataset root (``train/r_0.png``).
        image_path: the stored image file (full resolution, or the finest ``images_N`` copy when only copies
            exist).
        width: stored image width in pixels.
        height: stored image height in pixels.
        K: (3, 3) float64 intrinsics at ``width`` x ``height`` (pixel centres at +0.5).
        T_cam_world: (4, 4) float64 world -> camera, OpenCV axes, in the dataset's ORIGINAL world frame.
        camera_model: lens model of the stored image (``pinhole``, ``opencv`` or ``opencv_fisheye``).
        distortion: (D,) float64 lens parameters of ``camera_model`` (None for pinhole).
        has_alpha: the image file has an alpha channel.
        mask_path: a separate mask file (white = foreground) at the stored resolution, or None.
        depth_path: a depth map (camera z; ``.npy`` or 16-bit PNG), or None.
        depth_scale: factor from stored depth values to units of the original world frame.
        normal_path: a normal map (``.npy``, world frame), or None.
        load_path: the file decoded at the loaded resolution (an ``images_N`` copy), or None for ``image_path``.
        load_width: loaded width (0 = stored width).
        load_height: loaded height (0 = stored height).
        file_factor: how many times smaller the stored file is than the size the poses/cameras state (8 for an
            LLFF ``images_8/`` copy when ``images/`` is absent; 1 otherwise). ``downscale`` counts from that size.
        points3d_ids: (K,) int64 indices into the dataset's ``points3d`` of the SfM points this image observes
            (a COLMAP model's tracks), or None when the dataset has no tracks.
    """

    name: str
    image_path: Path
    width: int
    height: int
    K: Float[Tensor, "3 3"]
    T_cam_world: Float[Tensor, "4 4"]
    camera_model: CameraModel = "pinhole"
    distortion: Float[Tensor, " D"] | None = None
    has_alpha: bool = False
    mask_path: Path | None = None
    depth_path: Path | None = None
    depth_scale: float = 1.0
    normal_path: Path | None = None
    load_path: Path | None = None
    load_width: int = 0
    load_height: int = 0
    file_factor: float = 1.0
    points3d_ids: Int[Tensor, " K"] | None = None

    def loaded_K(self) -> Float[Tensor, "3 3"]:
        """Intrinsics at the loaded resolution: x scales by ``load_width / width``, y by ``load_height / height``."""
        w, h = self.load_width or self.width, self.load_height or self.height
        K = self.K.clone()
        K[0, :] *= w / self.width
        K[1, :] *= h / self.height
        K[2, :] = self.K[2, :]
        return K

    def pinhole_K(self) -> Float[Tensor, "3 3"]:
        """Intrinsics of the undistorted image at the loaded resolution (``recon.datasets.undistort.pinhole_K``:
        ``loaded_K`` zoomed just enough that no pixel of the undistorted image is blank; ``loaded_K`` for pinhole
        frames). Cameras, masks, depth and normals all use it."""
        w, h = self.load_width or self.width, self.load_height or self.height
        return pinhole_K(self.loaded_K(), self.camera_model, self.distortion, w, h)


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`recon.datasets.load_dataset` hands every loader (validated there).

    Attributes:
        downscale: image downscale factor from the size the poses/cameras state; None = 1, or the factor of the
            stored copies when a folder holds only downscaled copies (``images_8/`` without ``images/``).
        background: (3,) RGB that RGBA images are composited over, or None for the format's default.
        test_every: every ``test_every``-th image (sorted by name: 0, N, 2N, ...) is a test view where the format
            has no explicit split.
        allow_outside_root: accept dataset files that resolve outside the dataset folder.
    """

    downscale: float | None = None
    background: Tensor | None = None
    test_every: int = HOLDOUT_EVERY
    allow_outside_root: bool = False


def read_json(path: Path) -> dict:
    """Parse a JSON object file; a missing, truncated or malformed file raises DatasetError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"file not found: {path} (expected a JSON file there)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: expected a UTF-8 JSON file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"invalid or truncated JSON in {path} at line {exc.lineno}, column {exc.colno}: {exc.msg}; expected a "
            "complete JSON object"
        ) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a JSON {type(data).__name__}: expected a JSON object")
    return data


def check_pose(T: Tensor, source: str) -> Tensor:
    """Validate a pose read from a file: finite and rigid (orthonormal rotation, det +1, last row 0 0 0 1).

    Returns:
        The pose in float64 with its rotation snapped to the nearest rotation matrix (a change below
        ``POSE_RIGID_TOL``).

    Raises:
        DatasetError: naming ``source`` (file and entry) and what was expected.
    """
    if not bool(torch.isfinite(T).all()):
        raise DatasetError(
            f"{source}: the pose contains NaN or infinite values; expected a finite rigid 4x4 pose"
        )
    err = float(rigidity_error(T.to(torch.float64)))
    if err > POSE_RIGID_TOL:
        raise DatasetError(
            f"{source}: the pose is not rigid (rotation deviates from orthonormal/det 1 or last row from 0 0 0 1 "
            f"by {err:.3g}); expected a rigid camera pose (tolerance {POSE_RIGID_TOL})"
        )
    # Snap the rotation onto SO(3) (nearest rotation, via SVD): files store ~7-digit floats, and downstream code
    # inverts poses in closed form (R^T), which is exact only for an orthonormal R.
    T = T.to(torch.float64).clone()
    U, _, Vh = torch.linalg.svd(T[:3, :3])
    T[:3, :3] = U @ Vh
    T[3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    return T


def fit_intrinsics(K: Tensor, meta_size: tuple[int, int], file_size: tuple[int, int], source: Path) -> Tensor:
    """Rescale ``K`` given for ``meta_size`` (w, h) to the image file's ``file_size``; a differing aspect ratio is
    an error (the file is not a rescaled copy of the calibrated image)."""
    (mw, mh), (fw, fh) = meta_size, file_size
    if (mw, mh) == (fw, fh):
        return K
    if abs((fw / mw) / (fh / mh) - 1) > ASPECT_TOL:
        raise DatasetError(
            f"image {source} is {fw}x{fh}: expected {mw}x{mh} (the calibrated size) or a rescaled copy"
        )
    K = K.clone()
    K[0, :] *= fw / mw
    K[1, :] *= fh / mh
    K[2, :] = torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype)
    return K


def check_mask(mask_path: Path, width: int, height: int, image_path: Path) -> None:
    """Validate a mask file at load time: it exists, is an image, and has the size of its image."""
    header = image_header(mask_path, what="mask")
    if (header.width, header.height) != (width, height):
        raise DatasetError(
            f"mask {mask_path} is {header.width}x{header.height}: expected {width}x{height} (the size of image {image_path})"
        )


def image_frame(
    name: str,
    path: Path,
    header: ImageHeader,
    K: Tensor,
    T_cam_world: Tensor,
    *,
    camera_model: CameraModel = "pinhole",
    distortion: Tensor | None = None,
    mask_path: Path | None = None,
) -> Frame:
    """The ``Frame`` of the image file ``path``, with the stored size and alpha flag read from its ``header``."""
    return Frame(
        name=name,
        image_path=path,
        width=header.width,
        height=header.height,
        K=K,
        T_cam_world=T_cam_world,
        camera_model=camera_model,
        distortion=distortion,
        has_alpha=header.has_alpha,
        mask_path=mask_path,
    )


def camera_centers(frames: list[Frame]) -> Tensor:
    """(N, 3) camera centres of ``frames`` in the original world frame."""
    return torch.stack([invert_T(f.T_cam_world)[:3, 3] for f in frames])


def sphere_normalization(centers: Tensor) -> Tensor:
    """Translate + uniformly scale (no rotation) so that camera centres fit in a sphere of radius 1 around the
    origin: ``x_norm = (x - mean) / max_i |c_i - mean|``. One camera (or coincident ones) only recentres."""
    centers = centers.to(torch.float64)
    center = centers.mean(dim=0)
    radius = float((centers - center).norm(dim=-1).max()) if len(centers) else 0.0
    scale = 1.0 / radius if radius > MIN_CAMERA_SPREAD else 1.0
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= scale
    S[:3, 3] = -scale * center
    return S


def box_from_points(points: Tensor, *, percentile: float = 0.01, margin: float = 0.1) -> Tensor:
    """A robust (2, 3) box: per-axis ``percentile`` / ``1 - percentile`` quantiles, grown by ``margin`` of the
    extent on each side (sparse SfM points have outliers far from the scene)."""
    pts = points.to(torch.float64)
    if len(pts) > MAX_QUANTILE_POINTS:  # torch.quantile caps its input size; a strided subset is plenty
        pts = pts[:: len(pts) // MAX_QUANTILE_POINTS + 1]
    lo = torch.quantile(pts, percentile, dim=0) if len(pts) > 1 else pts.min(dim=0).values
    hi = torch.quantile(pts, 1 - percentile, dim=0) if len(pts) > 1 else pts.max(dim=0).values
    pad = margin * (hi - lo).max().clamp_min(MIN_BOX_EXTENT)
    return torch.stack([lo - pad, hi + pad]).to(torch.float32)


def check_intrinsics(K: Tensor, source: str) -> None:
    """Reject intrinsics with NaN/inf entries or a non-positive focal length, naming ``source``."""
    if not bool(torch.isfinite(K).all()):
        raise DatasetError(f"{source}: the intrinsics contain NaN or infinite values: expected a finite K")
    if not (float(K[0, 0]) > 0 and float(K[1, 1]) > 0):
        raise DatasetError(
            f"{source}: focal lengths fx={float(K[0, 0]):g}, fy={float(K[1, 1]):g}: expected positive values"
        )


def every_nth_split(frames: list[Frame], n: int = HOLDOUT_EVERY) -> dict[str, list[Frame]]:
    """Sort by name and hold out every ``n``-th image (0, n, 2n, ...) for test."""
    ordered = sorted(frames, key=lambda f: f.name)
    return {
        "train": [f for i, f in enumerate(ordered) if i % n != 0],
        "test": [f for i, f in enumerate(ordered) if i % n == 0],
    }


def every_nth_rule(n: int = HOLDOUT_EVERY) -> str:
    """The recorded split rule of :func:`every_nth_split`."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} image held out for test (images sorted by name, indices 0, {n}, {2 * n}, ...)"


def every_nth_dataset(
    format: str,
    root: Path,
    frames: list[Frame],
    *,
    normalization: Tensor,
    scene_box: Tensor,
    background: Tensor | None,
    downscale: float | None,
    test_every: int = HOLDOUT_EVERY,
    points3d: Tensor | None = None,
    points3d_rgb: Tensor | None = None,
) -> "SceneDataset":
    """A dataset of ``frames`` split by ``every_nth_split`` (LLFF, COLMAP, DTU); black unless ``background``."""
    return SceneDataset(
        format=format,
        root=root,
        splits=every_nth_split(frames, test_every),
        split_rule=every_nth_rule(test_every),
        normalization=normalization,
        scene_box=scene_box,
        background=background if background is not None else torch.zeros(3),
        points3d=points3d,
        points3d_rgb=points3d_rgb,
        downscale=downscale,
    )


class SceneDataset:
    """A loaded scene: posed frames per split, lazily decoded images, and the normalising similarity.

    Attributes:
        format: the detected format name.
        root: the dataset folder.
        splits: frames per split (``train``, ``test``, maybe ``val``); see :class:`Frame`.
        split_rule: how the splits were chosen (``explicit files`` / ``every 8th image held out ...``).
        normalization: (4, 4) float64 similarity mapping ORIGINAL world -> NORMALISED world.
        scene_box: (2, 3) axis-aligned box of the scene in the normalised frame.
        background: (3,) colour RGBA images are composited over.
        white_background: whether ``background`` is white.
        points3d: (P, 3) sparse points in the normalised frame, or None.
        points3d_rgb: (P, 3) their colours in [0, 1], or None.
        gt_mesh_path: ground-truth mesh file (original world frame), or None.
        downscale: the image downscale factor the dataset was loaded with, counted from the size the
            poses/cameras state (an ``images_8``-only LLFF folder loads with 8 unless told otherwise).
    """

    def __init__(
        self,
        *,
        format: str,
        root: Path,
        splits: dict[str, list[Frame]],
        split_rule: str,
        normalization: Float[Tensor, "4 4"] | None = None,
        scene_box: Float[Tensor, "2 3"],
        background: Float[Tensor, "3"],
        points3d: Float[Tensor, "P 3"] | None = None,
        points3d_rgb: Float[Tensor, "P 3"] | None = None,
        gt_mesh_path: Path | None = None,
        downscale: float | None = 1.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        stored = [f for fs in splits.values() for f in fs]
        if downscale is None:  # as stored: 1, or the factor of the stored copies when only copies exist
            downscale = max((f.file_factor for f in stored), default=1.0)
        if not (math.isfinite(downscale) and downscale > 0):
            raise DatasetError(f"downscale must be a positive number, got {downscale}")
        for f in stored:
            check_intrinsics(f.K, f"image {f.image_path}")
        self.format = format
        self.root = Path(root)
        self.split_rule = split_rule
        self.normalization = (
            torch.eye(4, dtype=torch.float64) if normalization is None else normalization.to(torch.float64)
        )
        self.scene_box = scene_box.to(torch.float32)
        self.background = background.to(torch.float32)
        self.points3d = None if points3d is None else points3d.to(torch.float32)
        self.points3d_rgb = None if points3d_rgb is None else points3d_rgb.to(torch.float32)
        self.gt_mesh_path = gt_mesh_path
        self.downscale = float(downscale)
        ordered = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
        self.splits = {s: [self._with_load_size(f) for f in splits[s]] for s in ordered}
        for split, frames in self.splits.items():
            _check_sizes(split, frames, self.downscale)
        self._cache = LRUCache(cache_bytes)
        self._undistort = Undistorter()

    # --- summary flags ----------------------------------------------------------------------------------------
    @property
    def white_background(self) -> bool:
        return bool((self.background == 1.0).all())

    @property
    def has_masks(self) -> bool:
        return any(f.has_alpha or f.mask_path is not None for fs in self.splits.values() for f in fs)

    @property
    def has_depth(self) -> bool:
        return any(f.depth_path is not None for fs in self.splits.values() for f in fs)

    @property
    def scale(self) -> float:
        """Uniform scale of ``normalization`` (normalised units per original unit)."""
        return float(similarity_scale(self.normalization))

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(fs)}" for s, fs in self.splits.items())
        return f"SceneDataset(format={self.format!r}, root={str(self.root)!r}, {counts})"

    # --- cameras ----------------------------------------------------------------------------------------------
    def frame(self, split: str, i: int) -> Frame:
        """The stored frame ``i`` of ``split`` (original world frame, stored resolution)."""
        if split not in self.splits:
            raise DatasetError(
                f"split {split!r} is not in dataset {self.root}: expected one of {list(self.splits)}"
            )
        frames = self.splits[split]
        if not -len(frames) <= i < len(frames):
            raise IndexError(f"index {i} out of range for split {split!r} with {len(frames)} frames")
        return frames[i]

    def camera(self, split: str, i: int) -> Camera:
        """Camera ``i`` of ``split``: C=1, float32, normalised frame, pinhole, at the loaded resolution."""
        f = self.frame(split, i)
        T = transform_pose(f.T_cam_world, self.normalization)
        return Camera(
            T_cam_world=T[None].to(torch.float32),
            K=f.pinhole_K()[None].to(torch.float32),
            width=f.load_width,
            height=f.load_height,
        )

    def cameras(self, split: str) -> Camera:
        """All cameras of ``split`` stacked (C, ...); raises DatasetError when image sizes differ."""
        frames = self.splits.get(split)
        if not frames:
            raise DatasetError(
                f"split {split!r} of dataset {self.root} has no frames: expected one of {list(self.splits)}"
            )
        sizes = {(f.load_width, f.load_height) for f in frames}
        if len(sizes) > 1:
            raise DatasetError(
                f"split {split!r} of {self.root} mixes image sizes {sorted(sizes)}: expected one size to stack cameras "
                "(use camera(split, i) per image)"
            )
        return Camera.cat([self.camera(split, i) for i in range(len(frames))])

    # --- pixels -----------------------------------------------------------------------------------------------
    def image(self, split: str, i: int) -> Float[Tensor, "H W 3"]:
        """RGB in [0, 1] at the loaded resolution, undistorted, composited over ``background`` when RGBA."""
        return self._rgba(split, i)[
            ..., :3
        ].clone()  # a copy: callers may edit it in place, the cache must not change

    def alpha(self, split: str, i: int) -> Float[Tensor, "H W 1"] | None:
        """Alpha channel (or mask file, 1 = foreground) at the loaded resolution, or None when there is neither."""
        f = self.frame(split, i)
        if not f.has_alpha and f.mask_path is None:
            return None
        return self._rgba(split, i)[..., 3:].clone()

    def depth(self, split: str, i: int) -> Float[Tensor, "H W 1"] | None:
        """Camera z in units of the normalised frame (0 = unknown) at the loaded resolution, or None."""
        f = self.frame(split, i)
        if f.depth_path is None:
            return None
        return self._cache.get(("depth", split, i), lambda: self._load_depth(f)).clone()

    @property
    def has_sfm_depth(self) -> bool:
        """Whether frames list the SfM points they observe (``sfm_depth`` gives targets)."""
        return self.points3d is not None and any(
            f.points3d_ids is not None and len(f.points3d_ids) > 0 for fs in self.splits.values() for f in fs
        )

    def sfm_depth(self, split: str, i: int) -> tuple[Int[Tensor, "K 2"], Float[Tensor, " K"]] | None:
        """Sparse depth targets of image ``i`` from the SfM points it observes (the COLMAP tracks), or None.

        Returns ``(pixels, depth)``: ``pixels`` (K, 2) int64 ``(column, row)`` at the loaded resolution, the pixel
        each observed point projects into (points behind the camera or outside the image are dropped), and
        ``depth`` (K,) float32, the point's camera-frame z in normalised units (the convention of ``depth`` and of
        ``RenderOutput.depth``: the ray through the pixel's centre meets the point's depth plane there).
        """
        f = self.frame(split, i)
        if self.points3d is None or f.points3d_ids is None or len(f.points3d_ids) == 0:
            return None
        cam = self.camera(split, i)
        T, K = cam.T_cam_world[0].double(), cam.K[0].double()
        x = self.points3d[f.points3d_ids].double() @ T[:3, :3].T + T[:3, 3]
        z = x[:, 2]
        pix = torch.floor((x @ K.T)[:, :2] / z.clamp_min(1e-12)[:, None]).long()
        inside = (pix[:, 0] >= 0) & (pix[:, 0] < cam.width) & (pix[:, 1] >= 0) & (pix[:, 1] < cam.height)
        keep = (z > 1e-6) & inside
        return pix[keep], z[keep].float()

    def normals(self, split: str, i: int) -> Float[Tensor, "H W 3"] | None:
        """World-space unit normals in the normalised frame (0 = unknown) at the loaded resolution, or None."""
        f = self.frame(split, i)
        if f.normal_path is None:
            return None
        return self._cache.get(("normals", split, i), lambda: self._load_normals(f)).clone()

    def _rgba(self, split: str, i: int) -> Tensor:
        f = self.frame(split, i)
        return self._cache.get(("rgba", split, i), lambda: self._load_rgba(f))

    def _load_rgba(self, f: Frame) -> Tensor:
        img = decode_image(f.load_path or f.image_path)
        if img.shape[-1] == 1:
            img = img.expand(-1, -1, 3)
        elif img.shape[-1] == 2:
            img = torch.cat([img[..., :1].expand(-1, -1, 3), img[..., 1:]], dim=-1)
        # Resample in premultiplied form (rgb * a, a): averaging and interpolating straight RGBA would bleed the
        # colour of transparent pixels into edges. Then composite: out = rgb * a + bg * (1 - a).
        if img.shape[-1] == 4:
            img = torch.cat([img[..., :3] * img[..., 3:], img[..., 3:]], dim=-1)
        img = resize_image(img, f.load_width, f.load_height)
        img = self._undistort(img, f.loaded_K(), f.camera_model, f.distortion, K_out=f.pinhole_K())
        rgb = img[..., :3]
        alpha = None
        if img.shape[-1] == 4:
            alpha = img[..., 3:]
            rgb = (rgb + self.background * (1.0 - alpha)).clamp_(0.0, 1.0)
        if f.mask_path is not None:
            mask = self._load_mask(f)
            alpha = mask if alpha is None else alpha * mask
        if alpha is None:
            alpha = torch.ones_like(rgb[..., :1])
        return torch.cat([rgb, alpha], dim=-1).contiguous()

    def _load_mask(self, f: Frame) -> Tensor:
        assert f.mask_path is not None
        mask = decode_image(f.mask_path, what="mask")
        if mask.shape[:2] != (f.height, f.width):
            raise DatasetError(
                f"mask {f.mask_path} is {mask.shape[1]}x{mask.shape[0]}: expected {f.width}x{f.height} "
                f"(the size of image {f.image_path})"
            )
        # The first channel carries the mask in single- and three-channel mask files alike; an alpha channel, when
        # present, marks transparent (= background) pixels too.
        m = mask[..., :1]
        if mask.shape[-1] == 4:
            m = m * mask[..., 3:4]
        m = resize_image(m, f.load_width, f.load_height)
        return self._undistort(m, f.loaded_K(), f.camera_model, f.distortion, K_out=f.pinhole_K())

    def _load_depth(self, f: Frame) -> Tensor:
        assert f.depth_path is not None
        raw = decode_depth(f.depth_path)
        if raw.shape[:2] != (f.height, f.width):
            raise DatasetError(
                f"depth map {f.depth_path} is {raw.shape[1]}x{raw.shape[0]}: expected {f.width}x{f.height} "
                f"(the size of image {f.image_path})"
            )
        depth = raw * (f.depth_scale * self.scale)
        depth = resize_image(depth, f.load_width, f.load_height, nearest=True)
        return self._undistort(
            depth, f.loaded_K(), f.camera_model, f.distortion, nearest=True, K_out=f.pinhole_K()
        )

    def _load_normals(self, f: Frame) -> Tensor:
        assert f.normal_path is not None
        try:
            arr = np.load(f.normal_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"corrupt or unreadable normal map {f.normal_path}: expected a float .npy ({exc})"
            ) from exc
        if arr.shape != (f.height, f.width, 3):
            raise DatasetError(
                f"normal map {f.normal_path} has shape {arr.shape}: expected ({f.height}, {f.width}, 3) "
                f"(the size of image {f.image_path})"
            )
        normals = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        R = (self.normalization[:3, :3] / self.scale).to(
            torch.float32
        )  # rotation part only: normals are directions
        normals = normals @ R.T
        normals = resize_image(normals, f.load_width, f.load_height, nearest=True)
        return self._undistort(
            normals, f.loaded_K(), f.camera_model, f.distortion, nearest=True, K_out=f.pinhole_K()
        )

    def _with_load_size(self, f: Frame) -> Frame:
        """The frame with its loaded file and size: the stored file, a ``<folder>_N`` copy (N == downscale) or
        the stored file resized on the fly. ``downscale`` counts from the size the poses state, so a stored copy
        that is already ``file_factor`` times smaller is resized by ``downscale / file_factor`` only."""
        relative = self.downscale / f.file_factor
        if relative < 1.0 - FACTOR_TOL:
            raise DatasetError(
                f"image {f.image_path} is stored {f.file_factor:g}x smaller than the size its camera states and "
                f"no full-size copy exists: expected downscale >= {f.file_factor:g}, got {self.downscale:g} (leave "
                "downscale unset to load the stored copies as they are)"
            )
        if abs(relative - 1.0) <= FACTOR_TOL:
            return replace(f, load_path=None, load_width=f.width, load_height=f.height)
        n = round(self.downscale)
        small = copy_folder(f.image_path.parent, n) / f.image_path.name
        if abs(self.downscale - n) <= FACTOR_TOL * n and n > 1 and small.is_file():
            header = image_header(small)
            if abs((header.width / f.width) / (header.height / f.height) - 1) <= ASPECT_TOL:
                return replace(f, load_path=small, load_width=header.width, load_height=header.height)
        w = max(1, round(f.width / relative))
        h = max(1, round(f.height / relative))
        return replace(f, load_path=None, load_width=w, load_height=h)

    # --- geometry in the normalised frame ---------------------------------------------------------------------
    def to_normalized(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Map points from the original world frame to the normalised frame."""
        return apply_T(self.normalization.to(points.dtype), points)

    def to_original(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """Map points from the normalised world frame back to the original frame."""
        return apply_T(torch.linalg.inv(self.normalization).to(points.dtype), points)


def _check_sizes(split: str, frames: list[Frame], downscale: float) -> None:
    """One stored image size per split, and loaded images large enough for SSIM; else a DatasetError naming the
    file and the sizes."""
    if not frames:
        return
    first = frames[0]
    for f in frames[1:]:
        if (f.width, f.height) != (first.width, first.height):
            raise DatasetError(
                f"split {split!r} mixes image sizes: {f.image_path} is {f.width}x{f.height} but {first.image_path} "
                f"is {first.width}x{first.height}; expected one image size per split"
            )
    for f in frames:
        if min(f.load_width, f.load_height) < MIN_IMAGE_SIDE:
            raise DatasetError(
                f"image {f.load_path or f.image_path} loads at {f.load_width}x{f.load_height} (downscale "
                f"{downscale:g}): expected at least {MIN_IMAGE_SIDE} px on each side (the SSIM window)"
            )
