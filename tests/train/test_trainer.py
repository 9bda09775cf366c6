"""The generic trainer: a 200-step CPU fit must lower the loss and raise PSNR; resume continues exactly."""

import importlib.util
import os
import signal
import time
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
from recon.train.trainer import NonFiniteError, Trainer
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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# --- reliability: hooks and lock, time-based checkpoints, signals, NaN guard ----------------------------------


def _trainer(cfg, dataset, path: Path) -> Trainer:
    return Trainer(cfg, get_method("triangles"), dataset, RunDir(path), device=torch.device("cpu"))


class RecordingHook:
    def __init__(self, trainer: Trainer, block_at: int | None = None, block_seconds: float = 0.0) -> None:
        self.calls: list[tuple[str, int, bool | None]] = []
        self.block_at, self.block_seconds = block_at, block_seconds
        self.lock_free_before = []

    def before_step(self, trainer: Trainer) -> None:
        self.calls.append(("before", trainer.step, None))
        self.lock_free_before.append(not trainer.lock.locked())
        if trainer.step == self.block_at:
            time.sleep(self.block_seconds)  # a paused viewer

    def after_step(self, trainer: Trainer, terms: dict, logged: bool) -> None:
        self.calls.append(("after", trainer.step, logged))
        assert set(terms) >= {"loss", "psnr"}


def test_hooks_run_around_each_step_and_pauses_are_not_training_time(dataset, tmp_path):
    cfg = replace(_config(6), log_every=3, checkpoint_minutes=0.0)
    trainer = _trainer(cfg, dataset, tmp_path / "run")
    hook = RecordingHook(trainer, block_at=2, block_seconds=0.5)
    trainer.hooks.append(hook)
    held = []
    step_fn = trainer.train_step
    trainer.train_step = lambda: held.append(trainer.lock.locked()) or step_fn()  # observe the lock only
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    assert [c for c in hook.calls if c[0] == "after"] == [("after", s, s % 3 == 0) for s in range(1, 7)]
    assert [c[1] for c in hook.calls if c[0] == "before"] == list(range(6))
    assert held == [True] * 6 and all(hook.lock_free_before)
    assert result.train_seconds <= wall - 0.45  # the 0.5 s spent blocked in before_step is not training time


def test_checkpoints_by_training_time(dataset, tmp_path):
    cfg = replace(_config(4), checkpoint_minutes=1e-9, keep_checkpoints=10)  # due after every step
    _trainer(cfg, dataset, tmp_path / "timed").train()
    assert [s for s, _ in RunDir(tmp_path / "timed").checkpoints()] == [1, 2, 3, 4]
    cfg = replace(cfg, checkpoint_minutes=0.0)
    _trainer(cfg, dataset, tmp_path / "final_only").train()
    assert [s for s, _ in RunDir(tmp_path / "final_only").checkpoints()] == [4]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_termination_signals_checkpoint_and_restore_handlers(dataset, tmp_path, signame):
    signum = getattr(signal, signame)
    previous = signal.getsignal(signum)
    cfg = replace(_config(50), checkpoint_minutes=0.0)
    trainer = _trainer(cfg, dataset, tmp_path / "run")

    class Kill:
        def before_step(self, trainer):
            if trainer.step == 3:
                os.kill(os.getpid(), signum)

        def after_step(self, trainer, terms, logged):
            pass

    trainer.hooks.append(Kill())
    result = trainer.train()
    assert (result.stopped, result.step, result.signal) == ("interrupted", 3, signum)
    assert RunDir(tmp_path / "run").load_checkpoint()[1]["step"] == 3
    assert signal.getsignal(signum) is previous


def test_signal_during_checkpoint_write_waits_for_the_write(dataset, tmp_path):
    cfg = replace(_config(50), checkpoint_every=2, checkpoint_minutes=0.0, keep_checkpoints=10)
    trainer = _trainer(cfg, dataset, tmp_path / "run")
    run = trainer.run
    save = run.save_checkpoint
    writes = []

    def save_and_get_killed(step, *args, **kwargs):
        writes.append(step)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write: must not abort it
        return save(step, *args, **kwargs)

    run.save_checkpoint = save_and_get_killed
    result = trainer.train()
    assert (result.stopped, result.step) == ("interrupted", 4)
    assert writes == [2, 4]  # the interrupted write completed, and was not repeated
    assert run.load_checkpoint()[1]["step"] == 4


def test_nan_parameter_stops_training_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    cfg = replace(_config(40), log_every=5, checkpoint_every=4, checkpoint_minutes=0.0, keep_checkpoints=1)
    trainer = _trainer(cfg, dataset, tmp_path / "run")

    class Poison:
        def before_step(self, trainer):
            pass

        def after_step(self, trainer, terms, logged):
            if trainer.step == 7:  # poisoned after step 7: the checkpoint at step 8 checks it first
                with torch.no_grad():
                    trainer.scene.sh_dc[0, 0, 0] = float("nan")

    trainer.hooks.append(Poison())
    with pytest.raises(NonFiniteError, match=r"step 8: non-finite values in parameter group\(s\) sh_dc"):
        trainer.train()
    assert [s for s, _ in RunDir(tmp_path / "run").checkpoints()] == [4]
    tensors, meta = RunDir(tmp_path / "run").load_checkpoint()
    assert meta["step"] == 4 and bool(torch.isfinite(tensors["scene.sh_dc"]).all())


def test_nan_loss_is_reported_on_the_logging_step(dataset, tmp_path):
    cfg = replace(_config(40), log_every=5, checkpoint_minutes=0.0)
    trainer = _trainer(cfg, dataset, tmp_path / "run")
    step_fn = trainer.train_step

    def nan_loss():
        terms = step_fn()
        return terms | {"loss": torch.tensor(float("nan"))} if trainer.step == 9 else terms

    trainer.train_step = nan_loss  # the loss term of step 10, a logging step, is NaN
    with pytest.raises(NonFiniteError, match=r"step 10: non-finite loss term\(s\) loss"):
        trainer.train()
    assert RunDir(tmp_path / "run").latest_checkpoint() is None


def test_live_viewer_joins_hooks_and_lock(dataset, tmp_path):
    """``recon train --viewer``: the viewer pauses training through a hook and renders under trainer.lock."""
    import socket
    import threading

    from recon.cli.view import attach_training_viewer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    trainer = _trainer(replace(_config(4), log_every=2, checkpoint_minutes=0.0), dataset, tmp_path / "run")
    viewer = attach_training_viewer(trainer, port=port)
    try:
        assert viewer._lock is trainer.lock and len(trainer.hooks) == 1
        viewer.set_paused(True)
        start = time.perf_counter()
        thread = threading.Thread(target=trainer.train)
        thread.start()
        time.sleep(0.5)
        assert trainer.step == 0  # waiting in before_step
        viewer.set_paused(False)
        thread.join(timeout=120)
        wall = time.perf_counter() - start
        assert trainer.step == 4 and trainer.train_seconds <= wall - 0.45
        assert viewer._stats is not None and viewer._stats.step == 4
    finally:
        viewer.close()
