"""Evaluation on a held-out split: PSNR, SSIM, LPIPS (when available), geometry when ground truth exists.

The protocol is recorded with every number (CLI.md, ``recon eval``). For Blender data this is the published
NeRF-synthetic protocol: every test view at the loaded resolution over a white background.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recon.core import Camera, Mesh, ReconError, RenderOutput
from recon.core.shapes import Backend
from recon.scenes.base import RenderOptions, Scene

FSCORE_THRESHOLD_FRACTION = 0.01  # F-score threshold as a fraction of the ground-truth bounding-box diagonal
CHAMFER_SAMPLES = (
    10_000  # surface samples per mesh for Chamfer distance / F-score (brute-force NN: seconds on CPU)
)


def _metrics():
    """recon.metrics, or a ReconError naming what is missing."""
    try:
        from recon import metrics
    except ImportError as exc:  # the metrics package is a sibling deliverable
        raise ReconError(f"recon.metrics is not available: {exc}") from exc
    return metrics


def eval_indices(dataset, split: str, max_images: int) -> list[int]:
    """The views of ``split`` to evaluate: all, or ``max_images`` evenly spread ones (ReconError if none)."""
    count = len(dataset.splits.get(split, []))
    if count == 0:
        raise ReconError(f"--split {split!r}: the dataset has no views in that split")
    if 0 < max_images < count:
        # evenly spaced subset so a partial evaluation still covers the whole orbit
        return torch.linspace(0, count - 1, max_images).round().long().unique().tolist()
    return list(range(count))


@torch.no_grad()
def render_metrics(
    scene: Scene,
    dataset,
    *,
    split: str = "test",
    max_images: int = 0,
    backend: Backend = "auto",
    save_dir: Path | None = None,
    ranks: bool = False,
) -> dict[str, Any]:
    """Render ``split`` (the first ``max_images`` views, or all if 0) and return mean PSNR/SSIM/LPIPS.

    With ``ranks`` (a collective: every rank of a data-parallel job calls it) each rank renders every W-th view and
    the per-view scores are gathered, so every rank returns the means over all the views.

    Returns:
        {"num_images", "psnr", "ssim", "lpips", "lpips_unavailable_reason", "seconds_per_image", "resolution"}.
    """
    device = next(scene.parameters()).device
    return score_renders(scene.render, dataset, split=split, indices=eval_indices(dataset, split, max_images),
                         backend=backend, device=device, save_dir=save_dir, ranks=ranks)  # fmt: skip


@torch.no_grad()
def score_renders(
    render: Callable[[Camera, RenderOptions], RenderOutput],
    dataset,
    *,
    split: str,
    indices: list[int],
    backend: Backend,
    device: torch.device,
    save_dir: Path | None = None,
    ranks: bool = False,
) -> dict[str, Any]:
    """Mean PSNR/SSIM/LPIPS of ``render(camera, options)`` (a scene's or a mesh's) over the views ``indices`` of
    ``split``, over the dataset's background; the layout of :func:`render_metrics` (``ranks``: split the views
    over the ranks of a data-parallel job and gather the scores; a collective)."""
    from recon.train import distributed

    metrics = _metrics()
    all_indices = indices
    if ranks:
        indices = indices[distributed.rank() :: distributed.world_size()]
    background = dataset.background.to(device, torch.float32)
    options = RenderOptions(background=background, backend=backend, depth=False)
    psnrs, ssims, lpipses = [], [], []
    render_seconds = 0.0
    width = height = 0
    for i in indices:
        camera = dataset.camera(split, i)
        target = dataset.image(split, i).to(device, torch.float32)
        start = time.perf_counter()
        rgb = render(camera, options).rgb[0].clamp(0.0, 1.0)
        render_seconds += time.perf_counter() - start
        height, width = rgb.shape[:2]
        psnrs.append(float(metrics.psnr(rgb, target)))
        ssims.append(float(metrics.ssim(rgb, target)))
        lp = metrics.lpips(rgb, target)
        if lp is not None:
            lpipses.append(float(lp))
        if save_dir is not None:
            _save_png(save_dir / f"{split}_{i:04d}.png", rgb)
    if ranks and distributed.world_size() > 1:
        parts = distributed.gather_objects((psnrs, ssims, lpipses, render_seconds, width, height))
        psnrs, ssims, lpipses = ([x for part in parts for x in part[k]] for k in range(3))
        render_seconds = sum(part[3] for part in parts)
        width, height = max(part[4] for part in parts), max(part[5] for part in parts)
        indices = all_indices
    lpips_value = sum(lpipses) / len(lpipses) if lpipses and len(lpipses) == len(indices) else None
    return {
        "num_images": len(indices),
        "psnr": sum(psnrs) / len(psnrs),
        "ssim": sum(ssims) / len(ssims),
        "lpips": lpips_value,
        "lpips_unavailable_reason": None if lpips_value is not None else metrics.lpips_unavailable_reason(),
        "seconds_per_image": render_seconds / len(indices),
        "resolution": [width, height],
    }


def mesh_metrics_record(
    mesh: Mesh,
    dataset,
    *,
    split: str,
    indices: list[int],
    backend: Backend,
    device: torch.device,
    made_by: str,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """The ``"mesh"`` record of eval.json: PSNR/SSIM/LPIPS of ``mesh`` (normalised frame, unlit sRGB colours)
    rendered by the hard rasterizer (:class:`recon.scenes.mesh_scene.MeshRenderer`) at the views ``indices``,
    with its size and ``made_by`` (how it was made)."""
    from recon.scenes.mesh_scene import MeshRenderer

    renderer = MeshRenderer(mesh, device=device)
    m = score_renders(renderer.render, dataset, split=split, indices=indices, backend=backend, device=device,
                      save_dir=save_dir)  # fmt: skip
    record = {k: m[k] for k in ("psnr", "ssim", "lpips", "seconds_per_image")}
    if m["lpips"] is None:
        record["lpips_unavailable_reason"] = m["lpips_unavailable_reason"]
    return record | {
        "num_vertices": mesh.num_vertices,
        "num_faces": mesh.num_faces,
        "made_by": made_by,
        "renderer": "hard rasterizer: rasterize K=1 + interpolate/face colours + antialias, unlit, over the "
        "dataset background",
    }


def quick_metrics(scene: Scene, views, *, indices: list[int], backend: Backend) -> dict[str, float]:
    """Mean PSNR/SSIM (``recon.metrics``, as the final evaluation) over preloaded views
    (``recon.train.data.TrainViews``); used during training."""
    metrics = _metrics()
    psnrs, ssims = [], []
    with torch.no_grad():
        for i in indices:
            camera, target = views.view(i)
            rgb = scene.render(
                camera, RenderOptions(background=views.background, backend=backend, depth=False)
            ).rgb.clamp(0.0, 1.0)
            psnrs.append(metrics.psnr(rgb, target))  # the same PSNR/SSIM as the final evaluation
            ssims.append(metrics.ssim(rgb, target))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def geometry_metrics(pred_mesh, gt_mesh_path: Path) -> dict[str, Any]:
    """Chamfer distance and F-score of ``pred_mesh`` (a recon Mesh in the ORIGINAL world frame) vs the GT mesh."""
    import trimesh

    from recon.core import Mesh

    metrics = _metrics()
    gt = trimesh.load_mesh(str(gt_mesh_path), process=False)
    gt_mesh = Mesh(
        vertices=torch.as_tensor(gt.vertices, dtype=torch.float32),
        faces=torch.as_tensor(gt.faces, dtype=torch.long),
    )
    diagonal = float((gt_mesh.bounds()[1] - gt_mesh.bounds()[0]).norm())
    threshold = FSCORE_THRESHOLD_FRACTION * diagonal
    chamfer = metrics.chamfer(pred_mesh, gt_mesh, num_samples=CHAMFER_SAMPLES)
    fscore = metrics.fscore(pred_mesh, gt_mesh, threshold=threshold)
    return {
        "chamfer": {k: float(v) for k, v in chamfer.items()},
        "fscore": float(fscore),
        "fscore_threshold": threshold,
        "geometry_protocol": (
            f"TSDF-fused surface in the original world frame vs {gt_mesh_path.name}; {CHAMFER_SAMPLES} surface "
            f"samples; F-score threshold {FSCORE_THRESHOLD_FRACTION} x GT bbox diagonal"
        ),
    }


def protocol(dataset, *, split: str, resolution: list[int], backend: Backend, device: str) -> dict[str, Any]:
    """The evaluation protocol record of eval.json.

    ``backend`` is what ran, per renderer op family (``recon.renderers._backend.backend_report`` after the
    renders, e.g. ``{"splat": "warp"}`` or ``{"volume": "torch (fallback: ...)"}``); ``backend_requested`` the
    run's setting ("auto" implies warp).
    """
    from recon.renderers._backend import backend_report

    bg = [round(float(x), 6) for x in dataset.background]
    name = "white" if bg == [1.0, 1.0, 1.0] else ("black" if bg == [0.0, 0.0, 0.0] else bg)
    return {
        "background": name,
        "resolution": resolution,
        "split_rule": dataset.split_rule,
        "split": split,
        "backend": backend_report(),
        "backend_requested": backend,
        "device": device,
        "dataset_format": dataset.format,
        "published_protocol": (
            "NeRF-synthetic: all test views, white background" if dataset.format == "blender" else None
        ),
    }


def _save_png(path: Path, rgb: Tensor) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
