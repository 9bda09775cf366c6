"""Triangle meshes as plain tensors (I/O lives in recon.export and recon.datasets)."""

from dataclasses import dataclass, replace

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
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

    def without_small_components(self, min_fraction: float) -> "Mesh":
        """The mesh without the connected components (faces sharing a vertex) that have fewer faces than
        ``min_fraction`` of the largest one (floaters), and without the vertices no kept face uses; colours and
        alphas follow their vertices and faces. ``min_fraction <= 0`` keeps everything."""
        keep = large_components(self.faces, self.num_vertices, min_fraction=min_fraction)
        if bool(keep.all()):
            return self
        faces = self.faces[keep]
        used = torch.zeros(self.num_vertices, dtype=torch.bool, device=faces.device)
        used[faces.reshape(-1)] = True
        new_index = torch.cumsum(used.long(), 0) - 1
        return Mesh(
            vertices=self.vertices[used], faces=new_index[faces],
            vertex_colors=None if self.vertex_colors is None else self.vertex_colors[used],
            face_colors=None if self.face_colors is None else self.face_colors[keep],
            face_alpha=None if self.face_alpha is None else self.face_alpha[keep],
        )  # fmt: skip


def large_components(
    faces: Int[Tensor, "F 3"], num_vertices: int, *, min_fraction: float
) -> Bool[Tensor, " F"]:
    """(F,) bool: the face belongs to a component with at least ``min_fraction`` of the largest one's faces."""
    if faces.shape[0] == 0 or min_fraction <= 0:
        return torch.ones(faces.shape[0], dtype=torch.bool, device=faces.device)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = faces.detach().cpu().numpy()
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[f[:, 0]]
    sizes = np.bincount(face_label)
    keep = sizes[face_label] >= min_fraction * sizes.max()
    return torch.from_numpy(keep).to(faces.device)
