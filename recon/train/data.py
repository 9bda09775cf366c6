"""Training views held in memory, view order and backgrounds."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core import Camera, ReconError


class TrainViews:
    """All training images of a dataset, on the training device.

    Args:
        dataset: a ``recon.datasets.SceneDataset`` (duck-typed).
        split: which split to load.
        device: where images and cameras live.
    """

    def __init__(self, dataset, split: str = "train", *, device: torch.device | str = "cpu") -> None:
        count = len(dataset.splits.get(split, []))
        if count == 0:
            raise ReconError(f"dataset {dataset.root}: split {split!r} has no views")
        self.cameras = dataset.cameras(split).to(device=device, dtype=torch.float32)
        self.images = torch.stack([dataset.image(split, i) for i in range(count)]).to(device, torch.float32)
        alphas = [dataset.alpha(split, i) for i in range(count)]
        self.alphas = (
            None if any(a is None for a in alphas) else torch.stack(alphas).to(device, torch.float32)
        )
        self.background = dataset.background.to(device, torch.float32)
        self.sfm_depth = sfm_depth_table(dataset, split, count, device=device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def view(
        self, index: int, background: Float[Tensor, "3"] | None = None
    ) -> tuple[Camera, Float[Tensor, "1 H W 3"]]:
        """Camera and target image of view ``index``, recomposited over ``background`` when it differs.

        The stored image is ``c a + bg0 (1 - a)``, so over a new ``bg`` it is ``image + (bg - bg0)(1 - a)``.
        """
        image = self.images[index : index + 1]
        if background is not None:
            if self.alphas is None:
                if not torch.equal(background, self.background):
                    raise ReconError("background: a random/white/black background needs images with alpha")
            else:
                image = image + (background - self.background) * (1.0 - self.alphas[index : index + 1])
        return self.cameras[index], image

    def views(
        self, indices: list[int], background: Float[Tensor, "3"] | None = None
    ) -> tuple[Camera, Float[Tensor, "B H W 3"]]:
        """Cameras and target images of the views ``indices`` (a batch of B views), like :meth:`view`."""
        parts = [self.view(i, background) for i in indices]
        return self.cameras[torch.tensor(indices)], torch.cat([image for _, image in parts])


def sfm_depth_table(
    dataset, split: str, count: int, *, device: torch.device | str = "cpu"
) -> tuple[Int[Tensor, "M 3"], Float[Tensor, " M"]] | None:
    """All SfM depth targets of a split (``SceneDataset.sfm_depth``) as one table: rows ``(view, column, row)``
    and the camera-z depth of each; None when the dataset has none (duck-typed: no ``sfm_depth`` counts as none).
    """
    if not getattr(dataset, "has_sfm_depth", False):
        return None
    rows, targets = [], []
    for i in range(count):
        found = dataset.sfm_depth(split, i)
        if found is None:
            continue
        pixels, depth = found
        rows.append(torch.cat([torch.full((len(pixels), 1), i, dtype=torch.long), pixels.long()], -1))
        targets.append(depth.float())
    if not rows or sum(len(r) for r in rows) == 0:
        return None
    return torch.cat(rows).to(device), torch.cat(targets).to(device)


class ViewSampler:
    """One view per step, shuffled without replacement per pass (spec §10); state is checkpointable."""

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count = count
        self.generator = generator
        self.order = torch.randperm(count, generator=generator)
        self.position = 0

    def next(self) -> tuple[int, bool]:
        """The next view index and whether it starts a new pass."""
        pass_start = self.position == 0
        index = int(self.order[self.position])
        self.position += 1
        if self.position == self.count:
            self.order = torch.randperm(self.count, generator=self.generator)
            self.position = 0
        return index, pass_start

    def next_views(self, count: int) -> tuple[list[int], bool]:
        """The next ``count`` view indices (passes continue across steps) and whether a pass starts among them.

        Data-parallel training draws the whole step's views here on every rank (same generator state) and each
        rank takes its shard, so a step of W ranks with B views each sees the views one process with W·B views
        per step would see, and the sampler state does not depend on the number of ranks (resume with another).
        """
        drawn = [self.next() for _ in range(count)]
        return [index for index, _ in drawn], any(start for _, start in drawn)

    def state_tensors(self) -> dict[str, Tensor]:
        return {"order": self.order.clone(), "position": torch.tensor(self.position)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.order = tensors["order"].clone()
        self.position = int(tensors["position"])
