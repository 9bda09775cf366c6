"""The browser viewer (viser): server-side renders through a render callback, plus client-side geometry.

Imports only ``recon.core`` and viser; hosts pass a :data:`RenderFn` (see :mod:`recon.viewer.server`).
"""

from recon.viewer.camera import camera_to_viser, render_size, viser_to_camera
from recon.viewer.camera_path import Keyframe, interpolate_camera_path, read_camera_path, write_camera_path
from recon.viewer.colormaps import apply_colormap, output_to_image
from recon.viewer.server import ViewerServer, is_loopback
from recon.viewer.state import (
    CameraView,
    Geometry,
    PointCloud,
    RenderFn,
    RenderMode,
    TrainingStats,
    ViewState,
)

__all__ = [
    "CameraView",
    "Geometry",
    "Keyframe",
    "PointCloud",
    "RenderFn",
    "RenderMode",
    "TrainingStats",
    "ViewState",
    "ViewerServer",
    "apply_colormap",
    "camera_to_viser",
    "interpolate_camera_path",
    "is_loopback",
    "output_to_image",
    "read_camera_path",
    "render_size",
    "viser_to_camera",
    "write_camera_path",
]
