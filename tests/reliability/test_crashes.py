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


def test_kill9_during_training_loses_at_most_one_interval(scene, tmp_path, start_train, train):
    run = RunDir(tmp_path / "run")
    process = start_train("--data", str(scene), "--run-dir", str(run.path), "--steps", "100000",
                          "--checkpoint-every", "5", "--keep-checkpoints", "3")  # fmt: skip
    process.wait_until(lambda: any(s >= 15 for s, _ in run.checkpoints()), "the checkpoint of step 15")
    assert process.kill() == -signal.SIGKILL
    newest = run.load_checkpoint()[1]["step"]
    assert newest >= 15 and newest % 5 == 0
    logged = max(r["step"] for r in run.read_metrics())
    assert logged - newest <= 5 + 5  # at most one checkpoint interval (plus a logging interval) is lost
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", str(newest + 10))
    assert code == 0, err
    assert f"resuming {run.path} at step {newest}" in err
    assert run.load_checkpoint()[1]["step"] == newest + 10
    _assert_metrics_clean(run, newest + 10)


def test_kill9_inside_a_checkpoint_write_resumes_from_the_previous_one(scene, tmp_path, start_train, train):
    run = RunDir(tmp_path / "run")
    torn = run.checkpoints_dir / "step-00000010.safetensors"
    process = start_train("--data", str(scene), "--run-dir", str(run.path), "--steps", "100000",
                          "--checkpoint-every", "5", env={"RECON_TEST_CHECKPOINT_PAUSE": f"10:{PAUSE_SECONDS}"})  # fmt: skip
    process.wait_until(torn.exists, "the tensor file of step 10 (then the write pauses)")
    assert process.kill() == -signal.SIGKILL
    assert not torn.with_suffix(".json").exists()
    assert [s for s, _ in run.checkpoints()] == [5]  # the torn step-10 checkpoint does not count
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "12")
    assert code == 0, err
    assert "at step 5" in err
    assert [s for s, _ in run.checkpoints()] == [10, 12]  # step 10 rewritten whole, then rotated (keep 2)
    _assert_metrics_clean(run, 12)


def test_kill9_before_the_first_checkpoint_then_resume_starts_over(scene, tmp_path, start_train, train):
    run = RunDir(tmp_path / "run")
    process = start_train("--data", str(scene), "--run-dir", str(run.path), "--steps", "100000",
                          "--checkpoint-every", "5", env={"RECON_TEST_CHECKPOINT_PAUSE": f"5:{PAUSE_SECONDS}"})  # fmt: skip
    process.wait_until(
        (run.checkpoints_dir / "step-00000005.safetensors").exists, "the first checkpoint write"
    )
    assert process.kill() == -signal.SIGKILL
    assert run.config_path.exists() and run.checkpoints() == []
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "6")
    assert code == 0, err
    assert "no checkpoint yet" in err and "starting the run over" in err
    assert [s for s, _ in run.checkpoints()] == [5, 6]
    _assert_metrics_clean(run, 6)


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
