"""Iso-surface extraction: marching cubes on dense grids (PyTorch reference and Warp kernels) and
the differentiable-vertex identity of MeshSDF / DeepMesh."""

from recon.renderers.isosurface.api import grid_points, isosurface_vertices, marching_cubes, sample_grid

__all__ = ["grid_points", "isosurface_vertices", "marching_cubes", "sample_grid"]
