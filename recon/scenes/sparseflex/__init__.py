"""SparseFlex scenes (spec sparseflex.md): a sparse FlexiCubes voxel band, its colour field, hull initialisation
and the rule-based band edits (dilate/prune, subdivide) that the training strategy applies."""

from recon.scenes.sparseflex.color import ColorField
from recon.scenes.sparseflex.grid_ops import GridRemap, band_voxels, remap, subdivide, subdivide_deform
from recon.scenes.sparseflex.hull import hull_corner_sdf
from recon.scenes.sparseflex.scene import CORNER_GROUPS, VOXEL_GROUPS, SparseFlexScene, SparseFlexSceneConfig

__all__ = [
    "CORNER_GROUPS",
    "VOXEL_GROUPS",
    "ColorField",
    "GridRemap",
    "SparseFlexScene",
    "SparseFlexSceneConfig",
    "band_voxels",
    "hull_corner_sdf",
    "remap",
    "subdivide",
    "subdivide_deform",
]
