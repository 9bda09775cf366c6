"""Mesh export: triangle soups, the triangle-splat PLY, TSDF-fused surfaces; PLY/OBJ/GLB through trimesh."""

from recon.export.mesh_io import FORMATS, to_trimesh, unshare_faces, write_mesh
from recon.export.surface import fuse_depth_maps, fuse_surface

__all__ = ["FORMATS", "fuse_depth_maps", "fuse_surface", "to_trimesh", "unshare_faces", "write_mesh"]
