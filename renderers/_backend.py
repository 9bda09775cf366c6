"""Backend selection and lazy Warp loading shared by every renderer op family: the one place that decides.

``resolve_backend`` implements the ``backend: Literal["auto", "torch", "warp"]`` contract of STYLE.md section 2:

* ``"torch"`` always runs the reference;
* ``"auto"`` *implies* warp: it picks ``"warp"`` when Warp imports, every tensor lives on a device Warp supports
  (CPU or CUDA) and every floating-point tensor is float32 (the Warp kernels are float32 only); otherwise it
  falls back to ``"torch"`` and logs a WARNING naming the op and the reason, once per op per run (the reference
  is typically hundreds of times slower, so a silent fallback would be a lie about speed);
* ``"warp"`` raises :class:`BackendError` (a ``ReconError``) naming the op and the reason when Warp cannot run.

Every decision is recorded per op family (``"splat"``, ``"volume"``, ``"encoding"``, ``"isosurface"``,
``"raster"``, ...): :func:`backend_report` returns what really ran, with the reason of any fallback, and runs
write it into their metadata and eval.json. :func:`reset_backend_report` starts a new record (a new run).

``get_warp`` imports and initialises Warp once, quietly; nothing here imports Warp at module import time.
"""

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, get_args

import torch

from recon.core.errors import ReconError
from recon.core.shapes import Backend

__all__ = [
    "BACKENDS",
    "BackendDecision",
    "BackendError",
    "WarpLauncher",
    "backend_report",
    "decide_backend",
    "get_warp",
    "reset_backend_report",
    "resolve_backend",
    "torch_only",
    "warp_available",
    "warp_device",
    "warp_unavailable_reason",
]

BACKENDS: tuple[str, ...] = get_args(Backend)
ResolvedBackend = Literal["torch", "warp"]  # what an "auto" request resolves to
WARP_DEVICE_TYPES = ("cpu", "cuda")  # device types Warp kernels run on (bundled LLVM / NVRTC)
WARP_FLOAT_DTYPE = (
    torch.float32
)  # every Warp kernel of recon is written for float32 (references take float64)

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_warp_module: ModuleType | None = None
_warp_error: str | None = None
_warned: set[tuple[str, str]] = set()
_report: dict[str, "BackendDecision"] = {}


class BackendError(ReconError):
    """An explicit ``backend="warp"`` that cannot run on the given tensors (names the op and why)."""


@dataclass(frozen=True)
class BackendDecision:
    """What ``resolve_backend`` decided for one call.

    Attributes:
        requested: the backend asked for ("auto", "torch" or "warp").
        backend: the backend that runs ("torch" or "warp").
        reason: why ``backend`` differs from what "auto" implies (None when Warp runs, or torch was asked for).
    """

    requested: str
    backend: ResolvedBackend
    reason: str | None = None

    def describe(self) -> str:
        """``"warp"``, ``"torch"`` or ``"torch (fallback: <reason>)"``."""
        return self.backend if self.reason is None else f"{self.backend} (fallback: {self.reason})"


def get_warp() -> ModuleType:
    """Import and initialise Warp once (quietly) and return the module.

    Raises:
        BackendError: if Warp cannot be imported or initialised (with the reason).
    """
    global _warp_module, _warp_error
    if _warp_module is not None:
        return _warp_module
    with _lock:
        if _warp_module is None and _warp_error is None:
            try:
                import warp as wp

                # Warp < 1.10 greeting switch (absent from newer Warp's config module, hence the ignore)
                wp.config.quiet = True  # pyright: ignore[reportAttributeAccessIssue]
                if hasattr(wp, "LOG_WARNING"):
                    wp.config.log_level = wp.LOG_WARNING  # Warp >= 1.10: no greeting, keep warnings
                wp.init()
                _warp_module = wp
            except (ImportError, RuntimeError, OSError) as exc:
                _warp_error = f"{type(exc).__name__}: {exc}"
    if _warp_module is None:
        raise BackendError(f"Warp failed to import or initialise ({_warp_error})")
    return _warp_module


def warp_unavailable_reason(*tensors: torch.Tensor) -> str | None:
    """Why Warp cannot run on these tensors (device, dtype or import), or None if it can."""
    for t in tensors:
        if t.device.type not in WARP_DEVICE_TYPES:
            return f"tensors on device {t.device} (Warp runs on {', '.join(WARP_DEVICE_TYPES)})"
    for t in tensors:
        if t.is_floating_point() and t.dtype != WARP_FLOAT_DTYPE:
            return f"{t.dtype} inputs (the Warp kernels are float32 only; the torch reference takes float64)"
    try:
        get_warp()
    except BackendError as exc:
        return str(exc)
    return None


def warp_available(*tensors: torch.Tensor) -> bool:
    """True if Warp imports and supports the devices and dtypes of ``tensors``."""
    return warp_unavailable_reason(*tensors) is None


def warp_device(tensor: torch.Tensor) -> str:
    """The Warp device string for a torch tensor (``"cpu"`` or ``"cuda:<index>"``)."""
    if tensor.device.type == "cuda":
        index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return "cpu"


class WarpLauncher:
    """Device and stream context for the Warp launches of one op call (shared by every op family's glue).

    Launches go on the torch stream of the inputs' CUDA device (or Warp's CPU device); ``arr`` shares a tensor's
    memory with Warp zero-copy (``wp.from_torch``) after making it contiguous and detached.
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.wp = get_warp()
        self.device = warp_device(like)
        self.stream = None
        if like.device.type == "cuda":
            self.stream = self.wp.stream_from_torch(torch.cuda.current_stream(like.device))

    def launch(self, kernel, dim: int, inputs: list) -> None:
        """Launch ``kernel`` over ``dim`` threads (nothing for ``dim == 0``)."""
        if dim == 0:
            return
        self.wp.launch(kernel, dim=dim, inputs=inputs, device=self.device, stream=self.stream)

    def arr(self, t: torch.Tensor, dtype=None):
        """A Warp array viewing ``t`` (contiguous, detached), optionally reinterpreted as ``dtype``."""
        t = t.detach().contiguous()
        return self.wp.from_torch(t, dtype=dtype) if dtype is not None else self.wp.from_torch(t)


def decide_backend(backend: str, *tensors: torch.Tensor, op: str) -> BackendDecision:
    """Decide the backend of op ``op`` (``"<family>.<name>"``, e.g. ``"splat.rasterize"``) on ``tensors``.

    Records the decision under the op family (see :func:`backend_report`) and logs a fallback from an implied
    warp request ("auto") as a WARNING, once per op per run.

    Raises:
        ValueError: for an unknown backend name.
        BackendError: for an explicit ``"warp"`` that cannot run here (names the op and the reason).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        decision = BackendDecision("torch", "torch")
    else:
        reason = warp_unavailable_reason(*tensors)
        if reason is not None and backend == "warp":
            raise BackendError(f"{op}: backend='warp' cannot run: {reason} (use backend='torch' or 'auto')")
        decision = BackendDecision(backend, "warp" if reason is None else "torch", reason)
        if reason is not None and (op, reason) not in _warned:
            _warned.add((op, reason))
            _log.warning("%s: backend='auto' falls back to the torch reference (much slower): %s", op, reason)
    _record(op, decision)
    return decision


def torch_only(backend: str, *, op: str, reason: str) -> Literal["torch"]:
    """Record that op ``op`` runs on the torch reference for ``reason`` (a capability the Warp kernel lacks, e.g.
    double backward) and return ``"torch"``; a warp request (explicit or implied by "auto") gets the WARNING,
    once per op per run.

    Raises:
        ValueError: for an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {list(BACKENDS)}, got {backend!r}")
    decision = BackendDecision(backend, "torch", None if backend == "torch" else reason)
    if backend != "torch" and (op, reason) not in _warned:
        _warned.add((op, reason))
        _log.warning("%s: runs on the torch reference (much slower): %s", op, reason)
    _record(op, decision)
    return "torch"


def resolve_backend(backend: str, *tensors: torch.Tensor, op: str) -> ResolvedBackend:
    """``decide_backend(...).backend``: ``"torch"`` or ``"warp"`` (see :func:`decide_backend`)."""
    return decide_backend(backend, *tensors, op=op).backend


def _record(op: str, decision: BackendDecision) -> None:
    family = op.split(".", 1)[0]
    with _lock:
        previous = _report.get(family)
        # A family that fell back anywhere in the run is reported as such: the slow path is what users must see.
        if (
            previous is None
            or (previous.reason is None and decision.reason is not None)
            or previous.backend == "torch"
            and previous.reason is None
            and decision.backend == "warp"
        ):
            _report[family] = decision


def backend_report() -> dict[str, str]:
    """Per op family, the backend that ran since the last reset: ``{"splat": "warp", "volume": "torch
    (fallback: ...)", ...}`` (a family that ran both an explicit torch call and warp reports warp)."""
    with _lock:
        return {family: d.describe() for family, d in sorted(_report.items())}


def reset_backend_report() -> None:
    """Forget recorded decisions and warnings (start of a run, or a test)."""
    with _lock:
        _report.clear()
        _warned.clear()
