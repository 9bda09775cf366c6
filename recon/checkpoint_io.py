"""Checkpoint files of :mod:`recon.runs`: atomic writes, content hashes, verification, nested-state flattening.

Split from ``recon.runs`` (which re-exports the public names); see that module's docstring for the guarantees.
"""

import datetime
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor

from recon.config import write_text_atomic
from recon.core.errors import ReconError

logger = logging.getLogger("recon.runs")  # the public module these functions belong to

CHECKPOINT_FORMAT_VERSION = 2
"""Version of the checkpoint metadata layout; bump on incompatible changes (2: adds ``tensors_sha256``)."""

READABLE_FORMAT_VERSIONS = (1, 2)
"""Versions :func:`load_checkpoint` reads; version 1 predates content hashes and loads with a warning."""

TEST_PAUSE_ENV = "RECON_TEST_CHECKPOINT_PAUSE"
"""``STEP:SECONDS``: sleep inside checkpoint writes of step >= STEP, between tensors and metadata (tests only)."""

_HASH_CHUNK = 1 << 20  # bytes read at a time while hashing a tensor file

STEP_DIGITS = 8
"""Zero-padded width of the step in checkpoint file names (step-000NNNNN), so names sort by step."""

_CHECKPOINT_RE = re.compile(r"^step-(\d+)\.json$")
_RESERVED_META_KEYS = (
    "format_version",
    "step",
    "time",
    "recon_version",
    "config_hash",
    "tensors_file",
    "tensors_sha256",
    "tensors",
)


class RunError(ReconError):
    """A run directory or checkpoint that is missing or unreadable."""


# ----------------------------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------------------------


def _temp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` (disk full, read-only, no permission) into a RunError naming it."""
    try:
        yield
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, "")
        detail = f"{reason}: {exc.strerror}" if reason and exc.strerror else str(exc)
        raise RunError(f"{path}: cannot write ({detail})") from exc


def _write_json_atomic(path: Path, data: Any) -> Path:
    with _writing(path):
        return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=True) + "\n")


def check_folder_writable(folder: str | os.PathLike, *, create: bool = True) -> None:
    """Write and remove a probe file in ``folder`` (RunError naming it when that fails).

    Args:
        folder: the folder.
        create: make the folder first; otherwise probe its nearest existing ancestor (nothing is left behind).
    """
    folder = Path(folder)
    target = folder
    if not create:
        target = next((p for p in (folder.absolute(), *folder.absolute().parents) if p.exists()), Path("/"))
        if not target.is_dir():
            raise RunError(f"{folder}: cannot write ({target} is not a folder)")
    with _writing(folder):
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _test_pause(step: int) -> None:
    """The reliability tests' hook (see the module docstring); a no-op unless the variable is set."""
    spec = os.environ.get(TEST_PAUSE_ENV)
    if not spec:
        return
    first, _, seconds = spec.partition(":")
    if step >= int(first):
        time.sleep(float(seconds))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON: {exc}") from exc


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _to_json_value(value: Any, key: str) -> Any:
    """Numbers, strings, bools, None, lists and dicts of those; 0-d tensors and numpy scalars become numbers."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"metric {key!r} is a tensor of shape {tuple(value.shape)}; log scalars")
        return value.item()
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str | bytes):
        return value.item()  # numpy scalar
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_to_json_value(v, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"metric {key!r} has type {type(value).__name__}; expected a number, string or list")


_UNFINGERPRINTED = ("root", "fingerprint")  # a moved dataset keeps its fingerprint


def dataset_fingerprint(info: Mapping[str, Any]) -> str:
    """sha256 of a dataset record (format, splits with image names, sizes and camera matrices, normalisation...),
    without its ``root`` folder so a moved dataset keeps its fingerprint."""
    record = _to_json_value({k: v for k, v in info.items() if k not in _UNFINGERPRINTED}, "dataset")
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Nested state <-> tensors + JSON
# ----------------------------------------------------------------------------------------------------------------


def flatten_state(obj: Any, *, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split nested state (e.g. ``optimizer.state_dict()``) into named tensors and a JSON-able skeleton.

    Tensors are replaced in the skeleton by ``{"tensor": name}``; dicts become ``{"dict": {"keys": [...],
    "values": [...]}}`` (keeping int keys as ints), lists ``{"list": [...]}``, tuples ``{"tuple": [...]}``;
    None, bool, int, float and str stay as they are. Tensor names are the ``/``-joined path under ``prefix``,
    e.g. ``"optimizer/state/0/exp_avg"``, so several flattened states can share one safetensors file.

    Args:
        obj: nested dicts/lists/tuples of tensors and Python scalars.
        prefix: name prefix of the tensors.

    Returns:
        ``(tensors, meta)`` for :meth:`RunDir.save_checkpoint`; :func:`unflatten_state` inverts it.
    """
    tensors: dict[str, Tensor] = {}
    meta = _flatten(obj, prefix, tensors)
    return tensors, meta


def _flatten(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        if path in tensors:
            raise ValueError(f"flatten_state: two entries map to the tensor name {path!r}")
        tensors[path] = obj
        return {"tensor": path}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        for k in keys:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise TypeError(f"flatten_state: key {k!r} at {path or '<root>'} is not a str or int")
        values = [_flatten(obj[k], f"{path}/{k}" if path else str(k), tensors) for k in keys]
        return {"dict": {"keys": keys, "values": values}}
    if isinstance(obj, list | tuple):
        items = [_flatten(v, f"{path}/{i}" if path else str(i), tensors) for i, v in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": items}
    raise TypeError(f"flatten_state: cannot store a {type(obj).__name__} at {path or '<root>'}")


def unflatten_state(tensors: Mapping[str, Tensor], meta: Any) -> Any:
    """Rebuild the nested state written by :func:`flatten_state` (tensors looked up by name)."""
    if meta is None or isinstance(meta, bool | int | float | str):
        return meta
    if isinstance(meta, dict) and len(meta) == 1:
        ((kind, payload),) = meta.items()
        if kind == "tensor":
            if payload not in tensors:
                raise RunError(f"checkpoint is missing the tensor {payload!r}")
            return tensors[payload]
        if kind == "dict":
            return {
                k: unflatten_state(tensors, v)
                for k, v in zip(payload["keys"], payload["values"], strict=True)
            }
        if kind == "list":
            return [unflatten_state(tensors, v) for v in payload]
        if kind == "tuple":
            return tuple(unflatten_state(tensors, v) for v in payload)
    raise RunError(f"unreadable state skeleton entry {str(meta)[:80]!r}")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def _checkpoint_stem(step: int) -> str:
    return f"step-{step:0{STEP_DIGITS}d}"


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step encoded in a checkpoint file name (``step-00000120.safetensors`` -> 120)."""
    match = re.match(r"^step-(\d+)$", Path(path).name.split(".")[0])
    if match is None:
        raise RunError(f"{path}: not a checkpoint file name (expected step-NNNNNNNN.safetensors)")
    return int(match.group(1))


def _cpu_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors that own their storage (safetensors refuses shared or strided ones)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"checkpoint tensor names must be strings, got {name!r}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"checkpoint entry {name!r} is a {type(tensor).__name__}, expected a Tensor")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        owns = storage.nbytes() == t.numel() * t.element_size() and storage.data_ptr() not in seen
        if not owns:
            # A view into a larger storage, or storage shared with another entry: safetensors refuses both.
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """(safetensors file, json file) of a checkpoint given either file, or the path without extension."""
    path = Path(path)
    stem = path.name.split(".")[0] if path.suffix in (".safetensors", ".json") else path.name
    return path.with_name(f"{stem}.safetensors"), path.with_name(f"{stem}.json")


def _check_meta(meta: Any, meta_path: Path, tensors_path: Path) -> None:
    """Types and values of the metadata fields every checkpoint has (RunError naming the file otherwise)."""
    if not isinstance(meta, dict):
        raise RunError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
        raise RunError(
            f"{meta_path}: format_version {version!r} is not one this recon reads {READABLE_FORMAT_VERSIONS}"
        )
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise RunError(f"{meta_path}: step must be a non-negative integer, got {step!r}")
    if step != checkpoint_step(meta_path):
        raise RunError(
            f"{meta_path}: records step {step} but its file name says {checkpoint_step(meta_path)}"
        )
    names = meta.get("tensors", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RunError(f"{meta_path}: 'tensors' must be a list of names")
    if "train_seconds" in meta and not isinstance(meta["train_seconds"], int | float):
        raise RunError(f"{meta_path}: train_seconds must be a number, got {meta['train_seconds']!r}")
    if not tensors_path.is_file():
        raise RunError(f"{tensors_path}: no such file (the checkpoint metadata {meta_path.name} names it)")


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint's metadata and the sha256 of its tensor file without loading the tensors.

    Returns:
        The metadata dict.

    Raises:
        RunError: naming the file that is missing, malformed, of an unknown format or whose hash differs.
    """
    tensors_path, meta_path = _resolve_checkpoint(path)
    meta = _read_json(meta_path)
    _check_meta(meta, meta_path, tensors_path)
    expected = meta.get("tensors_sha256")
    if meta["format_version"] >= 2:
        if not isinstance(expected, str):
            raise RunError(f"{meta_path}: tensors_sha256 is missing")
        actual = _sha256_file(tensors_path)
        if actual != expected:
            raise RunError(
                f"{tensors_path}: content hash {actual[:12]}... differs from {expected[:12]}... recorded in "
                f"{meta_path.name} (the file is damaged or was changed after it was written)"
            )
    else:
        logger.warning("%s: format version 1 has no content hash; loading it unverified", meta_path)
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load and verify a checkpoint written by :meth:`RunDir.save_checkpoint` (safetensors + JSON; no pickle).

    Verification: the metadata types and format version, the sha256 of the tensor file, every listed tensor
    present, and no NaN in any floating-point tensor.

    Args:
        path: the ``.safetensors`` or ``.json`` file of the checkpoint (or its path without extension).

    Returns:
        ``(tensors, meta)``: CPU tensors by name, and the metadata dict (``step``, ``time``, ``recon_version``,
        ``config_hash``, ``tensors`` (the names), ``tensors_sha256``, plus the caller's own keys).

    Raises:
        RunError: a file is missing, unreadable or fails verification (the message names it).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors_path, meta_path = _resolve_checkpoint(path)
    meta = verify_checkpoint(path)
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except SafetensorError as exc:
        raise RunError(f"{tensors_path}: not a readable safetensors file: {exc}") from exc
    missing = sorted(set(meta.get("tensors", [])) - set(tensors))
    if missing:
        raise RunError(
            f"{tensors_path}: missing tensors listed in {meta_path.name}: {', '.join(missing[:5])}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and bool(tensor.isnan().any()):
            raise RunError(f"{tensors_path}: tensor {name!r} contains NaN; refusing to load it")
    return tensors, meta
