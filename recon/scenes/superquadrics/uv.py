"""Texture atlas of the blocks (spec superquadrics.md 4): spherical UVs, seam and pole fixes, circular padding.

UV convention (OBJ / PyTorch3D ``TexturesUV``): ``u`` runs along texture columns, ``v = 0`` is the bottom row of
the image and ``v = 1`` the top row (row 0). Textures are stored ``(..., H, W, 3)`` with W along u.

The position mesh and the UV mesh differ: the seam and pole fixes duplicate UV vertices. An :class:`UVAtlas`
keeps both index arrays, ``faces`` (positions) and ``faces_uv`` (UV vertices), and the map ``vertex_index`` from
each UV vertex to its position vertex, so exporters can build one-UV-per-vertex meshes.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from recon.scenes.superquadrics.tessellation import BaseMesh

__all__ = [
    "UVAtlas",
    "build_atlas",
    "decimate_texture",
    "fix_poles",
    "fix_seam",
    "pad_texture",
    "spherical_uv",
    "unpad_texture",
]

UV_POLE_CLAMP = 1e-7  # keeps acos away from ±1 so that v stays finite-gradient at the poles (reference eps)
SEAM_SPAN = 0.5  # a face whose u-span exceeds half the atlas wraps around the seam
POLE_V_LOW, POLE_V_HIGH = 0.01, 0.99  # faces touching these v get their pole vertex split per face (spec 4)
SIDE_EPS = 1e-8  # moves u = 0.5 off the sign boundary when deciding a vertex's side of the seam


def spherical_uv(points: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 2"]:
    """Spherical map: ``u = (atan2(x, z) + π)/2π``, ``v = acos(−y/|p|)/π`` (v = 1 at the north pole +y).

    Example:
        >>> spherical_uv(torch.tensor([0.0, 0.0, 1.0])).tolist()
        [0.5, 0.5]
    """
    radius = points.norm(dim=-1).clamp_min(UV_POLE_CLAMP)
    y = (points[..., 1] / radius).clamp(-1 + UV_POLE_CLAMP, 1 - UV_POLE_CLAMP)
    u = (torch.atan2(points[..., 0], points[..., 2]) + math.pi) / (2 * math.pi)
    v = torch.acos(-y) / math.pi
    return torch.stack([u, v], dim=-1)


def _face_u_span(uv: Tensor, faces_uv: Tensor) -> Tensor:
    u = uv[faces_uv][..., 0]
    return u.amax(-1) - u.amin(-1)


def fix_seam(
    uv: Float[Tensor, "U 2"], faces_uv: Int[Tensor, "F 3"], vertex_index: Int[Tensor, " U"]
) -> tuple[Float[Tensor, "U2 2"], Int[Tensor, "F 3"], Int[Tensor, " U2"]]:
    """Duplicate the odd vertex of every face spanning more than 0.5 in u, shifted by ±1 to its two partners.

    Returns the extended ``(uv, faces_uv, vertex_index)``; duplicated UVs may lie slightly outside [0, 1].
    """
    bad = _face_u_span(uv, faces_uv) > SEAM_SPAN
    corner_uv = uv[faces_uv[bad]]  # (B, 3, 2)
    side = torch.sign(corner_uv[..., 0] - 0.5 + SIDE_EPS)  # +1 right of the middle, -1 left
    majority = side.sum(-1, keepdim=True).sign()  # two of three corners agree
    odd = side != majority
    shifted_u = corner_uv[..., 0] + majority * odd  # move the odd corner by ±1 next to the others
    new_uv = torch.stack([shifted_u[odd], corner_uv[..., 1][odd]], dim=-1)
    bad_faces = faces_uv[bad].clone()
    new_ids = uv.shape[0] + torch.arange(int(odd.sum()), device=uv.device)
    new_vertex_index = vertex_index[bad_faces[odd]]
    bad_faces[odd] = new_ids
    faces_uv = faces_uv.clone()
    faces_uv[bad] = bad_faces
    return torch.cat([uv, new_uv]), faces_uv, torch.cat([vertex_index, new_vertex_index])


def fix_poles(
    uv: Float[Tensor, "U 2"], faces_uv: Int[Tensor, "F 3"], vertex_index: Int[Tensor, " U"]
) -> tuple[Float[Tensor, "U2 2"], Int[Tensor, "F 3"], Int[Tensor, " U2"]]:
    """Split the pole vertex per face (faces touching v > 0.99 or v < 0.01), u = mean u of the two others.

    Each pole face has exactly one pole corner on the tessellations of this package (icosphere, UV sphere).
    """
    corner_v = uv[faces_uv][..., 1]
    at_pole = (corner_v > POLE_V_HIGH) | (corner_v < POLE_V_LOW)
    bad = at_pole.any(-1)
    corner_uv = uv[faces_uv[bad]]
    pole = at_pole[bad]
    assert bool((pole.sum(-1) == 1).all()), "a face with two pole corners: tessellation too coarse"
    mean_u = (corner_uv[..., 0] * (~pole)).sum(-1) / 2.0
    new_uv = torch.stack([mean_u, corner_uv[..., 1][pole]], dim=-1)
    bad_faces = faces_uv[bad].clone()
    new_ids = uv.shape[0] + torch.arange(int(pole.sum()), device=uv.device)
    new_vertex_index = vertex_index[bad_faces[pole]]
    bad_faces[pole] = new_ids
    faces_uv = faces_uv.clone()
    faces_uv[bad] = bad_faces
    return torch.cat([uv, new_uv]), faces_uv, torch.cat([vertex_index, new_vertex_index])


@dataclass(frozen=True)
class UVAtlas:
    """Shared UV layout of every block.

    Attributes:
        uv: (U, 2) UV vertices in the unpadded texture (u may leave [0, 1] slightly at the seam duplicates).
        faces_uv: (F, 3) UV-vertex indices per face; ``faces_uv[f, k]`` is the UV of corner k of position face f.
        vertex_index: (U,) position vertex of each UV vertex (``uv[i]`` belongs to ``vertices[vertex_index[i]]``).
        faces: (F, 3) position-vertex indices (the base mesh faces).
        texture_size: T, the unpadded texture width (and height).
        pad_left: texels of circular padding on the left (``⌈−u_min·T⌉``, ≥ 0).
        pad_right: texels on the right (``⌈(u_max − 1)·T⌉``, ≥ 0).
    """

    uv: Float[Tensor, "U 2"]
    faces_uv: Int[Tensor, "F 3"]
    vertex_index: Int[Tensor, " U"]
    faces: Int[Tensor, "F 3"]
    texture_size: int
    pad_left: int
    pad_right: int

    def padded_uv(self) -> Float[Tensor, "U 2"]:
        """UVs in the padded texture: ``u' = (u·T + p_left)/(T + p_left + p_right)``, all in [0, 1]."""
        t = self.texture_size
        u = (self.uv[:, 0] * t + self.pad_left) / (t + self.pad_left + self.pad_right)
        return torch.stack([u, self.uv[:, 1]], dim=-1)


def build_atlas(base: BaseMesh, *, texture_size: int = 256, fix: bool = True) -> UVAtlas:
    """Spherical UV atlas of a unit base mesh with seam and pole fixes and its padding (spec 4).

    Args:
        base: the unit base tessellation (icosphere or UV sphere), V vertices, F faces.
        texture_size: T, the texture width in texels (sets the padding).
        fix: apply the seam and pole fixes (False gives the plain spherical map, used for the background).

    Returns:
        The atlas; without fixes ``faces_uv == faces`` and ``vertex_index`` is the identity.
    """
    uv = spherical_uv(base.vertices.to(torch.float64))
    faces = base.faces
    vertex_index = torch.arange(uv.shape[0])
    faces_uv = faces.clone()
    if fix:
        uv, faces_uv, vertex_index = fix_seam(uv, faces_uv, vertex_index)
        uv, faces_uv, vertex_index = fix_poles(uv, faces_uv, vertex_index)
    # padding from the UVs faces actually use (a pole vertex replaced everywhere keeps its unused UV)
    used = uv[faces_uv.unique()]
    pad_left = max(0, math.ceil(-float(used[:, 0].min()) * texture_size - 1e-9))
    pad_right = max(0, math.ceil((float(used[:, 0].max()) - 1.0) * texture_size - 1e-9))
    return UVAtlas(uv, faces_uv, vertex_index, faces, texture_size, pad_left, pad_right)


def pad_texture(
    texture: Float[Tensor, "*batch H W D"], pad_left: int, pad_right: int
) -> Float[Tensor, "*batch H W2 D"]:
    """Circular padding along u (texture columns): ``out[..., k, :] = texture[..., (k − p_left) mod W, :]``.

    Differentiable w.r.t. ``texture``.
    """
    if pad_left > texture.shape[-2] or pad_right > texture.shape[-2]:
        raise ValueError(f"padding ({pad_left}, {pad_right}) exceeds the texture width {texture.shape[-2]}")
    left = texture[..., texture.shape[-2] - pad_left :, :]
    right = texture[..., :pad_right, :]
    return torch.cat([left, texture, right], dim=-2)


def unpad_texture(
    texture: Float[Tensor, "*batch H W2 D"], pad_left: int, pad_right: int
) -> Float[Tensor, "*batch H W D"]:
    """Remove the circular padding of :func:`pad_texture` (for export)."""
    return texture[..., pad_left : texture.shape[-2] - pad_right, :]


def decimate_texture(
    texture: Float[Tensor, "*batch H W D"], factor: int = 8
) -> Float[Tensor, "*batch H W D"]:
    """Average-pool by ``factor`` and nearest-upsample back (coarse-phase low-pass, spec 4).

    Differentiable w.r.t. ``texture``. H and W must be multiples of ``factor``.
    """
    *batch, h, w, d = texture.shape
    if h % factor or w % factor:
        raise ValueError(f"texture size {h}x{w} must be a multiple of the decimation factor {factor}")
    x = texture.reshape(-1, h, w, d).permute(0, 3, 1, 2)
    x = F.avg_pool2d(x, kernel_size=factor, stride=factor)
    x = F.interpolate(x, scale_factor=factor, mode="nearest")
    return x.permute(0, 2, 3, 1).reshape(*batch, h, w, d)
