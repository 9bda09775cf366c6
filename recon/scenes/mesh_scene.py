"""Rendering a plain triangle mesh through the hard rasterizer (``recon.renderers.raster``).

What a standard rasteriser shows of an exported mesh: one opaque layer per pixel (``rasterize`` with K = 1), the
unlit colour of the nearest face (vertex colours interpolated, face colours, or a UV texture sampled bilinearly),
composited over the background, then ``antialias`` on the silhouettes. ``recon eval --mesh`` scores exported meshes
with it and ``recon view mesh.ply`` renders mesh files with it. Colours are sRGB in [0, 1] as everywhere in recon
(docs/export.md); the composite is done in that space, as the training photos and the splat renders are.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, RenderOutput
from recon.core.shapes import Backend
from recon.scenes.base import RenderOptions

UNCOLOURED_ALBEDO = 0.8  # grey of meshes without colours, shaded with a headlight so their shape shows
HEADLIGHT_AMBIENT = 0.25  # ambient share of the headlight shading of uncoloured meshes


@dataclass(frozen=True)
class MeshTexture:
    """A UV texture of a mesh (``recon.export.mesh_io.Texture`` has the same fields).

    Attributes:
        uv: (V, 2) texture coordinates in [0, 1], origin at the top-left of ``image``, texel ``(i, j)`` centred at
            ``((j + 0.5) / W, (i + 0.5) / H)`` (glTF convention).
        image: (H, W, 3) sRGB colours in [0, 1].
    """

    uv: Float[Tensor, "V 2"]
    image: Float[Tensor, "H W 3"]


class MeshRenderer:
    """A mesh (and optional texture) rendered like a scene: ``render(camera, options) -> RenderOutput``.

    Args:
        mesh: the triangle mesh, in the frame of the cameras it will be rendered with.
        texture: a UV texture (takes precedence over the mesh's vertex/face colours), or None.
        device: where vertices live and renders run.

    Raises:
        TypeError: ``mesh`` is not a ``recon.core.Mesh``.
        ValueError: an empty mesh, or a texture whose ``uv`` does not have one row per vertex.
    """

    def __init__(self, mesh: Mesh, *, texture: MeshTexture | None = None, device: torch.device | str = "cpu"):
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a recon.core.Mesh, got {type(mesh).__name__}")
        if mesh.num_faces == 0:
            raise ValueError("mesh must have at least one face")
        if texture is not None and tuple(texture.uv.shape) != (mesh.num_vertices, 2):
            raise ValueError(
                f"texture.uv must have shape ({mesh.num_vertices}, 2), got {tuple(texture.uv.shape)}"
            )
        if texture is not None and (texture.image.ndim != 3 or texture.image.shape[-1] != 3):
            raise ValueError(f"texture.image must have shape (H, W, 3), got {tuple(texture.image.shape)}")
        self.device = torch.device(device)
        self.vertices = mesh.vertices.to(self.device, torch.float32).contiguous()
        self.faces = mesh.faces.to(self.device, torch.long).contiguous()
        self.mesh = mesh
        self.face_normals = Mesh(vertices=self.vertices, faces=self.faces).face_normals()
        self.vertex_colors = _maybe(mesh.vertex_colors, self.device)
        self.face_colors = _maybe(mesh.face_colors, self.device)
        self.texture = None
        if texture is not None:
            size = torch.tensor(texture.image.shape[1::-1], dtype=torch.float32, device=self.device)  # (W, H)
            # glTF texel centres (i + 0.5) / W -> sample_texture's aligned corners j / (W - 1)
            uv = (texture.uv.to(self.device, torch.float32) * size - 0.5) / (size - 1).clamp_min(1.0)
            self.texture = (uv.contiguous(), texture.image.to(self.device, torch.float32)[None].contiguous())

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @torch.no_grad()
    def render(self, camera: Camera, options: RenderOptions) -> RenderOutput:
        """Render C cameras: rgb/alpha (C, H, W, 3/1) always, depth (camera z, 0 off the mesh) and world normals
        (facing the camera) when ``options`` asks. Not differentiable (evaluation and viewing only)."""
        from recon.renderers.raster import antialias, rasterize

        camera = camera.to(device=self.device, dtype=torch.float32)
        backend = options.backend
        frags = rasterize(self.vertices, self.faces, camera, layers=1, backend=backend)
        covered = (frags.pix_to_face[..., :1] >= 0).float()  # (C, H, W, 1)
        colour = self._colour(frags, camera, backend)  # (C, H, W, 3)
        background = options.background
        bg = torch.zeros(3, device=self.device) if background is None else background.to(self.device).float()
        rgba = torch.cat([colour * covered + bg * (1.0 - covered), covered], dim=-1)
        rgba = antialias(rgba, frags, self.vertices, self.faces, camera, backend=backend)
        depth = frags.depth[..., :1] * covered if options.depth else None
        normals = self._normals(frags, camera) * covered if options.normals else None
        return RenderOutput(rgb=rgba[..., :3], alpha=rgba[..., 3:].clamp(0.0, 1.0), depth=depth, normals=normals,
                            producer="MeshRenderer")  # fmt: skip

    def _colour(self, frags, camera: Camera, backend: Backend) -> Tensor:
        from recon.renderers.raster import interpolate, sample_texture

        if self.texture is not None:
            uv, image = self.texture
            uv_px = interpolate(uv, frags, self.faces, backend=backend)
            f2t = torch.zeros(self.num_faces, dtype=torch.long, device=self.device)
            return sample_texture(image, uv_px, frags, f2t, backend=backend)[..., 0, :]
        if self.vertex_colors is not None:
            return interpolate(self.vertex_colors, frags, self.faces, backend=backend)[..., 0, :]
        if self.face_colors is not None:
            return _gather_faces(self.face_colors, frags.pix_to_face[..., 0])
        n = self._normals(frags, camera)
        shade = HEADLIGHT_AMBIENT + (1.0 - HEADLIGHT_AMBIENT) * _view_cosine(n, frags, camera)
        return (UNCOLOURED_ALBEDO * shade).unsqueeze(-1).expand(*shade.shape, 3)

    def _normals(self, frags, camera: Camera) -> Tensor:
        """(C, H, W, 3) world normal of the layer-0 face, flipped towards the camera (soups are double-sided)."""
        n = _gather_faces(self.face_normals, frags.pix_to_face[..., 0])
        forward = camera.T_world_cam()[:, :3, 2][:, None, None, :]  # optical axis in world (C, 1, 1, 3)
        flip = (n * forward).sum(-1, keepdim=True) > 0
        return torch.where(flip, -n, n)


def _view_cosine(n: Tensor, frags, camera: Camera) -> Tensor:
    forward = camera.T_world_cam()[:, :3, 2][:, None, None, :]
    return (n * forward).sum(-1).abs()


def _gather_faces(values: Tensor, p2f: Tensor) -> Tensor:
    """(C, H, W, D) per-face ``values`` at the layer-0 faces, 0 where no face."""
    out = values[p2f.clamp_min(0)]
    return out * (p2f >= 0).unsqueeze(-1).to(out.dtype)


def _maybe(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.to(device, torch.float32).clamp(0.0, 1.0).contiguous()
