"""Multi-seed restarts (spec superquadrics.md 10): train N independent seeds, select one, keep and list them all.

Methods sensitive to initialisation (the blocks world) are run with ``N`` seeds ``seed, seed + 1, ...`` as
independent runs under ``RUN_DIR/restarts/seed_<s>``. Selection ``auto`` picks the run with the lowest final
training loss (the paper's main row); ``random`` draws one run with a generator seeded by the base seed (the
paper's "random" row). Both picks and every run's final loss go to ``RUN_DIR/restarts.json``; no run is deleted.

The training itself is a callable ``train_one(seed, run_dir) -> None`` (the CLI passes one that runs
``recon train`` with ``--seed`` and ``--run-dir``), so this module has no CLI or trainer dependency.

``recon eval RUN`` and ``recon export RUN`` on such a parent act on the run that ``restarts.json`` selected
(:func:`resolve_restarts_parent`) and say which on standard error.
"""

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from recon.config import write_text_atomic
from recon.core.errors import ReconError

__all__ = [
    "RestartRun",
    "final_training_loss",
    "resolve_restarts_parent",
    "restarts_main",
    "run_restarts",
    "select_restart",
    "write_restarts_json",
]

Selection = Literal["auto", "random"]
RESTARTS_JSON = "restarts.json"
SCHEMA = "recon.restarts/1"


@dataclass(frozen=True)
class RestartRun:
    """One restart: its seed, run folder (relative to the parent run) and final training loss (inf if none)."""

    seed: int
    run_dir: str
    final_loss: float


def final_training_loss(run_dir: str | Path) -> float:
    """The ``loss`` of the last record of ``run_dir/metrics.jsonl`` that has one (inf when none: a failed run).

    Raises:
        ReconError: ``metrics.jsonl`` is missing.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ReconError(f"{path}: no metrics.jsonl, the restart did not train")
    loss = math.inf
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record.get("loss"), (int, float)) and math.isfinite(record["loss"]):
                loss = float(record["loss"])
    return loss


def select_restart(runs: list[RestartRun], selection: Selection = "auto", *, seed: int = 0) -> int:
    """Index of the selected run: ``auto`` = lowest final loss (first on ties), ``random`` = drawn with ``seed``.

    Raises:
        ValueError: no runs, an unknown selection, or (auto) no run with a finite loss.
    """
    if not runs:
        raise ValueError("runs must not be empty")
    if selection == "random":
        return random.Random(seed).randrange(len(runs))
    if selection != "auto":
        raise ValueError(f"selection must be 'auto' or 'random', got {selection!r}")
    best = min(range(len(runs)), key=lambda k: runs[k].final_loss)
    if not math.isfinite(runs[best].final_loss):
        raise ValueError("no restart has a finite final training loss")
    return best


def write_restarts_json(path: str | Path, runs: list[RestartRun], *, selection: Selection, seed: int) -> Path:
    """Write the list of restarts with the ``auto`` and ``random`` picks and which one ``selection`` chose."""
    auto, drawn = select_restart(runs, "auto"), select_restart(runs, "random", seed=seed)
    data = {
        "schema": SCHEMA,
        "selection": selection,
        "selected": runs[auto if selection == "auto" else drawn].run_dir,
        "auto": runs[auto].run_dir,
        "random": runs[drawn].run_dir,
        "runs": [asdict(r) for r in runs],
    }
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def run_restarts(
    train_one: Callable[[int, Path], None],
    run_dir: str | Path,
    *,
    restarts: int,
    seed: int = 0,
    selection: Selection = "auto",
) -> Path:
    """Train ``restarts`` seeds ``seed + k`` into ``run_dir/restarts/seed_<s>``, then write ``restarts.json``.

    Returns:
        The selected run's folder.

    Raises:
        ValueError: ``restarts < 1`` or an unknown selection.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if selection not in ("auto", "random"):
        raise ValueError(f"selection must be 'auto' or 'random', got {selection!r}")
    root = Path(run_dir)
    runs = []
    for k in range(restarts):
        s = seed + k
        sub = root / "restarts" / f"seed_{s}"
        train_one(s, sub)
        runs.append(RestartRun(s, str(sub.relative_to(root)), final_training_loss(sub)))
    path = write_restarts_json(root / RESTARTS_JSON, runs, selection=selection, seed=seed)
    return root / json.loads(path.read_text())["selected"]


def resolve_restarts_parent(run_dir: str | Path) -> tuple[Path, str | None]:
    """The run a command on ``run_dir`` acts on, and a note saying so when it is not ``run_dir`` itself.

    A folder holding ``restarts.json`` (written by :func:`run_restarts`) is a restarts parent: the run it acts on
    is the one recorded as ``selected`` (under ``run_dir/restarts/``). Any other folder is returned as is.

    Raises:
        ReconError: ``restarts.json`` is unreadable, of another schema, or its selected run is missing or lies
            outside ``run_dir``.
    """
    root = Path(run_dir)
    path = root / RESTARTS_JSON
    if not path.is_file():
        return root, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReconError(f"{path}: not a readable restarts record ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("schema") != SCHEMA
        or not isinstance(data.get("selected"), str)
    ):
        raise ReconError(f"{path}: expected schema {SCHEMA!r} with a 'selected' run folder")
    selected = root / data["selected"]
    if not selected.resolve().is_relative_to(root.resolve()) or not (selected / "config.yaml").is_file():
        raise ReconError(f"{path}: the selected run {selected} is not a run folder inside {root}")
    rule = {"auto": "auto: lowest final training loss", "random": "random: drawn with the base seed"}
    selection = str(data.get("selection", "unrecorded"))
    note = (f"{root} is a restarts parent ({len(data.get('runs') or [])} runs): acting on the selected run "
            f"{selected} (selection {rule.get(selection, selection)})")  # fmt: skip
    return selected, note


def _pop_option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of ``flag V`` / ``flag=V`` in ``argv`` (None if absent) and ``argv`` without it."""
    rest, value, k = [], None, 0
    while k < len(argv):
        arg = argv[k]
        if arg == flag:
            if k + 1 >= len(argv):
                raise ReconError(f"{flag}: expected a value")
            value, k = argv[k + 1], k + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        k += 1
    return value, rest


def restarts_main(argv: list[str], train_main: Callable[[list[str]], int]) -> int:
    """``recon train METHOD ... --restarts N [--restart-selection auto|random]``: N runs of ``train_main`` with
    ``--seed s+k --run-dir RUN/restarts/seed_<s+k>`` (``--seed`` default 0; ``--run-dir`` required), then
    ``RUN/restarts.json``; prints the selected run folder.

    Raises:
        ReconError: a missing or bad value, no ``--run-dir``, or a restart that failed.
    """
    count, argv = _pop_option(argv, "--restarts")
    selection, argv = _pop_option(argv, "--restart-selection")
    seed, argv = _pop_option(argv, "--seed")
    run_dir, argv = _pop_option(argv, "--run-dir")
    if count is None or not count.isdigit() or int(count) < 1:
        raise ReconError(f"--restarts {count}: expected a positive integer")
    if selection not in (None, "auto", "random"):
        raise ReconError(f"--restart-selection {selection}: expected auto or random")
    if not run_dir:
        raise ReconError("--restarts: give --run-dir RUN (the restarts go to RUN/restarts/seed_<s>)")
    base = int(seed) if seed is not None else 0

    def train_one(s: int, sub: Path) -> None:
        code = train_main([*argv, "--seed", str(s), "--run-dir", str(sub)])
        if code != 0:
            raise ReconError(f"restart with --seed {s} failed (exit status {code}); see {sub}")

    chosen = run_restarts(train_one, run_dir, restarts=int(count), seed=base, selection=selection or "auto")
    print(chosen)
    return 0
