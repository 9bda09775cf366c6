"""Multi-seed restarts: final-loss reading, auto/random selection, restarts.json with every run kept."""

import json
import math
from pathlib import Path

import pytest

from recon.core.errors import ReconError
from recon.train.restarts import (
    RestartRun,
    final_training_loss,
    resolve_restarts_parent,
    restarts_main,
    run_restarts,
    select_restart,
)
from tests.typecheck import assert_rejected

LOSSES = {3: 0.30, 4: 0.12, 5: float("nan"), 6: 0.20}  # seed -> final loss written by the fake trainer


def _fake_train(seed: int, run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    records = [{"step": 10, "loss": 1.0}, {"step": 20, "loss": LOSSES[seed]}, {"step": 20, "psnr": 20.0}]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_run_restarts_selects_lowest_final_loss_and_keeps_all(tmp_path):
    selected = run_restarts(_fake_train, tmp_path, restarts=4, seed=3)
    assert selected == tmp_path / "restarts" / "seed_4"
    info = json.loads((tmp_path / "restarts.json").read_text())
    assert info["selection"] == "auto" and info["selected"] == info["auto"] == "restarts/seed_4"
    assert [r["seed"] for r in info["runs"]] == [3, 4, 5, 6]
    assert info["runs"][2]["final_loss"] == 1.0  # a NaN last loss falls back to the last finite one
    assert info["random"] in {r["run_dir"] for r in info["runs"]}
    assert all((tmp_path / r["run_dir"] / "metrics.jsonl").is_file() for r in info["runs"])


def test_selection_rules(tmp_path):
    runs = [RestartRun(0, "a", 0.5), RestartRun(1, "b", 0.2), RestartRun(2, "c", 0.2)]
    assert select_restart(runs) == 1  # first of the tied lowest
    draws = {select_restart(runs, "random", seed=s) for s in range(20)}
    assert draws <= {0, 1, 2} and len(draws) > 1
    assert select_restart(runs, "random", seed=7) == select_restart(runs, "random", seed=7)
    with pytest.raises(ValueError, match="finite"):
        select_restart([RestartRun(0, "a", math.inf)])
    assert_rejected(lambda: select_restart(runs, "best"), match="selection")
    with pytest.raises(ValueError, match="restarts"):
        run_restarts(_fake_train, tmp_path, restarts=0)
    with pytest.raises(ReconError, match="metrics.jsonl"):
        final_training_loss(tmp_path / "missing")


def test_restarts_main_runs_each_seed_through_the_train_command(tmp_path, capsys):
    calls = []

    def train_main(argv: list[str]) -> int:
        calls.append(argv)
        seed, run_dir = int(argv[argv.index("--seed") + 1]), Path(argv[argv.index("--run-dir") + 1])
        _fake_train(seed, run_dir)
        return 0

    argv = [
        "superquadrics",
        "--data",
        "d",
        "--restarts",
        "3",
        "--seed",
        "4",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert restarts_main(argv, train_main) == 0
    assert [c[:3] for c in calls] == [["superquadrics", "--data", "d"]] * 3
    assert [int(c[c.index("--seed") + 1]) for c in calls] == [4, 5, 6]
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "restarts" / "seed_4")
    with pytest.raises(ReconError, match="--run-dir"):
        restarts_main(["superquadrics", "--restarts", "2"], train_main)
    with pytest.raises(ReconError, match="positive"):
        restarts_main(["superquadrics", "--restarts", "x", "--run-dir", "r"], train_main)
    with pytest.raises(ReconError, match="failed"):
        restarts_main(["m", "--restarts=1", "--run-dir", str(tmp_path / "f")], lambda argv: 1)


def test_resolve_restarts_parent(tmp_path):
    """A plain folder is itself; a parent resolves to its selected run with a note; broken records are errors."""
    assert resolve_restarts_parent(tmp_path) == (tmp_path, None)
    run_restarts(_fake_train, tmp_path, restarts=2, seed=3)
    with pytest.raises(ReconError, match=r"seed_4 is not a run folder"):  # no config.yaml: it never trained
        resolve_restarts_parent(tmp_path)
    (tmp_path / "restarts" / "seed_4" / "config.yaml").write_text("method: superquadrics\n")
    run, note = resolve_restarts_parent(tmp_path)
    assert run == tmp_path / "restarts" / "seed_4"
    assert note is not None and "(2 runs)" in note and "selection auto: lowest final training loss" in note
    (tmp_path / "restarts.json").write_text("{not json")
    with pytest.raises(ReconError, match=r"restarts\.json: not a readable restarts record"):
        resolve_restarts_parent(tmp_path)
    (tmp_path / "restarts.json").write_text(json.dumps({"schema": "other/1", "selected": "restarts/seed_4"}))
    with pytest.raises(ReconError, match=r"expected schema 'recon.restarts/1'"):
        resolve_restarts_parent(tmp_path)
