"""recon.config: dataclass configs <-> plain data / YAML, strict validation, overrides, presets."""

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from recon.config import (
    SCHEMA_VERSION,
    TYPE_KEY,
    ConfigError,
    apply_overrides,
    available_presets,
    config_from_dict,
    config_hash,
    dump_config,
    load_config_yaml,
    load_preset,
    load_yaml,
    save_config_yaml,
)
from recon.core.errors import ReconError
from tests.typecheck import assert_rejected


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Densify:
    """One alternative of a Union field (a CLI subcommand)."""

    until: int = 15000
    grad_threshold: float = 2e-4


@dataclass(frozen=True)
class NoStrategy:
    pass


@dataclass(frozen=True)
class Scene:
    sh_degree: int = 3
    backend: Literal["auto", "torch", "warp"] = "auto"
    init_scale: tuple[float, ...] = (1.0, 1.0)


@dataclass(frozen=True)
class Train:
    data: Path
    steps: int = 100
    white: bool = True
    name: str | None = None
    mode: Mode = Mode.FAST
    scene: Scene = field(default_factory=Scene)
    optim: Optim = field(default_factory=Optim)
    strategy: Densify | NoStrategy = field(default_factory=Densify)
    weights: dict[str, float] = field(default_factory=lambda: {"rgb": 1.0})
    milestones: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Positive:
    value: float = 1.0

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError(f"value must be positive, got {self.value}")


def make() -> Train:
    return Train(data=Path("/tmp/scene"), strategy=NoStrategy(), milestones=[1, 2], mode=Mode.EXACT)


def test_dump_is_plain_data_with_schema_and_type_key():
    data = dump_config(make())
    assert data["schema_version"] == SCHEMA_VERSION
    assert list(data)[0] == "schema_version"
    assert data["data"] == "/tmp/scene"
    assert data["mode"] == "exact"
    assert data["scene"] == {"sh_degree": 3, "backend": "auto", "init_scale": [1.0, 1.0]}
    assert data["optim"]["betas"] == [0.9, 0.999]
    assert data["strategy"] == {TYPE_KEY: "NoStrategy"}
    # A plain (non-Union) nested dataclass carries no discriminator.
    assert TYPE_KEY not in data["scene"]
    # Plain data survives a YAML safe round trip unchanged.
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_yaml_round_trip(tmp_path):
    cfg = make()
    path = save_config_yaml(cfg, tmp_path / "run" / "config.yaml")
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))
    loaded = load_config_yaml(Train, path)
    assert loaded == cfg
    assert isinstance(loaded.optim.betas, tuple)
    assert isinstance(loaded.data, Path)
    assert loaded.mode is Mode.EXACT
    assert config_hash(loaded) == config_hash(cfg) == config_hash(dump_config(cfg))


def test_config_hash_changes_with_any_field():
    cfg = make()
    assert config_hash(cfg) != config_hash(apply_overrides(cfg, {"optim.lr": 2e-3}))


def test_unknown_key_names_dotted_path_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: /x\nscene:\n  sh_degre: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config_yaml(Train, path)
    message = str(info.value)
    assert str(path) in message
    assert "scene.sh_degre: unknown key" in message
    assert "did you mean 'sh_degree'" in message
    assert isinstance(info.value, ReconError)


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"steps": "ten"}, "steps", "expected int"),
        ({"steps": 1.5}, "steps", "expected int"),
        ({"steps": True}, "steps", "expected int"),
        ({"white": 1}, "white", "expected bool"),
        ({"optim": {"lr": "fast"}}, "optim.lr", "expected float"),
        ({"optim": {"lr": False}}, "optim.lr", "expected float"),
        ({"scene": {"backend": "cuda"}}, "scene.backend", "expected one of 'auto', 'torch', 'warp'"),
        ({"mode": "slow"}, "mode", "expected one of 'fast', 'exact'"),
        ({"optim": {"betas": [0.9]}}, "optim.betas", "got 1 items"),
        ({"optim": {"betas": 0.9}}, "optim.betas", "expected a list of 2 items"),
        ({"scene": {"init_scale": [1.0, "x"]}}, "scene.init_scale.1", "expected float"),
        ({"scene": 3}, "scene", "expected a mapping (Scene)"),
        ({"name": 5}, "name", "expected str"),
        ({"weights": {"rgb": "high"}}, "weights.rgb", "expected float"),
        ({"milestones": [1, 2.5]}, "milestones.1", "expected int"),
    ],
)
def test_wrong_type_names_key_and_expectation(data, key, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(Train, {"data": "/x", **data}, source="cfg.yaml")
    message = str(info.value)
    assert message.startswith(f"cfg.yaml: {key}: "), message
    assert expected in message, message


def test_int_is_coerced_to_float_but_not_the_reverse():
    cfg = config_from_dict(Train, {"data": "/x", "optim": {"lr": 1}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"^data: missing required key \(a path"):
        config_from_dict(Train, {"steps": 3})


def test_partial_nested_mapping_keeps_other_defaults():
    cfg = config_from_dict(Train, {"data": "/x", "optim": {"lr": 0.5}})
    assert cfg.optim == Optim(lr=0.5)
    assert cfg.scene == Scene()
    assert cfg.strategy == Densify()


def test_union_discriminator():
    cfg = config_from_dict(Train, {"data": "/x", "strategy": {TYPE_KEY: "NoStrategy"}})
    assert cfg.strategy == NoStrategy()
    # Without _type a mapping updates the current (default) alternative.
    cfg = config_from_dict(Train, {"data": "/x", "strategy": {"until": 5}})
    assert cfg.strategy == Densify(until=5)
    with pytest.raises(ConfigError, match=r"strategy\._type: expected one of 'Densify', 'NoStrategy'"):
        config_from_dict(Train, {"data": "/x", "strategy": {TYPE_KEY: "Prune"}})
    with pytest.raises(ConfigError, match=r"strategy\.until: unknown key"):
        config_from_dict(Train, {"data": "/x", "strategy": {TYPE_KEY: "NoStrategy", "until": 5}})


def test_schema_version_checked():
    assert config_from_dict(Train, {"data": "/x", "schema_version": SCHEMA_VERSION}).data == Path("/x")
    with pytest.raises(ConfigError, match="schema_version: this recon reads config schema"):
        config_from_dict(Train, {"data": "/x", "schema_version": SCHEMA_VERSION + 1})


def test_post_init_errors_become_config_errors():
    @dataclass(frozen=True)
    class Outer:
        inner: Positive = field(default_factory=Positive)

    with pytest.raises(ConfigError, match="inner: value must be positive"):
        config_from_dict(Outer, {"inner": {"value": -1}})


def test_apply_overrides_nested_dotted_and_union():
    cfg = make()
    out = apply_overrides(cfg, {"scene.sh_degree": 1, "optim": {"betas": [0.5, 0.6]}, "steps": 7})
    assert out.scene.sh_degree == 1 and out.scene.backend == "auto"
    assert out.optim == Optim(lr=1e-3, betas=(0.5, 0.6))
    assert out.steps == 7
    assert out.strategy == NoStrategy()  # untouched fields keep the current values, not the defaults
    assert cfg.steps == 100  # the input is not modified (frozen, replaced)
    switched = apply_overrides(out, {"strategy": {TYPE_KEY: "Densify", "until": 9}})
    assert switched.strategy == Densify(until=9)
    assert dataclasses.is_dataclass(switched) and switched.scene.sh_degree == 1


def test_apply_overrides_validates():
    with pytest.raises(ConfigError, match=r"^scene\.backend: expected one of"):
        apply_overrides(make(), {"scene.backend": "vulkan"})
    with pytest.raises(ConfigError, match=r"^scene\.nope: unknown key"):
        apply_overrides(make(), {"scene": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"^steps: given both a value and sub-keys"):
        apply_overrides(make(), {"steps": 1, "steps.x": 2})


def test_yaml_reader_is_strict_and_reads_exponents(tmp_path):
    path = tmp_path / "c.yaml"
    # YAML 1.1 would read 1e-3 as the string "1e-3"; configs mean a float.
    path.write_text("data: /x\noptim:\n  lr: 1e-3\n")
    assert load_config_yaml(Train, path).optim.lr == pytest.approx(1e-3)
    path.write_text("data: /x\nsteps: 1\nsteps: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        load_yaml(path)
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    assert_rejected(
        lambda: load_config_yaml(Train, path),
        match="expected a mapping of config keys",
        argument="data",
        error=ConfigError,
    )


def test_load_preset_from_package_data(tmp_path, monkeypatch):
    import recon.config as config_module

    pkg = tmp_path / "fake_presets_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.yaml").write_text("# overrides only\nsteps: 5\nscene:\n  sh_degree: 0\n")
    (pkg / "bad.yaml").write_text("stepz: 5\n")
    (pkg / "empty.yaml").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(config_module, "PRESET_PACKAGE", "fake_presets_pkg")

    @dataclass(frozen=True)
    class Small:
        steps: int = 100
        scene: Scene = field(default_factory=Scene)

    assert available_presets() == ["bad", "empty", "tiny"]
    assert load_preset(Small, "tiny") == Small(steps=5, scene=Scene(sh_degree=0))
    assert load_preset(Small, "empty") == Small()
    with pytest.raises(
        ConfigError, match=r"^configs/bad\.yaml: stepz: unknown key \(did you mean 'steps'\?\)"
    ):
        load_preset(Small, "bad")
    with pytest.raises(ConfigError, match="no preset 'nerf'.*available presets: bad, empty, tiny"):
        load_preset(Small, "nerf")
