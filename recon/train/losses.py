"""Training losses shared by representations: photometric L1 + D-SSIM and the depth-normal consistency term.

Representation-specific terms (opacity, area, ...) come from ``Scene.regularizers``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, RenderCapabilities, RenderOutput
from recon.metrics import ssim_tensor

SSIM_WINDOW = 11  # recon.metrics' SSIM window (11x11 Gaussian): images smaller than this skip the D-SSIM term


@dataclass(frozen=True)
class LossConfig:
    """Weights of the generic loss terms (spec §8)."""

    ssim_weight: float = 0.2
    """lambda: L = (1 - lambda) L1 + lambda (1 - SSIM)."""
    l2: bool = False
    """Use L2 instead of L1 for the photometric term (outdoor scenes with extent > 300 in the reference)."""
    normal_weight: float = 1e-4
    """lambda_n: depth-normal consistency weight, active after ``normal_from_fraction`` of the budget."""
    normal_from_fraction: float = 5_000 / 30_000
    """it_mesh as a fraction of the step budget."""
    distortion_weight: float = 0.0
    """lambda_d: weight of the 2DGS distortion map after ``normal_from_fraction``."""
    median_depth: bool = True
    """Surface depth for the normal term: median depth (depth_ratio 1, bounded scenes) or expected depth."""
    sfm_depth_weight: float = 0.0
    """Weight of the SfM depth term (ray batches on datasets whose frames list the SfM points they observe, i.e.
    COLMAP models with tracks): at the pixels the points project into, how far the rays' termination lies from the
    points (``sfm_depth_loss``). 0 = off."""
    sfm_depth_fraction: float = 0.125
    """Share of each ray batch drawn at those pixels when the SfM depth term is on (the rest stays random)."""


def photometric_loss(
    rgb: Float[Tensor, "B H W 3"] | Float[Tensor, "B R 3"],
    target: Float[Tensor, "B H W 3"] | Float[Tensor, "B R 3"],
    config: LossConfig,
) -> dict[str, Tensor]:
    """``(1 - λ) L1 + λ (1 - SSIM)`` (spec §8), as named weighted terms; images ``(B, H, W, 3)`` or ray batches
    ``(B, R, 3)`` (no SSIM term: rays are no image)."""
    diff = rgb - target
    data = (diff * diff).mean() if config.l2 else diff.abs().mean()
    terms = {"l2" if config.l2 else "l1": (1.0 - config.ssim_weight) * data}
    if config.ssim_weight > 0 and min(rgb.shape[1:3]) >= SSIM_WINDOW:
        terms["dssim"] = config.ssim_weight * (1.0 - ssim_tensor(rgb, target))
    return terms


def depth_to_normals(depth: Float[Tensor, "C H W 1"], camera: Camera) -> Float[Tensor, "C H W 3"]:
    """World-space unit normals of the surface ``depth`` (camera-frame z), zero on the 1-pixel border.

    Points are unprojected at pixel centres; the normal is the normalised cross product of the central
    differences (spec §8), oriented towards the camera.
    """
    c, h, w, _ = depth.shape
    uv = camera.pixel_grid().to(depth.dtype).reshape(1, -1, 2).expand(c, -1, -1) + 0.5
    pts = camera.unproject(uv, depth.reshape(c, -1)).reshape(c, h, w, 3)
    dx = pts[:, 1:-1, 2:] - pts[:, 1:-1, :-2]
    dy = pts[:, 2:, 1:-1] - pts[:, :-2, 1:-1]
    n = torch.linalg.cross(dx, dy)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    view = pts[:, 1:-1, 1:-1] - camera.centers()[:, None, None, :]
    n = torch.where(((n * view).sum(-1, keepdim=True) > 0), -n, n)
    return F.pad(n.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)


def normal_consistency_loss(render: RenderOutput, camera: Camera, *, median_depth: bool) -> Tensor:
    """``mean(1 - N_rend · N_surf)`` with ``N_surf`` from depth, times the detached alpha (spec §8)."""
    by = "the depth-normal consistency loss"
    normals = render.require("normals", by=by)
    depth = render.require("depth_median" if median_depth else "depth", by=by)
    n_surf = depth_to_normals(depth, camera) * render.alpha.detach()
    return (1.0 - (normals * n_surf).sum(-1)).mean()


def total_loss(
    render: RenderOutput, target: Tensor, camera: Camera, config: LossConfig, *, fraction: float
) -> dict[str, Tensor]:
    """All generic loss terms of one step (photometric always; normal and distortion after it_mesh)."""
    terms = photometric_loss(render.rgb, target, config)
    if fraction > config.normal_from_fraction:
        if config.normal_weight > 0:
            terms["normal"] = config.normal_weight * normal_consistency_loss(
                render, camera, median_depth=config.median_depth
            )
        if config.distortion_weight > 0:
            distortion = render.require("distortion", by="the distortion loss")
            terms["distortion"] = config.distortion_weight * distortion.mean()
    return terms


def sfm_depth_loss(deviation: Float[Tensor, "C R 1"], target: Float[Tensor, "C R 1"]) -> Tensor:
    """Mean of the rendered ``depth_deviation`` (``RenderOutput.depth_deviation``: the weight each ray puts off
    its target, counted by the relative miss capped at 1 per sample) over the rays with a target (``target > 0``;
    0 = none), or 0 when no ray has one. Differentiable w.r.t. ``deviation``.

    A floater in front of an SfM point and a surface behind it both pay their weight on the ray (the idea of
    DS-NeRF, Deng et al. 2022, in a form linear in the weights); the stretches between points are left to the
    photometric loss.
    """
    valid = (target > 0).to(deviation)
    return (deviation * valid).sum() / valid.sum().clamp_min(1.0)  # no host sync


def loss_needs(config: LossConfig) -> RenderCapabilities:
    """What the scene must be able to render for these loss weights (checked once before training)."""
    normal = config.normal_weight > 0 and config.normal_from_fraction < 1.0
    return RenderCapabilities(
        depth=normal, normals=normal, depth_median=normal and config.median_depth,
        distortion=config.distortion_weight > 0 and config.normal_from_fraction < 1.0,
        depth_deviation=config.sfm_depth_weight > 0,
    )  # fmt: skip


def needs_normals(config: LossConfig, fraction: float) -> bool:
    """Whether the step at ``fraction`` of the budget needs normals and surface depth."""
    return fraction > config.normal_from_fraction and config.normal_weight > 0


def needs_distortion(config: LossConfig, fraction: float) -> bool:
    return fraction > config.normal_from_fraction and config.distortion_weight > 0
