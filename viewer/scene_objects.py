"""Client-side scene objects: native geometry (meshes, triangle soups, point clouds) and frustum thumbnails."""

import logging

import numpy as np
import torch
import viser

from recon.core import Mesh
from recon.viewer.state import Geometry, PointCloud

logger = logging.getLogger("recon.viewer")

THUMBNAIL_SIZE = 96  # longest side of a frustum thumbnail, in pixels
MAX_CLIENT_FACES = 2_000_000  # larger meshes are not sent to the browser (too slow to transfer and draw)
POINT_SIZE_FRACTION = 1 / 500  # default point size relative to the point cloud's extent
MESH_GREY = (180, 180, 180)  # colour of meshes without colours


def thumbnail(image: torch.Tensor) -> np.ndarray:
    """A uint8 copy of an (H, W, 3) image in [0, 1], subsampled so its longest side is <= ``THUMBNAIL_SIZE``."""
    img = image.detach().to("cpu", torch.float32).clamp(0, 1)
    h, w = img.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / THUMBNAIL_SIZE)))
    return (img[::step, ::step].numpy() * 255 + 0.5).astype(np.uint8)


def _uint8(colors: torch.Tensor) -> np.ndarray:
    return (colors.detach().to("cpu", torch.float32).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def add_geometry_node(
    scene: viser.SceneApi, node: str, geometry: Geometry, *, visible: bool
) -> viser.SceneNodeHandle | None:
    """Draw a mesh or point cloud in the browser under ``node``; None if it is too large to send.

    Raises:
        TypeError: ``geometry`` is neither a :class:`recon.core.Mesh` nor a :class:`PointCloud`.
    """
    if isinstance(geometry, PointCloud):
        points = geometry.points.detach().to("cpu", torch.float32).numpy()
        colors = _uint8(geometry.colors) if geometry.colors is not None else (128, 128, 128)
        extent = float(np.ptp(points, axis=0).max()) if len(points) else 1.0
        size = geometry.point_size if geometry.point_size is not None else extent * POINT_SIZE_FRACTION
        return scene.add_point_cloud(node, points, colors, point_size=size, visible=visible)
    if isinstance(geometry, Mesh):
        if geometry.num_faces > MAX_CLIENT_FACES:
            logger.warning(
                "not drawing %s client-side: %d faces > %d", node, geometry.num_faces, MAX_CLIENT_FACES
            )
            return None
        return _add_mesh(scene, node, geometry, visible=visible)
    raise TypeError(
        f"geometry {node!r} must be a recon.core.Mesh or a PointCloud, got {type(geometry).__name__}"
    )


def _add_mesh(scene: viser.SceneApi, node: str, mesh: Mesh, *, visible: bool) -> viser.SceneNodeHandle:
    import trimesh  # viser's own dependency; only needed for coloured meshes

    vertices = mesh.vertices.detach().to("cpu", torch.float32).numpy()
    faces = mesh.faces.detach().to("cpu", torch.int64).numpy()
    if mesh.vertex_colors is None and mesh.face_colors is None:
        return scene.add_mesh_simple(
            node,
            vertices,
            faces,
            color=MESH_GREY,
            side="double",
            visible=visible,
            cast_shadow=False,
            receive_shadow=False,
        )
    if mesh.vertex_colors is not None:
        colors = _uint8(mesh.vertex_colors)
    else:  # per-face colours: give every face its own three vertices (a triangle soup already has them)
        vertices, faces = vertices[faces].reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3)
        colors = np.repeat(_uint8(mesh.face_colors), 3, axis=0)  # type: ignore[arg-type]
    rgba = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
    tm = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=rgba, process=False)
    # No shadows: they cost a shadow-map pass per light for little insight into a reconstruction.
    return scene.add_mesh_trimesh(node, tm, visible=visible, cast_shadow=False, receive_shadow=False)
