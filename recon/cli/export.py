"""``recon export RUN_DIR [--format ply|obj|glb|splat-ply|ts-ckpt|3dgs-ply|points|cameras|native]
[--mesh native|surface] [--texture] [--output PATH] [--frame original|normalized] [--force]``.

Writes what was asked, only that, prints its path(s), and never overwrites a file without ``--force``. The
scene is loaded from the run's newest checkpoint and exported by ``recon.export.export_scene`` (the same code as
the viewer's export button); ``--format native`` instead hands it to the method's ``Method.write_native``, which
writes the representation's own files into a folder. On the parent folder of ``recon train ... --restarts N``
the selected run is exported (and named on standard error). The dataset's normalisation and cameras come from the run's dataset.json, so the
command works from any working directory; formats and conventions: docs/export.md.
"""

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from recon.core.errors import ReconError
from recon.core.shapes import Backend
from recon.export.service import DatasetFrame, ExportFormat, ExportRequest, default_output, export_scene
from recon.scenes.base import ExportOptions
from recon.train.restarts import resolve_restarts_parent
from recon.train.run_io import open_run_config
from recon.train.trainer import load_scene

_log = logging.getLogger(__name__)

NATIVE_DIR = "native"  # --format native writes into RUN_DIR/exports/native/ unless --output names a folder
ANY_METHOD_FORMATS = "ply, obj, glb (--mesh native|surface), points and cameras"  # what every scene offers


@dataclass(frozen=True)
class ExportArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory to export."""
    format: ExportFormat | Literal["native"] = "ply"
    """ply/obj/glb: a mesh; splat-ply: recon's triangle-splat PLY (every attribute); ts-ckpt: the official Triangle
    Splatting parameters (safetensors); 3dgs-ply: each triangle as a flat Gaussian (Inria 3DGS PLY); points: a
    coloured point cloud; cameras: the dataset cameras as JSON; native: the method's own files written into a
    folder (superquadrics: primitives.json + textured OBJ/MTL/PNG + GLB; triangles: the splat PLY)."""
    mesh: Literal["native", "surface", "soup"] = "native"
    """native: the representation's own mesh (triangle soup for triangles, marching cubes for nerf/neus); surface:
    TSDF fusion of depth rendered from the training views (any method). soup: old name of native."""
    texture: bool = False
    """Bake the colour into a UV texture atlas (glb: inside the file; obj: PNG + MTL beside it)."""
    texture_size: int = 1024
    """Texture atlas side in texels."""
    output: str = ""
    """Output file (default: RUN_DIR/exports/<name> as listed in docs/export.md); a folder for --format native
    (default RUN_DIR/exports/native)."""
    frame: Literal["original", "normalized"] = "original"
    """World frame of the written geometry: the dataset's original frame or the normalised training frame."""
    force: bool = False
    """Overwrite existing output files."""
    min_opacity: float = 0.5
    """Native mesh and splat formats: drop triangles below this opacity."""
    all_triangles: bool = False
    """Keep every triangle regardless of opacity."""
    objects_only: bool = False
    """Native mesh: keep only the reconstructed objects, without the parts that model the environment (the
    superquadrics ground square); no effect on the other methods. Use it to compare with an object's
    ground-truth mesh."""
    face_alpha: bool = False
    """PLY meshes: write the opacity as the vertex alpha (otherwise no alpha)."""
    resolution: int = 128
    """Surface: TSDF voxels along the longest side of the object's bounding box."""
    device: str = "cpu"
    """Device the scene is loaded and rendered on (cpu, cuda, cuda:N)."""


def resolve_dataset_path(run_path: Path, data: str, created_in: str | None = None) -> Path | None:
    """The run's dataset folder from the ``data`` recorded in its config.yaml, whatever the working directory:
    an absolute path as is; a relative one against the folder the run was created from (``created_in``, when
    recorded), the working directory, then the run folder and each of its parents. None when nowhere found."""
    path = Path(data).expanduser()
    if path.is_absolute():
        return path if path.is_dir() else None
    run_path = Path(run_path).resolve()
    bases = [Path(created_in)] if created_in else []
    bases += [Path.cwd(), run_path, *run_path.parents]
    return next((base / path for base in bases if (base / path).is_dir()), None)


def run_dataset_frame(run, cfg) -> DatasetFrame | None:
    """The dataset frame of a run: from its dataset.json (written at run creation: normalisation and cameras),
    else from its dataset folder (``resolve_dataset_path``); None when neither is available."""
    if run.dataset_json_path.is_file():
        info = run.read_dataset_json()
        if info.get("splits"):
            return DatasetFrame.from_info(info)
    data = getattr(cfg, "data", "")
    folder = resolve_dataset_path(run.path, data, getattr(cfg, "created_in", None)) if data else None
    if folder is None:
        _log.warning("%s: dataset %r not found; exports needing the dataset frame will fail", run.path, data)
        return None
    from recon.datasets import load_dataset

    return DatasetFrame.from_dataset(
        load_dataset(
            folder,
            downscale=cfg.downscale,
            test_every=cfg.test_every,
            allow_outside_root=cfg.allow_outside_root,
        )  # fmt: skip
    )


def request_from_args(args: ExportArgs, exports_dir: Path, backend: Backend = "auto") -> ExportRequest:
    if args.format == "native":
        raise ReconError("--format native is written by the method's write_native, not by the export service")
    mesh = "native" if args.mesh == "soup" else args.mesh
    out = Path(args.output) if args.output else default_output(exports_dir, args.format, mesh, args.frame,
                                                               args.texture)  # fmt: skip
    return ExportRequest(output=out, format=args.format, mesh=mesh, frame=args.frame, force=args.force,
                         texture=args.texture, min_opacity=0.0 if args.all_triangles else args.min_opacity,
                         objects_only=args.objects_only,
                         face_alpha=args.face_alpha, resolution=args.resolution, texture_size=args.texture_size,
                         backend=backend)  # fmt: skip


def export_native(args: ExportArgs, run, method, cfg) -> list[Path]:
    """``--format native``: ``method.write_native(scene, folder)``; returns the main file, then the other files
    it wrote into the folder.

    Raises:
        ReconError: the method has no native format (naming the formats it offers), a flag that does not apply,
            or a non-empty output folder without ``--force`` (checked before the scene is loaded).
    """
    if method.write_native is None:
        raise ReconError(f"--format native: method {method.name!r} has no native format; it offers --format "
                         f"{ANY_METHOD_FORMATS}")  # fmt: skip
    if args.frame != "original" or args.texture or args.mesh == "surface":
        raise ReconError("--format native writes the method's own files in the frame that method documents "
                         "(docs/export.md): --frame, --texture and --mesh surface do not apply")  # fmt: skip
    folder = Path(args.output) if args.output else run.exports_dir / NATIVE_DIR
    if folder.exists() and not folder.is_dir():
        raise ReconError(f"--output {folder}: --format native writes a folder, and this is a file")
    if folder.is_dir() and any(folder.iterdir()) and not args.force:
        raise ReconError(
            f"{folder}: the folder is not empty; pass --force to overwrite (nothing was written)"
        )
    scene, _ = load_scene(method, cfg, run, device=torch.device(args.device))
    folder.mkdir(parents=True, exist_ok=True)
    started_ns = time.time_ns() // 10**9 * 10**9  # whole seconds: coarse file-system clocks
    main = Path(method.write_native(scene, folder, ExportOptions(objects_only=args.objects_only)))
    written = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime_ns >= started_ns)
    return [main, *(p for p in written if p != main)]


def export_run(args: ExportArgs) -> list[Path]:
    """Load the run's newest checkpoint and export it as ``args`` asks; returns the written files.

    ``args.run_dir`` may be the parent of ``--restarts`` runs: the selected run is exported (it is named on
    standard error)."""
    run_dir, note = resolve_restarts_parent(args.run_dir)
    if note:
        print(note, file=sys.stderr)
    run, method, cfg = open_run_config(run_dir)
    if args.format == "native":
        return export_native(args, run, method, cfg)
    request = request_from_args(args, run.exports_dir, backend=cfg.backend)
    if not args.force:  # fail before loading anything when the output exists
        from recon.export.service import check_writable

        check_writable(request)
    frame = run_dataset_frame(run, cfg)
    if args.format == "cameras":
        return export_scene(None, frame, request)
    scene, _ = load_scene(method, cfg, run, device=torch.device(args.device))
    return export_scene(scene, frame, request)


def main(argv: list[str]) -> int:
    args = tyro.cli(ExportArgs, args=argv, prog="recon export")
    for path in export_run(args):
        print(path)
    what = json.dumps(
        {"format": args.format, "mesh": args.mesh, "frame": args.frame, "texture": args.texture}
    )
    print(f"exported {what}", file=sys.stderr)
    return 0
