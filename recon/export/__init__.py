"""Exports: meshes (PLY/OBJ/GLB, optionally textured), splat files, point clouds and cameras (docs/export.md).

Every caller goes through :func:`export_scene` (``recon export``, the viewer's export button, ``recon demo``).
"""

from recon.export.mesh_io import FORMATS, Texture, srgb_to_linear, unshare_faces, write_mesh
from recon.export.service import DatasetFrame, ExportRequest, export_scene
from recon.export.surface import fuse_depth_maps, fuse_surface, fuse_surface_from_cameras

__all__ = [
    "FORMATS",
    "DatasetFrame",
    "ExportRequest",
    "Texture",
    "export_scene",
    "fuse_depth_maps",
    "fuse_surface",
    "fuse_surface_from_cameras",
    "srgb_to_linear",
    "unshare_faces",
    "write_mesh",
]
