"""``recon export RUN_DIR [--format ply|obj|glb] [--mesh soup|surface] [--output PATH] [--frame original|normalized]``.

``soup``: the triangles themselves with per-triangle colours (opacity >= --min-opacity; --all-triangles keeps
every one). ``surface``: median depth rendered from the training views, TSDF-fused, largest component.
With ``--format ply`` and ``--mesh soup`` the triangle-splat PLY with every attribute is written alongside
(``splats.ply``, normalised frame, reloadable with ``recon.export.splat_ply.scene_from_splat_ply``).
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from recon.core import ReconError
from recon.export.mesh_io import write_mesh
from recon.scenes.base import ExportOptions
from recon.train.run_io import load_run_dataset, open_run_config
from recon.train.trainer import load_scene


@dataclass(frozen=True)
class ExportArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory to export."""
    format: Literal["ply", "obj", "glb"] = "ply"
    """Mesh file format."""
    mesh: Literal["soup", "surface"] = "soup"
    """soup: the representation's native mesh with its colours (the triangle soup for triangles, the marching-cubes
    surface of the field for nerf/neus); surface: a TSDF-fused surface of rendered depth (any method)."""
    output: str = ""
    """Output file (default: RUN_DIR/exports/<mesh>_<frame>.<format>)."""
    frame: Literal["original", "normalized"] = "original"
    """World frame of the written vertices: the dataset's original frame or the normalised training frame."""
    min_opacity: float = 0.5
    """Soup: drop triangles below this opacity."""
    all_triangles: bool = False
    """Soup: keep every triangle regardless of opacity."""
    face_alpha: bool = False
    """Soup PLY: write the opacity as the alpha of the face colours (otherwise 255)."""
    resolution: int = 128
    """Surface: TSDF voxels along the longest side of the object's bounding box."""
    device: str = "cpu"


def export_run(args: ExportArgs) -> list[Path]:
    run, method, cfg = open_run_config(args.run_dir)
    device = torch.device(args.device)
    scene, step = load_scene(method, cfg, run, device=device)
    written: list[Path] = []
    if args.mesh == "soup":
        mesh = scene.export_mesh(ExportOptions(min_opacity=0.0 if args.all_triangles else args.min_opacity))
    else:
        from recon.export.surface import fuse_surface

        dataset = load_run_dataset(cfg)
        mesh = fuse_surface(scene, dataset, backend=cfg.backend, resolution=args.resolution)
    if args.frame == "original":
        S = torch.tensor(run.read_dataset_json()["normalization"], dtype=torch.float64)
        mesh = mesh.transformed(torch.linalg.inv(S).float())
    if mesh.num_faces == 0:
        raise ReconError(
            f"{args.run_dir}: nothing to export (no triangle above --min-opacity {args.min_opacity})"
        )
    out = Path(args.output) if args.output else run.exports_dir / f"{args.mesh}_{args.frame}.{args.format}"
    if out.suffix.lower() != f".{args.format}":
        raise ReconError(f"--output {out}: expected a file ending in .{args.format} (or pass --format)")
    written.append(write_mesh(mesh, out, face_alpha=args.face_alpha))
    if args.format == "ply" and args.mesh == "soup" and method.write_native is not None:
        written.append(method.write_native(scene, out.with_name("splats.ply")))
    return written


def main(argv: list[str]) -> int:
    args = tyro.cli(ExportArgs, args=argv, prog="recon export")
    for path in export_run(args):
        print(path)
    what = "native mesh" if args.mesh == "soup" else "TSDF-fused surface"
    print(f"exported the {what} ({args.frame} frame)", file=sys.stderr)
    return 0
