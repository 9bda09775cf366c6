"""Fail before the work, trust only verified checkpoints, refuse to mix runs: ``recon train`` in this process."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from recon.runs import RunDir


def _short_run(train, scene: Path, run: RunDir, steps: int = 10) -> None:
    code, err = train("--data", str(scene), "--run-dir", str(run.path), "--steps", str(steps),
                      "--checkpoint-every", "5", "--keep-checkpoints", "3")  # fmt: skip
    assert code == 0, err


def test_damaged_newest_checkpoint_falls_back_with_a_warning(scene, tmp_path, train):
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene

    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run)
    newest = run.checkpoints_dir / "step-00000010.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the tensor data: only the content hash can tell
    newest.write_bytes(bytes(raw))
    _, method, cfg = open_run_config(run.path)
    assert load_scene(method, cfg, run)[1] == 5  # eval, export, render and view load through load_scene
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "12")
    assert code == 0, err
    assert "WARNING" in err and "step-00000010.safetensors" in err and "content hash" in err
    assert "resuming" in err and "at step 5" in err
    assert [s for s, _ in run.checkpoints()][-1] == 12


def test_checkpoint_holding_nan_is_refused_by_name(scene, tmp_path, train):
    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run)
    tensors, meta = run.load_checkpoint()
    tensors["scene.vertices"][0, 0, 0] = float("nan")
    extra = {k: v for k, v in meta.items() if k in ("method", "train_seconds", "num_primitives")}
    run.save_checkpoint(10, tensors, extra)  # a well-formed, correctly hashed checkpoint that holds a NaN
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "12")
    assert code == 0, err
    assert "step-00000010.safetensors: tensor 'scene.vertices' contains NaN" in err and "at step 5" in err


def test_diverging_training_stops_with_a_clear_error(scene, tmp_path, train):
    run = RunDir(tmp_path / "run")
    # An absurd learning rate drives the parameters to inf/NaN within a few steps.
    code, err = train("--data", str(scene), "--run-dir", str(run.path), "--steps", "40", "--checkpoint-every", "5",
                      "--scene.lr-scale", "1e30")  # fmt: skip
    assert code == 1 and "internal error" not in err, err
    assert "non-finite" in err and "step " in err
    for _, path in run.checkpoints():  # whatever was written before is finite and loads
        tensors, _ = run.load_checkpoint(path)
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--keep-checkpoints", "0"], "--keep-checkpoints 0: expected a positive integer"),
        (["--log-every", "0"], "--log-every 0: expected a positive integer"),
        (["--steps", "-3"], "--steps -3: expected 0 or a positive integer"),
        (["--steps", "0"], "--steps 0 means no step bound: give a time budget with --max-minutes"),
        (["--checkpoint-minutes", "-1"], "--checkpoint-minutes -1.0: expected a finite number >= 0"),
        (["--checkpoint-every", "-5"], "--checkpoint-every -5: expected 0 or a positive integer"),
        (["--scene.sh-degree", "7"], "scene.sh_degree must be in [0, 3], got 7"),
    ],
)
def test_bad_values_fail_before_any_work(scene, tmp_path, train, flags, message):
    run = RunDir(tmp_path / "run")
    code, err = train("--data", str(scene), "--run-dir", str(run.path), *flags)
    assert code == 1 and message in err and "internal error" not in err, err
    assert not run.path.exists()  # nothing created


def test_unwritable_run_folder_fails_before_the_work(scene, tmp_path, train):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    code, err = train("--data", str(scene), "--run-dir", str(blocker / "run"))
    assert code == 1 and f"{blocker / 'run'}: cannot write (ENOTDIR" in err and "internal error" not in err, (
        err
    )
    code, err = train("--data", str(scene), "--output-dir", str(blocker / "outputs"))
    assert code == 1 and f"{blocker} is not a folder" in err and "internal error" not in err, err
    code, err = train("--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "outputs"))
    assert code == 1 and "internal error" not in err, err
    assert not (tmp_path / "outputs").exists()  # a failed start leaves no folders behind


def test_resume_refuses_other_data_and_model_changes(scene, other_scene, tmp_path, train):
    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run, steps=5)
    code, err = train("--resume", "--run-dir", str(run.path), "--data", str(other_scene))
    assert code == 1 and "not the dataset run" in err and "splits" in err, err
    code, err = train("--resume", "--run-dir", str(run.path), "--scene.init-opacity", "0.5")
    assert code == 1 and "--scene.init-opacity differ(s)" in err, err
    # Run-control flags may change; the dataset may move (same fingerprint).
    moved = tmp_path / "moved"
    os.rename(scene, moved)
    try:
        code, err = train("--resume", "--run-dir", str(run.path), "--data", str(moved), "--steps", "7",
                          "--max-minutes", "5")  # fmt: skip
    finally:
        os.rename(moved, scene)
    assert code == 0, err
    assert yaml.safe_load(run.config_path.read_text())["steps"] == 7


def test_resume_refuses_a_hand_edited_config(scene, tmp_path, train):
    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run, steps=5)
    text = run.config_path.read_text()
    edited = re.sub(r"init_opacity: [0-9.]+", "init_opacity: 0.123", text)
    assert edited != text
    run.config_path.write_text(edited)
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "7")
    assert code == 1 and "trained with other model or data settings" in err, err


def test_a_run_folder_without_checkpoints_is_reused(scene, tmp_path, train):
    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run, steps=5)
    code, err = train("--data", str(scene), "--run-dir", str(run.path), "--steps", "5")
    assert code == 1 and "already a run (use --resume" in err
    for path in run.checkpoints_dir.iterdir():  # as if the first run had died before its first checkpoint
        path.unlink()
    code, err = train("--data", str(scene), "--run-dir", str(run.path), "--steps", "5")
    assert code == 0 and "never wrote a checkpoint" in err, err
    assert [r["step"] for r in run.read_metrics() if "loss" in r] == [5]  # the old run's records are gone


def test_resume_before_the_first_checkpoint_starts_over(scene, tmp_path, train):
    """What a kill -9 before the first checkpoint leaves (config.yaml, metrics, no checkpoint): --resume restarts."""
    run = RunDir(tmp_path / "run")
    _short_run(train, scene, run, steps=5)
    for path in run.checkpoints_dir.iterdir():
        path.unlink()
    code, err = train("--resume", "--run-dir", str(run.path), "--steps", "6")
    assert code == 0, err
    assert "no checkpoint yet" in err and "starting the run over" in err
    assert [s for s, _ in run.checkpoints()] == [5, 6]
    assert [r["step"] for r in run.read_metrics() if "loss" in r] == [5, 6]


def test_dataset_path_is_recorded_absolutely(scene, tmp_path, train, monkeypatch):
    from recon.train.run_io import load_run_dataset, open_run_config

    monkeypatch.chdir(scene.parent)
    run = RunDir(tmp_path / "run")
    code, err = train("--data", scene.name, "--run-dir", str(run.path), "--steps", "1")
    assert code == 0, err
    assert yaml.safe_load(run.config_path.read_text())["data"] == str(scene.resolve())
    fingerprint = json.loads(run.dataset_json_path.read_text())["fingerprint"]
    assert len(fingerprint) == 64
    monkeypatch.chdir(tmp_path)
    _, _, cfg = open_run_config(run.path)
    assert len(load_run_dataset(cfg).splits["train"]) == 6
