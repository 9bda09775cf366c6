"""report.json of a bench: one row per method from its run folder (eval.json, metrics.jsonl, checkpoint, export).

Every number comes from what ``recon train``/``eval``/``export`` wrote, and every missing number is ``null``
with a ``*_unavailable_reason`` beside it (never a silent zero).
"""

import json
import math
from pathlib import Path
from typing import Any

from recon.bench.runner import BenchSettings, MethodRun

__all__ = ["REPORT_VERSION", "gt_mesh_of", "method_row", "psnr_curve", "write_report"]

REPORT_VERSION = 1


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def psnr_curve(run_dir: Path) -> list[dict[str, float]]:
    """The periodic ``eval_psnr`` records of metrics.jsonl as ``[{"train_seconds", "step", "psnr"}]``."""
    from recon.runs import RunDir

    run = RunDir(run_dir)
    if not run.metrics_path.is_file():
        return []
    return [
        {"train_seconds": float(r["train_seconds"]), "step": int(r["step"]), "psnr": float(r["eval_psnr"])}
        for r in run.read_metrics()
        if "eval_psnr" in r and "train_seconds" in r and math.isfinite(float(r["eval_psnr"]))
    ]


def _training(run_dir: Path) -> dict[str, Any]:
    """Training time and steps from the last metrics.jsonl record that has them."""
    from recon.runs import RunDir

    run = RunDir(run_dir)
    records = run.read_metrics() if run.metrics_path.is_file() else []
    timed = [r for r in records if "train_seconds" in r]
    last_ckpt = run.latest_checkpoint()
    steps = run.checkpoints()[-1][0] if last_ckpt is not None else None
    return {
        "train_seconds": float(timed[-1]["train_seconds"]) if timed else None,
        "steps": steps,
        "model_bytes": last_ckpt.stat().st_size if last_ckpt is not None else None,
        "model_file": str(last_ckpt) if last_ckpt is not None else None,
    }


def _image_metrics(ev: dict[str, Any] | None, run: MethodRun) -> dict[str, Any]:
    if ev is None:
        return {"psnr": None, "ssim": None, "lpips": None, "lpips_unavailable_reason": "no eval.json"}
    row = {k: ev.get(k) for k in ("psnr", "ssim", "lpips", "num_images", "step", "seconds_per_image")}
    if row["lpips"] is None:
        row["lpips_unavailable_reason"] = ev.get("lpips_unavailable_reason", "not in eval.json")
    protocol = ev.get("protocol", {})
    row["backend"] = protocol.get("backend")
    row["device"] = protocol.get("device")
    row["protocol"] = protocol
    row |= _mesh_render_metrics(ev, run)
    return row


def _mesh_render_metrics(ev: dict[str, Any], run: MethodRun) -> dict[str, Any]:
    """Mesh-based PSNR and render time from ``recon eval --mesh`` (null with the reason when unavailable)."""
    if not run.eval_mesh_flag:
        reason = "this recon eval has no --mesh flag (mesh-based evaluation has not landed)"
        return {"mesh_psnr": None, "mesh_seconds_per_image": None, "mesh_psnr_unavailable_reason": reason}
    record = ev.get("mesh")
    mesh: dict[str, Any] = record if isinstance(record, dict) else {}  # recon eval --mesh's record
    psnr = mesh.get("psnr")
    out = {"mesh_psnr": psnr, "mesh_seconds_per_image": mesh.get("seconds_per_image")}
    if psnr is None:
        out["mesh_psnr_unavailable_reason"] = mesh.get("unavailable_reason", "eval.json has no mesh record")
    return out


def gt_mesh_of(dataset) -> Path | None:
    """The dataset's ground-truth mesh file (Blender datasets by ``recon data synth`` have one), or None."""
    gt = getattr(dataset, "gt_mesh_path", None)
    return Path(gt) if gt is not None and Path(gt).is_file() else None


def _mesh_stats(export: Path | None, gt_mesh: Path | None) -> dict[str, Any]:
    """Vertices/faces of the exported mesh and its exact geometry metrics vs ``gt_mesh``."""
    if export is None or not export.is_file():
        return {"mesh_file": None, "mesh_vertices": None, "mesh_faces": None, "chamfer_l1": None,
                "fscores": None, "geometry_unavailable_reason": "no exported mesh"}  # fmt: skip
    import torch
    import trimesh

    from recon.core import Mesh
    from recon.metrics import mesh_metrics

    loaded = trimesh.load_mesh(str(export), process=False)
    out: dict[str, Any] = {"mesh_file": str(export), "mesh_bytes": export.stat().st_size,
                           "mesh_vertices": len(loaded.vertices), "mesh_faces": len(loaded.faces)}  # fmt: skip
    if gt_mesh is None:
        return out | {"chamfer_l1": None, "fscores": None,
                      "geometry_unavailable_reason": "the dataset has no ground-truth mesh"}  # fmt: skip
    if len(loaded.faces) == 0:
        return out | {"chamfer_l1": None, "fscores": None, "geometry_unavailable_reason": "empty mesh"}
    gt = trimesh.load_mesh(str(gt_mesh), process=False)

    def mesh(m):
        return Mesh(vertices=torch.as_tensor(m.vertices, dtype=torch.float32),
                    faces=torch.as_tensor(m.faces, dtype=torch.long))  # fmt: skip

    metrics = json.loads(mesh_metrics(mesh(loaded), mesh(gt)).to_json())
    return out | {"chamfer_l1": metrics["chamfer_l1"], "fscores": metrics["fscores"], "geometry": metrics}


def method_row(run: MethodRun, gt_mesh: Path | None) -> dict[str, Any]:
    """The report row of one method (status, image metrics, geometry, time, memory, sizes)."""
    status = run.status
    row: dict[str, Any] = {
        "method": run.method,
        "status": status,
        "run_dir": str(run.run_dir),
        "reused": run.reused,
        "steps_run": [s.to_json() | {"name": s.name} for s in run.steps],
    }
    failed = run.failed
    if failed is not None and not run.reused:
        row["failure"] = {
            "step": failed.name,
            "exit_status": failed.returncode,
            "stderr_tail": failed.stderr_tail,
        }
    train = run.step("train")
    row["peak_rss_bytes"] = train.max_rss_bytes if train is not None else None
    row["train_cpu_seconds"] = train.cpu_seconds if train is not None else None
    if row["peak_rss_bytes"] is None:
        row["peak_rss_unavailable_reason"] = "no record of the recon train process (killed, or run elsewhere)"
    row |= _training(run.run_dir)
    evaluated = status != "failed"
    row |= _image_metrics(_read_json(run.run_dir / "eval.json") if evaluated else None, run)
    exported = status == "ok"
    row |= _mesh_stats(run.export_path if exported else None, gt_mesh)
    if not exported and failed is not None:
        row["geometry_unavailable_reason"] = f"recon {failed.name} failed (exit status {failed.returncode})"
    row["psnr_curve"] = psnr_curve(run.run_dir)
    return row


def write_report(path: Path, settings: BenchSettings, rows: list[dict[str, Any]], extra: dict) -> Path:
    """Write report.json: the bench settings, the protocol notes and one row per method."""
    report = {
        "report_version": REPORT_VERSION,
        "data": str(settings.data),
        "minutes": settings.minutes,
        "device": settings.device,
        "eval_every_minutes": settings.eval_every_minutes,
        "steps_bound": settings.steps or None,
        **extra,
        "methods": rows,
    }
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
