"""recon.runs: run directory layout, metrics log, atomic checkpoints, nested-state flattening."""

import errno
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import recon
from recon.config import config_hash, dump_config
from recon.runs import RunDir, RunError, checkpoint_step, flatten_state, load_checkpoint, unflatten_state


@dataclass(frozen=True)
class Optim:
    lr: float = 0.05


@dataclass(frozen=True)
class Cfg:
    method: str = "triangles"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_create_layout(tmp_path):
    run = RunDir.create(tmp_path / "outputs", "lego", "triangles", timestamp="2026-01-01_000000")
    assert run.path == tmp_path / "outputs" / "lego" / "triangles" / "2026-01-01_000000"
    for folder in (run.checkpoints_dir, run.renders_dir, run.exports_dir):
        assert folder.is_dir() and folder.parent == run.path
    # Same timestamp again: a fresh folder, never reuse of an existing run.
    again = RunDir.create(tmp_path / "outputs", "lego", "triangles", timestamp="2026-01-01_000000")
    assert again.path.name == "2026-01-01_000000-1"
    default = RunDir.create(tmp_path / "outputs", "lego", "nerf")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d{6}", default.path.name)
    with pytest.raises(recon.core.errors.ReconError, match="experiment '../x': expected a plain folder name"):
        RunDir.create(tmp_path, "../x", "nerf")


def test_config_dataset_eval_files(tmp_path):
    run = RunDir.create(tmp_path, "exp", "triangles")
    cfg = Cfg(steps=3)
    run.write_config(cfg)
    assert run.config_path.read_text().startswith("schema_version: 1\n")
    assert run.read_config(Cfg) == cfg
    assert run.config_dict()["method"] == "triangles"
    run.write_dataset_json({"format": "blender", "normalization": torch.eye(4).tolist(), "num_train": 3})
    assert run.read_dataset_json()["format"] == "blender"
    run.write_eval({"psnr": torch.tensor(30.5), "lpips": None, "protocol": {"backend": "warp"}})
    assert run.read_eval() == {"psnr": 30.5, "lpips": None, "protocol": {"backend": "warp"}}
    assert not list(run.path.glob("*.tmp")) and not list(run.path.glob(".*.tmp"))


def test_require_exists(tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        RunDir(tmp_path / "nope").require_exists()
    with pytest.raises(RunError, match=r"not a run directory \(no config.yaml\)"):
        RunDir(tmp_path).require_exists()


def test_metrics_jsonl_append(tmp_path):
    run = RunDir.create(tmp_path, "exp", "triangles")
    run.log_metrics(1, {"loss": torch.tensor(0.5), "psnr": 20.0, "num_primitives": 100})
    run.log_metrics(2, {"loss": 0.25})
    lines = run.metrics_path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["step"] == 1 and first["loss"] == 0.5 and first["num_primitives"] == 100 and "time" in first
    # A crash mid-write leaves a torn last line; readers skip it.
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    with pytest.raises(TypeError, match="metric 'img' is a tensor of shape"):
        run.log_metrics(4, {"img": torch.zeros(2, 2)})


def test_checkpoint_round_trip_and_metadata(tmp_path):
    run = RunDir.create(tmp_path, "exp", "triangles")
    run.write_config(Cfg())
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {
        "xyz": torch.randn(5, 3, dtype=torch.float64),
        "view": base[:, 1],  # strided view into a larger storage
        "tied_a": base,
        "tied_b": base,  # the same storage twice
        "mask": torch.tensor([True, False]),
        "count": torch.tensor(7, dtype=torch.int64),  # 0-d
    }
    path = run.save_checkpoint(120, tensors, {"scene": "triangles"})
    assert path == run.checkpoints_dir / "step-00000120.safetensors"
    assert checkpoint_step(path) == 120
    loaded, meta = load_checkpoint(path)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    assert meta["step"] == 120 and meta["scene"] == "triangles"
    assert meta["recon_version"] == recon.__version__
    assert meta["config_hash"] == config_hash(dump_config(Cfg()))
    assert meta["tensors"] == sorted(tensors)
    # Loading through the JSON path or the run gives the same.
    assert torch.equal(load_checkpoint(path.with_suffix(".json"))[0]["xyz"], tensors["xyz"])
    assert run.load_checkpoint()[1]["step"] == 120
    with pytest.raises(ValueError, match="reserved keys: step"):
        run.save_checkpoint(121, tensors, {"step": 5})


def test_latest_ignores_incomplete_and_temporary_files(tmp_path):
    run = RunDir.create(tmp_path, "exp", "triangles")
    assert run.latest_checkpoint() is None
    with pytest.raises(RunError, match="no complete checkpoint"):
        run.load_checkpoint()
    run.save_checkpoint(5, {"a": torch.zeros(2)})
    run.save_checkpoint(40, {"a": torch.ones(2)})
    # A crash while writing step 90: tensors moved into place, metadata never written.
    run.save_checkpoint(90, {"a": torch.full((2,), 9.0)})
    (run.checkpoints_dir / "step-00000090.json").unlink()
    # A crash while writing step 100: only a temporary file.
    (run.checkpoints_dir / ".step-00000100.safetensors.abc123.tmp").write_bytes(b"partial")
    # Metadata whose tensors file is gone does not count either.
    (run.checkpoints_dir / "step-00000200.json").write_text("{}")
    assert [s for s, _ in run.checkpoints()] == [5, 40]
    latest = run.latest_checkpoint()
    assert latest == run.checkpoints_dir / "step-00000040.safetensors"
    assert torch.equal(load_checkpoint(latest)[0]["a"], torch.ones(2))
    with pytest.raises(RunError, match=r"step-00000090.json: no such file"):
        load_checkpoint(run.checkpoints_dir / "step-00000090.safetensors")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    import safetensors.torch

    run = RunDir.create(tmp_path, "exp", "triangles")
    run.save_checkpoint(1, {"a": torch.zeros(2)})

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    # A full disk is a RunError naming the file (the CLI prints it as an error, not an internal error).
    with pytest.raises(RunError, match=r"step-00000002.safetensors: cannot write \(ENOSPC: No space left"):
        run.save_checkpoint(2, {"a": torch.ones(2)})
    assert [s for s, _ in run.checkpoints()] == [1]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [
        "step-00000001.json",
        "step-00000001.safetensors",
    ]


def test_keep_last(tmp_path):
    run = RunDir.create(tmp_path, "exp", "triangles")
    for step in (10, 20, 30, 40):
        run.save_checkpoint(step, {"a": torch.tensor([float(step)])}, keep_last=2)
    assert [s for s, _ in run.checkpoints()] == [30, 40]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [
        "step-00000030.json",
        "step-00000030.safetensors",
        "step-00000040.json",
        "step-00000040.safetensors",
    ]


def test_flatten_state_round_trip_keeps_types():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2)}, 1: {}},
        "param_groups": [
            {"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "amsgrad": False}
        ],
        "name": "adam",
    }
    tensors, meta = flatten_state(state, prefix="optimizer")
    assert set(tensors) == {"optimizer/state/0/step", "optimizer/state/0/exp_avg"}
    json.dumps(meta)  # plain JSON
    back = unflatten_state(tensors, json.loads(json.dumps(meta)))
    assert list(back["state"]) == [0, 1]  # int keys stay ints
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert back["param_groups"][0] == state["param_groups"][0]
    assert torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match="cannot store a set at x"):
        flatten_state({"x": {1, 2}})
    with pytest.raises(RunError, match="missing the tensor"):
        unflatten_state({}, meta)


def _make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(model, opt, steps: int, gen: torch.Generator) -> None:
    for _ in range(steps):
        x = torch.randn(16, 4, generator=gen)
        loss = (model(x) - x.sum(-1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_adam_state_round_trip_resumes_identically(tmp_path):
    """Resume from a checkpoint gives bit-identical parameters to an uninterrupted run."""
    model = _make_model(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(1)
    _train(model, opt, 3, gen)

    run = RunDir.create(tmp_path, "exp", "mlp")
    opt_tensors, opt_meta = flatten_state(opt.state_dict(), prefix="optimizer")
    model_tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    run.save_checkpoint(3, {**model_tensors, **opt_tensors}, {"optimizer": opt_meta})
    gen_state = gen.get_state()
    _train(model, opt, 4, gen)  # the uninterrupted run continues

    tensors, meta = load_checkpoint(run.latest_checkpoint())
    resumed = _make_model(123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")})
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=0.5)
    resumed_opt.load_state_dict(unflatten_state(tensors, meta["optimizer"]))
    assert resumed_opt.param_groups[0]["betas"] == (0.8, 0.99) and resumed_opt.param_groups[0]["lr"] == 1e-2
    _train(resumed, resumed_opt, 4, torch.Generator().set_state(gen_state))

    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        for i in opt.state_dict()["state"]:
            assert torch.equal(opt.state_dict()["state"][i][key], resumed_opt.state_dict()["state"][i][key])


def test_no_pickle_in_checkpoint(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    path = run.save_checkpoint(0, {"a": torch.zeros(3)})
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: a JSON header then raw bytes
    assert header["a"]["dtype"] == "F32" and header["a"]["shape"] == [3]
    assert b"\x80\x04" not in raw[:2]  # not a pickle stream


# --- verification, fallback, rotation, metrics truncation, write errors ------------------------------------------


def _three_checkpoints(tmp_path) -> RunDir:
    run = RunDir.create(tmp_path, "exp", "x")
    for step in (10, 20, 30):
        run.save_checkpoint(step, {"a": torch.full((4,), float(step))})
    return run


def test_metadata_records_hash_and_version(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    path = run.save_checkpoint(7, {"a": torch.arange(3.0)})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format_version"] == 2
    import hashlib

    assert meta["tensors_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_newest_falls_back_with_a_warning_naming_it(tmp_path, caplog):
    run = _three_checkpoints(tmp_path)
    newest = run.checkpoints_dir / "step-00000030.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the data: still a valid safetensors file, but not the one written
    newest.write_bytes(bytes(raw))
    with pytest.raises(RunError, match="content hash .* differs"):
        load_checkpoint(newest)
    with caplog.at_level(logging.WARNING, logger="recon.runs"):
        tensors, meta = run.load_checkpoint()
    assert meta["step"] == 20 and torch.equal(tensors["a"], torch.full((4,), 20.0))
    assert "step-00000030.safetensors" in caplog.text
    assert run.latest_good_checkpoint() == run.checkpoints_dir / "step-00000020.safetensors"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format_version": 99}, "format_version 99 is not one"),
        ({"format_version": "2"}, "format_version '2'"),
        ({"step": "30"}, "step must be a non-negative integer"),
        ({"step": 31}, "records step 31 but its file name says 30"),
        ({"tensors": "a"}, "'tensors' must be a list"),
        ({"train_seconds": "long"}, "train_seconds must be a number"),
        ({"tensors_sha256": None}, "tensors_sha256 is missing"),
    ],
)
def test_bad_metadata_is_refused_and_skipped(tmp_path, edit, message):
    run = _three_checkpoints(tmp_path)
    meta_path = run.checkpoints_dir / "step-00000030.json"
    meta = json.loads(meta_path.read_text()) | edit
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match=message):
        load_checkpoint(meta_path)
    assert run.load_checkpoint()[1]["step"] == 20


def test_truncated_and_garbage_files_are_skipped(tmp_path):
    run = _three_checkpoints(tmp_path)
    (run.checkpoints_dir / "step-00000030.json").write_text('{"format_version": 2, "st')
    (run.checkpoints_dir / "step-00000020.safetensors").write_bytes(b"garbage")
    assert run.load_checkpoint()[1]["step"] == 10
    for path in run.checkpoints_dir.iterdir():
        path.write_bytes(b"")
    with pytest.raises(RunError, match="no usable checkpoint"):
        run.load_checkpoint()


def test_checkpoint_with_nan_is_refused_with_its_name(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    run.save_checkpoint(1, {"a": torch.zeros(2)})
    run.save_checkpoint(2, {"a": torch.tensor([0.0, float("nan")]), "i": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(RunError, match=r"step-00000002.safetensors: tensor 'a' contains NaN"):
        load_checkpoint(run.checkpoints_dir / "step-00000002.json")
    assert run.load_checkpoint()[1]["step"] == 1


def test_version_1_checkpoints_still_load_unverified(tmp_path, caplog):
    run = RunDir.create(tmp_path, "exp", "x")
    path = run.save_checkpoint(3, {"a": torch.ones(1)})
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["tensors_sha256"]
    meta_path.write_text(json.dumps(meta | {"format_version": 1}))
    with caplog.at_level(logging.WARNING, logger="recon.runs"):
        assert load_checkpoint(path)[1]["step"] == 3
    assert "no content hash" in caplog.text


def test_rotation_keeps_the_newest_verified_checkpoint(tmp_path):
    run = _three_checkpoints(tmp_path)
    for step in (20, 30):  # the two newest are damaged; keep_last=2 alone would delete the only good one
        (run.checkpoints_dir / f"step-{step:08d}.safetensors").write_bytes(b"damaged")
    deleted = run.prune_checkpoints(2)
    assert deleted == []
    assert [s for s, _ in run.checkpoints()] == [10, 20, 30]
    assert run.load_checkpoint()[1]["step"] == 10
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        run.prune_checkpoints(0)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        run.save_checkpoint(40, {"a": torch.zeros(1)}, keep_last=0)


def test_truncate_metrics_to_the_checkpoint_step(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    for step in (5, 10, 15, 20):
        run.log_metrics(step, {"loss": 1.0 / step})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 25, "lo')  # torn by a crash
    assert run.truncate_metrics(10) == 2
    assert [r["step"] for r in run.read_metrics()] == [5, 10]
    assert run.metrics_path.read_text().endswith("\n")
    assert run.truncate_metrics(10) == 0
    assert not list(run.path.glob(".*.tmp"))


def test_unwritable_run_folder_is_a_run_error_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match=f"{blocker / 'run'}: cannot write \\(ENOTDIR"):
        RunDir(blocker / "run").check_writable()
    run = RunDir.create(tmp_path, "exp", "x")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("recon.checkpoint_io.tempfile.mkstemp", read_only)
    with pytest.raises(RunError, match=f"{run.path}: cannot write \\(EROFS: Read-only file system\\)"):
        run.check_writable()
    with pytest.raises(RunError, match="step-00000001.safetensors: cannot write \\(EROFS"):
        run.save_checkpoint(1, {"a": torch.zeros(1)})
    monkeypatch.setattr("recon.runs.open", read_only, raising=False)
    with pytest.raises(RunError, match="metrics.jsonl: cannot write \\(EROFS"):
        run.log_metrics(1, {"loss": 0.5})
