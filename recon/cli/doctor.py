"""``recon doctor``: versions, devices, which kernel backends compile, and optional components.

Exit status 0 unless PyTorch itself cannot be imported (everything else is reported, not fatal).
"""

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

import tyro

__all__ = ["DoctorArgs", "collect_report", "main"]

OPTIONAL_COMPONENTS: dict[str, str] = {
    # import name: distribution name
    "open3d": "open3d",
    "viser": "viser",
    "trimesh": "trimesh",
    "nerfacc": "nerfacc",
    "torchmetrics": "torchmetrics",
    "lpips": "lpips",
    "playwright": "playwright",
}
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
KERNEL_TEST_SIZE = (
    64  # elements of the doctor's saxpy launch: enough for several CPU/GPU threads, still trivial
)


@dataclass(frozen=True)
class DoctorArgs:
    """Report versions, devices (CPU, CUDA), which kernel backends compile, and optional components."""

    json: bool = False
    """Print the report as JSON instead of a table."""
    fast: bool = False
    """Check optional components by their installed metadata only, without importing them."""


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _check_torch() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:  # a broken install is what the doctor is here to report
        return {"ok": False, "error": _error_text(exc)}
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "ok": True,
        "version": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": devices,
        "num_threads": torch.get_num_threads(),
    }


def _run_kernel(wp: Any, kernels: Any, device: str) -> dict[str, Any]:
    """Compile (first use, then cached) and launch the saxpy kernel on ``device``; check the result."""
    import numpy as np

    start = time.perf_counter()
    try:
        x_host = np.arange(KERNEL_TEST_SIZE, dtype=np.float32)
        y_host = np.full(KERNEL_TEST_SIZE, 0.5, dtype=np.float32)
        x = wp.array(x_host, dtype=float, device=device)
        y = wp.array(y_host, dtype=float, device=device)
        out = wp.zeros(KERNEL_TEST_SIZE, dtype=float, device=device)
        with contextlib.redirect_stdout(io.StringIO()):
            wp.launch(kernels.saxpy, dim=KERNEL_TEST_SIZE, inputs=[2.0, x, y, out], device=device)
            wp.synchronize_device(device)
        result = out.numpy()
    except Exception as exc:  # report a compile/launch failure of this backend, keep checking the others
        return {"ok": False, "device": device, "error": _error_text(exc)}
    expected = 2.0 * x_host + y_host
    ok = bool(np.array_equal(result, expected))
    report = {"ok": ok, "device": device, "seconds": round(time.perf_counter() - start, 3)}
    if not ok:
        report["error"] = "kernel ran but returned wrong values"
    return report


def _check_warp(cuda_available: bool) -> dict[str, Any]:
    version = _dist_version("warp-lang")
    try:
        import warp as wp

        wp.config.log_level = wp.LOG_WARNING  # no init banner / module-load lines on stdout
        with contextlib.redirect_stdout(io.StringIO()):
            wp.init()
        from recon.cli import _doctor_kernels
    except Exception as exc:  # warp missing or failing to initialise is a finding, not a crash
        return {
            "ok": False,
            "version": version,
            "error": _error_text(exc),
            "cpu_kernel": None,
            "cuda_kernel": None,
        }
    report: dict[str, Any] = {
        "ok": True,
        "version": wp.__version__,
        "kernel_cache_dir": str(wp.config.kernel_cache_dir),
        "cpu_kernel": _run_kernel(wp, _doctor_kernels, "cpu"),
        "cuda_kernel": None,
    }
    if cuda_available or wp.is_cuda_available():
        report["cuda_kernel"] = _run_kernel(wp, _doctor_kernels, "cuda:0")
    return report


def _check_component(module: str, dist: str, *, fast: bool) -> dict[str, Any]:
    version = _dist_version(dist)
    if fast:
        found = importlib.util.find_spec(module) is not None
        return {"present": found, "version": version, "imported": False}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return {"present": False, "version": version, "imported": False}
        return {"present": False, "version": version, "imported": False, "error": _error_text(exc)}
    except Exception as exc:  # installed but broken (e.g. a missing system library): report it
        return {"present": False, "version": version, "imported": False, "error": _error_text(exc)}
    return {"present": True, "version": version, "imported": True}


def _check_lpips_weights() -> dict[str, Any]:
    try:
        from recon.metrics import lpips_unavailable_reason
    except ImportError as exc:
        return {"available": False, "reason": f"recon.metrics not importable: {_error_text(exc)}"}
    reason = lpips_unavailable_reason()
    return {"available": reason is None, "reason": reason}


def _find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        path = (
            candidate if os.path.isabs(candidate) and os.path.exists(candidate) else shutil.which(candidate)
        )
        if path:
            return path
    return None


def collect_report(*, fast: bool = False) -> dict[str, Any]:
    """Everything ``recon doctor`` reports, as plain JSON-able data."""
    import recon

    torch_report = _check_torch()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "recon": {"version": recon.__version__, "path": os.path.dirname(recon.__file__)},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "cpu": {"count": os.cpu_count(), "available": affinity},
        "torch": torch_report,
        "warp": _check_warp(bool(torch_report.get("cuda_available"))),
        "optional": {m: _check_component(m, d, fast=fast) for m, d in OPTIONAL_COMPONENTS.items()},
        "lpips_weights": _check_lpips_weights(),
        "chromium": _find_chromium(),
    }


def _kernel_cell(kernel: dict[str, Any] | None) -> tuple[str, str]:
    if kernel is None:
        return "-", "not checked (no device)"
    if kernel["ok"]:
        return "ok", f"compiled and ran on {kernel['device']} in {kernel['seconds']:.2f} s"
    return "FAILED", kernel.get("error", "")


def _rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    torch_r, warp_r = report["torch"], report["warp"]
    rows = [
        ("recon", "ok", f"{report['recon']['version']} ({report['recon']['path']})"),
        ("python", "ok", f"{report['python']['version']} ({report['python']['executable']})"),
        ("platform", "ok", " ".join(report["platform"].values())),
        ("cpu", "ok", f"{report['cpu']['count']} cores ({report['cpu']['available']} available)"),
    ]
    if torch_r["ok"]:
        rows.append(("torch", "ok", f"{torch_r['version']} (CUDA build {torch_r['cuda_version'] or 'none'})"))
        cuda_detail = ", ".join(torch_r["devices"]) if torch_r["cuda_available"] else "no CUDA device"
        rows.append(("cuda", "ok" if torch_r["cuda_available"] else "-", cuda_detail))
    else:
        rows.append(("torch", "FAILED", torch_r["error"]))
    if warp_r["ok"]:
        rows.append(("warp", "ok", f"{warp_r['version']} (kernel cache {warp_r['kernel_cache_dir']})"))
        rows.append(("warp cpu kernel", *_kernel_cell(warp_r["cpu_kernel"])))
        rows.append(("warp cuda kernel", *_kernel_cell(warp_r["cuda_kernel"])))
    else:
        rows.append(("warp", "FAILED", warp_r["error"]))
    for name, comp in report["optional"].items():
        status = "ok" if comp["present"] else ("FAILED" if "error" in comp else "missing")
        rows.append((name, status, comp.get("error") or comp["version"] or "not installed"))
    lp = report["lpips_weights"]
    rows.append(("lpips weights", "ok" if lp["available"] else "missing", lp["reason"] or "found"))
    rows.append(("chromium", "ok" if report["chromium"] else "missing", report["chromium"] or "not found"))
    return rows


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="recon doctor")
    table.add_column("component")
    table.add_column("status")
    table.add_column("details", overflow="fold")
    styles = {"ok": "green", "FAILED": "red", "missing": "yellow"}
    for name, status, detail in _rows(report):
        table.add_row(escape(name), f"[{styles.get(status, 'dim')}]{escape(status)}[/]", escape(detail))
    Console().print(table)


def main(argv: list[str]) -> int:
    """``recon doctor [--json] [--fast]``."""
    args = tyro.cli(DoctorArgs, args=argv, prog="recon doctor")
    report = collect_report(fast=args.fast)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0 if report["torch"]["ok"] else 1
