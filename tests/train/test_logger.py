"""--logger: TensorBoard event files of a short run read back (scalars and eval images); the choice rules."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recon.cli import train as train_cli
from recon.core import ReconError
from recon.train import logger as logger_module

TINY = ["--scene.random-init-points", "120", "--scene.max-init-points", "120", "--scene.hull-resolution", "24",
        "--no-progress", "--threads", "1", "--no-final-eval", "--checkpoint-minutes", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=6, test_views=2, resolution=24
    )


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_short_run_writes_scalars_and_eval_images(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["triangles", "--data", str(data), "--steps", "12", "--log-every", "4", "--eval-every", "6",
            "--eval-images", "1", "--run-dir", str(run_dir), "--logger", "tensorboard", *TINY]  # fmt: skip
    assert train_cli.main(argv) == 0
    capsys.readouterr()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    acc = _events(run_dir / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/loss", "train/psnr", "train/num_primitives", "train/train_seconds"} <= scalars
    assert any(tag.startswith("lr/") for tag in scalars)  # one per parameter group
    assert [e.step for e in acc.Scalars("loss/loss")] == [4, 8, 12]  # logging steps only
    # The event values are the ones metrics.jsonl holds for the same steps (one source of truth).
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in records if "loss" in r}
    for event in acc.Scalars("loss/loss"):
        assert event.value == pytest.approx(logged[event.step]["loss"], rel=1e-6)
    for event in acc.Scalars("train/num_primitives"):
        assert event.value == logged[event.step]["num_primitives"]
    evals = {r["step"]: r for r in records if "eval_psnr" in r}
    assert sorted(evals) == [6, 12]
    assert [e.step for e in acc.Scalars("eval/psnr")] == [6, 12]
    for event in acc.Scalars("eval/psnr"):
        assert event.value == pytest.approx(evals[event.step]["eval_psnr"], rel=1e-5)
    for tag in ("eval/render", "eval/target"):
        images = acc.Images(tag)
        assert [e.step for e in images] == [6, 12]  # the eval after the last step is logged on close
        assert (images[0].width, images[0].height) == (24, 24)


def test_auto_and_explicit_choices(monkeypatch):
    monkeypatch.setattr(logger_module, "tensorboard_available", lambda: False)
    assert logger_module.resolve_logger("auto") == "none"
    assert logger_module.resolve_logger("none") == "none"
    with pytest.raises(ReconError, match="--logger tensorboard: the tensorboard package is not installed"):
        logger_module.resolve_logger("tensorboard")
    monkeypatch.setattr(logger_module, "tensorboard_available", lambda: True)
    assert logger_module.resolve_logger("auto") == "tensorboard"
    with pytest.raises(ReconError, match="--logger 'wandb'"):
        logger_module.resolve_logger("wandb")


def test_none_attaches_nothing(tmp_path):
    trainer = SimpleNamespace(hooks=[], step=0, run=SimpleNamespace(path=tmp_path))
    assert logger_module.attach_logger(trainer, "none") is None
    assert trainer.hooks == [] and not (tmp_path / "tensorboard").exists()
    hook = logger_module.attach_logger(trainer, "tensorboard")
    assert trainer.hooks == [hook] and (tmp_path / "tensorboard").is_dir()
    hook.close()


def test_resumed_run_continues_the_curves(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["triangles", "--data", str(data), "--log-every", "4", "--run-dir", str(run_dir), "--logger",
            "tensorboard", *TINY]  # fmt: skip
    assert train_cli.main([*base, "--steps", "8"]) == 0
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(
        str(run_dir / "tensorboard")
    ) as killed:  # a killed run's tail after its checkpoint (8)
        killed.add_scalar("loss/loss", 999.0, 12)
    assert train_cli.main([*base, "--steps", "16", "--resume"]) == 0
    capsys.readouterr()
    events = _events(run_dir / "tensorboard").Scalars("loss/loss")
    assert [e.step for e in events] == [4, 8, 12, 16]  # continues after the checkpoint: no repeated steps
    assert 999.0 not in [e.value for e in events]  # the tail past the checkpoint is hidden
