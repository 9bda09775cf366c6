"""``recon train METHOD --data PATH [options]``: train a representation; prints the run directory last.

Any preset field is a flag (``--scene.sh-degree 2``, ``--strategy.until-fraction 0.5``); ``--preset`` picks the
method preset (``triangles``, the published recipe) or the CPU-budget preset (``triangles_cpu``, the default on
CPU). ``--resume --run-dir RUN`` continues RUN from its newest checkpoint with its own config.
"""

import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tyro
import yaml

from recon.config import apply_overrides, dump_config, load_yaml
from recon.core import ReconError
from recon.runs import RunDir, check_folder_writable
from recon.train import distributed
from recon.train.capacity import apply_capacity, explicit_fields
from recon.train.config import RUN_CONTROL_FIELDS, validate_train_config
from recon.train.footprint import apply_footprint
from recon.train.logger import attach_logger, resolve_logger
from recon.train.methods import REGISTRY, get_method, method_summaries
from recon.train.run_io import (
    evaluate_run,
    load_run_dataset,
    open_run_config,
    preset_config,
    preset_name,
    resolve_device,
)
from recon.train.table_growth import apply_table_start
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
    """(method, resolved config, device) from the command line.

    Resolution order: dataclass defaults -> preset (``--preset NAME|PATH.yaml``) -> ``--load-config FILE`` ->
    flags. ``--print-config`` prints the result as YAML and exits 0 (SystemExit) without training.
    """
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(usage())
            raise SystemExit(0)
        raise ReconError(f"METHOD is missing; {USAGE}")
    method = get_method(argv[0])
    prog = f"recon train {method.name}"
    args = _expand_aliases(argv[1:])
    wants_help = any(a in ("-h", "--help") for a in args)  # show the preset-resolved defaults in --help
    plain = method.config_cls(method=method.name)
    first = plain if wants_help else tyro.cli(method.config_cls, args=args, prog=prog, default=plain)
    if first.resume:
        if first.load_config:
            raise ReconError(
                "--load-config cannot be combined with --resume (a resumed run keeps its config)"
            )
        return _print_if_asked(_parse_resume(method, args, first, prog))
    loaded = _read_load_config(method, first.load_config) if first.load_config else None
    if loaded is not None:  # the file's preset and device count unless the flags say otherwise
        first = tyro.cli(method.config_cls, args=args, prog=prog, default=_overlay(plain, loaded))
    device = resolve_device(first.device)
    name, base = _preset(method, first.preset, device)
    if loaded is not None:
        base = _overlay(base, loaded)
    default = replace(base, method=method.name, preset=name)
    cfg = tyro.cli(method.config_cls, args=args, prog=prog, default=default)
    explicit_steps = _given(args, "--steps") or (loaded is not None and "steps" in loaded.data)
    if cfg.max_minutes > 0 and not explicit_steps:
        cfg = replace(
            cfg, steps=0
        )  # a time budget without an explicit --steps: train until the time is spent
    # The absolute dataset path goes into config.yaml, so eval/export/resume work from any folder.
    data = str(Path(cfg.data).resolve()) if cfg.data else ""
    return _print_if_asked((method, replace(cfg, method=method.name, data=data), device))


def _parse_resume(method, args: list[str], first, prog: str):
    """--resume --run-dir RUN: the run's own config.yaml, then the (run-control) flags."""
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


@dataclass(frozen=True)
class _LoadedConfig:
    """A ``--load-config`` file: its plain data (run_dir, resume and print_config removed) and its path."""

    data: dict
    source: str


def _read_load_config(method, path: str) -> _LoadedConfig:
    """Read ``--load-config FILE`` strictly (validated against the method's config class now, naming the file)."""
    file = Path(path)
    if not file.is_file():
        raise ReconError(
            f"--load-config {path}: no such file; expected a config YAML (e.g. a run's config.yaml)"
        )
    data = load_yaml(file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ReconError(
            f"--load-config {path}: expected a mapping of config fields, got {type(data).__name__}"
        )
    stored = data.get("method")
    if stored not in (None, "", method.name):
        raise ReconError(f"--load-config {path}: a config of method {stored!r}, not {method.name!r}")
    # Another run's folder and resume state are not taken over: training into that run would clobber it.
    data = {k: v for k, v in data.items() if k not in ("run_dir", "resume", "print_config", "load_config")}
    loaded = _LoadedConfig(data=data, source=str(file.resolve()))
    _overlay(method.config_cls(method=method.name), loaded)  # fail now, naming the file and the key
    return loaded


def _overlay(cfg, loaded: _LoadedConfig):
    """``cfg`` with the loaded file's fields applied, recording the file in ``load_config``."""
    out = apply_overrides(cfg, loaded.data, source=loaded.source)
    return replace(out, load_config=loaded.source)


def _preset(method, preset: str, device) -> tuple[str, Any]:
    """(preset name or absolute file path, the config it gives) for ``--preset NAME|PATH.yaml``.

    A preset file holds overrides of the method's own preset (as ``configs/<method>_cpu.yaml`` does).
    """
    if not _is_preset_path(preset):
        name = preset_name(method.name, preset, device)
        return name, preset_config(method, name)
    file = Path(preset)
    if not file.is_file():
        raise ReconError(f"--preset {preset}: no such file; expected a preset name or a preset .yaml file")
    data = load_yaml(file) or {}
    if not isinstance(data, dict):
        raise ReconError(f"--preset {preset}: expected a mapping of config fields, got {type(data).__name__}")
    if data.get("method") not in (None, "", method.name):
        raise ReconError(f"--preset {preset}: a preset of method {data['method']!r}, not {method.name!r}")
    source = str(file.resolve())
    cfg = apply_overrides(preset_config(method, method.name), data, source=source)
    return source, cfg


def _is_preset_path(preset: str) -> bool:
    return preset.endswith((".yaml", ".yml")) or "/" in preset or "\\" in preset


def _print_if_asked(parsed):
    """``--print-config``: validate, print the resolved config as YAML (loadable by --load-config), exit 0."""
    method, cfg, device = parsed
    resolve_logger(cfg.logger)  # --logger tensorboard without the package fails before any work
    if not cfg.print_config:
        return parsed
    validate_train_config(cfg)
    text = yaml.safe_dump(dump_config(replace(cfg, print_config=False)), sort_keys=False)
    sys.stdout.write(text)
    sys.stdout.flush()
    raise SystemExit(0)


FLAG_ALIASES = {
    "--finish": "--strategy.finish",  # triangles: --finish opaque (CLI.md)
    "--scene-type": "--scene.scene-type",  # nerf: auto | bounded | unbounded | forward (CLI.md)
}
"""Short spellings of the contract (../shared/CLI.md) for preset fields."""


def _expand_aliases(args: list[str]) -> list[str]:
    """``--finish opaque`` -> ``--strategy.finish opaque`` (and ``--finish=opaque``), see ``FLAG_ALIASES``."""
    out = []
    for a in args:
        flag, eq, value = a.partition("=")
        out.append(FLAG_ALIASES.get(flag, flag) + eq + value if flag in FLAG_ALIASES else a)
    return out


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
    if any(a == "--restarts" or a.startswith("--restarts=") for a in argv):  # N seeds: recon.train.restarts
        from recon.train.restarts import restarts_main

        return restarts_main(argv, main)
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
    cfg = _adapt_to_dataset(method, cfg, dataset)
    cfg, capacity, in_run, tables = _capacity(method, cfg, dataset, device, argv)
    trainer = _start_ranks(method, cfg, dataset, device, run)
    run = trainer.run
    if capacity and trainer.rank == 0:
        _write_capacity(run, capacity)
    _attach_in_run_capacity(trainer, in_run, tables, capacity, dataset, device)
    result = _train(trainer, cfg)
    images = _final_images_over_ranks(trainer, cfg, dataset, result)
    distributed.shutdown()  # no collectives after this
    if trainer.rank != 0:
        distributed.exit_worker(0)  # rank 0 reports, evaluates and prints the run directory
    print(f"stopped after step {result.step} ({result.stopped}), {result.train_seconds / 60:.2f} training minutes"
          f" (+{result.eval_seconds / 60:.2f} minutes of periodic evaluation, not counted)", file=sys.stderr)  # fmt: skip
    if result.stopped == "interrupted":
        print(f"checkpoint written; continue with: recon train {method.name} --resume --run-dir {run.path}",
              file=sys.stderr)  # fmt: skip
        print(run.path)
        return 128 + (result.signal or signal.SIGINT)
    if cfg.final_eval and dataset.splits.get("test"):
        ev = evaluate_run(run, method, cfg, device=device, dataset=dataset, image_metrics=images)
        print(f"eval: psnr {ev['psnr']:.3f}  ssim {ev['ssim']:.4f} on {ev['num_images']} {ev['split']} views",
              file=sys.stderr)  # fmt: skip
    print(run.path)
    return 0


def _capacity(method, cfg, dataset, device, argv: list[str]):
    """(cfg, choices, in-run rules, tables): the capacity limits the budget buys on this device
    (``recon.train.capacity``), the grid resolutions the training views resolve (``recon.train.footprint``) and the
    hash tables that start small (``recon.train.table_growth``) for a new run with ``--max-minutes``; limits set by
    a flag, ``--load-config`` or a ``--preset`` file are kept.
    Every rank times the calibration steps together (they all-reduce); rank 0's choice is used by all. The rules
    decided during the run (``CapacityRule.in_run_after``, the tables) come back for
    :func:`_attach_in_run_capacity`."""
    if cfg.resume or cfg.max_minutes <= 0 or not (method.capacity or method.footprint):
        return cfg, [], [], []
    files = [load_yaml(Path(f)) or {} for f in (cfg.load_config, cfg.preset) if f and _is_preset_path(f)]
    rules = (*method.capacity, *method.footprint, *method.tables)
    explicit = explicit_fields(rules, _expand_aliases(argv[1:]), files)
    # the footprint and table rules read only the data, so every rank computes the same values
    cfg, footprint = apply_footprint(cfg, method.footprint, dataset, explicit=explicit)
    cfg, choices = distributed.broadcast_object(
        apply_capacity(cfg, method, dataset, device, explicit=explicit)
    )
    in_run = [rule for rule in method.capacity if rule.in_run_after and rule.field not in explicit]
    starts, tables = [], []
    if any(rule.field == "rays_per_batch" for rule in in_run):  # the rays rule times the grown table
        cfg, starts, tables = apply_table_start(cfg, method.tables, dataset, device, explicit=explicit)
    choices = [*footprint, *choices, *starts]
    if distributed.is_rank0():
        for choice in choices:
            print(choice.line(), file=sys.stderr)
    return cfg, choices, in_run, tables


def _attach_in_run_capacity(trainer: Trainer, rules, tables, choices: list, dataset, device) -> None:
    """Hooks that choose the in-run rules' sizes from the run's own step times (``recon.train.capacity_in_run``),
    growing the ``tables`` first (``recon.train.table_growth``); each choice is printed and added to capacity.json
    by rank 0 when it is made."""
    from recon.train.capacity import capacity_inputs
    from recon.train.capacity_in_run import InRunCapacity, settle_steps
    from recon.train.table_growth import TableTrial

    def report(choice) -> None:
        choices.append(choice)
        if trainer.rank == 0:
            print(choice.line(), file=sys.stderr)
            _write_capacity(trainer.run, choices)

    if len(tables) > 1:
        raise ValueError(f"the rays rule grows one hash table, got {[t.field for t in tables]}")
    for rule in rules:
        if rule.field != "rays_per_batch":  # the only size a trainer can change between steps today
            raise ValueError(f"no in-run setter for the capacity field {rule.field!r}")
        trainer.hooks.append(InRunCapacity(
            rule, capacity_inputs(trainer.cfg, dataset, device), start_step=settle_steps(rule, trainer.cfg),
            apply=trainer.set_rays_per_batch, report=report,
            table=TableTrial(tables[0], trainer) if tables else None,
        ))  # fmt: skip


def _write_capacity(run, choices) -> None:
    """capacity.json: the record of every capacity choice so far (``CapacityChoice.record``)."""
    (run.path / "capacity.json").write_text(json.dumps([c.record() for c in choices], indent=2) + "\n")


def _final_images_over_ranks(trainer: Trainer, cfg, dataset, result) -> dict | None:
    """Under data parallelism, the final evaluation's image scores with the test views split over the ranks (a
    collective; None in one process, after a signal, or without a final evaluation). Rank 0 then evaluates the
    rest (geometry, mesh) alone."""
    if distributed.world_size() == 1 or result.stopped == "interrupted":
        return None
    if not (cfg.final_eval and dataset.splits.get("test")):
        return None
    from recon.train.evaluate import render_metrics

    trainer.scene.eval()  # deterministic sampling, as recon eval renders
    return render_metrics(trainer.scene, dataset, split="test", backend=cfg.backend, ranks=True)


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
    experiment_logger = attach_logger(trainer, cfg.logger)
    try:
        with progress:
            return trainer.train(progress=update)
    finally:
        if experiment_logger is not None:
            experiment_logger.close(trainer)
        if viewer is not None:
            viewer.close()


def _adapt_to_dataset(method, cfg, dataset):
    """The method's dataset-dependent settings resolved (``Method.adapt_to_dataset``), with a note on stderr; the
    resolved values are what config.yaml records. Idempotent, so a resumed run's stored config passes unchanged."""
    if method.adapt_to_dataset is None:
        return cfg
    try:
        cfg, note = method.adapt_to_dataset(cfg, dataset)
    except (ValueError, TypeError) as exc:
        raise ReconError(f"invalid configuration: {exc}") from exc
    if distributed.is_rank0():
        print(f"settings from the dataset: {note}", file=sys.stderr)
    return cfg


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
