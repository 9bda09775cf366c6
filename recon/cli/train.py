"""``recon train METHOD --data PATH [options]``: train a representation; prints the run directory last.

Any preset field is a flag (``--scene.sh-degree 2``, ``--strategy.until-fraction 0.5``); ``--preset`` picks the
method preset (``triangles``, the published recipe) or the CPU-budget preset (``triangles_cpu``, the default on
CPU). ``--resume --run-dir RUN`` continues RUN from its newest checkpoint with its own config.
"""

import logging
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import tyro

from recon.config import dump_config
from recon.core import ReconError
from recon.runs import RunDir, check_folder_writable
from recon.train import distributed
from recon.train.config import RUN_CONTROL_FIELDS, validate_train_config
from recon.train.methods import REGISTRY, get_method, method_summaries
from recon.train.run_io import (
    evaluate_run,
    load_run_dataset,
    open_run_config,
    preset_config,
    preset_name,
    resolve_device,
)
from recon.train.trainer import Trainer, TrainResult

logger = logging.getLogger(__name__)

USAGE = "usage: recon train METHOD --data PATH [options]   (METHOD: " + " | ".join(REGISTRY) + ")"


def usage() -> str:
    """The usage line and one line per method (``recon train --help``)."""
    return "\n".join(
        [
            USAGE,
            "",
            "methods:",
            *method_summaries(),
            "",
            "'recon train METHOD --help' lists every option of a method (with its preset's defaults).",
        ]
    )


def parse(argv: list[str]):
    """(method, resolved config, device) from the command line (two passes: preset choice, then flags)."""
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(usage())
            raise SystemExit(0)
        raise ReconError(f"METHOD is missing; {USAGE}")
    method = get_method(argv[0])
    prog = f"recon train {method.name}"
    args = argv[1:]
    wants_help = any(a in ("-h", "--help") for a in args)  # show the preset-resolved defaults in --help
    plain = method.config_cls(method=method.name)
    first = plain if wants_help else tyro.cli(method.config_cls, args=args, prog=prog, default=plain)
    if first.resume:
        if not first.run_dir:
            raise ReconError("--resume needs --run-dir RUN_DIR (the run to continue)")
        run, stored_method, stored = open_run_config(first.run_dir)
        if stored_method.name != method.name:
            raise ReconError(
                f"--run-dir {first.run_dir}: the run trained {stored_method.name!r}, not {method.name!r}"
            )
        cfg = tyro.cli(method.config_cls, args=args, prog=prog, default=stored)
        _check_resume_changes(run, stored, cfg)
        data = str(Path(cfg.data).resolve()) if cfg.data else ""
        return method, replace(cfg, method=method.name, resume=True, data=data), resolve_device(cfg.device)
    device = resolve_device(first.device)
    name = preset_name(method.name, first.preset, device)
    base = preset_config(method, name)
    cfg = tyro.cli(
        method.config_cls, args=args, prog=prog, default=replace(base, method=method.name, preset=name)
    )
    if cfg.max_minutes > 0 and not _given(args, "--steps"):
        cfg = replace(
            cfg, steps=0
        )  # a time budget without an explicit --steps: train until the time is spent
    # The absolute dataset path goes into config.yaml, so eval/export/resume work from any folder.
    data = str(Path(cfg.data).resolve()) if cfg.data else ""
    return method, replace(cfg, method=method.name, data=data), device


def _given(args: list[str], flag: str) -> bool:
    """Whether ``flag`` (``--steps`` or ``--steps=N``) is on the command line."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _check_resume_changes(run: RunDir, stored, cfg) -> None:
    """--resume may change run-control flags (--steps, --max-minutes, ...) but not the model or the data."""
    before, after = _flat(dump_config(stored)), _flat(dump_config(cfg))
    changed = sorted(k for k in before.keys() | after.keys()
                     if k not in RUN_CONTROL_FIELDS and before.get(k) != after.get(k))  # fmt: skip
    if changed:
        raise ReconError(
            f"--resume: {', '.join('--' + k.replace('_', '-') for k in changed)} differ(s) from the run's "
            f"{run.config_path}; a resumed run keeps its model and data settings (start a new run to change them)"
        )


def _progress_bar(cfg, start_step: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=not cfg.progress,
    )  # fmt: skip
    # A step bound shows steps; a time budget (steps = 0) shows the budget's progress in percent.
    total = cfg.steps if cfg.steps > 0 else 100
    task = progress.add_task("train", total=total, completed=start_step if cfg.steps > 0 else 0, info="")
    state = {"t": time.perf_counter(), "step": start_step}

    def update(trainer, values: dict) -> None:
        now = time.perf_counter()
        rate = (trainer.step - state["step"]) / max(now - state["t"], 1e-9)
        state.update(t=now, step=trainer.step)
        info = (f"step {trainer.step}  loss {values['loss']:.4f}  psnr {values['psnr']:.2f}  "
                f"primitives {values['num_primitives']:,}  {rate:.2f} it/s")  # fmt: skip
        done = trainer.step if cfg.steps > 0 else round(100 * trainer.progress(), 1)
        progress.update(task, completed=done, info=info)

    return progress, update


def main(argv: list[str]) -> int:
    argv, nproc = distributed.pop_nproc(argv)
    if nproc > 1:  # --nproc N: N local ranks through torchrun, each running this command without --nproc
        return distributed.launch_local(nproc, ["train", *argv])
    method, cfg, device = parse(argv)
    device = distributed.init_from_env(device)  # under torchrun: join the process group (else a no-op)
    validate_train_config(cfg)
    _validate_method_config(method, cfg)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    # writable folders before any work (rank 0); None: a fresh timestamped run, made later
    run = _prepare_run(cfg) if distributed.is_rank0() else None
    dataset = load_run_dataset(cfg)
    trainer = _start_ranks(method, cfg, dataset, device, run)
    run = trainer.run
    result = _train(trainer, cfg)
    distributed.shutdown()  # no collectives after training
    if trainer.rank != 0:
        return 0  # rank 0 reports, evaluates and prints the run directory
    print(f"stopped after step {result.step} ({result.stopped}), {result.train_seconds / 60:.2f} training minutes"
          f" (+{result.eval_seconds / 60:.2f} minutes of periodic evaluation, not counted)", file=sys.stderr)  # fmt: skip
    if result.stopped == "interrupted":
        print(f"checkpoint written; continue with: recon train {method.name} --resume --run-dir {run.path}",
              file=sys.stderr)  # fmt: skip
        print(run.path)
        return 128 + (result.signal or signal.SIGINT)
    if cfg.final_eval and dataset.splits.get("test"):
        ev = evaluate_run(run, method, cfg, device=device, dataset=dataset)
        print(f"eval: psnr {ev['psnr']:.3f}  ssim {ev['ssim']:.4f} on {ev['num_images']} {ev['split']} views",
              file=sys.stderr)  # fmt: skip
    print(run.path)
    return 0


def _start_ranks(method, cfg, dataset, device, run: RunDir | None) -> Trainer:
    """Rank 0 (or the only process) starts or resumes ``run``; the other ranks then open the same run (its path
    broadcast from rank 0) read-only and build the same trainer (docs/distributed.md)."""
    if distributed.is_rank0():
        trainer = _start_or_resume(method, cfg, dataset, device, run)
        distributed.broadcast_object(str(trainer.run.path))
        return trainer
    run = RunDir(distributed.broadcast_object(None))
    if cfg.resume and run.checkpoints():
        return Trainer.from_checkpoint(cfg, method, dataset, run, device=device)
    return Trainer(cfg, method, dataset, run, device=device)


def _train(trainer: Trainer, cfg) -> TrainResult:
    viewer = None
    if not distributed.is_rank0():
        cfg = replace(cfg, progress=False, viewer=False)  # rank 0 shows progress and serves the viewer
    if cfg.viewer:
        from recon.cli.view import attach_training_viewer

        viewer = attach_training_viewer(trainer, host=cfg.viewer_host, port=cfg.viewer_port)
        print(f"viewer: {viewer.url} (training waits while paused there)", file=sys.stderr)
    progress, update = _progress_bar(cfg, trainer.step)
    try:
        with progress:
            return trainer.train(progress=update)
    finally:
        if viewer is not None:
            viewer.close()


def _validate_method_config(method, cfg) -> None:
    """Build an empty scene and the strategy from the config, so a bad value fails now, naming its field."""
    try:
        method.scene_cls.empty(cfg.scene)
        method.make_strategy(cfg, 1)
    except (ValueError, TypeError) as exc:
        raise ReconError(f"invalid configuration: {exc}") from exc


def _experiment(cfg) -> str:
    return cfg.experiment or Path(cfg.data).resolve().name


def _prepare_run(cfg) -> RunDir | None:
    """Check (and create) the run folders before the work; refuse to start over a run that has checkpoints."""
    if not cfg.run_dir:
        parent = Path(cfg.output_dir) / _experiment(cfg) / cfg.method
        check_folder_writable(parent, create=False)  # the timestamped folder is made once the scene exists
        return None
    run = RunDir(cfg.run_dir)
    if not cfg.resume and run.config_path.exists() and run.checkpoints():
        raise ReconError(f"--run-dir {cfg.run_dir}: already a run (use --resume to continue it)")
    if cfg.resume:
        run.require_exists()
    run.check_writable()
    return run


def _start_or_resume(method, cfg, dataset, device, run: RunDir | None) -> Trainer:
    from recon.datasets import dataset_info

    info = dataset_info(dataset)
    if run is not None and cfg.resume:
        run.check_dataset(info)
        if run.checkpoints():
            trainer = Trainer.from_checkpoint(cfg, method, dataset, run, device=device)
            run.write_config(replace(cfg, resume=False))  # keeps changed run-control fields (--steps ...)
            print(f"resuming {run.path} at step {trainer.step}", file=sys.stderr)
            return trainer
        logger.warning(
            "%s: no checkpoint yet (stopped before its first one); starting the run over", run.path
        )
    elif run is not None and run.config_path.exists():
        logger.warning(
            "%s: a run that never wrote a checkpoint; starting it over in the same folder", run.path
        )
    trainer = Trainer(cfg, method, dataset, run, device=device)  # initialises the scene before any run folder
    if run is None:
        run = trainer.run = RunDir.create(cfg.output_dir, _experiment(cfg), method.name)
    run.truncate_metrics(-1)
    run.write_config(replace(cfg, resume=False))
    run.write_dataset_json(info)
    print(f"run {run.path}: {method.name}, preset {cfg.preset}, {trainer.scene.num_primitives()} initial "
          f"primitives, device {device}", file=sys.stderr)  # fmt: skip
    return trainer
