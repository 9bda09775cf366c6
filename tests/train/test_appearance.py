"""Per-image exposure compensation (recon.train.appearance): the transform, its gauge and gradients, the mode
rule, and a trainer that recovers known per-view exposures and resumes them exactly."""

import importlib.util
from pathlib import Path

import pytest
import torch

from recon.runs import RunDir
from recon.scenes.base import RenderOptions
from recon.scenes.triangles import TriangleSceneConfig
from recon.train.appearance import ExposureCompensation, uses_compensation
from recon.train.config import TrianglesTrainConfig
from recon.train.losses import LossConfig
from recon.train.methods import get_method
from recon.train.trainer import Trainer
from recon.train.triangles_mcmc import TriangleMCMCConfig
from tests.typecheck import assert_rejected

_spec = importlib.util.spec_from_file_location("fake_data", Path(__file__).with_name("fake_data.py"))
fake_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_data)

TRUE_LOG_GAINS = torch.tensor([0.25, -0.25, 0.0, 0.2, -0.2, 0.1, -0.1, 0.25, -0.25, 0.0, 0.15, -0.15])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_params(comp: ExposureCompensation, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        comp.log_gain.copy_(0.3 * torch.randn(comp.log_gain.shape, generator=gen))
        comp.bias.copy_(0.1 * torch.randn(comp.bias.shape, generator=gen))


def test_identity_at_start_and_per_view_affine():
    comp = ExposureCompensation(num_views=5)
    rgb, alpha = torch.rand(3, 7, 3), torch.rand(3, 7, 1)
    views = torch.tensor([4, 0, 4])
    assert torch.equal(comp(rgb, alpha, views), rgb)
    _random_params(comp)
    out = comp(rgb, alpha, views)
    gain = torch.exp(comp.log_gain - comp.log_gain.mean(0)).detach()
    bias = (comp.bias - comp.bias.mean(0)).detach()
    for c, v in enumerate(views.tolist()):
        torch.testing.assert_close(out[c], rgb[c] * gain[v] + alpha[c] * bias[v])
    assert not torch.allclose(out[0], out[1])


def test_gauge_is_the_mean_over_views():
    """A common shift of every view's gain and bias changes nothing: the identity is the average exposure."""
    comp, shifted = ExposureCompensation(4), ExposureCompensation(4)
    _random_params(comp)
    with torch.no_grad():
        shifted.log_gain.copy_(comp.log_gain + torch.tensor([0.5, -0.2, 0.1]))
        shifted.bias.copy_(comp.bias - 0.3)
    rgb, alpha, views = torch.rand(4, 6, 3), torch.rand(4, 6, 1), torch.arange(4)
    torch.testing.assert_close(comp(rgb, alpha, views), shifted(rgb, alpha, views))


def test_background_is_left_uncorrected_and_images_broadcast():
    comp = ExposureCompensation(3)
    _random_params(comp, seed=1)
    premult, alpha = torch.rand(2, 4, 5, 3), torch.rand(2, 4, 5, 1)
    premult = premult * alpha
    bg = torch.tensor([1.0, 0.5, 0.0])
    views = torch.tensor([2, 1])
    over_bg = comp(premult + (1 - alpha) * bg, alpha, views, background=bg)
    torch.testing.assert_close(over_bg, comp(premult, alpha, views) + (1 - alpha) * bg)
    empty = torch.zeros(2, 4, 5, 1)  # nothing rendered: the background as it is, whatever the exposure
    torch.testing.assert_close(
        comp(torch.zeros(2, 4, 5, 3) + bg, empty, views, background=bg), bg.expand(2, 4, 5, 3)
    )


def test_shape_mismatch_is_a_clear_error():
    comp = ExposureCompensation(3)
    rgb, alpha = torch.rand(2, 4, 3), torch.rand(2, 4, 1)
    assert_rejected(
        lambda: comp(rgb, alpha, torch.tensor([0, 1, 2])), match="disagree", argument="view_indices"
    )
    assert_rejected(lambda: comp(rgb, alpha[:, :3], torch.tensor([0, 1])), match="disagree", argument="alpha")
    with pytest.raises(ValueError, match="num_views"):
        ExposureCompensation(0)


def test_gradcheck_float64():
    """float64 gradcheck of the module's own forward w.r.t. the render, the opacity and both parameters."""
    comp = ExposureCompensation(3).double()
    _random_params(comp, seed=2)
    bg = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64)
    views = torch.tensor([0, 2])

    def f(rgb, alpha, log_gain, bias):
        params = {"log_gain": log_gain, "bias": bias}
        return torch.func.functional_call(comp, params, (rgb, alpha, views), {"background": bg})

    inputs = (
        torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True),
        torch.rand(2, 3, 1, dtype=torch.float64, requires_grad=True),
        comp.log_gain.detach().clone().requires_grad_(True),
        comp.bias.detach().clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize(
    ("mode", "has_alpha", "expected"),
    [("off", False, False), ("affine", True, True), ("auto", False, True), ("auto", True, False)],
)
def test_mode_rule(mode, has_alpha, expected):
    assert uses_compensation(mode, has_alpha) is expected


def test_unknown_mode_is_rejected():
    assert_rejected(
        lambda: uses_compensation("sometimes", False),  # type: ignore[arg-type]
        match="appearance must be off, affine or auto",
        argument="mode",
    )


class ExposedDataset(fake_data.FakeDataset):
    """The fake scene photographed with a different exposure per training view (the object's light scaled by
    ``exp(TRUE_LOG_GAINS[i])``; the white background as it is)."""

    def __init__(self) -> None:
        super().__init__(size=32, views=len(TRUE_LOG_GAINS), test_views=4)
        with torch.no_grad():
            out = self.teacher.render(self._cams["train"], RenderOptions(backend="torch"))  # over black
        gains = torch.exp(TRUE_LOG_GAINS).view(-1, 1, 1, 1)
        self._images["train"] = (out.rgb * gains).clamp(0, 1) + (1 - out.alpha) * self.background


def _config(steps: int, appearance: str) -> TrianglesTrainConfig:
    return TrianglesTrainConfig(
        data="fake", method="triangles", steps=steps, backend="auto", log_every=10, final_eval=False,
        appearance=appearance,  # type: ignore[arg-type]
        scene=TriangleSceneConfig(sh_degree=0, dome=False, init_scale=2.0, lr_scale=10.0),
        strategy=TriangleMCMCConfig(min_every_steps=50, every_fraction=0.25, start_fraction=0.1,
                                    until_fraction=0.8, cap=400),
        loss=LossConfig(normal_from_fraction=1.0),
    )  # fmt: skip


def _train(cfg, dataset, path: Path, until: int) -> Trainer:
    trainer = Trainer(cfg, get_method("triangles"), dataset, RunDir(path), device=torch.device("cpu"))
    while trainer.step < until:
        trainer.train_step()
        trainer.step += 1
    return trainer


def test_trainer_recovers_per_view_exposures(tmp_path):
    dataset = ExposedDataset()
    trainer = _train(_config(300, "affine"), dataset, tmp_path / "run", until=300)
    assert trainer.appearance is not None
    learned = (trainer.appearance.log_gain - trainer.appearance.log_gain.mean(0)).detach().mean(1)
    truth = TRUE_LOG_GAINS - TRUE_LOG_GAINS.mean()
    corr = torch.corrcoef(torch.stack([learned, truth]))[0, 1]
    assert corr > 0.8, (learned, truth)
    assert (learned.max() - learned.min()) > 0.2 * (truth.max() - truth.min())
    off = Trainer(_config(300, "off"), get_method("triangles"), dataset, RunDir(tmp_path / "off"),
                  device=torch.device("cpu"))  # fmt: skip
    assert off.appearance is None and not any(n.startswith("appearance") for n in off.optimizer.groups)
    auto = Trainer(_config(300, "auto"), get_method("triangles"), dataset, RunDir(tmp_path / "auto"),
                   device=torch.device("cpu"))  # fmt: skip
    assert auto.appearance is None  # the dataset has alpha masks: not a photo capture


def test_resume_restores_the_exposures_exactly(tmp_path):
    dataset = ExposedDataset()
    cfg = _config(20, "affine")
    full = _train(cfg, dataset, tmp_path / "full", until=20)
    half = _train(cfg, dataset, tmp_path / "half", until=10)
    half.save_checkpoint()
    resumed = Trainer.from_checkpoint(cfg, get_method("triangles"), dataset, RunDir(tmp_path / "half"),
                                      device=torch.device("cpu"))  # fmt: skip
    assert resumed.appearance is not None and full.appearance is not None
    assert torch.equal(resumed.appearance.log_gain, half.appearance.log_gain)  # type: ignore[union-attr]
    while resumed.step < 20:
        resumed.train_step()
        resumed.step += 1
    for name, value in full.appearance.state_dict().items():
        assert torch.equal(value, resumed.appearance.state_dict()[name]), name
    sa, sb = full.optimizer.state_tensors(), resumed.optimizer.state_tensors()
    assert any(k.startswith("appearance.") for k in sa) and sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
