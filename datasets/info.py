"""``recon data info``: what a run would load, as the JSON layout of CLI.md and as readable text.

Per camera, ``K`` is at the STORED image resolution (before any downscale) and ``T_cam_world`` is in the dataset's
ORIGINAL world frame (OpenCV axes), with the lens model and parameters of the stored images: exactly what the
files say, converted to recon's conventions. Beyond CLI.md's keys the dict adds ``root``, ``split_rule``,
``normalization`` (4x4, original -> normalised world), ``scene_box`` (normalised frame), ``background`` and
``downscale`` (the factor the dataset was loaded with; cameras above are at the stored resolution regardless).

:func:`verify_files` decodes every file once (what ``recon data info`` does before printing), so a truncated
image is reported by name before a run starts.
"""

from pathlib import Path

from recon.datasets.base import Frame, SceneDataset
from recon.datasets.errors import DatasetError
from recon.datasets.images import decode_depth, decode_image


def _matrix(t) -> list[list[float]]:
    return [[float(v) for v in row] for row in t.tolist()]


def frame_info(frame: Frame) -> dict:
    """One camera entry of ``recon data info --json``."""
    return {
        "name": frame.name,
        "width": int(frame.width),
        "height": int(frame.height),
        "K": _matrix(frame.K),
        "T_cam_world": _matrix(frame.T_cam_world),
        "camera_model": frame.camera_model,
        "distortion": [] if frame.distortion is None else [float(v) for v in frame.distortion.tolist()],
    }


def dataset_info(ds_or_path: SceneDataset | str | Path) -> dict:
    """The ``recon data info --json`` dict of a dataset (or of the folder, loaded at full resolution).

    Layout: ``{"format", "splits": {split: [{"name", "width", "height", "K", "T_cam_world", "camera_model",
    "distortion"}, ...]}, "has_masks", "has_depth", "points3d": count | None, "root", "split_rule",
    "normalization", "scene_box", "background", "downscale", "has_alpha"}``; all values are plain JSON types.
    ``background`` is the colour RGBA images are composited over; ``has_alpha`` says whether any image has alpha.
    """
    if isinstance(ds_or_path, SceneDataset):
        ds = ds_or_path
    else:
        from recon.datasets.detect import load_dataset

        ds = load_dataset(ds_or_path)
    return {
        "format": ds.format,
        "splits": {split: [frame_info(f) for f in frames] for split, frames in ds.splits.items()},
        "has_masks": bool(ds.has_masks),
        "has_depth": bool(ds.has_depth),
        "points3d": None if ds.points3d is None else int(ds.points3d.shape[0]),
        "root": str(ds.root),
        "split_rule": ds.split_rule,
        "normalization": _matrix(ds.normalization),
        "scene_box": _matrix(ds.scene_box),
        "background": [float(v) for v in ds.background.tolist()],
        "downscale": ds.downscale,
        "has_alpha": any(f.has_alpha for frames in ds.splits.values() for f in frames),
    }


def _sizes(cams: list[dict]) -> str:
    sizes = sorted({(c["width"], c["height"]) for c in cams})
    return ", ".join(f"{w}x{h}" for w, h in sizes) if sizes else "-"


def format_info(info: dict) -> str:
    """Human-readable summary of a :func:`dataset_info` dict (``recon data info PATH`` without ``--json``)."""
    lines = [f"format:        {info['format']}"]
    if "root" in info:
        lines.append(f"folder:        {info['root']}")
    lines.append("splits:        " + ", ".join(f"{s} {len(c)} views" for s, c in info["splits"].items()))
    if "split_rule" in info:
        lines.append(f"split rule:    {info['split_rule']}")
    all_cams = [c for cams in info["splits"].values() for c in cams]
    lines.append(f"image size:    {_sizes(all_cams)} (stored)")
    if info.get("downscale", 1.0) != 1.0:
        lines.append(
            f"downscale:     {info['downscale']:g} (cameras and images are handed out at the reduced size)"
        )
    models = sorted({c["camera_model"] for c in all_cams})
    lines.append(f"camera model:  {', '.join(models) if models else '-'}")
    lines.append(f"masks:         {'yes' if info['has_masks'] else 'no'}")
    if "background" in info:
        rgb = ", ".join(f"{v:g}" for v in info["background"])
        note = " (RGBA images composited over it)" if info.get("has_alpha") else ""
        lines.append(f"background:    ({rgb}){note}")
    lines.append(f"depth:         {'yes' if info['has_depth'] else 'no'}")
    pts = info.get("points3d")
    lines.append(f"points3d:      {pts if pts is not None else 'none'}")
    if "normalization" in info:
        S = info["normalization"]
        scale = (
            abs(
                S[0][0] * (S[1][1] * S[2][2] - S[1][2] * S[2][1])
                - S[0][1] * (S[1][0] * S[2][2] - S[1][2] * S[2][0])
                + S[0][2] * (S[1][0] * S[2][1] - S[1][1] * S[2][0])
            )
        ) ** (1.0 / 3.0)
        identity = all(abs(S[i][j] - (1.0 if i == j else 0.0)) < 1e-12 for i in range(4) for j in range(4))
        if identity:
            lines.append("normalization: none (original world frame)")
        else:
            t = ", ".join(f"{v:.4g}" for v in (S[0][3], S[1][3], S[2][3]))
            lines.append(f"normalization: x_norm = S x_orig, scale {scale:.6g}, translation ({t})")
    if "scene_box" in info:
        lo, hi = info["scene_box"]
        lines.append(
            "scene box:     ["
            + ", ".join(f"{v:.3g}" for v in lo)
            + "] .. ["
            + ", ".join(f"{v:.3g}" for v in hi)
            + "]"
        )
    return "\n".join(lines)


MAX_NAMED_FAILURES = 5  # bad files named in the one-line error of verify_files (the count covers the rest)


def dataset_files(ds: SceneDataset) -> list[tuple[str, Path]]:
    """Every distinct (kind, file) a dataset reads: the loaded image files, masks and depth maps."""
    files: dict[Path, str] = {}
    for frames in ds.splits.values():
        for f in frames:
            files.setdefault(f.load_path or f.image_path, "image")
            if f.mask_path is not None:
                files.setdefault(f.mask_path, "mask")
            if f.depth_path is not None:
                files.setdefault(f.depth_path, "depth map")
    return [(kind, path) for path, kind in files.items()]


def _verify_one(kind: str, path: Path) -> None:
    """Check one file: PIL's structural ``verify()``, then a full decode (a truncated body fails only there)."""
    from PIL import Image, UnidentifiedImageError

    if kind == "depth map":
        decode_depth(path)
        return
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"corrupt or unreadable {kind} file {path}: expected a PNG or JPEG {kind} ({exc})"
        ) from exc
    decode_image(path, what=kind)


def verify_files(ds: SceneDataset, *, progress: bool = False) -> int:
    """Decode every file of ``ds`` (images, masks, depth maps) once, so corrupt or truncated files surface now,
    not in the middle of a run. Loading checks only headers; this is what ``recon data info`` adds.

    Args:
        ds: a loaded dataset.
        progress: show a progress bar on stderr (rich).

    Returns:
        The number of files checked.

    Raises:
        DatasetError: naming the bad files (the first few) and how many failed.
    """
    files = dataset_files(ds)
    failures: list[str] = []
    with _progress(progress) as bar:
        task = bar.add_task("decoding images", total=len(files))
        for kind, path in files:
            try:
                _verify_one(kind, path)
            except DatasetError as exc:
                failures.append(str(exc))
            bar.advance(task)
    if failures:
        named = "; ".join(failures[:MAX_NAMED_FAILURES])
        more = (
            f" (and {len(failures) - MAX_NAMED_FAILURES} more)" if len(failures) > MAX_NAMED_FAILURES else ""
        )
        raise DatasetError(
            f"{len(failures)} of {len(files)} files of {ds.root} failed to decode: {named}{more}"
        )
    return len(files)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=True)
