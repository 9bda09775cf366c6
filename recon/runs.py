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
system, permissions) raise :class:`RunError` naming the path. Nested state that is not a flat tensor dict (an
optimizer ``state_dict`` with its param groups) goes through :func:`flatten_state` / :func:`unflatten_state`. The
checkpoint-file functions live in :mod:`recon.checkpoint_io` and are re-exported here.

Test hook: with ``RECON_TEST_CHECKPOINT_PAUSE=STEP:SECONDS`` in the environment, writing a checkpoint of step
``>= STEP`` sleeps ``SECONDS`` after the tensor file is in place and before its metadata is written, so the
reliability tests can kill a run exactly inside a checkpoint write (tests/reliability).

Example:
    >>> import tempfile, torch
    >>> run = RunDir.create(tempfile.mkdtemp(), "demo", "triangles")
    >>> path = run.save_checkpoint(10, {"xyz": torch.zeros(4, 3)}, {"note": "first"})
    >>> tensors, meta = load_checkpoint(run.latest_checkpoint())
    >>> meta["step"], meta["note"], tuple(tensors["xyz"].shape)
    (10, 'first', (4, 3))
"""

import datetime
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

import recon
from recon.checkpoint_io import (
    _CHECKPOINT_RE,
    _RESERVED_META_KEYS,
    _UNFINGERPRINTED,
    CHECKPOINT_FORMAT_VERSION,
    RunError,
    _checkpoint_stem,
    _cpu_tensors,
    _read_json,
    _sha256_file,
    _temp_path,
    _test_pause,
    _to_json_value,
    _utc_now,
    _write_json_atomic,
    _writing,
    check_folder_writable,
    checkpoint_step,
    dataset_fingerprint,
    flatten_state,
    load_checkpoint,
    unflatten_state,
    verify_checkpoint,
)
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
