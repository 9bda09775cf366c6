"""Initial triangles of a triangle-splat scene (spec §9): seed points, then one triangle per point.

Seed points come, in order of preference, from the dataset's SfM points (COLMAP points3D, nerfstudio
``ply_file_path``), from the visual hull of its masks, or uniformly from its scene box.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core.transforms import axis_angle_to_rotmat, fibonacci_sphere

KNN_NEIGHBOURS = 3  # spec §9.2: mean squared distance to the 3 nearest neighbours
MIN_MEAN_SQ_DIST = 1e-7  # spec §9.2 clamp, avoids zero-size triangles at duplicated points
MASK_THRESHOLD = 0.5  # alpha below which a pixel is background when carving the visual hull
HULL_MAX_VIEWS = 64  # views used for carving; more add little and cost time on large datasets
GREY = 0.5


@dataclass(frozen=True)
class SeedPoints:
    """Initial points with colours.

    Attributes:
        points: (P, 3) positions in the scene (normalised) frame.
        colors: (P, 3) RGB in [0, 1].
        source: "sfm", "visual_hull" or "random".
    """

    points: Float[Tensor, "P 3"]
    colors: Float[Tensor, "P 3"]
    source: str


def fibonacci_triangle_directions(dtype=torch.float32) -> Float[Tensor, "3 3"]:
    """The 3-point Fibonacci directions of spec §9.3: ``(0,0,1)``, ``(cos θ, sin θ, 0)``, ``(0,0,-1)``."""
    theta = math.pi * (3.0 - math.sqrt(5.0))
    return torch.tensor(
        [[0.0, 0.0, 1.0], [math.cos(theta), math.sin(theta), 0.0], [0.0, 0.0, -1.0]], dtype=dtype
    )


def mean_sq_knn_distance(points: Float[Tensor, "P 3"], k: int = KNN_NEIGHBOURS) -> Float[Tensor, " P"]:
    """Mean squared distance of each point to its ``k`` nearest other points (clamped at 1e-7)."""
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]  # compiled module: invisible to pyright

    pts = points.detach().cpu().double().numpy()
    if len(pts) <= 1:
        return torch.full((len(pts),), 1e-2, dtype=points.dtype)
    kk = min(k + 1, len(pts))
    dist, _ = cKDTree(pts).query(pts, k=kk)
    mean_sq = (dist[:, 1:] ** 2).mean(axis=1)
    return torch.from_numpy(np.maximum(mean_sq, MIN_MEAN_SQ_DIST)).to(points.dtype)


def triangles_from_points(
    points: Float[Tensor, "P 3"], *, scale: float = 2.23, generator: torch.Generator | None = None
) -> Float[Tensor, "P 3 3"]:
    """One randomly oriented triangle per point (spec §9.2-3).

    .. math:: v_{i,k} = p_i + r_i R_i u_k, \\quad r_i = scale \\cdot \\sqrt{\\bar d^2_i}

    Args:
        points: (P, 3) seed points.
        scale: multiplier of the root-mean-square neighbour distance (2.23 in the reference).
        generator: random source of the rotations.

    Returns:
        (P, 3, 3) vertices.
    """
    radius = scale * mean_sq_knn_distance(points).sqrt().to(points)
    axis = torch.randn(len(points), 3, generator=generator, dtype=points.dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    angle = torch.rand(len(points), 1, generator=generator, dtype=points.dtype) * 2 * math.pi
    R = axis_angle_to_rotmat((axis * angle).to(points.device))
    u = fibonacci_triangle_directions(points.dtype).to(points.device)  # (3, 3), one direction per row
    offsets = torch.einsum("pij,kj->pki", R, u)  # (P, 3 vertices, 3)
    return points[:, None, :] + radius[:, None, None] * offsets


def dome_points(points: Float[Tensor, "P 3"], fraction: float) -> SeedPoints:
    """``floor(fraction * P)`` white points on a Fibonacci sphere of radius ``max |p|`` (spec §9.1)."""
    n = int(math.floor(fraction * len(points)))
    radius = float(points.abs().max()) if len(points) else 1.0
    dome = fibonacci_sphere(n, dtype=points.dtype).to(points.device) * radius
    return SeedPoints(dome, torch.ones_like(dome), "dome")


def subsample(seeds: SeedPoints, max_points: int, generator: torch.Generator | None) -> SeedPoints:
    """At most ``max_points`` of the seeds (a random subset; all if ``max_points <= 0``)."""
    if max_points <= 0 or len(seeds.points) <= max_points:
        return seeds
    keep = torch.randperm(len(seeds.points), generator=generator)[:max_points].to(seeds.points.device)
    return SeedPoints(seeds.points[keep], seeds.colors[keep], seeds.source)


def random_seed_points(
    scene_box: Float[Tensor, "2 3"], count: int, generator: torch.Generator | None = None
) -> SeedPoints:
    """``count`` uniform points in the axis-aligned ``scene_box`` with grey colour."""
    lo, hi = scene_box[0].float(), scene_box[1].float()
    u = torch.rand(count, 3, generator=generator)
    pts = lo + u * (hi - lo)
    return SeedPoints(pts, torch.full_like(pts, GREY), "random")


def visual_hull_seed_points(
    dataset, *, resolution: int, count: int, generator: torch.Generator | None
) -> SeedPoints:
    """Points on the surface of the visual hull of the training masks, coloured by the mean projected colour.

    A voxel of a ``resolution``³ grid over ``dataset.scene_box`` is carved when it projects inside an image but
    onto background (alpha < 0.5) in any training view; the hull's boundary voxels (a carved or outside
    6-neighbour) are the seeds, jittered inside their voxel.
    """
    box = dataset.scene_box.float()
    lo, hi = box[0], box[1]
    axes = [torch.linspace(0.0, 1.0, resolution + 1)[:-1] + 0.5 / resolution for _ in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    centres = lo + grid * (hi - lo)
    inside = torch.ones(len(centres), dtype=torch.bool)
    color_sum = torch.zeros(len(centres), 3)
    color_count = torch.zeros(len(centres))
    num_views = len(dataset.splits["train"])
    views = torch.linspace(0, num_views - 1, min(num_views, HULL_MAX_VIEWS)).round().long().unique().tolist()
    for i in views:
        alpha = dataset.alpha("train", i)
        if alpha is None:
            continue
        cam = dataset.camera("train", i)
        image = dataset.image("train", i)
        uv, z = cam.project(centres[None].to(cam.dtype))
        uv, z = uv[0].float(), z[0].float()
        px = uv.floor().long()
        in_frame = (
            (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < cam.width) & (px[:, 1] >= 0) & (px[:, 1] < cam.height)
        )
        idx = px[:, 1].clamp(0, cam.height - 1) * cam.width + px[:, 0].clamp(0, cam.width - 1)
        a = alpha.reshape(-1)[idx].float()
        inside &= ~(in_frame & (a < MASK_THRESHOLD))
        fg = in_frame & (a >= MASK_THRESHOLD)
        color_sum[fg] += image.reshape(-1, 3)[idx[fg]].float()
        color_count[fg] += 1
    occ = inside.reshape(resolution, resolution, resolution)
    padded = torch.nn.functional.pad(occ[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0]
    neighbours_all = torch.ones_like(occ)
    for dim in range(3):
        for shift in (-1, 1):
            rolled = torch.roll(padded, shifts=shift, dims=dim)[1:-1, 1:-1, 1:-1] > 0.5
            neighbours_all &= rolled
    surface = (occ & ~neighbours_all).reshape(-1)
    if int(surface.sum()) == 0:
        raise ValueError("visual hull is empty: the masks carve away the whole scene box")
    voxel = (hi - lo) / resolution
    idx = surface.nonzero().squeeze(1)
    reps = max(1, math.ceil(count / len(idx)))
    idx = idx.repeat(reps)
    jitter = (torch.rand(len(idx), 3, generator=generator) - 0.5) * voxel
    pts = centres[idx] + jitter
    colors = (color_sum[idx] / color_count[idx].clamp_min(1)[:, None]).clamp(0, 1)
    seeds = SeedPoints(pts, colors, "visual_hull")
    return subsample(seeds, count, generator)


def seed_points_from_dataset(
    dataset, *, max_points: int, hull_resolution: int, random_points: int, generator: torch.Generator | None
) -> SeedPoints:
    """SfM points when the dataset has them, else the visual hull of its masks, else random points in its box."""
    if dataset.points3d is not None and len(dataset.points3d) > 0:
        colors = dataset.points3d_rgb
        pts = dataset.points3d.float()
        colors = torch.full_like(pts, GREY) if colors is None else colors.float()
        return subsample(SeedPoints(pts, colors, "sfm"), max_points, generator)
    if dataset.has_masks:
        count = max_points if max_points > 0 else random_points
        return visual_hull_seed_points(dataset, resolution=hull_resolution, count=count, generator=generator)
    return random_seed_points(dataset.scene_box, random_points, generator)
