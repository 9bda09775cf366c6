"""Figures of a bench report as PNG bytes: the PSNR-vs-time plot and the grid of test views.

The grid shows the same test views for every method: the ground truth, each method's ``recon eval
--save-renders`` image, and (second row) depth and normals rendered through the Scene API from the run's newest
checkpoint when the scene can render them (``Scene.capabilities``).
"""

import io
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GRID_VIEWS", "gt_views", "method_views", "png_bytes", "psnr_plot", "shared_views"]

GRID_VIEWS = 3
"""Test views shown in the grid (evenly spread over the saved renders)."""


def png_bytes(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` float in [0, 1] or uint8 -> PNG bytes."""
    import imageio.v3 as iio

    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return iio.imwrite("<bytes>", image, extension=".png")


def psnr_plot(rows: list[dict[str, Any]]) -> bytes | None:
    """Test PSNR (periodic evaluations) against training seconds, one line per method; None without data."""
    curves = [(r["method"], r.get("psnr_curve") or []) for r in rows]
    curves = [(name, c) for name, c in curves if c]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    for name, curve in curves:
        ax.plot([p["train_seconds"] for p in curve], [p["psnr"] for p in curve], marker="o", label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test PSNR (dB, periodic evaluation subset)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _render_dir(run_dir: Path) -> Path:
    return run_dir / "renders" / "eval_test"


def shared_views(run_dirs: list[Path]) -> list[int]:
    """Test indices whose render every run saved, ``GRID_VIEWS`` of them evenly spread."""
    sets = [{int(p.stem.split("_")[1]) for p in _render_dir(d).glob("test_*.png")} for d in run_dirs]
    common = sorted(set.intersection(*sets)) if sets else []
    if len(common) <= GRID_VIEWS:
        return common
    picks = np.linspace(0, len(common) - 1, GRID_VIEWS).round().astype(int)
    return [common[i] for i in picks]


def gt_views(dataset, indices: list[int]) -> list[bytes]:
    """The ground-truth test images (composited over the dataset background) as PNG bytes."""
    return [png_bytes(dataset.image("test", i).numpy()) for i in indices]


def method_views(run_dir: Path, indices: list[int], *, with_gt: bool = False) -> dict[str, list[bytes]]:
    """``{"rgb": [...], "depth": [...], "normals": [...]}`` PNG bytes of one run (depth/normals when rendered),
    plus ``"ground truth"`` with ``with_gt``; at the run's own training resolution."""
    from recon.train.run_io import load_run_dataset, open_run_config

    run, method, cfg = open_run_config(run_dir)
    dataset = load_run_dataset(cfg)
    out: dict[str, list[bytes]] = {"rgb": [(_render_dir(run_dir) / f"test_{i:04d}.png").read_bytes()
                                           for i in indices]}  # fmt: skip
    out |= _geometry_views(run, method, cfg, dataset, indices)
    if with_gt:
        out["ground truth"] = gt_views(dataset, indices)
    return out


def _geometry_views(run, method, cfg, dataset, indices: list[int]) -> dict[str, list[bytes]]:
    import torch

    from recon.scenes.base import RenderOptions
    from recon.train.trainer import load_scene

    caps = method.scene_cls.capabilities
    if not (caps.depth or caps.normals):
        return {}
    scene, _ = load_scene(method, cfg, run, device="cpu")
    options = RenderOptions(background=dataset.background, backend=cfg.backend, depth=caps.depth,
                            normals=caps.normals)  # fmt: skip
    depth, normals = [], []
    with torch.no_grad():
        for i in indices:
            out = scene.render(dataset.camera("test", i), options)
            alpha = out.alpha[0].numpy() if out.alpha is not None else None
            if caps.depth and out.depth is not None:
                depth.append(png_bytes(_colour_depth(out.depth[0].numpy(), alpha)))
            if caps.normals and out.normals is not None:
                normals.append(png_bytes(_colour_normals(out.normals[0].numpy())))
    return {k: v for k, v in (("depth", depth), ("normals", normals)) if len(v) == len(indices)}


def _colour_depth(depth: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Camera-z depth -> viridis, range from the 2nd-98th percentile of covered pixels; white where empty."""
    from matplotlib import colormaps

    d = depth.reshape(depth.shape[0], depth.shape[1])
    mask = np.ones_like(d, dtype=bool) if alpha is None else alpha.reshape(d.shape) > 0.5
    valid = d[mask & np.isfinite(d)]
    lo, hi = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
    t = np.clip((d - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    rgb = colormaps["viridis"](t)[..., :3]
    rgb[~mask] = 1.0
    return rgb


def _colour_normals(normals: np.ndarray) -> np.ndarray:
    """World normals (alpha-weighted) -> RGB ``0.5 n + 0.5`` of the unit normal; white where empty."""
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    unit = normals / np.maximum(norm, 1e-8)
    rgb = 0.5 * unit + 0.5
    rgb[norm[..., 0] < 1e-3] = 1.0
    return rgb
