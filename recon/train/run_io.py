"""Opening runs for training, resuming, evaluation and export: config resolution, datasets, devices, eval.json.

Config resolution order (CLI.md): dataclass defaults -> ``configs/<method>.yaml`` -> ``configs/<method>_cpu.yaml``
when the CPU-budget preset is chosen -> command-line flags. A resumed run starts from its own ``config.yaml``.
"""

import importlib.resources
import time
from pathlib import Path
from typing import Any

import torch

from recon.config import apply_overrides, load_preset, load_yaml
from recon.core import ReconError
from recon.renderers._backend import backend_report, reset_backend_report
from recon.runs import RunDir
from recon.train.config import TrainConfig
from recon.train.evaluate import geometry_metrics, protocol, render_metrics
from recon.train.methods import Method, get_method
from recon.train.trainer import load_scene


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else must be a device torch can use here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ReconError(f"--device {device!r}: expected cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReconError(f"--device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return dev


def preset_name(method: str, preset: str, device: torch.device) -> str:
    """The preset chosen by ``--preset`` (auto: the CPU-budget preset on CPU)."""
    if preset == "auto":
        return f"{method}_cpu" if device.type == "cpu" and _has_preset(f"{method}_cpu") else method
    return preset


def _has_preset(name: str) -> bool:
    return (importlib.resources.files("recon.configs") / f"{name}.yaml").is_file()


def preset_config(method: Method, name: str) -> TrainConfig:
    """Dataclass defaults + ``configs/<method>.yaml`` (+ ``configs/<name>.yaml`` when it is another preset)."""
    cfg = load_preset(method.config_cls, method.name)
    if name != method.name:
        if not _has_preset(name):
            raise ReconError(
                f"--preset {name!r}: no configs/{name}.yaml (expected {method.name} or {method.name}_cpu)"
            )
        path = importlib.resources.files("recon.configs") / f"{name}.yaml"
        with importlib.resources.as_file(path) as file:
            overrides = load_yaml(file) or {}
        cfg = apply_overrides(cfg, overrides, source=f"configs/{name}.yaml")
    return cfg


def open_run_config(run_dir: str | Path) -> tuple[RunDir, Method, TrainConfig]:
    """An existing run's directory, method and resolved config."""
    run = RunDir(run_dir).require_exists()
    data = run.config_dict()
    method = get_method(str(data.get("method", "")))
    return run, method, run.read_config(method.config_cls)


def load_run_dataset(cfg: TrainConfig):
    """The run's dataset at its training resolution."""
    from recon.datasets import load_dataset

    if not cfg.data:
        raise ReconError("--data: a dataset folder is required (e.g. --data path/to/scene)")
    return load_dataset(
        cfg.data,
        downscale=cfg.downscale,
        test_every=cfg.test_every,
        allow_outside_root=cfg.allow_outside_root,
    )


def evaluate_run(
    run: RunDir,
    method: Method,
    cfg: TrainConfig,
    *,
    split: str = "test",
    max_images: int = 0,
    save_renders: bool = False,
    device: torch.device | None = None,
    dataset=None,
    geometry: bool = True,
    mesh: bool = False,
    output: Path | None = None,
    image_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the newest checkpoint of ``run`` on ``split``, write eval.json and return it (CLI.md layout).

    With ``mesh`` the run's native mesh (``recon.export.service.build_mesh``, as ``recon export`` writes it) is
    also rendered by the hard rasterizer at the same views and scored under ``"mesh"``. ``output`` is where
    eval.json goes (default RUN_DIR/eval.json); nothing else is written unless ``save_renders``.
    ``image_metrics``: :func:`render_metrics` of the same checkpoint already computed (a data-parallel job's
    final evaluation, split over its ranks); then the views are not rendered again.
    """
    device = device or torch.device("cpu")
    dataset = dataset if dataset is not None else load_run_dataset(cfg)
    scene, step = load_scene(method, cfg, run, device=device)
    reset_backend_report()  # the protocol records what this evaluation's renders ran on
    save_dir = run.renders_dir / f"eval_{split}" if save_renders else None
    start = time.perf_counter()
    if image_metrics is not None and not save_renders:
        m = image_metrics
    else:
        m = render_metrics(
            scene, dataset, split=split, max_images=max_images, backend=cfg.backend, save_dir=save_dir
        )
    result: dict[str, Any] = {
        "method": method.name,
        "step": step,
        "split": split,
        "num_images": m["num_images"],
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "lpips": m["lpips"],
        "protocol": protocol(
            dataset, split=split, resolution=m["resolution"], backend=cfg.backend, device=str(device)
        ),  # fmt: skip
        "seconds_per_image": m["seconds_per_image"],
        "num_primitives": scene.num_primitives(),
        "train_peak_memory": _train_peak_memory(run, step),
    }
    if _checkpoint_meta(run, step).get("exposure_compensation"):
        result["protocol"]["exposure"] = (
            "training compensated each photo's exposure (--appearance); these renders use the training photos' "
            "average exposure, with no per-view correction of the test views"
        )
    if m["lpips"] is None:
        result["lpips_unavailable_reason"] = m["lpips_unavailable_reason"]
    gt = getattr(dataset, "gt_mesh_path", None)
    if geometry and gt is not None and Path(gt).is_file():
        from recon.export.surface import fuse_surface

        try:
            fused = fuse_surface(scene, dataset, backend=cfg.backend)
        except ReconError as exc:  # an (early) scene with no opaque surface: geometry is reported as missing
            result |= {
                "chamfer": None,
                "fscore": None,
                "fscore_threshold": None,
                "geometry_unavailable_reason": str(exc),
            }
        else:
            S_inv = torch.linalg.inv(dataset.normalization.double()).float()
            result |= geometry_metrics(fused.transformed(S_inv), Path(gt))
    if mesh:
        mesh_dir = run.renders_dir / f"eval_{split}_mesh" if save_renders else None
        result["mesh"] = _mesh_eval(scene, method, dataset, cfg, split=split, max_images=max_images,
                                    device=device, save_dir=mesh_dir)  # fmt: skip
    result["eval_seconds"] = time.perf_counter() - start
    if output is None:
        run.write_eval(result)
    else:
        write_json(Path(output), result)
    return result


def _mesh_eval(scene, method: Method, dataset, cfg: TrainConfig, *, split: str, max_images: int,
               device: torch.device, save_dir: Path | None) -> dict[str, Any]:  # fmt: skip
    """The ``"mesh"`` record of eval.json (``{"unavailable_reason"}`` when the scene has no mesh to export)."""
    from recon.export.service import ExportRequest, build_mesh
    from recon.train.evaluate import eval_indices, mesh_metrics_record

    request = ExportRequest(output=Path("eval.ply"), mesh="native", backend=cfg.backend)
    try:
        start = time.perf_counter()
        native = build_mesh(scene, None, request)
        build_seconds = time.perf_counter() - start
    except (ReconError, NotImplementedError) as exc:
        return {"unavailable_reason": str(exc)}
    made_by = (f"{method.name} native mesh (Scene.export_mesh, min opacity {request.min_opacity}; what `recon "
               f"export --mesh native` writes), unlit vertex/face colours, normalised frame")  # fmt: skip
    reset_backend_report()  # the record names what the mesh renders ran on
    record = mesh_metrics_record(native, dataset, split=split, indices=eval_indices(dataset, split, max_images),
                                 backend=cfg.backend, device=device, made_by=made_by, save_dir=save_dir)  # fmt: skip
    return record | {"build_seconds": build_seconds, "backend": backend_report()}


def _train_peak_memory(run: RunDir, step: int) -> dict[str, Any]:
    """Peak memory of the training process up to the checkpoint of ``step`` (``recon.train.memory``), from the
    checkpoint's metadata; ``{"unavailable_reason"}`` for checkpoints written before it was recorded."""
    meta = _checkpoint_meta(run, step)
    if not isinstance(meta.get("peak_memory"), dict):
        return {
            "unavailable_reason": f"checkpoint of step {step} records no peak memory (written by an older recon)"
        }
    return meta["peak_memory"]


def _checkpoint_meta(run: RunDir, step: int) -> dict[str, Any]:
    """The metadata of the checkpoint of ``step`` (empty when there is none)."""
    from recon.checkpoint_io import _read_json

    found = dict(run.checkpoints()).get(step)
    return _read_json(found.with_suffix(".json")) if found is not None else {}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` (a temporary file beside it, then renamed; parents created)."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path
