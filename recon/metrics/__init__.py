"""Evaluation metrics: PSNR, SSIM, MS-SSIM, LPIPS (when its weights are local), Chamfer distance, F-score and
normal consistency.

Protocols (docs/metrics.md): images in [0, 1] composited over the stated background; SSIM with an 11x11
Gaussian window (sigma 1.5, K1 0.01, K2 0.03, data range 1) as torchmetrics computes it; geometry through
area-uniform surface samples with the ground-truth bounding-box diagonal reported as the scale, either against
the other mesh's samples (``chamfer``, ``fscore``) or exactly against its triangles (``exact_chamfer``,
``mesh_metrics``).
"""

from recon.metrics.geometry import (
    FScore,
    FScoreAt,
    MeshMetrics,
    SurfaceDistance,
    chamfer,
    exact_chamfer,
    fscore,
    mesh_metrics,
    sample_surface,
    surface_distance,
)
from recon.metrics.image import lpips, lpips_unavailable_reason, ms_ssim, psnr, psnr_tensor, ssim, ssim_tensor

__all__ = [
    "FScore",
    "FScoreAt",
    "MeshMetrics",
    "SurfaceDistance",
    "chamfer",
    "exact_chamfer",
    "fscore",
    "lpips",
    "lpips_unavailable_reason",
    "mesh_metrics",
    "ms_ssim",
    "psnr",
    "psnr_tensor",
    "sample_surface",
    "ssim",
    "ssim_tensor",
    "surface_distance",
]
