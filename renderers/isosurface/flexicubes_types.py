"""Records of the FlexiCubes extractor: the sparse voxel grid and the extraction output."""

from dataclasses import dataclass

from jaxtyping import Float, Int
from torch import Tensor

from recon.core.mesh import Mesh

__all__ = ["FlexiCubesOutput", "SparseVoxelGrid"]


@dataclass(frozen=True)
class SparseVoxelGrid:
    """Active voxels of a ``resolution^3`` grid and their unique corners (SparseFlex, spec section 2).

    Voxel ``(i, j, k)`` spans corners ``(i, j, k) + CORNER_OFFSETS[c]`` with the corner order ``(0,0,0), (1,0,0),
    (0,1,0), (1,1,0), (0,0,1), (1,0,1), (0,1,1), (1,1,1)`` (``c = dx + 2 dy + 4 dz``). Voxels and corners are sorted
    by the linear key ``(i (R+1) + j) (R+1) + k``; per-voxel parameters follow the row order of ``voxels`` and
    per-corner parameters the row order of ``corners``.

    Attributes:
        resolution: ``R``, voxels per axis of the full grid.
        voxels: (Nv, 3) int64 voxel coordinates in ``[0, R)``, sorted by key, unique.
        corners: (Nc, 3) int64 corner coordinates in ``[0, R]``, sorted by key, unique.
        voxel_corners: (Nv, 8) int64; ``voxel_corners[v, c]`` is the row in ``corners`` of corner ``c`` of voxel ``v``.
    """

    resolution: int
    voxels: Int[Tensor, "Nv 3"]
    corners: Int[Tensor, "Nc 3"]
    voxel_corners: Int[Tensor, "Nv 8"]

    @property
    def num_voxels(self) -> int:
        return self.voxels.shape[0]

    @property
    def num_corners(self) -> int:
        return self.corners.shape[0]


@dataclass(frozen=True)
class FlexiCubesOutput:
    """A FlexiCubes triangle mesh with what the regularisers and colour fields need.

    The first ``num_dual_vertices`` rows of ``vertices`` are the dual vertices, ordered by voxel row then by the
    group index of ``DMC_TABLE``; in training mode the quad centres follow, one per quad, in ``quad_edges`` order.
    Faces are counter-clockwise seen from outside (``s > 0``), as in ``recon.core.Mesh``.

    Attributes:
        vertices: (V, 3) positions in the box.
        faces: (F, 3) int64 vertex indices; quad ``q`` owns faces ``2q, 2q+1`` (inference) or ``4q .. 4q+3``
            (training).
        l_dev: (Vd,) per dual vertex, the mean absolute deviation of ``|u0_e - v_d|`` over its edges (paper Eq. 8).
        vertex_voxel: (Vd,) int64 row of the voxel (sparse: of ``grid.voxels``; dense: linear cube index
            ``(i R + j) R + k``) owning each dual vertex.
        quad_edges: (Q,) int64 key ``3 * corner_key + axis`` of the grid edge of each quad (``corner_key`` of the
            edge's lower corner, axis 0/1/2 = x/y/z), sorted.
    """

    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    l_dev: Float[Tensor, " Vd"]
    vertex_voxel: Int[Tensor, " Vd"]
    quad_edges: Int[Tensor, " Q"]

    @property
    def num_dual_vertices(self) -> int:
        return self.l_dev.shape[0]

    def mesh(self) -> Mesh:
        """The triangle mesh (vertices keep their gradients)."""
        return Mesh(vertices=self.vertices, faces=self.faces)
