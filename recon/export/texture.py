"""Baking a representation's colour into a UV texture atlas (``recon export --texture``).

1. xatlas unwraps the mesh into charts packed in a ``size`` x ``size`` atlas (vertices on chart seams are split).
2. Every texel centre inside a chart is mapped back to its 3D point on the mesh (barycentric interpolation).
3. The texel colour is the visibility-weighted mean of the scene's own renders from the training views: a view
   counts where the point projects inside the image, the render is opaque there and its median depth agrees with
   the point's depth (so occluded views are skipped); weight ``|cos|^2`` of the angle between the view ray and the
   face normal. This works for every Scene through ``Scene.render``.
4. Texels no view saw take the mesh's own colour there (vertex colours, interpolated) when it has one; then the
   charts are dilated so bilinear filtering and mip-maps never fetch the empty background at chart borders.
"""

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, ReconError
from recon.core.shapes import Backend
from recon.export.mesh_io import Texture
from recon.export.surface import project_colors, render_surface_maps, spread_views

MAX_BAKE_VIEWS = 32  # training views rendered for baking (evenly spread)
CHART_PADDING = 4  # texels between charts in the atlas
MIN_TEXTURE_SIZE = 16  # smaller atlases cannot hold the chart padding
DILATION_PASSES = 8  # texels grown around every chart (covers the padding)
INSIDE_EPS = 1e-6  # barycentric tolerance of the texel-in-triangle test (texels on shared edges)


def unwrap(mesh: Mesh, size: int) -> tuple[Mesh, Float[Tensor, "V 2"]]:
    """xatlas charts of ``mesh`` packed at ``size`` texels: the re-indexed mesh (colours carried over) and its UV
    (origin at the top-left of the atlas)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(
        mesh.vertices.detach().float().cpu().numpy(), mesh.faces.detach().cpu().numpy().astype(np.uint32)
    )
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = CHART_PADDING
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, indices, uvs = atlas[0]
    index = torch.from_numpy(vmapping.astype(np.int64))
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors.detach().cpu()[index]
    out = Mesh(vertices=mesh.vertices.detach().cpu()[index], faces=torch.from_numpy(indices.astype(np.int64)),
               vertex_colors=colors)  # fmt: skip
    return out, torch.from_numpy(uvs.astype(np.float32))


def rasterize_uv(faces: Tensor, uv: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Texels covered by the UV triangles: ``(texel (T,) flat index row * size + col, face (T,), barycentrics
    (T, 3))``. Every face enumerates the texel centres ``(i + 0.5) / size`` of its UV bounding box."""
    tri = (uv[faces] * size).double()  # (F, 3, 2) in texel units
    lo = (tri.min(dim=1).values - 0.5).ceil().clamp(0, size - 1).long()
    hi = (tri.max(dim=1).values - 0.5).floor().clamp(0, size - 1).long()
    w, h = (hi - lo + 1).clamp_min(0).unbind(-1)
    counts = w * h
    face = torch.repeat_interleave(torch.arange(len(faces)), counts)
    local = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    col = lo[face, 0] + local % w[face]
    row = lo[face, 1] + local // w[face]
    p = torch.stack([col, row], -1).double() + 0.5
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    det = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    ok = det.abs() > 1e-12
    det = torch.where(ok, det, torch.ones_like(det))
    l1 = ((p - a)[:, 0] * (c - a)[:, 1] - (p - a)[:, 1] * (c - a)[:, 0]) / det
    l2 = ((b - a)[:, 0] * (p - a)[:, 1] - (b - a)[:, 1] * (p - a)[:, 0]) / det
    bary = torch.stack([1 - l1 - l2, l1, l2], -1)
    inside = ok & (bary >= -INSIDE_EPS).all(-1)
    return (row * size + col)[inside], face[inside], bary[inside].float()


def dilate(image: Tensor, filled: Tensor, passes: int) -> Tensor:
    """Grow the filled texels of ``image`` (H, W, 3) by ``passes`` texels (mean of filled 8-neighbours); texels
    still empty afterwards take the mean filled colour."""
    img, mask = image.clone(), filled.clone().float()
    kernel = torch.ones(1, 1, 3, 3)
    for _ in range(passes):
        summed = torch.nn.functional.conv2d(
            (img * mask[..., None]).permute(2, 0, 1)[:, None], kernel, padding=1
        )
        count = torch.nn.functional.conv2d(mask[None, None], kernel, padding=1)[0, 0]
        grow = (mask == 0) & (count > 0)
        img[grow] = (summed[:, 0].permute(1, 2, 0) / count.clamp_min(1)[..., None])[grow]
        mask = torch.where(grow, torch.ones_like(mask), mask)
    if bool((mask > 0).any()):
        img[mask == 0] = img[mask > 0].mean(dim=0)
    return img


@torch.no_grad()
def bake_texture(
    scene,
    mesh: Mesh,
    cameras: Camera,
    *,
    size: int = 1024,
    backend: Backend = "auto",
    max_views: int = MAX_BAKE_VIEWS,
) -> tuple[Mesh, Texture]:
    """Unwrap ``mesh`` (normalised frame) and bake the colour ``scene`` renders from ``cameras`` into a texture.

    Args:
        scene: the Scene whose renders give the colour.
        mesh: the surface to texture, in the scene's frame (face-coloured soups are not supported: export
            ``--mesh surface`` for a texture of triangle splats).
        cameras: training cameras (normalised frame); at most ``max_views`` evenly spread ones are rendered.
        size: atlas side in texels.
        backend: renderer backend.

    Returns:
        ``(mesh, texture)``: the re-indexed mesh (seams split, no colours) and its texture (uv per vertex).
    """
    if mesh.face_colors is not None and mesh.vertex_colors is None:
        raise ReconError("--texture: the native triangle soup has no surface to unwrap; use --mesh surface")
    if size < MIN_TEXTURE_SIZE:
        raise ReconError(f"--texture-size {size}: expected at least {MIN_TEXTURE_SIZE} texels")
    unwrapped, uv = unwrap(mesh, size)
    texel, face, bary = rasterize_uv(unwrapped.faces, uv, size)
    if len(texel) == 0:
        raise ReconError("--texture: the UV atlas covers no texel (degenerate mesh)")
    tri = unwrapped.vertices[unwrapped.faces[face]].float()  # (T, 3, 3)
    points = (bary[..., None] * tri).sum(1)
    normals = Mesh(vertices=unwrapped.vertices, faces=unwrapped.faces).face_normals()[face]
    cams = spread_views(cameras, max_views)
    maps = render_surface_maps(scene, cams, backend=backend)
    box = unwrapped.bounds()
    colors, weight = project_colors(points, normals, cams, maps, float((box[1] - box[0]).norm()))
    seen = weight > 0
    if unwrapped.vertex_colors is not None:
        own = (bary[..., None] * unwrapped.vertex_colors[unwrapped.faces[face]].float()).sum(1)
        colors = torch.where(seen[:, None], colors, own)
        seen = torch.ones_like(seen)
    image = torch.zeros(size * size, 3)
    filled = torch.zeros(size * size, dtype=torch.bool)
    image[texel[seen]] = colors[seen]
    filled[texel[seen]] = True
    image = dilate(image.reshape(size, size, 3), filled.reshape(size, size), DILATION_PASSES)
    return Mesh(vertices=unwrapped.vertices, faces=unwrapped.faces), Texture(uv=uv, image=image.clamp(0, 1))
