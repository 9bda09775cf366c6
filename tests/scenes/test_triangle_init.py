"""Seed points of triangle splats (spec §9): SfM points when present, else the visual hull of masks, else random."""

from pathlib import Path

import torch

from recon.core import Camera
from recon.core.transforms import fibonacci_sphere, look_at
from recon.scenes.triangle_init import seed_points_from_dataset
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene

RADIUS = 0.6


class SphereDataset:
    """Masks of a sphere of radius RADIUS at the origin seen by 16 cameras; optional SfM points."""

    def __init__(self, *, masks: bool, points: bool) -> None:
        eyes = fibonacci_sphere(16) * 3.0
        poses = torch.stack([look_at(e, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]) if abs(float(e[2])) < 2.9
                                     else torch.tensor([0.0, 1.0, 0.0])) for e in eyes])  # fmt: skip
        K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]]).expand(16, 3, 3).clone()
        self.cams = Camera(poses, K, 48, 48)
        rays = self.cams.generate_rays()
        b = (rays.origins * rays.directions).sum(-1)
        hit = b * b - ((rays.origins**2).sum(-1) - RADIUS**2) > 0
        self._alpha = hit[..., None].float()
        self.splits = {"train": list(range(16))}
        self.scene_box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        self.has_masks = masks
        self.root = Path("sphere")
        self.points3d = fibonacci_sphere(200) * RADIUS if points else None
        self.points3d_rgb = torch.full((200, 3), 0.25) if points else None

    def camera(self, split, i):
        return self.cams[i]

    def image(self, split, i):
        return self._alpha[i].expand(-1, -1, 3) * 0.3 + (1 - self._alpha[i]) * 1.0

    def alpha(self, split, i):
        return self._alpha[i] if self.has_masks else None


def test_sfm_points_are_used_with_dome(gen):
    ds = SphereDataset(masks=True, points=True)
    seeds = seed_points_from_dataset(ds, max_points=0, hull_resolution=16, random_points=100, generator=gen)
    assert seeds.source == "sfm" and len(seeds.points) == 200
    scene = TriangleSplatScene.from_dataset(TriangleSceneConfig(sh_degree=0), ds, generator=gen)
    assert scene.num_primitives() == 200 + 10  # + floor(0.05 * 200) white dome triangles (spec §9.1)
    assert torch.allclose(scene.colors(torch.ones(210, 3))[-10:], torch.ones(10, 3), atol=1e-5)


def test_visual_hull_without_points(gen):
    ds = SphereDataset(masks=True, points=False)
    seeds = seed_points_from_dataset(ds, max_points=500, hull_resolution=32, random_points=500, generator=gen)
    assert seeds.source == "visual_hull" and len(seeds.points) == 500
    r = seeds.points.norm(dim=-1)
    # the hull of 16 silhouettes hugs the sphere: surface voxels lie within a few voxels (2/32) of it
    assert float(r.min()) > RADIUS - 0.15 and float(r.max()) < RADIUS + 0.3
    assert torch.allclose(seeds.colors, torch.full_like(seeds.colors, 0.3), atol=1e-5)


def test_random_without_points_or_masks(gen):
    ds = SphereDataset(masks=False, points=False)
    seeds = seed_points_from_dataset(ds, max_points=0, hull_resolution=16, random_points=300, generator=gen)
    assert seeds.source == "random" and len(seeds.points) == 300
    assert bool((seeds.points.abs() <= 1.0).all())
