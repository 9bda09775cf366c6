"""Background sphere and ground plane of the blocks world with their UVs and the ground pose (spec 1).

- background: icosphere of level 2, radius ``z_far``, faces flipped inward, plain spherical UVs (as the reference;
  its texture is not padded, so no seam fix);
- ground: the square ``[−z_far, z_far]²`` in the x-z plane split 3 times, UVs ``((x, z)/z_far + 1)/2``; posed by a
  learnable rot6d rotation and translation. The exported reduced ground keeps the UVs of the full square on
  vertices scaled to ``±extent``.
"""

from dataclasses import dataclass

from jaxtyping import Float, Int
from torch import Tensor

from recon.scenes.superquadrics.geometry import rot6d_to_matrix
from recon.scenes.superquadrics.tessellation import background_sphere, ground_square
from recon.scenes.superquadrics.uv import spherical_uv

__all__ = ["UVMesh", "background_mesh", "ground_mesh", "posed_ground_vertices"]


@dataclass(frozen=True)
class UVMesh:
    """A mesh with one UV per vertex (float64 positions and UVs, OBJ UV convention).

    Attributes:
        vertices: (V, 3); faces: (F, 3); uv: (V, 2).
    """

    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    uv: Float[Tensor, "V 2"]


def background_mesh(z_far: float = 10.0, level: int = 2) -> UVMesh:
    """The inward background sphere with spherical UVs (162 vertices / 320 faces at level 2)."""
    sphere = background_sphere(z_far, level)
    return UVMesh(sphere.vertices, sphere.faces, spherical_uv(sphere.vertices))


def ground_mesh(z_far: float = 10.0, subdivisions: int = 3, *, extent: float | None = None) -> UVMesh:
    """The unposed ground square (y = 0, normal +y) with UVs ``((x, z)/z_far + 1)/2`` of the full square.

    Args:
        z_far: half-extent of the trained ground (sets the UVs).
        subdivisions: 1 -> 4 splits (3: 81 vertices / 128 faces).
        extent: half-extent of the returned vertices (the exported reduced ground uses 3); None = ``z_far``.
    """
    square = ground_square(z_far, subdivisions)
    uv = (square.vertices[:, [0, 2]] / z_far + 1.0) / 2.0
    vertices = square.vertices
    if extent is not None:
        vertices = vertices * vertices.new_tensor([extent / z_far, 1.0, extent / z_far])
    return UVMesh(vertices, square.faces, uv)


def posed_ground_vertices(
    vertices: Float[Tensor, "V 3"], rot6d: Float[Tensor, "6"], translation: Float[Tensor, "3"]
) -> Float[Tensor, "V 3"]:
    """Ground vertices in the canonical frame: ``R(rot6d) x + t``. Differentiable w.r.t. ``rot6d``, ``translation``."""
    R = rot6d_to_matrix(rot6d)
    return vertices.to(R) @ R.transpose(-1, -2) + translation
