"""Helpers shared by the field-scene tests (``test_nerf``, ``test_neus``)."""

import contextlib
from collections.abc import Iterator

import torch

from recon.scenes.base import RenderOptions
from recon.train.ray_batches import RayBatchSampler


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch CPU thread, restoring the previous count after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # small ops on a shared CPU: one thread is several times faster than contended two
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def object_dataset(folder):
    """The procedural ``object`` scene (32 pixels, 8 train and 2 test views) written to ``folder`` and loaded."""
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_scene

    return load_dataset(write_scene("object", folder / "object", resolution=32, views=8, test_views=2))


def ray_sampler(dataset, generator: torch.Generator, *, rays: int, background="random") -> RayBatchSampler:
    """Batches of ``rays`` rays (with target alphas) across the dataset's training views."""
    n = len(dataset.splits["train"])
    images = torch.stack([dataset.image("train", i) for i in range(n)])
    alphas = torch.stack([dataset.alpha("train", i) for i in range(n)])
    return RayBatchSampler(
        images, dataset.cameras("train"), alphas=alphas, dataset_background=dataset.background,
        rays_per_batch=rays, background=background, generator=generator,
    )  # fmt: skip


def mean_test_psnr(scene, dataset) -> float:
    """Mean PSNR (dB) of the scene's eval-mode renders of the test views; leaves the scene in training mode."""
    scene.eval()
    values = []
    with torch.no_grad():
        for i in range(len(dataset.splits["test"])):
            rgb = scene.render(dataset.camera("test", i), RenderOptions(background=dataset.background)).rgb[0]
            values.append(float(-10 * torch.log10(((rgb - dataset.image("test", i)) ** 2).mean())))
    scene.train()
    return sum(values) / len(values)
