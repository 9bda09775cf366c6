"""Fixtures of the reliability suite: a tiny synthetic scene, ``recon train`` in a subprocess (real signals) and
in-process (cheap checks of errors and warnings). See docs/reliability.md for what each test promises."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SUBPROCESS_TIMEOUT_S = 300  # generous: the CI machine has 2 cores shared by parallel test workers
WAIT_TIMEOUT_S = 240.0  # longest wait for a training subprocess to reach a state (loaded 2-core machine)
RESOLUTION = 32  # pixels: the smallest images the trainer's SSIM window handles comfortably
TRAIN_VIEWS, TEST_VIEWS = 6, 2

# Flags every run here uses: one thread (fastest on a shared 2-core CPU), no progress bar, no final eval, and
# no time-based checkpoints (the tests use step-based ones, whose timing does not depend on the machine).
FAST = ["--threads", "1", "--no-progress", "--no-final-eval", "--checkpoint-minutes", "0", "--log-every", "5"]


def _write_scene(path: Path, seed: int) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", path, views=TRAIN_VIEWS, test_views=TEST_VIEWS, resolution=RESOLUTION, seed=seed
    )


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Path:
    """A 6-view 32x32 synthetic object (Blender format)."""
    return _write_scene(tmp_path_factory.mktemp("reliability") / "object", seed=0)


@pytest.fixture(scope="session")
def other_scene(tmp_path_factory) -> Path:
    """The same object seen from other (jittered) cameras: a different dataset for the fingerprint checks."""
    return _write_scene(tmp_path_factory.mktemp("reliability") / "object_other", seed=1)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RECON_DEBUG", None)
    env.pop("RECON_TEST_CHECKPOINT_PAUSE", None)
    return env | (extra or {})


class TrainProcess:
    """``recon train triangles`` in a subprocess; stderr goes to a file so a killed run leaves it readable."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recon.cli.main", "train", "triangles", *args],
                stdout=subprocess.PIPE, stderr=err, text=True, env=_env(env),
            )  # fmt: skip

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"training exited ({self.proc.returncode}) before {what}:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")
            time.sleep(0.02)

    def send(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=SUBPROCESS_TIMEOUT_S)

    def kill(self) -> int:
        return self.send(signal.SIGKILL)

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_train(tmp_path) -> Callable[..., TrainProcess]:
    """``start_train(*args, env=None)`` -> a running :class:`TrainProcess` (killed at teardown if still alive)."""
    started: list[TrainProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> TrainProcess:
        process = TrainProcess([*FAST, *args], tmp_path / f"train_{len(started)}.log", env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


@pytest.fixture
def train(capsys) -> Callable[..., tuple[int, str]]:
    """``train(*args)`` -> (exit status, stderr) of ``recon train triangles ARGS`` run in this process."""
    import torch

    from recon.cli.main import main

    threads = torch.get_num_threads()

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["train", "triangles", *FAST, *args])  # later flags win: ARGS may override FAST
        return code, capsys.readouterr().err

    yield run
    torch.set_num_threads(threads)
