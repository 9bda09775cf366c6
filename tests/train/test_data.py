"""Training views: recompositing over another background, and view order without replacement."""

import torch

from recon.train.data import TrainViews, ViewSampler


class _Tiny:
    def __init__(self):
        from recon.core import Camera

        self.splits = {"train": [0, 1]}
        self.root = "tiny"
        self.background = torch.ones(3)
        self._alpha = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 3, 1).expand(2, 3, 1)
        self._color = torch.tensor([0.2, 0.4, 0.6])
        self._cam = Camera(torch.eye(4).expand(2, 4, 4).clone(), torch.eye(3).expand(2, 3, 3).clone(), 3, 1)

    def cameras(self, split):
        return self._cam

    def image(self, split, i):
        return (self._color * self._alpha[i] + self.background * (1 - self._alpha[i]))[None].expand(1, 3, 3)

    def alpha(self, split, i):
        return self._alpha[i][None]


def test_recomposite_over_new_background():
    views = TrainViews(_Tiny())
    bg = torch.tensor([0.0, 0.5, 0.0])
    _, image = views.view(0, bg)
    a = torch.tensor([0.0, 0.5, 1.0])[:, None]
    expected = torch.tensor([0.2, 0.4, 0.6]) * a + bg * (1 - a)
    assert torch.allclose(image[0, 0], expected, atol=1e-6)


def test_sampler_visits_every_view_once_per_pass():
    sampler = ViewSampler(5, torch.Generator().manual_seed(0))
    first = [sampler.next() for _ in range(5)]
    assert sorted(i for i, _ in first) == list(range(5))
    assert [s for _, s in first] == [True, False, False, False, False]
    assert sampler.next()[1] is True
