"""Ray batches for ray-based fields (NeRF, NeuS): random pixels drawn across the training images.

Each step draws ``R`` rays. With ``images_per_batch = 0`` every ray picks its own random training image and pixel
(as the nerfacc examples do): the batch is ``C = R`` cameras with one pixel each, ``pixels (R, 1, 2)``. With
``images_per_batch = C > 0``, ``C`` random images contribute ``R / C`` random pixels each, ``pixels (C, R/C, 2)``.
The scene renders the batch through ``Scene.render(camera, options, pixels=pixels)``.

Backgrounds: a colour per ray (random for training, spec §4) is composited behind both the target and the
render: ``target = image + (bg - bg_dataset) (1 - alpha)`` and ``rgb = rgb_black + (1 - A) bg``
(``RayBatch.over_background``). Images without alpha count as opaque (``alpha = 1``, as the nerfacc examples do for
360 scenes): their targets are unchanged, and the random colour behind the render pushes the field to be opaque.
"""

from dataclasses import dataclass, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core import Camera, ReconError, RenderOutput

__all__ = ["RayBatch", "RayBatchSampler", "RayBackground"]

RayBackground = Literal["dataset", "random", "white", "black"]


@dataclass
class RayBatch:
    """One batch of training rays.

    Attributes:
        camera: C cameras (one per image of the batch; repeated images allowed).
        pixels: (C, R, 2) integer pixel ``(i, j)`` = (column, row) per camera.
        target: (C, R, 3) target colours composited over ``background``.
        background: (C, R, 3) background colour of each ray.
        alpha: (C, R, 1) target alpha / mask, or None when the dataset has none.
        view_indices: (C,) training-view index of each camera.
        depth: (C, R, 1) camera-z depth targets at SfM points (0 = none), or None when the
            sampler draws no SfM rays.
    """

    camera: Camera
    pixels: Int[Tensor, "C R 2"]
    target: Float[Tensor, "C R 3"]
    background: Float[Tensor, "C R 3"]
    alpha: Float[Tensor, "C R 1"] | None
    view_indices: Int[Tensor, " C"]
    depth: Float[Tensor, "C R 1"] | None = None

    def over_background(self, render: RenderOutput) -> RenderOutput:
        """``render`` (made over a black background) composited over the per-ray background:
        ``rgb + (1 - alpha) bg``. Differentiable w.r.t. ``render.rgb`` and ``render.alpha``."""
        return replace(render, rgb=render.rgb + (1.0 - render.alpha) * self.background)

    def shard(self, part: slice) -> "RayBatch":
        """The cameras ``part`` of the batch with their rays (data-parallel: each rank's share of a step)."""
        return RayBatch(
            camera=self.camera[part], pixels=self.pixels[part], target=self.target[part],
            background=self.background[part], alpha=None if self.alpha is None else self.alpha[part],
            view_indices=self.view_indices[part], depth=None if self.depth is None else self.depth[part],
        )  # fmt: skip


class RayBatchSampler:
    """Draws ray batches from preloaded training views.

    Args:
        images: (N, H, W, 3) training images composited over ``dataset_background``.
        cameras: N cameras.
        alphas: (N, H, W, 1) alpha masks, or None.
        dataset_background: (3,) the colour the stored images are composited over.
        rays_per_batch: rays per batch R.
        images_per_batch: 0 (every ray draws its own image) or the number of images C (R must divide by C).
        background: "dataset" (the stored images as they are), "random" (a random colour per ray), "white" or
            "black" (images without alpha are opaque: only the render sees the colour).
        generator: RNG of the draws.
        sfm_depth: SfM depth targets (``recon.train.data.sfm_depth_table``: rows ``(view, column, row)`` and their
            camera-z depths), or None.
        sfm_depth_rays: how many of each batch's rays are drawn from ``sfm_depth`` (at evenly spread positions of
            the batch; their ``RayBatch.depth`` is the target, every other ray's 0). Needs ``images_per_batch = 0``.

    Example:
        >>> # sampler = RayBatchSampler.from_views(TrainViews(ds), rays_per_batch=1024, background="random",
        >>> #                                      generator=torch.Generator().manual_seed(0))
        >>> # batch = sampler.next(); scene.render(batch.camera, options, pixels=batch.pixels)
    """

    def __init__(
        self,
        images: Float[Tensor, "N H W 3"],
        cameras: Camera,
        *,
        alphas: Float[Tensor, "N H W 1"] | None,
        dataset_background: Float[Tensor, "3"],
        rays_per_batch: int,
        images_per_batch: int = 0,
        background: RayBackground = "dataset",
        generator: torch.Generator,
        sfm_depth: tuple[Int[Tensor, "M 3"], Float[Tensor, " M"]] | None = None,
        sfm_depth_rays: int = 0,
    ) -> None:
        if rays_per_batch < 1:
            raise ReconError(f"rays_per_batch must be >= 1, got {rays_per_batch}")
        if images_per_batch < 0 or (images_per_batch > 0 and rays_per_batch % images_per_batch != 0):
            raise ReconError(
                f"images_per_batch must be 0 or divide rays_per_batch ({rays_per_batch}), got {images_per_batch}"
            )
        if background not in ("dataset", "random", "white", "black"):
            raise ReconError(f"background must be dataset|random|white|black, got {background!r}")
        if images.ndim != 4 or images.shape[0] != len(cameras):
            raise ValueError(
                f"images must be (N, H, W, 3) with N = {len(cameras)}, got {tuple(images.shape)}"
            )
        if sfm_depth_rays and (
            sfm_depth is None or images_per_batch or not 0 < sfm_depth_rays < rays_per_batch
        ):
            raise ReconError(
                f"sfm_depth_rays {sfm_depth_rays}: needs SfM depth targets, images_per_batch = 0 and 0 < "
                f"sfm_depth_rays < rays_per_batch ({rays_per_batch})"
            )
        self.sfm_depth, self.sfm_depth_rays = sfm_depth, sfm_depth_rays
        self.images, self.cameras, self.alphas = images, cameras, alphas
        self.dataset_background = dataset_background.to(images)
        self.rays_per_batch, self.images_per_batch = rays_per_batch, images_per_batch
        self.background = background
        self.generator = generator

    @classmethod
    def from_views(cls, views, *, sfm_depth_fraction: float = 0.0, **kwargs) -> "RayBatchSampler":
        """A sampler over a ``recon.train.data.TrainViews`` (images, alphas, cameras, background); with
        ``sfm_depth_fraction > 0`` and SfM depth targets in ``views``, that share of each batch's rays (at least
        one) is drawn at them."""
        if not 0.0 <= sfm_depth_fraction < 1.0:
            raise ReconError(f"loss.sfm_depth_fraction must be in [0, 1), got {sfm_depth_fraction}")
        table = getattr(views, "sfm_depth", None)
        rays = 0
        if sfm_depth_fraction > 0 and table is not None:
            rays = min(
                max(1, round(sfm_depth_fraction * kwargs["rays_per_batch"])), kwargs["rays_per_batch"] - 1
            )
        return cls(
            views.images, views.cameras, alphas=views.alphas, dataset_background=views.background,
            sfm_depth=table if rays else None, sfm_depth_rays=rays, **kwargs,
        )  # fmt: skip

    def __len__(self) -> int:
        return self.images.shape[0]

    def _draw(self, high: int, shape: tuple[int, ...]) -> Tensor:
        return torch.randint(high, shape, generator=self.generator).to(self.images.device)

    def next(self) -> RayBatch:
        """The next batch (draws from the sampler's generator)."""
        n, h, w = self.images.shape[:3]
        c = self.images_per_batch or self.rays_per_batch
        r = self.rays_per_batch // c
        views = self._draw(n, (c,))
        cols, rows = self._draw(w, (c, r)), self._draw(h, (c, r))
        depth = None
        if self.sfm_depth is not None:
            # k rays at SfM points, spread evenly over the batch so every rank's shard of a data-parallel step gets
            # its share (c = R cameras of one pixel each)
            table, depths = self.sfm_depth
            k = self.sfm_depth_rays
            slots = (torch.arange(k) * c // k).to(views.device)
            pick = self._draw(len(table), (k,))
            views[slots], cols[slots, 0], rows[slots, 0] = table[pick, 0], table[pick, 1], table[pick, 2]
            depth = torch.zeros(c, r, 1, dtype=self.images.dtype, device=self.images.device)
            depth[slots, 0, 0] = depths[pick].to(depth)
        target = self.images[views[:, None], rows, cols]
        alpha = None if self.alphas is None else self.alphas[views[:, None], rows, cols]
        background = self._backgrounds(c, r)
        if alpha is not None and self.background != "dataset":
            target = target + (background - self.dataset_background) * (1.0 - alpha)
        return RayBatch(
            camera=self.cameras[views], pixels=torch.stack([cols, rows], -1), target=target,
            background=background, alpha=alpha, view_indices=views, depth=depth,
        )  # fmt: skip

    def _backgrounds(self, c: int, r: int) -> Tensor:
        if self.background == "random":
            return torch.rand((c, r, 3), generator=self.generator).to(self.images)
        if self.background == "white":
            return torch.ones(c, r, 3).to(self.images)
        if self.background == "black":
            return torch.zeros(c, r, 3).to(self.images)
        return self.dataset_background.expand(c, r, 3)

    def set_rays_per_batch(self, rays: int) -> None:
        """Draw ``rays`` rays per batch from the next batch on (the in-run capacity rule; ``recon.train.
        capacity_in_run``). The SfM-depth rays keep their share of the batch; with ``images_per_batch = C`` the
        count is rounded down to a multiple of C (at least C)."""
        if rays < 1:
            raise ReconError(f"rays_per_batch must be >= 1, got {rays}")
        if self.images_per_batch:
            rays = max(self.images_per_batch, rays - rays % self.images_per_batch)
        if self.sfm_depth_rays:
            share = round(self.sfm_depth_rays * rays / self.rays_per_batch)
            self.sfm_depth_rays = min(max(1, share), rays - 1) if rays > 1 else 0
            if not self.sfm_depth_rays:
                self.sfm_depth = None
        self.rays_per_batch = rays

    # the generator belongs to the caller (the trainer checkpoints it, and the rays per step: Trainer.state_tensors);
    # the sampler itself is stateless
    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Nothing to restore (see ``state_tensors``)."""
