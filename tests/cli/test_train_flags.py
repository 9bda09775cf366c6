"""recon train: --print-config (dry run), --load-config FILE, --preset NAME|PATH.yaml, --logger (resolution only;
tests/train/test_logger.py trains with it). Everything here parses; nothing trains."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from recon.cli import train as train_cli
from recon.config import config_from_dict, dump_config, save_config_yaml
from recon.core import ReconError
from recon.train import logger as logger_module
from recon.train.config import TrianglesTrainConfig


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "scene"
    folder.mkdir()  # parsing only resolves the path; no dataset is read
    return folder


def _parse(*args: str):
    return train_cli.parse(["triangles", *args])


def _print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as info:
        _parse(*args, "--print-config")
    assert info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_is_the_resolved_config_and_loads_back(data, capsys):
    printed = _print_config(
        capsys, "--data", str(data), "--device", "cpu", "--steps", "77", "--scene.sh-degree", "1"
    )
    _, cfg, _ = _parse("--data", str(data), "--device", "cpu", "--steps", "77", "--scene.sh-degree", "1")
    assert printed == dump_config(cfg)  # exactly what a run would store (print_config itself is false)
    assert printed["steps"] == 77 and printed["scene"]["sh_degree"] == 1 and printed["print_config"] is False
    assert printed["preset"] == "triangles_cpu" and printed["threads"] == 1  # the CPU preset was applied
    assert config_from_dict(TrianglesTrainConfig, printed) == cfg  # strict round trip


def test_print_config_validates_and_runs_nothing(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReconError, match="--log-every 0: expected a positive integer"):
        _parse("--data", str(data), "--log-every", "0", "--print-config")
    _print_config(capsys, "--data", str(data))
    assert not (tmp_path / "outputs").exists()  # a dry run: no run directory


def test_load_config_of_another_run_then_flags_override(data, tmp_path, capsys):
    _, other, _ = _parse("--data", str(data), "--device", "cpu", "--steps", "321", "--scene.sh-degree", "2",
                         "--seed", "9", "--run-dir", str(tmp_path / "old_run"))  # fmt: skip
    config_yaml = save_config_yaml(dataclasses.replace(other, strategy=dataclasses.replace(other.strategy, cap=1234)),
                                   tmp_path / "config.yaml")  # fmt: skip
    _, cfg, _ = _parse("--load-config", str(config_yaml), "--seed", "4")
    assert cfg.steps == 321 and cfg.scene.sh_degree == 2 and cfg.strategy.cap == 1234  # from the file
    assert cfg.seed == 4  # the flag wins over the file
    assert cfg.data == str(data.resolve()) and cfg.preset == "triangles_cpu"
    assert cfg.run_dir == "" and not cfg.resume  # never trains into the other run's folder
    assert cfg.load_config == str(config_yaml.resolve())
    _, cfg, _ = _parse("--load-config", str(config_yaml), "--run-dir", str(tmp_path / "new"))
    assert cfg.run_dir == str(tmp_path / "new")


def test_load_config_partial_file_applies_over_the_preset(data, tmp_path):
    partial = tmp_path / "small.yaml"
    partial.write_text("steps: 40\nscene:\n  sh_degree: 0\nstrategy.cap: 500\n")
    _, preset_only, _ = _parse("--data", str(data), "--device", "cpu")
    _, cfg, _ = _parse("--data", str(data), "--device", "cpu", "--load-config", str(partial))
    assert (cfg.steps, cfg.scene.sh_degree, cfg.strategy.cap) == (40, 0, 500)
    # every other field is the preset's
    same = dataclasses.replace(cfg, steps=preset_only.steps, load_config="", scene=preset_only.scene,
                               strategy=preset_only.strategy)  # fmt: skip
    assert same == preset_only
    assert cfg.scene.random_init_points == preset_only.scene.random_init_points == 4000  # triangles_cpu value


def test_cpu_preset_decays_its_scaled_learning_rates_and_the_recipe_does_not(data):
    _, cpu, _ = _parse("--data", str(data), "--device", "cpu")
    _, recipe, _ = _parse("--data", str(data), "--device", "cpu", "--preset", "triangles")
    assert (cpu.scene.lr_scale, cpu.scene.lr_scale_decay) == (4.0, True)  # 4x -> 1x over the budget
    assert (recipe.scene.lr_scale, recipe.scene.lr_scale_decay) == (1.0, False)
    _, off, _ = _parse("--data", str(data), "--device", "cpu", "--scene.no-lr-scale-decay")
    assert not off.scene.lr_scale_decay


def test_load_config_is_strict(data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scene:\n  sh_degre: 2\n")
    with pytest.raises(ReconError, match=r"bad\.yaml.*scene\.sh_degre"):
        _parse("--data", str(data), "--load-config", str(bad))
    bad.write_text("steps: many\n")
    with pytest.raises(ReconError, match=r"bad\.yaml.*steps"):
        _parse("--data", str(data), "--load-config", str(bad))
    bad.write_text("method: nerf\n")
    with pytest.raises(ReconError, match="a config of method 'nerf', not 'triangles'"):
        _parse("--data", str(data), "--load-config", str(bad))
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ReconError, match="expected a mapping"):
        _parse("--data", str(data), "--load-config", str(bad))
    with pytest.raises(ReconError, match="--load-config .*missing.yaml: no such file"):
        _parse("--data", str(data), "--load-config", str(tmp_path / "missing.yaml"))
    with pytest.raises(ReconError, match="--load-config cannot be combined with --resume"):
        _parse("--resume", "--run-dir", str(tmp_path), "--load-config", str(bad))


def test_preset_as_a_file_path(data, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("steps: 99\nscene:\n  sh_degree: 1\n")
    _, cfg, _ = _parse("--data", str(data), "--device", "cpu", "--preset", str(preset))
    _, gpu_recipe, _ = _parse("--data", str(data), "--device", "cpu", "--preset", "triangles")
    assert cfg.preset == str(preset.resolve())
    assert cfg.steps == 99 and cfg.scene.sh_degree == 1
    # a preset file holds overrides of the method's own preset (configs/triangles.yaml), like triangles_cpu
    assert (
        dataclasses.replace(cfg, steps=gpu_recipe.steps, scene=gpu_recipe.scene, preset="triangles")
        == gpu_recipe
    )
    _, cfg, _ = _parse("--data", str(data), "--preset", str(preset), "--steps", "5")
    assert cfg.steps == 5  # flags after the preset
    with pytest.raises(ReconError, match="--preset .*nope.yaml: no such file"):
        _parse("--data", str(data), "--preset", str(tmp_path / "nope.yaml"))
    preset.write_text("method: neus\n")
    with pytest.raises(ReconError, match="a preset of method 'neus', not 'triangles'"):
        _parse("--data", str(data), "--preset", str(preset))
    preset.write_text("scene:\n  bogus: 1\n")
    with pytest.raises(ReconError, match=r"mine\.yaml.*scene\.bogus"):
        _parse("--data", str(data), "--preset", str(preset))
    with pytest.raises(ReconError, match="--preset 'triangles_gpu': no configs/triangles_gpu.yaml"):
        _parse("--data", str(data), "--preset", "triangles_gpu")


def test_logger_flag(data, monkeypatch):
    _, cfg, _ = _parse("--data", str(data), "--logger", "none")
    assert cfg.logger == "none"
    _, cfg, _ = _parse("--data", str(data))
    assert cfg.logger == "auto"
    monkeypatch.setattr(logger_module, "tensorboard_available", lambda: False)
    with pytest.raises(ReconError, match="--logger tensorboard: the tensorboard package is not installed"):
        _parse("--data", str(data), "--logger", "tensorboard")
    with pytest.raises(SystemExit) as info:  # tyro rejects a value outside the Literal (usage error, exit 2)
        _parse("--data", str(data), "--logger", "wandb")
    assert info.value.code == 2


def test_help_lists_the_new_flags(capsys):
    with pytest.raises(SystemExit) as info:
        _parse("--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--load-config", "--print-config", "--logger", "--preset"):
        assert flag in text, flag


def test_print_config_from_the_command_line(data, recon_cli):
    """The console-script path: exit 0, YAML on stdout and nothing else."""
    result = recon_cli("train", "triangles", "--data", str(data), "--device", "cpu", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["method"] == "triangles" and printed["data"] == str(data.resolve())


def test_docs_list_every_flag():
    """docs/cli.md names every generic train flag and every flag of eval, render and export."""
    from recon.cli.eval import EvalArgs
    from recon.cli.export import ExportArgs
    from recon.cli.render import RenderArgs
    from recon.train.config import TrainConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    positional = {"run_dir"}
    for cls in (TrainConfig, EvalArgs, RenderArgs, ExportArgs):
        for field in dataclasses.fields(cls):
            nested = (
                dataclasses.is_dataclass(field.default_factory) if callable(field.default_factory) else False
            )
            if field.name == "method" or nested or (cls is not TrainConfig and field.name in positional):
                continue  # METHOD and RUN_DIR are positional; loss.* etc. are listed by --help
            flag = "--" + field.name.replace("_", "-")
            assert flag in text, f"{cls.__name__}.{field.name}: {flag} is not in docs/cli.md"


def test_train_help_lists_the_methods(capsys):
    from recon.train.methods import REGISTRY

    with pytest.raises(SystemExit) as info:
        train_cli.parse(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    listed = text.split("methods:")[1]
    for name in REGISTRY:
        assert f"  {name}" in listed, name


def test_contract_aliases_expand_to_preset_fields():
    from recon.cli.train import _expand_aliases

    assert _expand_aliases(["--finish", "opaque", "--scene-type=forward", "--steps", "3"]) == [
        "--strategy.finish", "opaque", "--scene.scene-type=forward", "--steps", "3",
    ]  # fmt: skip
