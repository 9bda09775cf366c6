"""Triangle meshes as plain tensors (I/O lives in recon.export and recon.datasets)."""

from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.transforms import apply_T


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices, counter-clockwise seen from outside (outward normals by the right-hand rule).
        vertex_colors: (V, 3) sRGB-encoded colours in [0, 1] (as renders show them; glTF export converts to
            linear, docs/conventions.md), or None.
        face_colors: (F, 3) sRGB-encoded colours in [0, 1], or None.
        face_alpha: (F,) opacity in [0, 1], or None.
    """

    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    vertex_colors: Float[Tensor, "V 3"] | None = None
    face_colors: Float[Tensor, "F 3"] | None = None
    face_alpha: Float[Tensor, " F"] | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[-1] != 3:
            raise ValueError(f"Mesh.vertices must have shape (V, 3), got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[-1] != 3:
            raise ValueError(f"Mesh.faces must have shape (F, 3), got {tuple(self.faces.shape)}")
        if self.vertex_colors is not None and self.vertex_colors.shape != self.vertices.shape:
            raise ValueError(f"Mesh.vertex_colors must have shape {tuple(self.vertices.shape)}")
        if self.face_colors is not None and self.face_colors.shape != self.faces.shape:
            raise ValueError(f"Mesh.face_colors must have shape {tuple(self.faces.shape)}")

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def face_normals(self) -> Float[Tensor, "F 3"]:
        """Unit face normals (right-hand rule over the vertex order)."""
        v = self.vertices[self.faces]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)

    def face_areas(self) -> Float[Tensor, " F"]:
        v = self.vertices[self.faces]
        return 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)

    def bounds(self) -> Float[Tensor, "2 3"]:
        return torch.stack([self.vertices.min(0).values, self.vertices.max(0).values])

    def transformed(self, S: Float[Tensor, "4 4"]) -> "Mesh":
        """The mesh under an affine map (e.g. the inverse of a dataset's normalising similarity)."""
        return replace(self, vertices=apply_T(S.to(self.vertices), self.vertices))
