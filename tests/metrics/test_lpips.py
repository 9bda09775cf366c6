"""LPIPS code path with a small local network standing in for the pretrained one (its weights cannot be
downloaded here): [-1, 1] inputs, one batched call, the batch mean; evaluation reports it, or null with a reason."""

from types import SimpleNamespace

import pytest
import torch

from recon.metrics import image as image_metrics
from recon.train.evaluate import render_metrics
from tests.typecheck import typecheck_disabled


class RecordingDistance(torch.nn.Module):
    """A deterministic stand-in for LPIPS: per-image mean |x - y| over (3, H, W), and a record of its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, so .to(device) has something to move
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), y.clone()))
        return (self.scale * (x - y).abs()).mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


def _images(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 6, 5, 3, generator=g), torch.rand(batch, 6, 5, 3, generator=g)


def test_inputs_are_scaled_to_minus_one_one_batched_and_averaged():
    img, ref = _images(3)
    net = RecordingDistance()
    value = image_metrics.lpips(img, ref, model=net)
    assert len(net.calls) == 1  # one batched call, not one per image
    x, y = net.calls[0]
    assert x.shape == y.shape == (3, 3, 6, 5)  # (B, 3, H, W)
    torch.testing.assert_close(x, img.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(y, ref.permute(0, 3, 1, 2) * 2 - 1)
    # by hand: mean over images of mean |2 img - 2 ref| = 2 * mean |img - ref|
    per_image = [2 * float((img[b] - ref[b]).abs().mean()) for b in range(3)]
    assert value == pytest.approx(sum(per_image) / 3, rel=1e-6)
    single = image_metrics.lpips(img[1], ref[1], model=RecordingDistance())  # (H, W, 3): a batch of one
    assert single == pytest.approx(per_image[1], rel=1e-6)


def test_a_model_returning_the_wrong_count_is_an_error():
    img, ref = _images(2)

    class OneValue(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().mean()

    with pytest.raises(ValueError, match="returned 1 values for a batch of 2"):
        image_metrics.lpips(img, ref, model=OneValue())


def test_default_model_is_used_when_weights_load(monkeypatch):
    net = RecordingDistance()
    monkeypatch.setattr(image_metrics, "lpips_unavailable_reason", lambda: None)
    monkeypatch.setattr(image_metrics, "_lpips_model", lambda: net)
    img, ref = _images(2, seed=1)
    assert image_metrics.lpips(img, ref) == pytest.approx(2 * float((img - ref).abs().mean()), rel=1e-6)
    assert len(net.calls) == 1


def test_unavailable_is_none_with_a_reason(monkeypatch):
    monkeypatch.setattr(image_metrics, "lpips_unavailable_reason", lambda: "no weights here")
    monkeypatch.setattr(image_metrics, "_lpips_model", lambda: pytest.fail("must not load a model"))
    img, ref = _images(1)
    assert image_metrics.lpips(img, ref) is None


class _FlatScene(torch.nn.Module):
    """Renders a constant grey image whatever the camera (what evaluation needs of a scene: parameters, render)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.grey = torch.nn.Parameter(torch.tensor(0.5))
        self.height, self.width = height, width

    def render(self, camera, options):
        return SimpleNamespace(rgb=self.grey.detach().expand(1, self.height, self.width, 3))


def _dataset(targets: list[torch.Tensor]):
    return SimpleNamespace(
        splits={"test": list(range(len(targets)))},
        background=torch.ones(3),
        camera=lambda split, i: None,
        image=lambda split, i: targets[i],
    )


def test_evaluation_reports_lpips_or_null_with_reason(monkeypatch):
    g = torch.Generator().manual_seed(3)
    targets = [torch.rand(8, 9, 3, generator=g) for _ in range(2)]
    scene, dataset = _FlatScene(8, 9), _dataset(targets)
    # _FlatScene stands in for a Scene (render only): render_metrics runs without the runtime checks here.
    unchecked_render_metrics = typecheck_disabled()(render_metrics)
    monkeypatch.setattr(image_metrics, "lpips_unavailable_reason", lambda: "no weights here")
    monkeypatch.setattr("recon.metrics.lpips_unavailable_reason", lambda: "no weights here")
    m = unchecked_render_metrics(scene, dataset, split="test", backend="torch")
    assert m["lpips"] is None and m["lpips_unavailable_reason"] == "no weights here"

    monkeypatch.setattr(image_metrics, "lpips_unavailable_reason", lambda: None)
    monkeypatch.setattr(image_metrics, "_lpips_model", lambda: RecordingDistance())
    m = unchecked_render_metrics(scene, dataset, split="test", backend="torch")
    expected = sum(2 * float((0.5 - t).abs().mean()) for t in targets) / 2  # images in [-1, 1]: twice the L1
    assert m["lpips"] == pytest.approx(expected, rel=1e-6) and m["lpips_unavailable_reason"] is None
