"""``recon bench``: every method on the same data and budget, one protocol, one report (DESIGN.md).

A thin layer over ``recon train`` / ``recon eval`` / ``recon export`` (run as child processes by
:mod:`recon.bench.runner`) with no method-specific code: :func:`run_bench` runs each method in turn, then
:mod:`recon.bench.report` assembles report.json from the run folders and :mod:`recon.bench.html` writes the
self-contained report.html. Protocol and numbers: docs/bench.md.
"""

import logging
from pathlib import Path
from typing import Any

from recon.bench.runner import BenchSettings, MethodRun, eval_has_mesh_flag, is_finished, run_method

__all__ = ["BenchSettings", "MethodRun", "bench_devices", "run_bench", "write_outputs"]

_log = logging.getLogger(__name__)


def bench_devices(device: str) -> list[str]:
    """The devices of ``--device``: one name, or a comma-separated list (``cuda:0,cuda:1``) whose methods then run
    side by side, one per device."""
    devices = [d.strip() for d in device.split(",") if d.strip()]
    if not devices or len(set(devices)) != len(devices):
        raise ValueError(
            f"--device {device!r}: expected a device or a comma-separated list of distinct devices"
        )
    return devices


def run_bench(
    settings: BenchSettings, methods: list[str], *, resume: bool = False, say=print
) -> dict[str, Any]:
    """Run ``methods`` (one after the other, or side by side when ``settings.device`` lists several devices: each
    method on a free device), then write report.json and report.html; returns the report.

    A method that fails (any exit status but 0) keeps its row with the reason; the others still run. With
    ``resume`` a finished method (eval.json and its export present) is reused and an interrupted one continues
    with ``recon train --resume``. Rows keep the order of ``methods``.
    """
    import queue
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    settings.output.mkdir(parents=True, exist_ok=True)
    mesh_flag = eval_has_mesh_flag()
    devices = bench_devices(settings.device)
    free: queue.Queue[str] = queue.Queue()
    for device in devices:
        free.put(device)

    def one(method: str) -> MethodRun:
        device = free.get()
        try:
            on = f" on {device}" if len(devices) > 1 else ""
            if resume and is_finished(method, settings):
                say(f"{method}: finished run in {settings.run_dir(method)}, reused")
            else:
                say(f"{method}: training for {settings.minutes} min{on}, then eval and export ...")
            run = run_method(method, replace(settings, device=device), resume=resume, mesh_flag=mesh_flag)
        finally:
            free.put(device)
        failed = run.failed
        if failed is not None and not run.reused:
            say(f"{method}: {failed.name} failed with exit status {failed.returncode} (see the report)")
        return run

    if len(devices) == 1:  # in this thread, so Ctrl-C stops the bench at once
        runs = [one(method) for method in methods]
    else:
        pool = ThreadPoolExecutor(max_workers=len(devices))
        try:
            runs = list(pool.map(one, methods))
        finally:  # Ctrl-C: the running children get the signal too; the methods not started never start
            pool.shutdown(wait=True, cancel_futures=True)
    return write_outputs(settings, runs, mesh_flag=mesh_flag)


def write_outputs(settings: BenchSettings, runs: list[MethodRun], *, mesh_flag: bool) -> dict[str, Any]:
    """Assemble report.json and report.html in ``settings.output`` from the finished runs."""
    import json

    from recon.bench import figures
    from recon.bench.html import render_html
    from recon.bench.report import gt_mesh_of, method_row, write_report
    from recon.datasets import load_dataset

    gt = gt_mesh_of(load_dataset(settings.data))
    rows = [method_row(run, gt) for run in runs]
    ok = [Path(r["run_dir"]) for r in rows if r["status"] != "failed"]
    views = figures.shared_views(ok)
    grid: dict[str, Any] = {"views": views, "gt": [], "methods": {}}
    for row in rows:
        if row["status"] != "failed" and views:
            # each run at its own training resolution; the ground truth of the first one
            rendered = figures.method_views(Path(row["run_dir"]), views, with_gt=not grid["gt"])
            grid["gt"] = grid["gt"] or rendered.pop("ground truth")
            grid["methods"][row["method"]] = rendered
    extra = {
        "gt_mesh": str(gt) if gt is not None else None,
        "eval_mesh_flag": mesh_flag,
        "grid_views": views,
        "grid_rows": {m: sorted(v) for m, v in grid["methods"].items()},
        "peak_memory_protocol": "max RSS of the recon train process (os.wait4 ru_maxrss of that child); host "
        "memory only",
        "model_size_protocol": "bytes of the newest checkpoint's .safetensors file (scene, optimizer and "
        "strategy state)",
        "mesh_protocol": "recon export --format glb --mesh native --frame original --objects-only; exact Chamfer "
        "and F-score by recon.metrics.mesh_metrics vs the dataset's gt_mesh",
    }
    path = write_report(settings.output / "report.json", settings, rows, extra)
    report = json.loads(path.read_text(encoding="utf-8"))
    page = render_html(report, figures.psnr_plot(rows), grid)
    (settings.output / "report.html").write_text(page, encoding="utf-8")
    return report
