"""Backend selection and lazy Warp loading shared by every renderer op family.

``resolve_backend`` implements the ``backend: Literal["auto", "torch", "warp"]`` contract of STYLE.md section 2:

* ``"auto"`` picks ``"warp"`` when Warp imports and every tensor lives on a device Warp supports (CPU or CUDA),
  else ``"torch"`` and logs the fallback once (INFO) per reason;
* ``"warp"`` raises ``ReconError`` when Warp cannot run on the tensors' device;
* ``"torch"`` always works (the reference path).

``get_warp`` imports and initialises Warp once, quietly; nothing here imports Warp at module import time.
"""

import logging
import threading
from types import ModuleType
from typing import get_args

import torch

from recon.core.errors import ReconError
from recon.core.shapes import Backend

__all__ = [
    "BACKENDS",
    "get_warp",
    "resolve_backend",
    "warp_available",
    "warp_device",
    "warp_unavailable_reason",
]

BACKENDS: tuple[str, ...] = get_args(Backend)
WARP_DEVICE_TYPES = ("cpu", "cuda")  # device types Warp kernels run on (bundled LLVM / NVRTC)

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_warp_module: ModuleType | None = None
_warp_error: str | None = None
_logged_fallbacks: set[str] = set()


def get_warp() -> ModuleType:
    """Import and initialise Warp once (quietly) and return the module.

    Raises:
        ReconError: if Warp cannot be imported or initialised (with the reason).
    """
    global _warp_module, _warp_error
    if _warp_module is not None:
        return _warp_module
    with _lock:
        if _warp_module is None and _warp_error is None:
            try:
                import warp as wp

                wp.config.quiet = True  # Warp < 1.10 greeting switch
                if hasattr(wp, "LOG_WARNING"):
                    wp.config.log_level = wp.LOG_WARNING  # Warp >= 1.10: no greeting, keep warnings
                wp.init()
                _warp_module = wp
            except (ImportError, RuntimeError, OSError) as exc:
                _warp_error = f"{type(exc).__name__}: {exc}"
    if _warp_module is None:
        raise ReconError(
            f"backend='warp' is unavailable: Warp failed to import or initialise ({_warp_error})"
        )
    return _warp_module


def warp_unavailable_reason(*tensors: torch.Tensor) -> str | None:
    """Why Warp cannot run on these tensors, or None if it can."""
    for t in tensors:
        if t.device.type not in WARP_DEVICE_TYPES:
            return f"tensors on device {t.device} (Warp runs on {', '.join(WARP_DEVICE_TYPES)})"
    try:
        get_warp()
    except ReconError as exc:
        return str(exc)
    return None


def warp_available(*tensors: torch.Tensor) -> bool:
    """True if Warp imports and supports the devices of ``tensors``."""
    return warp_unavailable_reason(*tensors) is None


def warp_device(tensor: torch.Tensor) -> str:
    """The Warp device string for a torch tensor (``"cpu"`` or ``"cuda:<index>"``)."""
    if tensor.device.type == "cuda":
        index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return "cpu"


def resolve_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Resolve ``backend`` ("auto" | "torch" | "warp") for ops on ``tensors`` to ``"torch"`` or ``"warp"``.

    Args:
        backend: the requested backend.
        *tensors: the op's input tensors (their devices decide whether Warp can run).

    Returns:
        ``"torch"`` or ``"warp"``.

    Raises:
        ValueError: for an unknown backend name.
        ReconError: for an explicit ``"warp"`` that cannot run here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    reason = warp_unavailable_reason(*tensors)
    if backend == "warp":
        if reason is not None:
            raise ReconError(f"backend='warp' cannot run: {reason}")
        return "warp"
    if reason is None:
        return "warp"
    if reason not in _logged_fallbacks:
        _logged_fallbacks.add(reason)
        _log.info("backend='auto' falls back to 'torch': %s", reason)
    return "torch"
