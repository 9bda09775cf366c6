"""Frozen-dataclass configs to and from plain data and YAML, strictly validated.

The dataclass defaults are the source of truth. A preset file ``configs/<method>.yaml`` (package data
``recon.configs``) holds overrides only; a run directory's ``config.yaml`` holds the full resolved config plus
``schema_version``. Both load through :func:`config_from_dict`, which rejects unknown keys, missing required
fields, wrong types and out-of-range ``Literal`` values with a :class:`ConfigError` naming the dotted key path.

Plain-data layout (what :func:`dump_config` writes and :func:`config_from_dict` reads):

- a dataclass is a mapping of its ``init`` fields; nested dataclasses nest;
- a field typed as a ``Union`` of dataclasses (a CLI subcommand choice) carries the discriminator key
  ``"_type"`` whose value is the chosen class's ``__name__``, e.g. ``strategy: {_type: DensifyStrategy, ...}``;
  when ``_type`` is omitted the field's current (default) class is kept, or the only dataclass member is used;
- tuples and lists are YAML sequences, ``Path`` is a string, ``Enum`` members are their ``value``,
  ``Literal`` values are themselves; an ``int`` is accepted where a ``float`` is expected (never the reverse),
  and ``bool`` is never accepted as a number.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     lr: float = 1e-3
    ...     betas: tuple[float, float] = (0.9, 0.999)
    >>> dump_config(Opt())
    {'schema_version': 1, 'lr': 0.001, 'betas': [0.9, 0.999]}
    >>> apply_overrides(Opt(), {"lr": 1})
    Opt(lr=1.0, betas=(0.9, 0.999))
"""

import dataclasses
import difflib
import enum
import hashlib
import importlib.resources
import json
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

from recon.core.errors import ReconError

__all__ = [
    "SCHEMA_VERSION",
    "TYPE_KEY",
    "ConfigError",
    "apply_overrides",
    "available_presets",
    "config_from_dict",
    "config_hash",
    "dump_config",
    "load_config_yaml",
    "load_preset",
    "load_yaml",
    "save_config_yaml",
    "write_text_atomic",
]

SCHEMA_VERSION = 1
"""Version of the plain-data layout written into every resolved config; bump on incompatible changes."""

TYPE_KEY = "_type"
"""Discriminator key naming the chosen class of a ``Union``-of-dataclasses field."""

SCHEMA_KEY = "schema_version"
PRESET_PACKAGE = "recon.configs"

C = TypeVar("C")


class ConfigError(ReconError):
    """A config file or override that does not match the config dataclasses."""


# ----------------------------------------------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``) and rejects duplicate keys."""


_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_StrictLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789."))


def _construct_mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def load_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file as plain data (strict: duplicate keys are an error; ``1e-3`` is a float).

    Raises:
        ConfigError: the file is missing or is not valid YAML (the message names the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; expected a YAML config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    """Remove ``Annotated[...]`` wrappers (tyro markers, docs)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _union_dataclasses(tp: Any) -> list[type]:
    return [_strip(a) for a in typing.get_args(tp) if dataclasses.is_dataclass(_strip(a))]


def _describe(tp: Any) -> str:
    """A short human name for a type, for error messages."""
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        if args == ((),):
            return "an empty list"
        return f"a list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path (string)"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _where(source: str | None, path: str) -> str:
    parts = [p for p in (source, path) if p]
    return ": ".join(parts) if parts else "config"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# ----------------------------------------------------------------------------------------------------------------
# Dump
# ----------------------------------------------------------------------------------------------------------------


def dump_config(cfg: Any) -> dict[str, Any]:
    """Convert a config dataclass to plain data (dicts, lists, str, int, float, bool, None).

    Args:
        cfg: a dataclass instance.

    Returns:
        A dict with ``schema_version`` first, then the fields in declaration order. Nested dataclasses become
        dicts; a dataclass chosen from a ``Union`` field carries ``"_type": <class name>``.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_config expects a dataclass instance, got {type(cfg).__name__}")
    return {SCHEMA_KEY: SCHEMA_VERSION, **_dump_dataclass(cfg, tagged=False, path="")}


def _dump_dataclass(obj: Any, *, tagged: bool, path: str) -> dict[str, Any]:
    hints = _hints(type(obj))
    out: dict[str, Any] = {}
    if tagged:
        out[TYPE_KEY] = type(obj).__name__
    for f in _init_fields(type(obj)):
        if f.name == TYPE_KEY:
            raise TypeError(f"{type(obj).__name__}.{f.name}: the field name {TYPE_KEY!r} is reserved")
        out[f.name] = _dump(getattr(obj, f.name), hints.get(f.name, Any), _join(path, f.name))
    return out


def _dump(value: Any, tp: Any, path: str) -> Any:
    tp = _strip(tp)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        tagged = _is_union(tp) and bool(_union_dataclasses(tp))
        return _dump_dataclass(value, tagged=tagged, path=path)
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, tuple | list):
        return [_dump(v, _element_type(tp, i), _join(path, i)) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        value_tp = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{path}: mapping key {k!r} is not a string or int; cannot dump")
            out[k] = _dump(v, value_tp, _join(path, k))
        return out
    raise TypeError(f"{path or 'config'}: cannot dump a {type(value).__name__} as plain config data")


def _element_type(tp: Any, index: int) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[index] if index < len(args) else Any
    if origin is list and args:
        return args[0]
    return Any


def config_hash(cfg: Any) -> str:
    """sha256 (hex) of the canonical JSON of a config (a dataclass, through :func:`dump_config`, or a dict)."""
    data = dump_config(cfg) if dataclasses.is_dataclass(cfg) else cfg
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_config_yaml(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config (with ``schema_version``) as YAML, atomically. Returns the path."""
    text = yaml.safe_dump(dump_config(cfg), sort_keys=False, default_flow_style=None, allow_unicode=True)
    return write_text_atomic(path, text)


# ----------------------------------------------------------------------------------------------------------------
# Load and override
# ----------------------------------------------------------------------------------------------------------------


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, source: str | None = None) -> C:
    """Build a config dataclass from plain data, strictly.

    Keys absent from ``data`` keep the dataclass defaults (so a preset of overrides and a full resolved config
    load the same way); ``schema_version`` is optional but, when present, must equal :data:`SCHEMA_VERSION`.

    Args:
        cls: the config dataclass.
        data: a mapping as written by :func:`dump_config` (or a subset of it).
        source: a file name to start error messages with.

    Raises:
        ConfigError: unknown key, missing required field, wrong type or value; the message names the dotted key.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"config_from_dict expects a dataclass type, got {cls!r}")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, '')}: expected a mapping of config keys, got {_got(data)}")
    data = dict(data)
    if SCHEMA_KEY in data:
        _check_schema(data.pop(SCHEMA_KEY), source)
    return _build(cls, data, path="", base=None, source=source)


def _check_schema(version: Any, source: str | None) -> None:
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ConfigError(
            f"{_where(source, SCHEMA_KEY)}: this recon reads config schema {SCHEMA_VERSION}, "
            f"the file says {version!r}"
        )


def load_config_yaml(cls: type[C], path: str | os.PathLike) -> C:
    """Load a config dataclass from a YAML file written by :func:`save_config_yaml` (or a subset of one).

    Raises:
        ConfigError: the file is missing, not YAML, or does not match ``cls`` (names the file and the key).
    """
    return config_from_dict(cls, load_yaml(path), source=str(path))


def apply_overrides(cfg: C, overrides: Mapping[str, Any], *, source: str | None = None) -> C:
    """Return a copy of ``cfg`` with ``overrides`` applied recursively (``dataclasses.replace``), validated.

    Keys may be nested mappings (``{"scene": {"sh_degree": 2}}``) or dotted (``{"scene.sh_degree": 2}``).
    A nested mapping with a different ``"_type"`` replaces the nested config by that class (built from its
    defaults plus the mapping); without ``"_type"`` it updates the current nested config.

    Raises:
        ConfigError: as :func:`config_from_dict`.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"apply_overrides expects a dataclass instance, got {type(cfg).__name__}")
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{_where(source, '')}: expected a mapping of overrides, got {_got(overrides)}")
    data = _undot(overrides, source)
    if SCHEMA_KEY in data:
        _check_schema(data.pop(SCHEMA_KEY), source)
    return _build(type(cfg), data, path="", base=cfg, source=source)


def _undot(overrides: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """Expand ``{"a.b": 1}`` into ``{"a": {"b": 1}}`` (merging with nested mappings given alongside)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"{_where(source, str(key))}: config keys must be strings, got {_got(key)}")
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{_where(source, '.'.join(parts[: i + 1]))}: given both a value and sub-keys"
                )
            node = child
        last = parts[-1]
        if isinstance(value, Mapping):
            value = _undot(value, source)
            if isinstance(node.get(last), dict):
                node[last].update(value)
                continue
        elif last in node:
            raise ConfigError(f"{_where(source, key)}: given twice")
        node[last] = value
    return out


def _build(cls: type, data: Any, *, path: str, base: Any, source: str | None) -> Any:
    """Construct ``cls`` from mapping ``data``; missing keys come from ``base`` (an instance) or the defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, path)}: expected {_describe(cls)}, got {_got(data)}")
    fields = {f.name: f for f in _init_fields(cls)}
    if TYPE_KEY in data and data[TYPE_KEY] != cls.__name__:
        raise ConfigError(
            f"{_where(source, _join(path, TYPE_KEY))}: expected {cls.__name__!r}, got {_got(data[TYPE_KEY])}"
        )
    for key in data:
        if key != TYPE_KEY and key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{_where(source, _join(path, key))}: unknown key{suggestion}; "
                f"{cls.__name__} has: {', '.join(fields) or '(no fields)'}"
            )
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        current = getattr(base, name) if base is not None else _field_default(field)
        if name in data:
            values[name] = _convert(data[name], hints.get(name, Any), _join(path, name), current, source)
        elif current is dataclasses.MISSING:
            raise ConfigError(
                f"{_where(source, _join(path, name))}: missing required key ({_describe(hints.get(name, Any))})"
            )
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_where(source, path or cls.__name__)}: {exc}") from exc


def _convert(value: Any, tp: Any, path: str, current: Any, source: str | None) -> Any:
    """Validate and convert one plain value to field type ``tp`` (``current`` is the value it replaces)."""
    tp = _strip(tp)
    where = _where(source, path)
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {_got(value)}")
    if _is_union(tp):
        return _convert_union(value, tp, path, current, source)
    origin = typing.get_origin(tp)
    if origin is Literal:
        for allowed in typing.get_args(tp):
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        base = current if isinstance(current, tp) else None
        return _build(tp, value, path=path, base=base, source=source)
    if origin in (tuple, list) or tp in (tuple, list):
        return _convert_sequence(value, tp, path, source)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_got(value)}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return {
            _convert(k, key_tp, _join(path, k), dataclasses.MISSING, source): _convert(
                v, value_tp, _join(path, k), dataclasses.MISSING, source
            )
            for k, v in value.items()
        }
    if isinstance(tp, type):
        return _convert_scalar(value, tp, where)
    raise TypeError(f"{where}: unsupported config field type {tp!r}")


def _convert_scalar(value: Any, tp: type, where: str) -> Any:
    if issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if type(value) is type(member.value) and value == member.value:
                return member
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif issubclass(tp, PurePath):
        if isinstance(value, str | os.PathLike):
            return tp(value)
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")


def _convert_sequence(value: Any, tp: Any, path: str, source: str | None) -> Any:
    where = _where(source, path)
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")
    fixed = origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis)
    if fixed:
        expected = 0 if args == ((),) else len(args)
        if len(value) != expected:
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {len(value)} items")
    items = [
        _convert(v, _element_type(tp, i), _join(path, i), dataclasses.MISSING, source)
        for i, v in enumerate(value)
    ]
    return tuple(items) if origin is tuple else items


def _convert_union(value: Any, tp: Any, path: str, current: Any, source: str | None) -> Any:
    where = _where(source, path)
    members = [_strip(a) for a in typing.get_args(tp)]
    classes = _union_dataclasses(tp)
    if value is None:
        if type(None) in members:
            return None
        raise ConfigError(f"{where}: expected {_describe(tp)}, got null")
    if classes and dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, tuple(classes)):
            return value
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")
    if classes and isinstance(value, Mapping):
        names = {c.__name__: c for c in classes}
        if TYPE_KEY in value:
            chosen = names.get(value[TYPE_KEY])
            if chosen is None:
                raise ConfigError(
                    f"{_where(source, _join(path, TYPE_KEY))}: expected one of {', '.join(map(repr, names))}, "
                    f"got {_got(value[TYPE_KEY])}"
                )
        elif isinstance(current, tuple(classes)):
            chosen = type(current)
        elif len(classes) == 1:
            chosen = classes[0]
        else:
            raise ConfigError(
                f"{where}: a mapping here needs {TYPE_KEY!r}: one of {', '.join(map(repr, names))}"
            )
        base = current if type(current) is chosen else None
        return _build(chosen, value, path=path, base=base, source=source)
    plain = [m for m in members if m is not type(None) and not dataclasses.is_dataclass(m)]
    if len(plain) == 1:
        # `X | None` (the common case): report X's own, more specific error.
        return _convert(value, plain[0], path, current, source)
    for member in plain:
        try:
            return _convert(value, member, path, current, source)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {_got(value)}")


# ----------------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------------


def available_presets() -> list[str]:
    """Names of the preset files shipped in ``recon.configs`` (without ``.yaml``)."""
    root = importlib.resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_preset(cls: type[C], method: str) -> C:
    """The config of ``method``: the dataclass defaults of ``cls`` with ``configs/<method>.yaml`` applied.

    Raises:
        ConfigError: no such preset (lists the available ones), or the preset does not match ``cls``.
    """
    resource = importlib.resources.files(PRESET_PACKAGE) / f"{method}.yaml"
    if not resource.is_file():
        available = ", ".join(available_presets()) or "none"
        raise ConfigError(f"no preset {method!r} (configs/{method}.yaml); available presets: {available}")
    source = f"configs/{method}.yaml"
    data = _parse_yaml(resource.read_text(encoding="utf-8"), source)
    return config_from_dict(cls, data if data is not None else {}, source=source)
