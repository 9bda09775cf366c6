"""One export service for every caller: ``recon export``, the viewer's export button (finished runs and live
training) and ``recon demo`` all call :func:`export_scene` on an in-memory scene.

It writes exactly the file(s) asked for and never overwrites an existing file unless ``force`` is set (the check
runs before anything is computed or written). Formats, frames and colour conventions: docs/export.md.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, ReconError
from recon.core.shapes import Backend
from recon.datasets.undistort import pinhole_K
from recon.export.mesh_io import write_mesh
from recon.export.splat_formats import (
    CameraRecord,
    TriangleSplats,
    stacked_cameras,
    write_3dgs_ply,
    write_cameras_json,
    write_points_ply,
    write_ts_ckpt,
)
from recon.export.surface import MAX_FUSION_VIEWS, MIN_RESOLUTION, TSDF_RESOLUTION
from recon.export.texture import MIN_TEXTURE_SIZE

ExportFormat = Literal["ply", "obj", "glb", "splat-ply", "ts-ckpt", "3dgs-ply", "points", "cameras"]
MeshKind = Literal["native", "surface"]
WorldFrame = Literal["original", "normalized"]
MESH_FORMATS = ("ply", "obj", "glb")
SUFFIX = {"ply": ".ply", "obj": ".obj", "glb": ".glb", "splat-ply": ".ply", "ts-ckpt": ".safetensors",
          "3dgs-ply": ".ply", "points": ".ply", "cameras": ".json"}  # fmt: skip
TEXTURE_SIZE = 1024  # texels along each side of a baked atlas


@dataclass(frozen=True)
class ExportRequest:
    """What to export (``recon export`` flags; docs/export.md).

    Attributes:
        output: the file to write (its suffix must match ``format``; a textured OBJ adds .mtl and .png beside it).
        format: file format.
        mesh: native: the representation's own mesh (the triangle soup; marching cubes of a field); surface: the
            TSDF fusion of depth rendered from the training views (any representation).
        frame: world frame of the written geometry: the dataset's original frame or the normalised one.
        force: overwrite existing files.
        texture: bake the colour into a UV atlas (mesh formats obj/glb).
        min_opacity: native mesh and splat formats: drop primitives below this opacity (0 keeps all).
        objects_only: native mesh: drop environment parts (the superquadrics ground; ``ExportOptions``).
        face_alpha: PLY meshes: write the opacity as vertex alpha.
        resolution: surface: TSDF voxels along the longest side of the object.
        texture_size: texels along each side of the baked atlas.
        backend: renderer backend for fusion and baking.
    """

    output: Path
    format: ExportFormat = "ply"
    mesh: MeshKind = "native"
    frame: WorldFrame = "original"
    force: bool = False
    texture: bool = False
    min_opacity: float = 0.5
    objects_only: bool = False
    face_alpha: bool = False
    resolution: int = TSDF_RESOLUTION
    texture_size: int = TEXTURE_SIZE
    backend: Backend = "auto"

    def files(self) -> list[Path]:
        """Every file this request writes."""
        out = Path(self.output)
        if self.format == "obj" and self.texture:
            return [out, out.with_suffix(".mtl"), out.with_suffix(".png")]
        return [out]


@dataclass(frozen=True)
class DatasetFrame:
    """What an export needs to know about the run's dataset.

    Attributes:
        normalization: (4, 4) float64 similarity ``S`` mapping the ORIGINAL world frame to the normalised
            (training) frame: ``x_norm = S x_orig``.
        cameras: the dataset cameras (original frame, at the training resolution), empty when unknown; fused
            surfaces and baked textures render from the ``train`` ones.
    """

    normalization: Float[Tensor, "4 4"]
    cameras: tuple[CameraRecord, ...] = field(default_factory=tuple)

    @classmethod
    def from_dataset(cls, dataset) -> "DatasetFrame":
        """From a loaded ``recon.datasets.SceneDataset`` (duck-typed: ``normalization``, ``splits``, ``frame``)."""
        records = []
        for split, frames in dataset.splits.items():
            for f in frames:
                w, h = f.load_width or f.width, f.load_height or f.height
                records.append(
                    CameraRecord(f.name, split, w, h, f.pinhole_K().double(), f.T_cam_world.double())
                )
        return cls(dataset.normalization.double(), tuple(records))

    @classmethod
    def from_info(cls, info: dict) -> "DatasetFrame":
        """From a run's dataset.json (``recon data info --json`` layout; K scaled to the loaded resolution as
        ``round(size / downscale)``, as the loaders do when no pre-scaled image folder exists; distorted cameras get
        the undistorted image's ``pinhole_K``, as the loaders hand out)."""
        if "normalization" not in info:
            raise ReconError("dataset.json has no 'normalization' matrix")
        downscale = float(info.get("downscale", 1.0) or 1.0)
        records = []
        for split, cams in (info.get("splits") or {}).items():
            for c in cams:
                w, h = max(1, round(c["width"] / downscale)), max(1, round(c["height"] / downscale))
                K = torch.tensor(c["K"], dtype=torch.float64)
                K[0] *= w / c["width"]
                K[1] *= h / c["height"]
                lens = torch.tensor(c.get("distortion") or [], dtype=torch.float64)
                K = pinhole_K(K, c.get("camera_model", "pinhole"), lens, w, h)  # as the loaders hand out
                T = torch.tensor(c["T_cam_world"], dtype=torch.float64)
                records.append(CameraRecord(c["name"], split, w, h, K, T))
        return cls(torch.tensor(info["normalization"], dtype=torch.float64), tuple(records))

    def training_cameras(self) -> Camera:
        """The ``train`` cameras in the normalised frame (ReconError when none are known)."""
        return stacked_cameras(list(self.cameras), self.normalization)


def check_writable(request: ExportRequest) -> None:
    """Raise a ReconError naming the option or file at fault: an unknown format or mesh kind, an out-of-range
    number, a suffix that does not match the format, or an output that exists (without ``force``)."""
    if request.format not in SUFFIX:
        raise ReconError(f"--format {request.format!r}: expected one of {', '.join(SUFFIX)}")
    if request.mesh not in ("native", "surface") or request.frame not in ("original", "normalized"):
        raise ReconError(f"--mesh {request.mesh!r} / --frame {request.frame!r}: expected native|surface and "
                         "original|normalized")  # fmt: skip
    if not 0.0 <= request.min_opacity <= 1.0:
        raise ReconError(f"--min-opacity {request.min_opacity}: expected a value in [0, 1]")
    if request.resolution < MIN_RESOLUTION or request.texture_size < MIN_TEXTURE_SIZE:
        raise ReconError(f"--resolution {request.resolution} / --texture-size {request.texture_size}: expected at "
                         f"least {MIN_RESOLUTION} voxels and {MIN_TEXTURE_SIZE} texels")  # fmt: skip
    out = Path(request.output)
    want = SUFFIX[request.format]
    if out.suffix.lower() != want:
        raise ReconError(f"--output {out}: --format {request.format} writes a {want} file")
    if request.texture and request.format not in ("obj", "glb"):
        raise ReconError(
            f"--texture: a baked texture is written with --format glb or obj, not {request.format}"
        )
    if not request.force:
        for path in request.files():
            if path.exists():
                raise ReconError(
                    f"{path}: the file exists; pass --force to overwrite it (nothing was written)"
                )


def _to_frame(mesh: Mesh, frame: DatasetFrame | None, request: ExportRequest) -> Mesh:
    if request.frame == "normalized":
        return mesh
    if frame is None:
        raise ReconError(
            "--frame original: the run's dataset normalisation is unknown (use --frame normalized)"
        )
    return mesh.transformed(torch.linalg.inv(frame.normalization).float())


def build_mesh(scene, frame: DatasetFrame | None, request: ExportRequest) -> Mesh:
    """The requested mesh (native or fused surface) in the normalised frame."""
    from recon.scenes.base import ExportOptions

    if request.mesh == "native":
        with torch.no_grad():
            mesh = scene.export_mesh(
                ExportOptions(min_opacity=request.min_opacity, objects_only=request.objects_only)
            )
    else:
        from recon.export.surface import fuse_surface_from_cameras

        if frame is None or not frame.cameras:
            raise ReconError(
                "--mesh surface: the run's training cameras are unknown (its dataset is not found)"
            )
        mesh = fuse_surface_from_cameras(scene, frame.training_cameras(), backend=request.backend,
                                         resolution=request.resolution, max_views=MAX_FUSION_VIEWS)  # fmt: skip
    if mesh.num_faces == 0:
        raise ReconError(
            f"nothing to export: the {request.mesh} mesh is empty (min opacity {request.min_opacity})"
        )
    return mesh


def _export_mesh_file(scene, frame: DatasetFrame | None, request: ExportRequest) -> list[Path]:
    mesh = build_mesh(scene, frame, request)
    texture = None
    if request.texture:
        from recon.export.texture import bake_texture

        if frame is None or not frame.cameras:
            raise ReconError("--texture: the run's training cameras are unknown (its dataset is not found)")
        mesh, texture = bake_texture(scene, mesh, frame.training_cameras(), size=request.texture_size,
                                     backend=request.backend)  # fmt: skip
    return write_mesh(_to_frame(mesh, frame, request), request.output, face_alpha=request.face_alpha,
                      texture=texture)  # fmt: skip


def _splats(scene, frame: DatasetFrame | None, request: ExportRequest) -> TriangleSplats:
    splats = TriangleSplats.from_scene(scene, fmt=request.format)
    if request.min_opacity > 0:
        splats = splats.select(torch.sigmoid(splats.logit_opacities) >= request.min_opacity)
    if len(splats) == 0:
        raise ReconError(f"nothing to export: no triangle has opacity >= {request.min_opacity}")
    if request.frame == "normalized":
        return splats
    if frame is None:
        raise ReconError(
            "--frame original: the run's dataset normalisation is unknown (use --frame normalized)"
        )
    return splats.transformed(torch.linalg.inv(frame.normalization), fmt=request.format)


def export_scene(scene, dataset_frame: DatasetFrame | None, options: ExportRequest) -> list[Path]:
    """Export an in-memory scene as ``options`` asks; returns the written files.

    Args:
        scene: a ``recon.scenes.base.Scene`` (not modified; call under the trainer's lock while training).
        dataset_frame: the dataset's normalisation and cameras, or None when unknown (then only
            ``frame="normalized"`` native exports work).
        options: what to write and where.

    Raises:
        ReconError: an output exists (without ``force``), a wrong suffix, a format this scene cannot provide,
            missing dataset information, or nothing to export. Nothing is written then.
    """
    check_writable(options)
    fmt = options.format
    if fmt in MESH_FORMATS:
        return _export_mesh_file(scene, dataset_frame, options)
    if fmt == "cameras":
        if dataset_frame is None or not dataset_frame.cameras:
            raise ReconError("--format cameras: the run's dataset cameras are unknown (no dataset.json)")
        return [write_cameras_json(list(dataset_frame.cameras), dataset_frame.normalization, options.frame,
                                   options.output)]  # fmt: skip
    if fmt == "points":
        mesh = _to_frame(build_mesh(scene, dataset_frame, options), dataset_frame, options)
        return [write_points_ply(mesh, options.output)]
    splats = _splats(scene, dataset_frame, options)
    if fmt == "splat-ply":
        from recon.export.splat_ply import write_splat_ply

        return [write_splat_ply(splats, options.output)]
    if fmt == "ts-ckpt":
        return [write_ts_ckpt(splats, options.output)]
    return [write_3dgs_ply(splats, options.output)]


def default_output(exports_dir: Path, format: ExportFormat, mesh: MeshKind, frame: WorldFrame,
                   texture: bool = False) -> Path:  # fmt: skip
    """``exports_dir/<name>`` for a request (docs/export.md lists the names)."""
    names = {"splat-ply": f"splats_{frame}.ply", "ts-ckpt": f"triangle_splatting_{frame}.safetensors",
             "3dgs-ply": f"gaussians_{frame}.ply", "points": f"points_{mesh}_{frame}.ply",
             "cameras": f"cameras_{frame}.json"}  # fmt: skip
    if format in names:
        return Path(exports_dir) / names[format]
    return Path(exports_dir) / f"{mesh}{'_textured' if texture else ''}_{frame}.{format}"


def fresh_path(path: Path) -> Path:
    """``path`` if it does not exist, else ``stem-2.suffix``, ``stem-3.suffix``, ... (the viewer's button never
    overwrites)."""
    if not path.exists():
        return path
    k = 2
    while path.with_name(f"{path.stem}-{k}{path.suffix}").exists():
        k += 1
    return path.with_name(f"{path.stem}-{k}{path.suffix}")
