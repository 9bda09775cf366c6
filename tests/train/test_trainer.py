"""The generic trainer: a 200-step CPU fit must lower the loss and raise PSNR; resume continues exactly."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from recon.runs import RunDir
from recon.scenes.triangles import TriangleSceneConfig
from recon.train.budget import Budget
from recon.train.config import TrianglesTrainConfig
from recon.train.evaluate import quick_metrics
from recon.train.losses import LossConfig
from recon.train.methods import get_method
from recon.train.trainer import Trainer
from recon.train.triangles_mcmc import TriangleMCMCConfig

_spec = importlib.util.spec_from_file_location("fake_data", Path(__file__).with_name("fake_data.py"))
fake_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_data)

FIT_STEPS = 200
LOSS_DROP = 0.30  # the loss of the last 20 steps must be at least 30% below that of the first 20
PSNR_GAIN_DB = 3.0  # training-view PSNR must rise by at least 3 dB over the 200 steps


@pytest.fixture(scope="module")
def dataset():
    return fake_data.FakeDataset(size=32, views=12, test_views=4)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one torch thread is several times faster than two on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(steps: int, **strategy) -> TrianglesTrainConfig:
    return TrianglesTrainConfig(
        data="fake", method="triangles", steps=steps, backend="auto", log_every=10, final_eval=False,
        scene=TriangleSceneConfig(sh_degree=1, dome=False, init_scale=2.0, lr_scale=10.0),
        strategy=TriangleMCMCConfig(**({"min_every_steps": 50, "every_fraction": 0.25, "start_fraction": 0.1,
                                         "until_fraction": 0.8, "cap": 400} | strategy)),
        loss=LossConfig(normal_from_fraction=1.0),
    )  # fmt: skip


def test_fit_lowers_loss_and_raises_psnr(dataset, tmp_path):
    cfg = _config(FIT_STEPS)
    trainer = Trainer(
        cfg, get_method("triangles"), dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    views = list(range(len(trainer.views)))
    before = quick_metrics(trainer.scene, trainer.views, indices=views, backend="auto")["psnr"]
    n0 = trainer.scene.num_primitives()
    losses = []
    while trainer.step < cfg.steps:
        losses.append(float(trainer.train_step()["loss"]))
        trainer.step += 1
    after = quick_metrics(trainer.scene, trainer.views, indices=views, backend="auto")["psnr"]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last <= (1 - LOSS_DROP) * first, (first, last)
    assert after >= before + PSNR_GAIN_DB, (before, after)
    assert trainer.scene.num_primitives() != n0  # densification ran (events at steps 50, 100, 150)


def _run(cfg, dataset, path: Path, steps_before_stop: int | None = None) -> Trainer:
    trainer = Trainer(replace(cfg, steps=cfg.steps), get_method("triangles"), dataset, RunDir(path),
                      device=torch.device("cpu"))  # fmt: skip
    while trainer.step < (steps_before_stop or cfg.steps):
        trainer.train_step()
        trainer.step += 1
    return trainer


def test_resume_continues_exactly(dataset, tmp_path):
    # Events every 5 steps from step 5 on, so the triangle count changes before and after the checkpoint.
    cfg = _config(
        20, min_every_steps=5, every_fraction=0.25, start_fraction=0.0, until_fraction=0.9, cap=1000
    )
    full = _run(cfg, dataset, tmp_path / "full")
    half = _run(cfg, dataset, tmp_path / "half", steps_before_stop=10)
    half.save_checkpoint()
    n_at_10 = half.scene.num_primitives()
    resumed = Trainer.from_checkpoint(cfg, get_method("triangles"), dataset, RunDir(tmp_path / "half"),
                                      device=torch.device("cpu"))  # fmt: skip
    assert resumed.step == 10 and resumed.scene.num_primitives() == n_at_10
    while resumed.step < cfg.steps:
        resumed.train_step()
        resumed.step += 1
    assert full.scene.num_primitives() == resumed.scene.num_primitives()
    for (name, a), (_, b) in zip(full.scene.state_dict().items(), resumed.scene.state_dict().items()):
        assert torch.equal(a, b), name
    sa, sb = full.optimizer.state_tensors(), resumed.optimizer.state_tensors()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for key, value in full.strategy.state_tensors().items():
        assert torch.equal(value, resumed.strategy.state_tensors()[key]), key


def test_max_minutes_stops_with_checkpoint(dataset, tmp_path):
    cfg = replace(_config(1000), max_minutes=1e-9)
    trainer = Trainer(
        cfg, get_method("triangles"), dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    result = trainer.train()
    assert result.stopped == "max_minutes" and 1 <= result.step < 5
    assert RunDir(tmp_path / "run").latest_checkpoint() is not None


def test_keyboard_interrupt_writes_checkpoint(dataset, tmp_path, monkeypatch):
    cfg = _config(50)
    trainer = Trainer(
        cfg, get_method("triangles"), dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    original = trainer.train_step

    def interrupted():
        if trainer.step == 3:
            raise KeyboardInterrupt
        return original()

    monkeypatch.setattr(trainer, "train_step", interrupted)
    result = trainer.train()
    assert result.stopped == "interrupted" and result.step == 3
    tensors, meta = RunDir(tmp_path / "run").load_checkpoint()
    assert meta["step"] == 3 and "scene.vertices" in tensors


def test_time_budget_drives_schedules(dataset, tmp_path):
    # Under --max-minutes the schedules follow max(step fraction, time fraction): half the minutes = half the budget.
    cfg = replace(_config(1000), max_minutes=2.0)
    trainer = Trainer(
        cfg, get_method("triangles"), dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    trainer.train_seconds = 60.0
    assert trainer.progress() == 0.5
    trainer.step = 900
    assert trainer.progress() == 0.9
    trainer.step, trainer.train_seconds = 0, 60.0
    trainer.train_step()
    lr = trainer.optimizer.learning_rates()["vertices"]
    base = cfg.scene.lr_scale * cfg.scene.lr_vertices
    assert abs(lr - base * cfg.scene.lr_vertices_final_ratio**0.5) < 1e-9  # log-linear decay at t = 0.5
    trainer.budget = Budget(steps=1000)  # without a time budget, schedules use step / steps
    trainer.step = 250
    assert trainer.progress() == 0.25


BUDGET_MINUTES = 0.05  # a 3 s time budget
STOP_SLACK_S = 3.0  # one step of this tiny scene takes milliseconds: stopping later than this is a bug


def test_time_budget_without_steps_trains_until_the_time_is_spent(dataset, tmp_path):
    # steps = 0: no step bound; the run ends when the training clock reaches the budget, and the schedules
    # (here the log-linear learning-rate decay) have reached their ends with it.
    cfg = replace(_config(0), max_minutes=BUDGET_MINUTES, eval_every_minutes=0.01, eval_images=2)
    trainer = Trainer(
        cfg, get_method("triangles"), dataset, RunDir(tmp_path / "run"), device=torch.device("cpu")
    )
    result = trainer.train()
    budget_s = 60 * BUDGET_MINUTES
    assert result.stopped == "max_minutes"
    assert budget_s <= result.train_seconds < budget_s + STOP_SLACK_S
    assert result.step > 10 and result.eval_seconds > 0  # periodic evaluations ran, outside the budget
    assert trainer.progress() == 1.0
    lr = trainer.optimizer.learning_rates()["vertices"]
    final = cfg.scene.lr_scale * cfg.scene.lr_vertices * cfg.scene.lr_vertices_final_ratio
    assert lr < final * 1.2  # the decay ran (almost) to its end: the last step set it at progress ~ 1
