"""Pure-PyTorch reference of ``rasterize`` (the oracle of the Warp kernels): brute force over pixels x faces.

Two passes, as in the Warp backend:

* :func:`visibility`: which faces cover which pixel and in which slot (discrete, no gradient). Every pixel centre
  is tested against every valid face, in face chunks; a running top-K by depth keeps the K nearest candidates,
  with ties broken by the lower face index (stable sorts of ``[kept so far, next chunk]``).
* :func:`attributes`: barycentrics, depth and signed squared distance of the chosen (pixel, face) pairs, plain
  torch with autograd (the differentiable pass).

Formulas (camera frame, pixel ray ``d = K^-1 (u, v, 1)``, face corners ``v0, v1, v2``, [x, y, z] the triple product
``x . (y x z)``):

.. math::
    n_0 = [d, v_1, v_2],\\ n_1 = [d, v_2, v_0],\\ n_2 = [d, v_0, v_1],\\quad s = n_0 + n_1 + n_2 = d\\cdot N,\\quad
    b_i = n_i / s,\\quad z = [v_0, v_1, v_2] / s

(the barycentrics and camera-z of the point where the ray meets the face's plane: perspective-correct by
construction, and those of the original face even when the face is clipped by the near plane). The signed squared
distance is the squared 2D distance from the pixel centre to the nearest edge of the projected, near-clipped polygon,
negated inside; "inside" is inclusive (a centre exactly on an edge is inside, ``dists = 0``).
"""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.renderers.raster.project import ProjectedFaces
from recon.renderers.raster.types import PAD_DIST

__all__ = ["attributes", "pixel_rays", "polygon_sdist", "visibility"]

PAIRS_PER_CHUNK = 1 << 21  # pixel-face pairs per visibility chunk: ~100 MB of float32 temporaries at 256x256


def pixel_rays(proj: ProjectedFaces) -> tuple[Float[Tensor, "C P 2"], Float[Tensor, "C P 3"]]:
    """Pixel centres ``(u, v)`` (row-major, P = H W) and ray directions ``d`` (z = 1) of every camera."""
    dtype, device = proj.rays.dtype, proj.rays.device
    v, u = torch.meshgrid(
        torch.arange(proj.height, dtype=dtype, device=device) + 0.5,
        torch.arange(proj.width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)[None].expand(proj.rays.shape[0], -1, -1)
    fx, fy, cx, cy, skew = (proj.rays[:, i, None] for i in range(5))
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return uv, torch.stack([x, y, torch.ones_like(x)], dim=-1)


def _edges(p: Tensor, poly: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Edge start ``q0``, edge vector ``e`` and ``p - q0`` for the 4 closed-polygon edges (last dim 2)."""
    q0 = poly
    e = poly.roll(-1, dims=-2) - poly
    return q0, e, p[..., None, :] - q0


def polygon_inside(
    p: Float[Tensor, "*batch 2"], poly: Float[Tensor, "*batch 4 2"]
) -> Bool[Tensor, " *batch"]:
    """Inclusive point-in-convex-polygon test for either winding: all edge functions >= 0 or all <= 0."""
    _, e, rel = _edges(p, poly)
    edge = e[..., 0] * rel[..., 1] - e[..., 1] * rel[..., 0]
    return (edge >= 0).all(-1) | (edge <= 0).all(-1)


def polygon_sdist(
    p: Float[Tensor, "*batch 2"], poly: Float[Tensor, "*batch 4 2"]
) -> Float[Tensor, " *batch"]:
    """Signed squared distance (px^2) from ``p`` to the polygon boundary: negative inside (inclusive), positive
    outside. Differentiable (zero-length padding edges are guarded)."""
    q0, e, rel = _edges(p, poly)
    length_sq = (e * e).sum(-1)
    nonzero = length_sq > 0
    t = torch.where(nonzero, (rel * e).sum(-1) / torch.where(nonzero, length_sq, 1.0), 0.0).clamp(0.0, 1.0)
    offset = q0 + t[..., None] * e - p[..., None, :]
    dist_sq = (offset * offset).sum(-1).min(-1).values
    return torch.where(polygon_inside(p, poly), -dist_sq, dist_sq)


def _chunk_candidates(
    uv: Tensor, d: Tensor, poly: Tensor, plane: Tensor, valid: Tensor, blur_sq: float
) -> Float[Tensor, "P Fc"]:
    """Depth of every (pixel, face) candidate of one camera and face chunk; +inf where the face is no candidate.

    Only pairs whose pixel centre lies in the face's box grown by ``sqrt(blur_sq)`` (+ a margin) get the exact
    tests: the box can only drop pairs the exact tests would reject, and it makes the reference ~10x faster.
    """
    radius = blur_sq**0.5 + 1e-3
    lo, hi = poly.min(dim=1).values - radius, poly.max(dim=1).values + radius  # (Fc, 2)
    in_box = ((uv[:, None, :] >= lo[None]) & (uv[:, None, :] <= hi[None])).all(-1) & valid[None]
    pix, face = in_box.nonzero(as_tuple=True)
    p, q = uv[pix], poly[face]
    hit = polygon_inside(p, q)
    if blur_sq > 0:
        hit = hit | (polygon_sdist(p, q) <= blur_sq)
    s = (d[pix] * plane[face, :3]).sum(-1)  # d . N
    depth = plane[face, 3] / torch.where(s != 0, s, 1.0)
    hit = hit & (s != 0) & (depth > 0)
    out = torch.full(in_box.shape, torch.inf, dtype=uv.dtype, device=uv.device)
    out[pix[hit], face[hit]] = depth[hit]
    return out


@torch.no_grad()
def visibility(proj: ProjectedFaces, *, layers: int, blur_sq: float) -> Int[Tensor, "C H W K"]:
    """``pix_to_face``: the ``layers`` nearest candidate faces per pixel by depth (ties: lower face index first).

    A face is a candidate at a pixel when it is valid, its polygon contains the pixel centre (inclusive) or lies
    within ``blur_sq`` px^2 of it, and its plane depth there is positive.
    """
    C, F = proj.valid.shape
    uv, d = pixel_rays(proj)
    P = uv.shape[1]
    chunk = max(1, PAIRS_PER_CHUNK // max(P, 1))
    out = torch.full((C, P, layers), -1, dtype=torch.int64, device=uv.device)
    for c in range(C):
        best_depth = torch.full((P, layers), torch.inf, dtype=uv.dtype, device=uv.device)
        best_face = torch.full((P, layers), -1, dtype=torch.int64, device=uv.device)
        for f0 in range(0, F, chunk):
            f1 = min(F, f0 + chunk)
            depth = _chunk_candidates(uv[c], d[c], proj.poly[c, f0:f1], proj.plane[c, f0:f1],
                                      proj.valid[c, f0:f1], blur_sq)  # fmt: skip
            ids = torch.arange(f0, f1, device=uv.device).expand(P, -1)
            all_depth = torch.cat([best_depth, depth], dim=1)
            order = torch.sort(all_depth, dim=1, stable=True).indices[:, :layers]
            best_depth = torch.gather(all_depth, 1, order)
            best_face = torch.gather(torch.cat([best_face, ids], dim=1), 1, order)
        out[c] = torch.where(torch.isinf(best_depth), -1, best_face)
    return out.reshape(C, proj.height, proj.width, layers)


def fragment_bary_depth(
    d: Float[Tensor, "*batch 3"], tri: Float[Tensor, "*batch 3 3"]
) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
    """Perspective-correct barycentrics, camera-z depth and ``s = d . N`` of the ray ``d`` against ``tri``."""
    v0, v1, v2 = tri.unbind(-2)
    c12, c20, c01 = torch.linalg.cross(v1, v2), torch.linalg.cross(v2, v0), torch.linalg.cross(v0, v1)
    n = torch.stack([(d * c12).sum(-1), (d * c20).sum(-1), (d * c01).sum(-1)], dim=-1)
    s = n.sum(-1)
    s_safe = torch.where(s != 0, s, 1.0)
    return n / s_safe[..., None], (v0 * c12).sum(-1) / s_safe, s


def attributes(
    proj: ProjectedFaces, faces: Int[Tensor, "F 3"], pix_to_face: Int[Tensor, "C H W K"]
) -> tuple[Float[Tensor, "C H W K 3"], Float[Tensor, "C H W K"], Float[Tensor, "C H W K"]]:
    """``(bary, depth, dists)`` of the chosen slots (padding: 0, 0, ``PAD_DIST``). Differentiable w.r.t.
    ``proj.v_cam`` and ``proj.poly``."""
    C, H, W, K = pix_to_face.shape
    if faces.shape[0] == 0:  # nothing to gather; outputs stay attached to the graph, as the Warp path's are
        zero = proj.v_cam.sum() * 0.0
        pad = torch.full((C, H, W, K), PAD_DIST, dtype=proj.v_cam.dtype, device=pix_to_face.device)
        return pad.new_zeros(C, H, W, K, 3) + zero, pad.new_zeros(C, H, W, K) + zero, pad + zero
    uv, d = pixel_rays(proj)
    face = pix_to_face.reshape(C, H * W * K).clamp_min(0)
    cam = torch.arange(C, device=face.device)[:, None]
    tri = proj.v_cam[cam[..., None], faces[face]]  # (C, HWK, 3, 3)
    d_slot = d.repeat_interleave(K, dim=1)
    uv_slot = uv.repeat_interleave(K, dim=1)
    bary, depth, _ = fragment_bary_depth(d_slot, tri)
    dists = polygon_sdist(uv_slot, proj.poly[cam, face])
    filled = (pix_to_face >= 0).reshape(C, H * W * K)
    bary = torch.where(filled[..., None], bary, 0.0)
    depth = torch.where(filled, depth, 0.0)
    dists = torch.where(filled, dists, PAD_DIST)
    return bary.reshape(C, H, W, K, 3), depth.reshape(C, H, W, K), dists.reshape(C, H, W, K)
