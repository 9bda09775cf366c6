"""``recon train METHOD --nproc 2`` end to end on a tiny synthetic scene: 2 local gloo ranks through torchrun train
and checkpoint (rank 0 alone writes and evaluates), the run resumes with another number of processes, eval reads
it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recon.core import ReconError
from recon.runs import RunDir

TIMEOUT_S = 240
EVAL_ATOL_DB = 1e-3
"""The gathered periodic PSNR vs one process's ``recon eval`` of the same checkpoint: the same renders and metric,
summed in another order."""
TINY = ["--scene.random-init-points", "150", "--scene.max-init-points", "150", "--scene.hull-resolution", "24",
        "--strategy.min-every-steps", "3", "--no-progress", "--threads", "1", "--backend", "torch"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from recon.datasets.synthetic import write_scene

    return write_scene(
        "object", tmp_path_factory.mktemp("data") / "object", views=8, test_views=2, resolution=24
    )


def _recon(*args: str) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RECON_DEBUG")
    }
    try:
        return subprocess.run([sys.executable, "-m", "recon.cli.main", *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S, env=env)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"recon {' '.join(args)} timed out after {TIMEOUT_S} s: {exc.stderr!s:.3000}")


def test_train_two_processes_checkpoint_resume_with_one_and_eval(data, tmp_path):
    run_dir = tmp_path / "run"
    done = _recon("train", "triangles", "--nproc", "2", "--data", str(data), "--steps", "8", "--run-dir",
                  str(run_dir), "--checkpoint-every", "4", "--log-every", "2", "--eval-every", "4", "--eval-images",
                  "2", "--no-final-eval", *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [str(run_dir)]  # rank 0 alone prints the run directory
    run = RunDir(run_dir)
    records = run.read_metrics()
    assert [rec["step"] for rec in records if "loss" in rec] == [2, 4, 6, 8]  # one writer
    assert [rec["step"] for rec in records if "eval_psnr" in rec] == [4, 8]  # rank 0's periodic evaluations
    _, meta = run.load_checkpoint()
    assert meta["step"] == 8
    # the step-8 evaluation was split over the ranks (one test view each) and gathered: it equals one process
    # evaluating both views of the same checkpoint
    done = _recon("eval", str(run_dir), "--max-images", "2", "--no-geometry", "--device", "cpu", "--output",
                  str(tmp_path / "eval8.json"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "eval8.json").read_text())
    logged = next(rec for rec in records if rec.get("eval_psnr") is not None and rec["step"] == 8)
    assert single["step"] == 8 and single["num_images"] == logged["eval_images"] == 2
    assert abs(logged["eval_psnr"] - single["psnr"]) < EVAL_ATOL_DB
    # resume the 2-process run in 1 process (the sampler state is global: any number of ranks continues it)
    done = _recon(
        "train", "triangles", "--resume", "--run-dir", str(run_dir), "--steps", "10", "--no-final-eval"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and run.load_checkpoint()[1]["step"] == 10
    done = _recon("eval", str(run_dir), "--max-images", "1", "--no-geometry", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 10


def test_final_evaluation_split_over_two_ranks_equals_one_process(data, tmp_path):
    run_dir = tmp_path / "run"
    done = _recon("train", "triangles", "--nproc", "2", "--data", str(data), "--steps", "4", "--run-dir",
                  str(run_dir), "--eval-every", "0", *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    split = json.loads((run_dir / "eval.json").read_text())
    done = _recon(
        "eval", str(run_dir), "--no-geometry", "--device", "cpu", "--output", str(tmp_path / "one.json")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "one.json").read_text())
    assert split["step"] == single["step"] == 4 and split["num_images"] == single["num_images"] == 2
    assert abs(split["psnr"] - single["psnr"]) < EVAL_ATOL_DB and abs(split["ssim"] - single["ssim"]) < 1e-5


def test_nproc_must_be_a_positive_integer(data, tmp_path):
    from recon.cli import train as train_cli

    with pytest.raises(ReconError, match="--nproc must be a positive integer"):
        train_cli.main(
            ["triangles", "--nproc", "zero", "--data", str(data), "--run-dir", str(tmp_path / "r")]
        )
    assert not (tmp_path / "r").exists()  # refused before any work


def test_views_per_rank_is_a_validated_config_field(tmp_path):
    """--views-per-rank B: B views per process and step (image-batch methods; the equivalence tests in
    test_distributed.py train with it); default 1, as before the flag existed."""
    from recon.cli import train as train_cli

    folder = tmp_path / "scene"
    folder.mkdir()  # parsing only resolves the path
    base = ["--data", str(folder), "--device", "cpu"]
    assert train_cli.parse(["triangles", *base])[1].views_per_rank == 1
    assert train_cli.parse(["triangles", *base, "--views-per-rank", "3"])[1].views_per_rank == 3
    with pytest.raises(ReconError, match="--views-per-rank 0: expected a positive integer"):
        train_cli.parse(["triangles", *base, "--views-per-rank", "0", "--print-config"])
    with pytest.raises(ReconError, match="--views-per-rank 2: only for --batch image"):
        train_cli.parse(["nerf", *base, "--views-per-rank", "2", "--print-config"])


def test_two_ranks_choose_the_rays_per_step_during_the_run(data, tmp_path):
    # nerf's in-run capacity rule (recon.train.capacity_in_run) under --nproc 2: timed on the shared clock from step
    # 4 (warm-up 1), decided at step 36; 40 steps cannot buy 30 000, so the low bound, 512 rays per rank
    run_dir = tmp_path / "rays"
    done = _recon("train", "nerf", "--nproc", "2", "--data", str(data), "--max-minutes", "10", "--steps", "40",
                  "--run-dir", str(run_dir), "--strategy.warmup-steps", "1", "--scene.render-step-size", "0.25",
                  "--scene.grid-log2-size", "12", "--scene.occupancy-resolution", "16", "--no-final-eval",
                  "--no-progress", "--threads", "1", "--logger", "none")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    finest, record = json.loads((run_dir / "capacity.json").read_text())  # rank 0 alone writes it
    assert (
        finest["field"] == "scene.grid_max_resolution" and done.stderr.count("capacity: scene.grid_max") == 1
    )
    assert (record["field"], record["value"], record["decided_at_step"]) == ("rays_per_batch", 512, 36)
    assert done.stderr.count("capacity: rays_per_batch") == 1  # and prints it
    tensors, meta = RunDir(run_dir).load_checkpoint()
    assert meta["step"] == 40 and int(tensors["trainer.rays_per_rank"]) == 512
