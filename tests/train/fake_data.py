"""A tiny in-memory stand-in for recon.datasets.SceneDataset: a "teacher" triangle soup rendered into cameras on
a sphere (torch reference backend), with alpha, SfM-like seed points and a white background."""

import math
from pathlib import Path

import torch

from recon.core import Camera
from recon.core.transforms import fibonacci_sphere, look_at
from recon.scenes.base import RenderOptions
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene


def teacher_scene(num: int = 60, *, seed: int = 0) -> TriangleSplatScene:
    gen = torch.Generator().manual_seed(seed)
    pts = (torch.rand(num, 3, generator=gen) - 0.5) * 1.2
    colors = torch.rand(num, 3, generator=gen)
    scene = TriangleSplatScene.from_points(
        TriangleSceneConfig(sh_degree=0, init_scale=3.0), pts, colors, generator=gen
    )
    with torch.no_grad():
        scene.logit_opacities.fill_(2.0)  # o = 0.88: a mostly opaque object
        scene.raw_sigmas.fill_(math.log(0.5))
    return scene


def ring_cameras(count: int, size: int, *, radius: float = 3.0, offset: float = 0.0) -> Camera:
    dirs = fibonacci_sphere(2 * count)
    dirs = dirs[dirs[:, 2] > -0.2][:count]  # upper part of the sphere, like an object orbit
    poses = []
    for d in dirs:
        angle = torch.tensor(offset)
        rot = torch.tensor([[torch.cos(angle), -torch.sin(angle), 0.0], [torch.sin(angle), torch.cos(angle), 0.0],
                            [0.0, 0.0, 1.0]])  # fmt: skip
        poses.append(look_at(rot @ d * radius, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
    f = 1.2 * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]).expand(len(poses), 3, 3)
    return Camera(torch.stack(poses), K.clone(), size, size)


class FakeDataset:
    """Just the attributes and methods of SceneDataset that training, evaluation and export use."""

    format = "blender"
    split_rule = "explicit files (fake)"
    white_background = True
    has_masks = True
    has_depth = False
    gt_mesh_path = None

    def __init__(self, *, size: int = 32, views: int = 12, test_views: int = 4, seed: int = 0) -> None:
        self.root = Path("fake")
        self.teacher = teacher_scene(seed=seed)
        self.background = torch.ones(3)
        self.normalization = torch.eye(4, dtype=torch.float64)
        self.scene_box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        gen = torch.Generator().manual_seed(seed + 1)
        centroids = self.teacher.vertices.detach().mean(1)
        self.points3d = centroids + 0.05 * torch.randn(centroids.shape, generator=gen)
        self.points3d_rgb = torch.full_like(self.points3d, 0.5)
        self._cams = {"train": ring_cameras(views, size), "test": ring_cameras(test_views, size, offset=0.3)}
        self._images, self._alphas = {}, {}
        with torch.no_grad():
            for split, cams in self._cams.items():
                out = self.teacher.render(cams, RenderOptions(background=self.background, backend="torch"))
                self._images[split], self._alphas[split] = out.rgb, out.alpha
        self.splits = {split: list(range(len(cams))) for split, cams in self._cams.items()}

    def cameras(self, split: str) -> Camera:
        return self._cams[split]

    def camera(self, split: str, i: int) -> Camera:
        return self._cams[split][i]

    def image(self, split: str, i: int) -> torch.Tensor:
        return self._images[split][i]

    def alpha(self, split: str, i: int) -> torch.Tensor:
        return self._alphas[split][i]
