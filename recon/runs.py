"""Run directories: resolved config, dataset record, metrics log, eval results and atomic checkpoints.

Layout (DESIGN.md, "Runs")::

    outputs/<experiment>/<method>/<timestamp>/
      config.yaml                             resolved config (plain data, schema_version)
      dataset.json                            what was loaded (format, splits, image size, normalisation)
      checkpoints/step-000NNNNN.safetensors   tensors (no pickle)
      checkpoints/step-000NNNNN.json          metadata; written last: a checkpoint counts only when it exists
      metrics.jsonl                           one JSON object per logged step
      eval.json                               metrics on the test split + protocol
      renders/  exports/

Checkpoint files are written to a temporary file in the same folder and moved into place with ``os.replace``,
tensors first, metadata last, so a crash leaves either a complete checkpoint or one that
:meth:`RunDir.latest_checkpoint` ignores. The metadata records the format version and the sha256 of the tensor
file; :func:`load_checkpoint` verifies both, the metadata types, and refuses tensors that contain NaN.
:meth:`RunDir.load_checkpoint` falls back to the newest checkpoint that passes, with a WARNING naming each one it
skipped, and rotation never deletes the newest verified checkpoint. Write failures (disk full, read-only file
system, permissions) raise :class:`RunError` naming the path.

Test hook: with ``RECON_TEST_CHECKPOINT_PAUSE=STEP:SECONDS`` in the environment, writing a checkpoint of step
``>= STEP`` sleeps ``SECONDS`` after the tensor file is in place and before its metadata is written, so the
reliability tests can kill a run exactly inside a checkpoint write (tests/reliability). Nested state that is not a flat tensor dict (an optimizer
``state_dict`` with its param groups) goes through :func:`flatten_state` / :func:`unflatten_state`.

Example:
    >>> import tempfile, torch
    >>> run = RunDir.create(tempfile.mkdtemp(), "demo", "triangles")
    >>> path = run.save_checkpoint(10, {"xyz": torch.zeros(4, 3)}, {"note": "first"})
    >>> tensors, meta = load_checkpoint(run.latest_checkpoint())
    >>> meta["step"], meta["note"], tuple(tensors["xyz"].shape)
    (10, 'first', (4, 3))
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

import recon
from recon.config import config_hash, load_config_yaml, load_yaml, save_config_yaml, write_text_atomic
from recon.core.errors import ReconError

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "RunDir",
    "RunError",
    "checkpoint_step",
    "check_folder_writable",
    "dataset_fingerprint",
    "flatten_state",
    "load_checkpoint",
    "unflatten_state",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

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


def check_folder_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and write and remove a probe file in it (RunError naming it otherwise)."""
    folder = Path(folder)
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
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


# ----------------------------------------------------------------------------------------------------------------
# Run directory
# ----------------------------------------------------------------------------------------------------------------


class RunDir:
    """One run's folder (see the module docstring for the layout).

    ``RunDir(path)`` opens an existing or new folder; :meth:`create` makes a fresh timestamped one.
    """

    CONFIG = "config.yaml"
    DATASET = "dataset.json"
    METRICS = "metrics.jsonl"
    EVAL = "eval.json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(
        cls, output_dir: str | os.PathLike, experiment: str, method: str, *, timestamp: str | None = None
    ) -> "RunDir":
        """Make ``output_dir/<experiment>/<method>/<timestamp>/`` (with a ``-N`` suffix if it already exists)."""
        for name, value in (("experiment", experiment), ("method", method)):
            if not value or "/" in value or "\\" in value or value in (".", ".."):
                raise ReconError(f"{name} {value!r}: expected a plain folder name")
        stamp = timestamp or datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        parent = Path(output_dir) / experiment / method
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            path = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.ensure_dirs()
            return run
        raise ReconError(f"{parent}: could not create a fresh run folder for timestamp {stamp}")

    def ensure_dirs(self) -> None:
        """Create the run folder and its checkpoints/, renders/ and exports/ subfolders."""
        for folder in (self.path, self.checkpoints_dir, self.renders_dir, self.exports_dir):
            with _writing(folder):
                folder.mkdir(parents=True, exist_ok=True)

    def check_writable(self) -> None:
        """Create the folders and write and remove a probe file in the run and checkpoints folders.

        Raises:
            RunError: naming the folder that cannot be created or written (read-only, no permission, disk full).
        """
        self.ensure_dirs()
        for folder in (self.path, self.checkpoints_dir):
            check_folder_writable(folder)

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def renders_dir(self) -> Path:
        return self.path / "renders"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def dataset_json_path(self) -> Path:
        return self.path / self.DATASET

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def eval_path(self) -> Path:
        return self.path / self.EVAL

    def require_exists(self) -> "RunDir":
        """Raise a RunError naming the folder unless it is an existing run (has config.yaml)."""
        if not self.path.is_dir():
            raise RunError(f"{self.path}: no such run directory")
        if not self.config_path.is_file():
            raise RunError(f"{self.path}: not a run directory (no {self.CONFIG})")
        return self

    # -- config, dataset, eval ------------------------------------------------------------------------------

    def write_config(self, cfg: Any) -> Path:
        """Write the resolved config dataclass as config.yaml (atomic)."""
        with _writing(self.config_path):
            return save_config_yaml(cfg, self.config_path)

    def read_config(self, cls: type) -> Any:
        """Load config.yaml strictly into ``cls``."""
        return load_config_yaml(cls, self.config_path)

    def write_dataset_json(self, info: Mapping[str, Any]) -> Path:
        """Write the dataset record (``recon.datasets.dataset_info``) with its ``fingerprint`` added."""
        record = _to_json_value({k: v for k, v in info.items() if k != "fingerprint"}, "dataset")
        return _write_json_atomic(
            self.dataset_json_path, record | {"fingerprint": dataset_fingerprint(record)}
        )

    def check_dataset(self, info: Mapping[str, Any]) -> None:
        """Raise a RunError unless ``info`` describes the dataset this run was trained on (its fingerprint).

        A run recorded before fingerprints existed is accepted with a warning.
        """
        stored = self.read_dataset_json()
        record = _to_json_value({k: v for k, v in info.items() if k != "fingerprint"}, "dataset")
        if "fingerprint" not in stored:
            logger.warning(
                "%s: no dataset fingerprint recorded; cannot check the data", self.dataset_json_path
            )
            return
        if stored["fingerprint"] == dataset_fingerprint(record):
            return
        differing = sorted(
            k
            for k in set(stored) | set(record)
            if k not in _UNFINGERPRINTED and stored.get(k) != record.get(k)
        )
        raise RunError(
            f"--data {record.get('root', '?')}: not the dataset run {self.path} was trained on (differs in "
            f"{', '.join(differing) or 'content'}; recorded in {self.dataset_json_path}); resume with the same data"
        )

    def read_dataset_json(self) -> dict[str, Any]:
        return _read_json(self.dataset_json_path)

    def write_eval(self, results: Mapping[str, Any]) -> Path:
        return _write_json_atomic(self.eval_path, _to_json_value(dict(results), "eval"))

    def read_eval(self) -> dict[str, Any]:
        return _read_json(self.eval_path)

    # -- metrics --------------------------------------------------------------------------------------------

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step", "time", **metrics}`` as one line of metrics.jsonl (0-d tensors become numbers)."""
        record = {"step": int(step), "time": _utc_now()}
        for key, value in metrics.items():
            if key in record:
                raise ValueError(f"metric name {key!r} is reserved")
            record[str(key)] = _to_json_value(value, str(key))
        line = json.dumps(record, ensure_ascii=False, allow_nan=True)
        with _writing(self.metrics_path):
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def truncate_metrics(self, step: int) -> int:
        """Drop the records of metrics.jsonl logged after ``step`` (and a torn last line), atomically.

        A resumed run calls this with its checkpoint's step, so the log never repeats or goes back in steps.
        Returns the number of records dropped.
        """
        records = self.read_metrics()
        kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= step]
        if len(kept) == len(records) and self._metrics_end_clean():
            return 0
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=True) + "\n" for r in kept)
        with _writing(self.metrics_path):
            write_text_atomic(self.metrics_path, text)
        return len(records) - len(kept)

    def _metrics_end_clean(self) -> bool:
        if not self.metrics_path.is_file():
            return True
        text = self.metrics_path.read_text(encoding="utf-8")
        return not text or text.endswith("\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of metrics.jsonl; a torn last line (a crash mid-write) is skipped."""
        if not self.metrics_path.is_file():
            return []
        records = []
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if i == len(lines) - 1:
                    break
                raise RunError(f"{self.metrics_path}:{i + 1}: not valid JSON: {exc}") from exc
        return records

    # -- checkpoints ----------------------------------------------------------------------------------------

    def save_checkpoint(
        self,
        step: int,
        tensors: Mapping[str, Tensor],
        meta: Mapping[str, Any] | None = None,
        *,
        config: Any = None,
        keep_last: int | None = None,
    ) -> Path:
        """Write ``checkpoints/step-<step>.safetensors`` then its ``.json`` metadata, each atomically.

        Args:
            step: the optimisation step (non-negative).
            tensors: name -> tensor (any device; saved as contiguous CPU copies).
            meta: JSON-able extra metadata (e.g. the skeleton from :func:`flatten_state`); must not use the
                reserved keys format_version, step, time, recon_version, config_hash, tensors_file, tensors.
            config: the config dataclass or dict to hash; default: the run's config.yaml if present.
            keep_last: if given, delete all but the newest ``keep_last`` complete checkpoints afterwards (see
                :meth:`prune_checkpoints`).

        Returns:
            The path of the ``.safetensors`` file.

        Raises:
            RunError: a file cannot be written (naming it); the previous checkpoints are then untouched.
        """
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        meta = dict(meta or {})
        clash = [k for k in _RESERVED_META_KEYS if k in meta]
        if clash:
            raise ValueError(f"checkpoint meta uses reserved keys: {', '.join(clash)}")
        with _writing(self.checkpoints_dir):
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        stem = _checkpoint_stem(step)
        tensors_path = self.checkpoints_dir / f"{stem}.safetensors"
        meta_path = self.checkpoints_dir / f"{stem}.json"
        # An older checkpoint of the same step loses its metadata first, so it never pairs with new tensors.
        with _writing(meta_path):
            meta_path.unlink(missing_ok=True)
        cpu = _cpu_tensors(tensors)
        with _writing(tensors_path):
            digest = self._write_tensors(cpu, tensors_path, step)
        _test_pause(step)
        record = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "step": step,
            "time": _utc_now(),
            "recon_version": recon.__version__,
            "config_hash": self._config_hash(config),
            "tensors_file": tensors_path.name,
            "tensors_sha256": digest,
            "tensors": sorted(cpu),
            **meta,
        }
        meta_text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=True) + "\n"
        with _writing(meta_path):
            write_text_atomic(meta_path, meta_text)
        if keep_last is not None:
            self.prune_checkpoints(keep_last, known_good=tensors_path)
        return tensors_path

    @staticmethod
    def _write_tensors(cpu: dict[str, Tensor], tensors_path: Path, step: int) -> str:
        """Write the tensor file atomically; returns the sha256 of the bytes on disk."""
        from safetensors.torch import save_file

        tmp = _temp_path(tensors_path)
        try:
            save_file(cpu, str(tmp), metadata={"format": "pt", "step": str(step)})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            digest = _sha256_file(tmp)
            os.replace(tmp, tensors_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def _config_hash(self, config: Any) -> str | None:
        if config is not None:
            return config_hash(config)
        if self.config_path.is_file():
            return config_hash(load_yaml(self.config_path))
        return None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (both files present), as ``(step, safetensors path)`` sorted by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for meta_path in self.checkpoints_dir.iterdir():
            match = _CHECKPOINT_RE.match(meta_path.name)
            if match is None:
                continue
            tensors_path = meta_path.with_suffix(".safetensors")
            if tensors_path.is_file():
                found.append((int(match.group(1)), tensors_path))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The ``.safetensors`` file of the highest-step complete checkpoint, or None."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def load_checkpoint(
        self, path: str | os.PathLike | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Load ``path``, or by default the newest checkpoint that passes verification (:func:`load_checkpoint`).

        Without ``path``, a newest checkpoint that is unreadable or fails verification is skipped with a WARNING
        naming it, and the next older one is tried.

        Raises:
            RunError: no complete checkpoint, or none passes (the message lists why each failed).
        """
        if path is not None:
            return load_checkpoint(path)
        found = self.checkpoints()
        if not found:
            raise RunError(f"{self.checkpoints_dir}: no complete checkpoint to load")
        failures = []
        for _, tensors_path in reversed(found):
            try:
                return load_checkpoint(tensors_path)
            except RunError as exc:
                logger.warning("skipping checkpoint %s: %s", tensors_path, exc)
                failures.append(str(exc))
        raise RunError(f"{self.checkpoints_dir}: no usable checkpoint ({'; '.join(failures)})")

    def latest_good_checkpoint(self) -> Path | None:
        """The newest checkpoint whose metadata and content hash verify (no WARNING; None if there is none)."""
        for _, tensors_path in reversed(self.checkpoints()):
            try:
                verify_checkpoint(tensors_path)
            except RunError:
                continue
            return tensors_path
        return None

    def prune_checkpoints(self, keep_last: int, *, known_good: Path | None = None) -> list[Path]:
        """Delete all but the newest ``keep_last`` complete checkpoints, and stale temporary files.

        The newest checkpoint that verifies is never deleted, even when newer damaged ones fill ``keep_last``.
        Metadata goes first, so an interrupted deletion never leaves a checkpoint that looks complete.

        Args:
            keep_last: number of newest checkpoints kept (>= 1).
            known_good: a checkpoint just written and hashed (skips re-verifying it).

        Returns:
            The deleted ``.safetensors`` paths.
        """
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        found = self.checkpoints()
        kept = [p for _, p in found[-keep_last:]]
        protected = known_good if known_good in kept else self.latest_good_checkpoint()
        deleted = []
        for _, tensors_path in found[:-keep_last]:
            if tensors_path == protected:
                continue
            tensors_path.with_suffix(".json").unlink(missing_ok=True)
            tensors_path.unlink(missing_ok=True)
            deleted.append(tensors_path)
        for tmp in self.checkpoints_dir.glob(".step-*.tmp"):
            tmp.unlink(missing_ok=True)
        return deleted

    def config_dict(self) -> dict[str, Any]:
        """config.yaml as plain data (no dataclass), e.g. to read ``method`` before choosing the config class."""
        data = load_yaml(self.config_path)
        if not isinstance(data, dict):
            raise RunError(f"{self.config_path}: expected a mapping")
        return data
