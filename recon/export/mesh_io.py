"""Writing meshes as PLY, OBJ (+MTL+PNG) and GLB with normals and vertex colours, face colours or a texture.

Colour conventions (docs/export.md):

- ``Mesh`` colours are the values the representation renders, i.e. sRGB-encoded like the training photos.
- PLY and OBJ store them as they are (8-bit sRGB in PLY, floats in OBJ ``v x y z r g b``): MeshLab, Open3D,
  Blender's importers and trimesh display those values unchanged.
- glTF requires ``COLOR_0`` in LINEAR RGB, so GLB vertex colours go through the sRGB -> linear transfer function;
  baked textures are PNG images in sRGB (the glTF rule for ``baseColorTexture``).

Face colours have no place in OBJ or glTF and Open3D ignores them in PLY, so a face-coloured mesh (the triangle
soup) is written with its faces unshared: three own vertices per face carrying the face colour and the face
normal. Such a soup has no consistent orientation, so its GLB material is ``doubleSided``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Mesh, ReconError
from recon.export.gltf import GlbMesh, glb_bytes

MeshFormat = Literal["ply", "obj", "glb"]
FORMATS: tuple[str, ...] = ("ply", "obj", "glb")
SRGB_LINEAR_KNEE = 0.04045  # sRGB transfer function (IEC 61966-2-1): linear segment below this encoded value


@dataclass(frozen=True)
class Texture:
    """A baked colour texture of a mesh.

    Attributes:
        uv: (V, 2) per-vertex texture coordinates in [0, 1], origin at the TOP-left of ``image`` (glTF rule;
            OBJ files get ``1 - v``).
        image: (H, W, 3) sRGB colours in [0, 1].
    """

    uv: Float[Tensor, "V 2"]
    image: Float[Tensor, "H W 3"]

    def png_bytes(self) -> bytes:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(_to_u8(self.image)).save(buf, format="PNG")
        return buf.getvalue()


def srgb_to_linear(c: Tensor) -> Tensor:
    """sRGB-encoded values in [0, 1] -> linear RGB (IEC 61966-2-1 transfer function)."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= SRGB_LINEAR_KNEE, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_u8(colors: Tensor) -> np.ndarray:
    return (colors.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _rgba(colors: Tensor, alpha: Tensor | None = None) -> np.ndarray:
    rgb = _to_u8(colors)
    a = np.full((len(rgb), 1), 255, dtype=np.uint8) if alpha is None else _to_u8(alpha)[:, None]
    return np.concatenate([rgb, a], axis=1)


def _vertex_alpha(mesh: Mesh) -> Tensor | None:
    """``face_alpha`` carried to the vertices of each face (exact for unshared faces, where each vertex has one
    face; a shared vertex takes one of its faces' values)."""
    if mesh.face_alpha is None:
        return None
    alpha = mesh.face_alpha.new_ones(mesh.num_vertices)
    alpha[mesh.faces.long().reshape(-1)] = mesh.face_alpha.repeat_interleave(3, dim=0)
    return alpha


def unshare_faces(mesh: Mesh) -> Mesh:
    """Each face gets three own vertices; face colours (and alpha) become the colours of those vertices."""
    faces = mesh.faces.long()
    vertices = mesh.vertices[faces].reshape(-1, 3)
    new_faces = torch.arange(3 * len(faces), device=faces.device).reshape(-1, 3)
    colors = None
    if mesh.face_colors is not None:
        colors = mesh.face_colors.repeat_interleave(3, dim=0)
    elif mesh.vertex_colors is not None:
        colors = mesh.vertex_colors[faces].reshape(-1, 3)
    return Mesh(vertices=vertices, faces=new_faces, vertex_colors=colors, face_alpha=mesh.face_alpha)


def vertex_normals(mesh: Mesh) -> Float[Tensor, "V 3"]:
    """Area-weighted unit vertex normals (outward for counter-clockwise faces); +z for unused vertices."""
    v = mesh.vertices.detach().double()
    f = mesh.faces.long()
    tri = v[f]
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # |n| = 2 area
    acc = torch.zeros_like(v).index_add_(0, f.reshape(-1), face_n.repeat_interleave(3, dim=0))
    norm = acc.norm(dim=-1, keepdim=True)
    fallback = torch.tensor([0.0, 0.0, 1.0], dtype=v.dtype).expand_as(acc)
    return torch.where(norm > 0, acc / norm.clamp_min(1e-300), fallback).float()


def is_soup(mesh: Mesh) -> bool:
    """Face-coloured meshes are triangle soups: written unshared, double-sided."""
    return mesh.face_colors is not None and mesh.vertex_colors is None


def prepare(mesh: Mesh) -> tuple[Mesh, Float[Tensor, "V 3"]]:
    """The mesh as written (soups unshared) and its per-vertex normals (face normals for a soup)."""
    if is_soup(mesh):
        flat = unshare_faces(mesh)
        return flat, vertex_normals(flat)  # one face per vertex: its face normal (+z for degenerate faces)
    return mesh, vertex_normals(mesh)


def write_ply(mesh: Mesh, normals: Tensor, path: Path, *, alpha: bool = False) -> None:
    """Binary PLY: x y z nx ny nz red green blue [alpha] per vertex (sRGB, 8 bit), vertex_indices per face."""
    fields = [(c, "<f4") for c in ("x", "y", "z", "nx", "ny", "nz")]
    colored = mesh.vertex_colors is not None
    if colored:
        fields += [(c, "u1") for c in ("red", "green", "blue", *(("alpha",) if alpha else ()))]
    vert = np.zeros(mesh.num_vertices, dtype=np.dtype(fields))
    xyz = mesh.vertices.detach().float().cpu().numpy()
    nrm = normals.detach().float().cpu().numpy()
    for k, c in enumerate(("x", "y", "z")):
        vert[c], vert[f"n{c}"] = xyz[:, k], nrm[:, k]
    if mesh.vertex_colors is not None:
        rgba = _rgba(mesh.vertex_colors, _vertex_alpha(mesh) if alpha else None)
        for k, c in enumerate(("red", "green", "blue", *(("alpha",) if alpha else ()))):
            vert[c] = rgba[:, k]
    face = np.zeros(mesh.num_faces, dtype=np.dtype([("count", "u1"), ("vertex_indices", "<i4", (3,))]))
    face["count"] = 3
    face["vertex_indices"] = mesh.faces.detach().cpu().numpy().astype(np.int32)
    header = ["ply", "format binary_little_endian 1.0", "comment recon export: colours sRGB",
              f"element vertex {len(vert)}", *[f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in fields],
              f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]  # fmt: skip
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vert.tobytes())
        f.write(face.tobytes())


def write_obj(mesh: Mesh, normals: Tensor, path: Path, texture: Texture | None = None) -> list[Path]:
    """OBJ with ``v x y z [r g b]`` (sRGB floats), ``vn``, ``vt`` and an MTL + PNG beside it when textured."""
    xyz = mesh.vertices.detach().double().cpu().numpy()
    lines = ["# recon export: vertex colours sRGB"]
    written = [path]
    if texture is not None:
        mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
        png.write_bytes(texture.png_bytes())
        # illum 0: colour on, no lighting (the baked texture already holds the appearance)
        mtl.write_text(f"newmtl baked\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 0\nmap_Kd {png.name}\n")
        lines += [f"mtllib {mtl.name}", "usemtl baked"]
        written += [mtl, png]
    if mesh.vertex_colors is not None and texture is None:
        rgb = mesh.vertex_colors.detach().double().clamp(0, 1).cpu().numpy()
        lines += [
            f"v {p[0]:.7g} {p[1]:.7g} {p[2]:.7g} {c[0]:.6g} {c[1]:.6g} {c[2]:.6g}" for p, c in zip(xyz, rgb)
        ]
    else:
        lines += [f"v {p[0]:.7g} {p[1]:.7g} {p[2]:.7g}" for p in xyz]
    lines += [f"vn {n[0]:.6g} {n[1]:.6g} {n[2]:.6g}" for n in normals.detach().double().cpu().numpy()]
    faces = mesh.faces.detach().long().cpu().numpy() + 1
    if texture is not None:
        uv = texture.uv.detach().double().cpu().numpy()
        lines += [f"vt {u:.7g} {1.0 - v:.7g}" for u, v in uv]  # OBJ's v axis points up the image
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in faces]
    else:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return written


def write_glb(
    mesh: Mesh, normals: Tensor, path: Path, *, texture: Texture | None, double_sided: bool
) -> None:
    colors = None
    if mesh.vertex_colors is not None and texture is None:
        colors = srgb_to_linear(mesh.vertex_colors.detach().double()).float().cpu().numpy()
    glb = GlbMesh(
        positions=mesh.vertices.detach().float().cpu().numpy(),
        normals=normals.detach().float().cpu().numpy(),
        indices=mesh.faces.detach().cpu().numpy().astype(np.uint32),
        colors_linear=colors,
        uv=None if texture is None else texture.uv.detach().float().cpu().numpy(),
        png=None if texture is None else texture.png_bytes(),
        double_sided=double_sided,
    )
    path.write_bytes(glb_bytes(glb))


def write_mesh(
    mesh: Mesh, path: str | Path, *, face_alpha: bool = False, texture: Texture | None = None
) -> list[Path]:
    """Write ``mesh`` as PLY/OBJ/GLB (format from the suffix) with normals; returns the written files.

    Args:
        mesh: the mesh (vertex colours, face colours or none). Face-coloured meshes are written unshared (see the
            module docstring); their GLB material is double-sided.
        path: output file ending in .ply, .obj or .glb.
        face_alpha: PLY only: write ``mesh.face_alpha`` as the vertex alpha (else no alpha property).
        texture: a baked texture whose ``uv`` rows match ``mesh.vertices`` (OBJ and GLB only).

    Returns:
        The files written: the mesh, plus the .mtl and .png beside a textured OBJ.

    Raises:
        ReconError: unsupported suffix, or a texture for PLY.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ReconError(f"{path}: unsupported mesh format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if texture is not None and fmt == "ply":
        raise ReconError(f"{path}: a baked texture needs --format glb or obj (PLY has no texture convention)")
    if mesh.num_faces == 0:
        raise ReconError(f"{path}: the mesh to write has no faces")
    soup = is_soup(mesh)
    mesh, normals = prepare(mesh)
    if texture is not None and texture.uv.shape[0] != mesh.num_vertices:
        raise ValueError(
            f"texture.uv must have shape ({mesh.num_vertices}, 2), got {tuple(texture.uv.shape)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ply":
        write_ply(mesh, normals, path, alpha=face_alpha and mesh.face_alpha is not None)
        return [path]
    if fmt == "obj":
        return write_obj(mesh, normals, path, texture)
    write_glb(mesh, normals, path, texture=texture, double_sided=soup)
    return [path]
