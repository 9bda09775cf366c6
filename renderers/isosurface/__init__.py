"""Iso-surface extraction: marching cubes on dense grids (PyTorch reference and Warp kernels) and
the differentiable-vertex identity of MeshSDF / DeepMesh."""

from recon.renderers.isosurface.api import grid_points, isosurface_vertices, marching_cubes, sample_grid

__all__ = ["grid_points", "isosurface_vertices", "marching_cubes", "sample_grid"]
from recon.renderers.isosurface import flexicubes_api  # noqa: E402
from recon.renderers.isosurface.flexicubes_api import *  # noqa: E402, F403  (FlexiCubes, issue 13)

__all__ += flexicubes_api.__all__
