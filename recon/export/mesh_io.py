"""Writing meshes with trimesh: PLY, OBJ and GLB with vertex or face colours.

PLY keeps face colours as face properties. OBJ and GLB have no per-face colour, so a face-coloured mesh is
written with its faces unshared (three own vertices per face, each carrying the face colour); the file then has
exactly ``3 F`` vertices, which every reader loads back unchanged.
"""

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from recon.core import Mesh, ReconError

MeshFormat = Literal["ply", "obj", "glb"]
FORMATS: tuple[str, ...] = ("ply", "obj", "glb")


def _rgba(colors: torch.Tensor, alpha: torch.Tensor | None = None) -> np.ndarray:
    rgb = (colors.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    a = np.full((len(rgb), 1), 255, dtype=np.uint8)
    if alpha is not None:
        a = (alpha.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()[:, None]
    return np.concatenate([rgb, a], axis=1)


def unshare_faces(mesh: Mesh) -> Mesh:
    """Each face gets three own vertices; face colours become the colours of those vertices."""
    faces = mesh.faces.long()
    vertices = mesh.vertices[faces].reshape(-1, 3)
    new_faces = torch.arange(3 * len(faces), device=faces.device).reshape(-1, 3)
    colors = None
    if mesh.face_colors is not None:
        colors = mesh.face_colors.repeat_interleave(3, dim=0)
    elif mesh.vertex_colors is not None:
        colors = mesh.vertex_colors[faces].reshape(-1, 3)
    return Mesh(vertices=vertices, faces=new_faces, vertex_colors=colors)


def to_trimesh(mesh: Mesh, *, face_alpha: bool = False):
    """A ``trimesh.Trimesh`` (no processing: vertices and faces are kept exactly)."""
    import trimesh

    kwargs = {}
    if mesh.vertex_colors is not None:
        kwargs["vertex_colors"] = _rgba(mesh.vertex_colors)
    elif mesh.face_colors is not None:
        kwargs["face_colors"] = _rgba(mesh.face_colors, mesh.face_alpha if face_alpha else None)
    return trimesh.Trimesh(
        vertices=mesh.vertices.detach().double().cpu().numpy(),
        faces=mesh.faces.detach().long().cpu().numpy(),
        process=False,
        **kwargs,
    )


def write_mesh(mesh: Mesh, path: str | Path, *, face_alpha: bool = False) -> Path:
    """Write ``mesh`` as PLY/OBJ/GLB (format from the suffix) and return the path.

    Args:
        mesh: the mesh (vertex colours, face colours or none).
        path: output file ending in .ply, .obj or .glb.
        face_alpha: PLY only: write ``mesh.face_alpha`` as the alpha of the face colours (else 255).

    Raises:
        ReconError: unsupported suffix.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ReconError(f"{path}: unsupported mesh format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "ply" and mesh.face_colors is not None and mesh.vertex_colors is None:
        mesh = unshare_faces(mesh)
    tm = to_trimesh(mesh, face_alpha=face_alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "obj":
        data = tm.export(file_type="obj", include_color=True, include_normals=False, include_texture=False)
        path.write_text(data if isinstance(data, str) else data.decode())
    else:
        tm.export(str(path), file_type=fmt)
    return path
