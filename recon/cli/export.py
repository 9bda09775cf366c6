"""``recon export RUN_DIR [--format ply|obj|glb|splat-ply|ts-ckpt|3dgs-ply|points|cameras] [--mesh native|surface]
[--texture] [--output PATH] [--frame original|normalized] [--force]``.

Writes what was asked, only that, prints its path(s), and never overwrites a file without ``--force``. The
scene is loaded from the run's newest checkpoint and exported by ``recon.export.export_scene`` (the same code as
the viewer's export button). The dataset's normalisation and cameras come from the run's dataset.json, so the
command works from any working directory; formats and conventions: docs/export.md.
"""

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from recon.core.shapes import Backend
from recon.export.service import DatasetFrame, ExportFormat, ExportRequest, default_output, export_scene
from recon.train.run_io import open_run_config
from recon.train.trainer import load_scene

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory to export."""
    format: ExportFormat = "ply"
    """ply/obj/glb: a mesh; splat-ply: recon's triangle-splat PLY (every attribute); ts-ckpt: the official Triangle
    Splatting parameters (safetensors); 3dgs-ply: each triangle as a flat Gaussian (Inria 3DGS PLY); points: a
    coloured point cloud; cameras: the dataset cameras as JSON."""
    mesh: Literal["native", "surface", "soup"] = "native"
    """native: the representation's own mesh (triangle soup for triangles, marching cubes for nerf/neus); surface:
    TSDF fusion of depth rendered from the training views (any method). soup: old name of native."""
    texture: bool = False
    """Bake the colour into a UV texture atlas (glb: inside the file; obj: PNG + MTL beside it)."""
    texture_size: int = 1024
    """Texture atlas side in texels."""
    output: str = ""
    """Output file (default: RUN_DIR/exports/<name> as listed in docs/export.md)."""
    frame: Literal["original", "normalized"] = "original"
    """World frame of the written geometry: the dataset's original frame or the normalised training frame."""
    force: bool = False
    """Overwrite existing output files."""
    min_opacity: float = 0.5
    """Native mesh and splat formats: drop triangles below this opacity."""
    all_triangles: bool = False
    """Keep every triangle regardless of opacity."""
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
    mesh = "native" if args.mesh == "soup" else args.mesh
    out = Path(args.output) if args.output else default_output(exports_dir, args.format, mesh, args.frame,
                                                               args.texture)  # fmt: skip
    return ExportRequest(output=out, format=args.format, mesh=mesh, frame=args.frame, force=args.force,
                         texture=args.texture, min_opacity=0.0 if args.all_triangles else args.min_opacity,
                         face_alpha=args.face_alpha, resolution=args.resolution, texture_size=args.texture_size,
                         backend=backend)  # fmt: skip


def export_run(args: ExportArgs) -> list[Path]:
    """Load the run's newest checkpoint and export it as ``args`` asks; returns the written files."""
    run, method, cfg = open_run_config(args.run_dir)
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
