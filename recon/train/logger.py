"""Experiment loggers as :class:`~recon.train.trainer.TrainHook` s: TensorBoard event files in RUN_DIR/tensorboard.

The CLI attaches one with :func:`attach_logger` (``--logger tensorboard|none|auto``); the trainer knows nothing
about it. On logging steps the hook writes the step's loss terms (``loss/<name>``), the training PSNR
(``train/psnr``), the number of primitives, every parameter group's learning rate (``lr/<group>``) and the
training time. After each periodic evaluation it writes the eval PSNR/SSIM and the first evaluated test view's
render and target (``eval/render``, ``eval/target``). It reads values back from the device only on logging steps
and after evaluations, as the trainer does.
"""

import importlib.util
import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from recon.core import ReconError

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""Folder of the event files inside the run directory."""
TAIL_BYTES = 8192  # the end of metrics.jsonl read for the newest evaluation record (a few records are < 1 KB)


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (nothing is imported)."""
    return importlib.util.find_spec("tensorboard") is not None


def resolve_logger(choice: str) -> str:
    """``auto`` -> ``tensorboard`` when installed, else ``none``; an explicit choice must be usable here.

    Raises:
        ReconError: ``tensorboard`` asked for but not installed, or an unknown choice.
    """
    if choice == "auto":
        return "tensorboard" if tensorboard_available() else "none"
    if choice == "tensorboard" and not tensorboard_available():
        raise ReconError(
            "--logger tensorboard: the tensorboard package is not installed (pip install tensorboard)"
        )
    if choice not in ("tensorboard", "none"):
        raise ReconError(f"--logger {choice!r}: expected tensorboard, none or auto")
    return choice


class TensorBoardLogger:
    """A :class:`~recon.train.trainer.TrainHook` writing TensorBoard event files; :meth:`close` flushes them.

    Args:
        log_dir: folder of the event files (created).
        purge_step: on a resumed run, the first step it trains (checkpoint step + 1): events the interrupted run
            logged from that step on are hidden, so curves do not double back.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self._eval_seconds_seen: float | None = None  # trainer.eval_seconds grows exactly when an eval ran

    def before_step(self, trainer) -> None:
        self._log_new_eval(trainer)

    def after_step(self, trainer, terms: dict[str, Tensor], logged: bool) -> None:
        if self._eval_seconds_seen is None:
            self._eval_seconds_seen = trainer.eval_seconds
        if not logged:
            return
        step = trainer.step
        for name, value in terms.items():
            tag = "train/psnr" if name == "psnr" else f"loss/{name}"
            self.writer.add_scalar(tag, float(value), step)  # host sync: logging steps only
        self.writer.add_scalar("train/num_primitives", trainer.scene.num_primitives(), step)
        self.writer.add_scalar("train/train_seconds", trainer.train_seconds, step)
        for group, lr in trainer.optimizer.learning_rates().items():
            self.writer.add_scalar(f"lr/{group}", lr, step)

    def close(self, trainer=None) -> None:
        """Log an evaluation that ran after the last step (if any), then flush and close the event file."""
        if trainer is not None:
            self._log_new_eval(trainer)
        self.writer.close()

    def _log_new_eval(self, trainer) -> None:
        """The periodic evaluation runs after a step's hooks; the next ``before_step`` (or ``close``) sees it."""
        seen = self._eval_seconds_seen
        self._eval_seconds_seen = trainer.eval_seconds
        if (
            seen is None
            or trainer.eval_seconds <= seen
            or trainer.test_views is None
            or not trainer.eval_indices
        ):
            return
        render, target = _first_eval_view(trainer)
        step = trainer.step
        for key, value in _last_eval_record(Path(trainer.run.metrics_path), step).items():
            self.writer.add_scalar(f"eval/{key}", value, step)
        self.writer.add_image("eval/render", render, step, dataformats="HWC")
        self.writer.add_image("eval/target", target, step, dataformats="HWC")
        self.writer.flush()


def _last_eval_record(metrics_path: Path, step: int) -> dict[str, float]:
    """``psnr``/``ssim`` of the periodic evaluation the trainer just appended to metrics.jsonl at ``step``."""
    try:
        with open(metrics_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the first line of the tail may be cut
        if record.get("step") == step and "eval_psnr" in record:
            return {"psnr": float(record["eval_psnr"]), "ssim": float(record["eval_ssim"])}
    return {}


def _first_eval_view(trainer) -> tuple[Tensor, Tensor]:
    """(render, target) of the first view of the periodic evaluation, (H, W, 3) in [0, 1] on the CPU."""
    from recon.scenes.base import RenderOptions

    views, backend = trainer.test_views, trainer.cfg.backend
    camera, target = views.view(trainer.eval_indices[0])
    options = RenderOptions(background=views.background, backend=backend, depth=False)
    was_training = trainer.scene.training
    trainer.scene.eval()  # the same deterministic sampling as the evaluation itself
    try:
        with torch.no_grad(), trainer.lock:
            rgb = trainer.scene.render(camera, options).rgb
    finally:
        trainer.scene.train(was_training)
    height, width = target.shape[-3], target.shape[-2]
    render = rgb.reshape(-1, height, width, 3)[0].clamp(0, 1).cpu()
    return render, target.reshape(-1, height, width, 3)[0].clamp(0, 1).cpu()


def attach_logger(trainer, choice: str) -> TensorBoardLogger | None:
    """Attach the logger ``choice`` (``auto``/``tensorboard``/``none``) to ``trainer.hooks``; None for none.

    The caller closes it (:meth:`TensorBoardLogger.close`) when training ends.
    """
    if resolve_logger(choice) == "none":
        return None
    # TensorBoard hides earlier events with step >= purge_step: those logged after the checkpoint a resumed run
    # continues from (an interrupted run's tail); the checkpoint's own step stays.
    purge = trainer.step + 1 if trainer.step > 0 else None
    hook = TensorBoardLogger(Path(trainer.run.path) / TENSORBOARD_DIR, purge_step=purge)
    trainer.hooks.append(hook)
    logger.info("tensorboard event files in %s", hook.log_dir)
    return hook
