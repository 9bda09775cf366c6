"""``recon view RUN_DIR|MESH_FILE [--host 127.0.0.1] [--port 8080]``: serve the browser viewer.

A run directory is shown from its newest checkpoint: the scene renders on the server through its own renderer
(``Scene.render``), the training cameras appear as frusta with thumbnails, the scene's native mesh and the
dataset's SfM points can be drawn in the browser, and the export button writes the mesh as ``recon export`` does.
A mesh file (PLY, OBJ, GLB...) renders on the server through the hard rasterizer (``recon.scenes.mesh_scene``, the
renderer of ``recon eval --mesh``: rgb, depth, normals, alpha) and is also drawn in the browser.

This module is the only place that joins scenes and the viewer: it builds the render callback
(:func:`scene_render_fn`) that :class:`recon.viewer.ViewerServer` receives, and :func:`attach_training_viewer`
serves a live view of a :class:`recon.train.trainer.Trainer` (``recon train ... --viewer``).
"""

import contextlib
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

from recon.core import Camera, Mesh, ReconError, RenderOutput
from recon.scenes.mesh_scene import MeshTexture
from recon.viewer import CameraView, PointCloud, RenderFn, TrainingStats, ViewerServer, ViewState, is_loopback

__all__ = [
    "ViewArgs",
    "attach_training_viewer",
    "load_mesh_file",
    "load_textured_mesh_file",
    "main",
    "mesh_render_fn",
    "scene_render_fn",
    "serve_mesh",
    "serve_run",
    "training_camera_views",
]

logger = logging.getLogger("recon.cli.view")

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")
MAX_THUMBNAIL_VIEWS = (
    300  # training cameras whose images are decoded for thumbnails (the viewer subsamples too)
)
THROUGHPUT_WINDOW = 20  # steps over which the live viewer averages training throughput


@dataclass(frozen=True)
class ViewArgs:
    """Serve the browser viewer for a run directory (newest checkpoint) or a mesh file."""

    path: tyro.conf.Positional[Path]
    """A run directory (outputs/EXPERIMENT/METHOD/TIMESTAMP) or a mesh file (.ply, .obj, .glb, ...)."""
    host: str = "127.0.0.1"
    """Interface to bind. Other hosts than loopback expose the viewer to the network (a warning is printed)."""
    port: int = 8080
    """TCP port (the next free one is used if it is taken)."""
    device: str = "auto"
    """Device that renders a run or a mesh file: cpu | cuda | cuda:N | auto (cuda when available)."""
    max_resolution: int = 1024
    """Cap on the longest side of server renders, in pixels (the browser can change it)."""
    seconds: float = 0.0
    """Stop serving after this many seconds (0: until Ctrl-C)."""


# --- render callbacks -----------------------------------------------------------------------------------------
def scene_render_fn(scene: torch.nn.Module, *, device: torch.device | str, backend: str = "auto") -> RenderFn:
    """The viewer's render callback for a :class:`recon.scenes.base.Scene`: render one camera on ``device``.

    The callback asks for normals only in the normals mode (they cost extra in some renderers).
    """
    from recon.scenes.base import RenderOptions

    device = torch.device(device)

    def render(camera: Camera, state: ViewState) -> RenderOutput:
        options = RenderOptions(
            background=torch.tensor(state.background, dtype=torch.float32, device=device),
            backend=backend,  # type: ignore[arg-type]
            depth=True,
            normals=state.mode == "normals",
        )
        return scene.render(camera.to(device=device, dtype=torch.float32), options)  # type: ignore[operator]

    return render


def training_camera_views(
    dataset, split: str = "train", *, max_views: int = MAX_THUMBNAIL_VIEWS
) -> list[CameraView]:
    """Frusta with thumbnails for a ``recon.datasets.SceneDataset`` split (evenly subsampled to ``max_views``)."""
    count = len(dataset.splits.get(split, []))
    stride = max(1, math.ceil(count / max_views))
    views = []
    for i in range(0, count, stride):
        frame = dataset.splits[split][i]
        name = Path(str(getattr(frame, "image_path", f"{split}_{i}"))).name
        views.append(CameraView(camera=dataset.camera(split, i), image=dataset.image(split, i), name=name))
    return views


def _dataset_points(dataset) -> dict[str, PointCloud]:
    if getattr(dataset, "points3d", None) is None or len(dataset.points3d) == 0:
        return {}
    return {"SfM points": PointCloud(points=dataset.points3d, colors=dataset.points3d_rgb)}


# --- run directories ------------------------------------------------------------------------------------------
def _export_run(run_dir: Path) -> Path:
    """Export like ``recon export RUN_DIR --format glb`` (same code) to a fresh file; returns its path."""
    from recon.cli.export import ExportArgs, export_run
    from recon.export.service import default_output, fresh_path

    out = fresh_path(default_output(Path(run_dir) / "exports", "glb", "native", "original"))
    return export_run(ExportArgs(run_dir=str(run_dir), format="glb", output=str(out)))[0]


def serve_run(
    run_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    device: str = "auto",
    max_resolution: int = 1024,
) -> ViewerServer:
    """Serve a finished (or running) run from its newest checkpoint. Returns the started viewer."""
    from recon.scenes.base import ExportOptions
    from recon.train.run_io import load_run_dataset, open_run_config, resolve_device
    from recon.train.trainer import load_scene

    run, method, cfg = open_run_config(run_dir)
    if run.latest_checkpoint() is None:
        raise ReconError(f"{run_dir}: the run has no checkpoint yet (train it first)")
    torch_device = resolve_device(device)
    scene, step = load_scene(method, cfg, run, device=torch_device)
    views, geometry = [], {}
    background = (0.0, 0.0, 0.0) if getattr(cfg, "background", "dataset") == "black" else (1.0, 1.0, 1.0)
    try:
        dataset = load_run_dataset(cfg)
        views = training_camera_views(dataset)
        geometry.update(_dataset_points(dataset))
        if getattr(cfg, "background", "dataset") == "dataset":
            background = tuple(float(c) for c in dataset.background.clamp(0, 1))
    except ReconError as exc:  # the run still views without its dataset, only without frusta and points
        logger.warning("dataset of %s not loaded (%s): no training cameras shown", run_dir, exc)
    try:
        with torch.no_grad():
            geometry["native mesh"] = scene.export_mesh(ExportOptions())
    except (NotImplementedError, ReconError) as exc:
        logger.info("no native mesh to draw client-side: %s", exc)
    lock = threading.Lock()
    viewer = ViewerServer(
        scene_render_fn(scene, device=torch_device, backend=cfg.backend),
        host=host,
        port=port,
        training_cameras=views,
        geometry=geometry,
        lock=lock,
        on_export=lambda: _export_run(run.path),
        camera_path_dir=run.path / "camera_paths",
        view_state=ViewState(max_resolution=max_resolution, background=background),  # type: ignore[arg-type]
    )
    viewer.update_stats(_run_stats(run, step, scene.num_primitives()))
    return viewer


def _run_stats(run, step: int, num_primitives: int) -> TrainingStats:
    """The statistics of a run's last logged training step (loss, PSNR), at its checkpoint's step."""
    last: dict = {}
    with contextlib.suppress(ReconError, OSError, ValueError):
        last = next((m for m in reversed(run.read_metrics()) if "loss" in m), {})
    train_seconds = last.get("train_seconds")
    return TrainingStats(
        step=step,
        loss=last.get("loss"),
        psnr=last.get("psnr"),
        num_primitives=num_primitives or None,
        steps_per_second=last["step"] / train_seconds if train_seconds and "step" in last else None,
    )


# --- mesh files -----------------------------------------------------------------------------------------------
def mesh_render_fn(
    mesh: Mesh,
    *,
    texture: MeshTexture | None = None,
    device: torch.device | str = "cpu",
    backend: str = "auto",
) -> RenderFn:
    """The viewer's render callback for a plain mesh: the hard rasterizer of ``recon eval --mesh``
    (:class:`recon.scenes.mesh_scene.MeshRenderer`: one opaque layer, unlit colours or texture, antialiased), with
    depth and normals for the depth and normals modes."""
    from recon.scenes.base import RenderOptions
    from recon.scenes.mesh_scene import MeshRenderer

    renderer = MeshRenderer(mesh, texture=texture, device=device)

    def render(camera: Camera, state: ViewState) -> RenderOutput:
        options = RenderOptions(
            background=torch.tensor(state.background, dtype=torch.float32, device=renderer.device),
            backend=backend,  # type: ignore[arg-type]
            depth=True,
            normals=state.mode == "normals",
        )
        return renderer.render(camera, options)

    return render


def load_mesh_file(path: Path) -> Mesh:
    """Read a mesh file with trimesh into a :class:`recon.core.Mesh` (vertex or face colours kept; a texture is
    converted to vertex colours: :func:`load_textured_mesh_file` keeps it)."""
    return _load(path, keep_texture=False)[0]


def load_textured_mesh_file(path: Path) -> tuple[Mesh, MeshTexture | None]:
    """Read a mesh file with its UV texture (None when it has none; its colours are then in the Mesh)."""
    return _load(path, keep_texture=True)


def _load(path: Path, *, keep_texture: bool) -> tuple[Mesh, MeshTexture | None]:
    import numpy as np
    import trimesh

    try:
        loaded = trimesh.load_mesh(str(path), process=False)
    except Exception as exc:  # trimesh raises many types for unreadable files; report one clear error
        raise ReconError(f"{path}: not a readable mesh file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ReconError(f"{path}: expected a triangle mesh with at least one face")
    vertex_colors = face_colors = texture = None
    visual: Any = loaded.visual  # trimesh visuals are told apart by ``.kind`` (duck typing), not by class
    if getattr(visual, "kind", None) == "texture":
        texture = _texture(visual, len(loaded.vertices)) if keep_texture else None
        visual = visual.to_color() if texture is None else None
    if getattr(visual, "kind", None) == "vertex":
        vertex_colors = torch.from_numpy(np.asarray(visual.vertex_colors)[:, :3] / 255.0).float()
        if path.suffix.lower() in (
            ".glb",
            ".gltf",
        ):  # glTF COLOR_0 is linear; recon meshes carry sRGB colours
            vertex_colors = _linear_to_srgb(vertex_colors)
    elif getattr(visual, "kind", None) == "face":
        face_colors = torch.from_numpy(np.asarray(visual.face_colors)[:, :3] / 255.0).float()
    mesh = Mesh(
        vertices=torch.from_numpy(np.asarray(loaded.vertices, dtype=np.float32)),
        faces=torch.from_numpy(np.asarray(loaded.faces, dtype=np.int64)),
        vertex_colors=vertex_colors,
        face_colors=face_colors,
    )
    return mesh, texture


def _texture(visual, num_vertices: int) -> MeshTexture | None:
    """trimesh's UV texture as a MeshTexture (glTF orientation: v = 0 at the top row), or None without an image."""
    import numpy as np

    material = getattr(visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    uv = getattr(visual, "uv", None)
    if image is None or uv is None or len(uv) != num_vertices:
        return None
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # PNG/JPEG textures are sRGB
    uv_t = torch.from_numpy(np.asarray(uv, dtype=np.float32)).clone()
    uv_t[:, 1] = 1.0 - uv_t[:, 1]  # trimesh stores OpenGL-style v (0 at the bottom row)
    return MeshTexture(uv=uv_t, image=torch.from_numpy(pixels))


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function (IEC 61966-2-1) of linear colours in [0, 1]."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.pow(1.0 / 2.4) - 0.055)


def serve_mesh(
    path: Path, *, host: str = "127.0.0.1", port: int = 8080, device: str = "cpu", max_resolution: int = 1024
) -> ViewerServer:
    """Serve a mesh file: rendered on the server by the hard rasterizer (rgb, depth, normals and alpha modes) and
    also drawn client-side. Returns the started viewer."""
    from recon.train.run_io import resolve_device

    mesh, texture = load_textured_mesh_file(path)
    render = mesh_render_fn(mesh, texture=texture, device=resolve_device(device))
    return ViewerServer(render, host=host, port=port, geometry={path.name: mesh}, camera_path_dir=path.parent,
                        view_state=ViewState(max_resolution=max_resolution))  # fmt: skip


# --- live training ----------------------------------------------------------------------------------------------
def attach_training_viewer(trainer, *, host: str = "127.0.0.1", port: int = 8080) -> ViewerServer:
    """Serve a live view of a ``recon.train.trainer.Trainer`` while it trains (``recon train --viewer``).

    The viewer renders under ``trainer.lock`` (the trainer holds it while parameters change), so a view never sees
    half-updated parameters, and it joins the trainer's step hooks: ``before_step`` waits while the user has paused
    training (the trainer keeps that time out of its training-time budget) and ``after_step`` pushes statistics on
    logging steps only (no extra host syncs). With no browser connected a step costs a flag check more.

    Returns:
        The viewer; call ``close()`` when training ends.
    """
    cfg = trainer.cfg
    views: list[CameraView] = []
    geometry: dict[str, PointCloud] = {}
    try:
        views = training_camera_views(trainer.dataset)
        geometry = _dataset_points(trainer.dataset)
    except ReconError as exc:
        logger.warning("training cameras not shown: %s", exc)
    viewer = ViewerServer(
        scene_render_fn(trainer.scene, device=trainer.device, backend=cfg.backend),
        host=host,
        port=port,
        training_cameras=views,
        geometry=geometry,
        lock=trainer.lock,
        camera_path_dir=Path(trainer.run.path) / "camera_paths",
        on_export=lambda: _export_training_snapshot(trainer, trainer.lock),
        training=True,
    )
    trainer.hooks.append(_ViewerHook(viewer))
    return viewer


class _ViewerHook:
    """The live viewer's :class:`recon.train.trainer.TrainHook`: pause before a step, statistics after it."""

    def __init__(self, viewer: ViewerServer) -> None:
        self.viewer = viewer
        self.times: list[float] = []
        self.started = 0.0

    def before_step(self, trainer) -> None:
        self.viewer.wait_while_paused()
        self.started = time.perf_counter()

    def after_step(self, trainer, terms: dict, logged: bool) -> None:
        self.times.append(time.perf_counter() - self.started)
        del self.times[:-THROUGHPUT_WINDOW]
        if logged:
            self.viewer.update_stats(
                TrainingStats(
                    step=trainer.step,
                    max_steps=trainer.cfg.steps,
                    loss=float(terms["loss"]),  # host sync: logging steps only
                    psnr=float(terms["psnr"]),
                    num_primitives=trainer.scene.num_primitives() or None,
                    steps_per_second=len(self.times) / max(sum(self.times), 1e-9),
                )
            )


def _export_training_snapshot(trainer, lock) -> Path:
    """Export the live scene (no checkpoint round trip) under the training lock, as ``recon export --format glb``
    does, to a fresh file named after the step; returns its path."""
    from recon.export.service import DatasetFrame, ExportRequest, export_scene, fresh_path

    with lock:
        out = fresh_path(Path(trainer.run.path) / "exports" / f"native_original_step{trainer.step}.glb")
        request = ExportRequest(output=out, format="glb", backend=trainer.cfg.backend)
        return export_scene(trainer.scene, DatasetFrame.from_dataset(trainer.dataset), request)[0]


# --- command --------------------------------------------------------------------------------------------------
def _announce(viewer: ViewerServer, host: str) -> None:
    """Print the URL and how to reach it (recon.viewer itself warns when the host is not loopback)."""
    print(f"recon view: serving {viewer.url}", file=sys.stderr)
    if is_loopback(host):
        print(
            f"recon view: from another machine: ssh -L {viewer.port}:127.0.0.1:{viewer.port} THIS_HOST, "
            f"then open http://localhost:{viewer.port}",
            file=sys.stderr,
        )


def main(argv: list[str]) -> int:
    args = tyro.cli(ViewArgs, args=argv, prog="recon view")
    path = args.path
    if path.is_file():
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise ReconError(f"{path}: expected a run directory or a mesh file ({', '.join(MESH_SUFFIXES)})")
        viewer = serve_mesh(path, host=args.host, port=args.port, device=args.device,
                            max_resolution=args.max_resolution)  # fmt: skip
    elif path.is_dir():
        viewer = serve_run(
            path, host=args.host, port=args.port, device=args.device, max_resolution=args.max_resolution
        )
    else:
        raise ReconError(f"{path}: no such run directory or mesh file")
    _announce(viewer, args.host)
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else math.inf
    try:
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
    return 0
