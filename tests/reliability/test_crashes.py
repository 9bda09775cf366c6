"""Crash safety with real signals: kill -9 during training and inside a checkpoint write, SIGTERM; then resume.

Each test starts ``recon train`` in a subprocess (the only way to deliver SIGKILL to a training run) and resumes
in this process, then checks metrics.jsonl: training records strictly increasing in step, none past the end.
"""

import signal

from recon.runs import RunDir

PAUSE_SECONDS = 120  # the checkpoint-write pause of the test hook: far longer than the test needs to kill


def _assert_metrics_clean(run: RunDir, last_step: int) -> None:
    records = run.read_metrics()
    steps = [r["step"] for r in records]
    assert steps == sorted(steps), steps  # never backwards (evaluations may share a training record's step)
    train_steps = [r["step"] for r in records if "loss" in r]
    assert all(b > a for a, b in zip(train_steps, train_steps[1:])), train_steps  # no duplicates
    assert train_steps[-1] == last_step


def test_kill9_inside_a_checkpoint_write_loses_at_most_one_interval(scene, tmp_path, start_train, train):
    """kill -9 while training, exactly inside the write of the step-15 checkpoint (test hook), then --resume."""
    run = RunDir(tmp_path / "run")
    torn = run.checkpoints_dir / "step-00000015.safetensors"
    process = start_train("--data", str(scene), "--run-dir", str(run.path), "--steps", "100000",
                          "--checkpoint-every", "5", "--keep-checkpoints", "3",
                          env={"RECON_TEST_CHECKPOINT_PAUSE": f"15:{PAUSE_SECONDS}"})  # fmt: skip
    process.wait_until(torn.exists, "the tensor file of step 15 (then the write pauses)")
    assert process.kill() == -signal.SIGKILL
    assert not torn.with_suffix(".json").exists()
    assert [s for s, _ in run.checkpoints()] == [5, 10]  # the torn step-15 checkpoint does not count
    assert max(r["step"] for r in run.read_metrics()) == 15  # logged before the write: one interval lost
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "22")
    assert code == 0, err
    assert f"resuming {run.path} at step 10" in err
    assert [s for s, _ in run.checkpoints()] == [15, 20, 22]  # step 15 rewritten whole; rotation keeps 3
    _assert_metrics_clean(run, 22)


def test_sigterm_checkpoints_and_exits_non_zero(scene, tmp_path, start_train):
    run = RunDir(tmp_path / "run")
    process = start_train("--data", str(scene), "--run-dir", str(run.path), "--steps", "100000")
    process.wait_until(lambda: run.read_metrics() != [], "the first logged step")
    assert process.send(signal.SIGTERM) == 128 + signal.SIGTERM
    err = process.stderr()
    assert "(interrupted)" in err and "--resume --run-dir" in err and "internal error" not in err
    step = run.load_checkpoint()[1]["step"]
    assert f"stopped after step {step} (interrupted)" in err
    assert process.proc.stdout.read().strip() == str(run.path)
