"""``recon train --viewer`` plumbing (recon.cli.view.attach_training_viewer) with a stand-in trainer.

The stand-in has what the function reads of ``recon.train.trainer.Trainer``: ``scene`` (render, num_primitives),
``dataset``, ``cfg`` (steps, log_every, backend), ``run.path``, ``device``, ``step``, ``lock`` and ``hooks``, and a
``train`` loop that calls the hooks and holds the lock as the real one does.
"""

import socket
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from recon.cli.view import attach_training_viewer
from recon.core import RenderOutput

from .procedural import orbit_cameras, sphere_render_fn

OVERHEAD_STEPS = 300
MAX_OVERHEAD_SECONDS = 2e-3  # per step with nobody connected: a lock and a flag, far below any real step


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeScene(torch.nn.Module):
    def render(self, camera, options) -> RenderOutput:
        from recon.viewer import ViewState

        return sphere_render_fn(camera, ViewState(background=tuple(options.background.tolist())))

    def num_primitives(self) -> int:
        return 42


class FakeDataset:
    """A dataset with four training views (duck-typed like recon.datasets.SceneDataset)."""

    def __init__(self) -> None:
        self.views = orbit_cameras(4, size=16)
        self.splits = {"train": [SimpleNamespace(image_path=f"img_{i}.png") for i in range(4)]}
        self.points3d = torch.rand(20, 3)
        self.points3d_rgb = torch.rand(20, 3)

    def camera(self, split, i):
        return self.views[i].camera

    def image(self, split, i):
        return self.views[i].image


class FakeTrainer:
    def __init__(self, tmp_path) -> None:
        self.scene = FakeScene()
        self.dataset = FakeDataset()
        self.cfg = SimpleNamespace(steps=1000, log_every=10, backend="torch")
        self.run = SimpleNamespace(path=tmp_path)
        self.device = torch.device("cpu")
        self.step = 0
        self.train_seconds = 0.0  # time inside steps only, as the real trainer counts it
        self.lock = threading.Lock()
        self.hooks = []
        self.lock_seen: list[bool] = []

    def train_step(self):
        self.lock_seen.append(self.lock.locked())
        return {"loss": torch.tensor(0.5), "psnr": torch.tensor(20.0 + self.step / 100)}

    def save_checkpoint(self):
        self.checkpoint_lock_held = self.lock.locked()
        return self.run.path / "checkpoints" / "step.safetensors"

    def train(self, steps: int) -> None:
        for _ in range(steps):
            for hook in self.hooks:
                hook.before_step(self)
            start = time.perf_counter()
            with self.lock:
                terms = self.train_step()
                self.step += 1
            self.train_seconds += time.perf_counter() - start
            logged = self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps
            for hook in self.hooks:
                hook.after_step(self, terms, logged)


@pytest.fixture
def attached(tmp_path):
    trainer = FakeTrainer(tmp_path)
    viewer = attach_training_viewer(trainer, port=_free_port())
    assert viewer._lock is trainer.lock and len(trainer.hooks) == 1
    yield trainer, viewer
    viewer.close()


def test_steps_run_under_the_shared_lock(attached):
    trainer, viewer = attached
    trainer.train(5)
    assert trainer.lock_seen == [True] * 5
    assert not viewer._lock.locked()


def test_stats_on_logging_steps(attached):
    trainer, viewer = attached
    trainer.train(25)
    text = viewer._stats_markdown.content
    assert (
        "20 / 1000" in text and "20.19 dB" in text
    )  # psnr of the step that ran at trainer.step 19 and "42" in text and "Steps/s" in text


def test_pause_blocks_training(attached):
    trainer, viewer = attached
    viewer.set_paused(True)
    thread = threading.Thread(target=trainer.train, args=(3,))
    thread.start()
    time.sleep(0.3)
    assert trainer.step == 0
    viewer.set_paused(False)
    thread.join(timeout=5)
    assert trainer.step == 3
    # Time spent paused is outside the steps, so it stays out of the training-time budget (--max-minutes).
    assert trainer.train_seconds < 0.25


def test_frusta_points_and_render(attached):
    trainer, viewer = attached
    assert len(viewer._frusta) == 4 and "SfM points" in viewer._geometry_handles
    from recon.viewer import ViewState

    out = viewer._render_fn(trainer.dataset.views[0].camera, ViewState(mode="depth"))
    assert out.alpha.max() == 1.0


def test_overhead_without_clients(tmp_path):
    """With nobody connected, a guarded step costs little more than the step itself."""
    plain = FakeTrainer(tmp_path)
    start = time.perf_counter()
    plain.train(OVERHEAD_STEPS)
    plain_seconds = time.perf_counter() - start
    guarded = FakeTrainer(tmp_path)
    viewer = attach_training_viewer(guarded, port=_free_port())
    try:
        start = time.perf_counter()
        guarded.train(OVERHEAD_STEPS)
        guarded_seconds = time.perf_counter() - start
    finally:
        viewer.close()
    assert (guarded_seconds - plain_seconds) / OVERHEAD_STEPS < MAX_OVERHEAD_SECONDS
