"""Dense PyTorch reference of the raster stage (spec triangle_splats.md sections 4 and 6).

All visible triangles x all pixels, depth-sorted once (stable: ties by triangle index), with exactly the semantics
of the Warp kernels: strict outside test, ``alpha = min(0.99, o I)`` with a straight-through clamp gradient, skip
below ``1/255``, early stop when the transmittance would fall below ``1e-4``, and only the tiles of each triangle's
binned footprint (``proj.rect``). Autograd provides the backward pass. Memory is O(chunk x N): pixels are processed
in chunks, each recomputed in backward (activation checkpointing), so it runs on small and medium inputs alike.
"""

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from recon.renderers.splat.constants import (
    ALPHA_MAX,
    ALPHA_MIN,
    DIST_FAR,
    DIST_NEAR,
    MEDIAN_T,
    T_EARLY_STOP,
    TILE_SIZE,
)
from recon.renderers.splat.types import ProjectedTriangles, RasterOutput

__all__ = ["composite_dense", "rasterize_ref", "window_alpha"]

CHUNK_ELEMENTS = 1 << 21  # pixels x triangles per chunk: bounds the dense intermediates to ~tens of MB each


def window_alpha(
    lines: Tensor, inv_phi_s: Tensor, sigmas: Tensor, opacities: Tensor, pix: Tensor
) -> tuple[Tensor, Tensor]:
    """Window alpha of M triangles at Q pixel centres.

    Args:
        lines: (M, 3, 3) edge lines; inv_phi_s, sigmas, opacities: (M,); pix: (Q, 2) pixel coordinates.

    Returns:
        ``(alpha, inside)``: (Q, M) ``min(0.99, o ReLU(phi/phi_s)^sigma)`` (straight-through clamp gradient, 0
        outside) and the strict inside mask.
    """
    dist = lines[None, :, :, 0] * pix[:, None, None, 0] + lines[None, :, :, 1] * pix[:, None, None, 1]
    dist = dist + lines[None, :, :, 2]  # (Q, M, 3) = L_k(p)
    inside = (dist <= 0).all(dim=-1)
    phi = dist.amax(dim=-1)
    r = phi * inv_phi_s[None, :]
    inside = inside & (r > 0)
    r_safe = torch.where(inside, r, torch.ones_like(r))
    window = torch.where(inside, r_safe ** sigmas[None, :], torch.zeros_like(r))
    a = opacities[None, :] * window
    # Straight through the 0.99 clamp (spec 7): value clamped, gradient of the unclamped product.
    alpha = a - (a - a.clamp(max=ALPHA_MAX)).detach()
    return alpha, inside


def composite_dense(
    alpha: Tensor, colors: Tensor, zbar: Tensor, normals: Tensor, background: Tensor, compute_distortion: bool
) -> tuple[Tensor, ...]:
    """Front-to-back compositing of depth-sorted candidates, dense over (Q pixels, M triangles).

    ``alpha_eff = alpha if alpha >= 1/255 else 0``; ``valid = cumprod(1 - alpha_eff) >= 1e-4`` (a prefix: exactly
    the triangles blended before the early stop); ``w = valid alpha_eff T_before``.

    Returns:
        rgb (Q, 3), alpha (Q, 1), depth_sum (Q, 1), depth_median (Q, 1), normals (Q, 3), distortion (Q, 1) (zeros
        unless requested) and the per-triangle max weight (M,) (detached).
    """
    q, m = alpha.shape
    alpha_eff = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        valid = torch.cumprod(1.0 - alpha_eff, dim=1) >= T_EARLY_STOP
    alpha_v = torch.where(valid, alpha_eff, torch.zeros_like(alpha_eff))
    one_minus = 1.0 - alpha_v
    t_incl = torch.cumprod(one_minus, dim=1)
    t_before = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
    w = alpha_v * t_before
    # (m == 0: an empty sum keeps the outputs connected to the inputs' graph, like the Warp path)
    t_final = t_incl[:, -1:] if m > 0 else 1.0 - alpha_v.sum(dim=1, keepdim=True)
    rgb = w @ colors + t_final * background[None, :]
    depth_sum = w @ zbar[:, None]
    normal_sum = w @ normals
    if m > 0:
        with torch.no_grad():
            order = torch.arange(1, m + 1, device=alpha.device)
            is_median = (alpha_v > 0) & (t_before > MEDIAN_T)
            last = (is_median * order[None, :]).amax(dim=1, keepdim=True) - 1
        median = torch.where(last >= 0, zbar[last.clamp_min(0)], torch.zeros_like(t_final))
    else:
        median = depth_sum
    if compute_distortion and m > 0:
        mapped = DIST_FAR / (DIST_FAR - DIST_NEAR) * (1.0 - DIST_NEAR / zbar)
        wm = w * mapped[None, :]
        m1 = torch.cumsum(wm, dim=1) - wm
        m2 = torch.cumsum(wm * mapped[None, :], dim=1) - wm * mapped[None, :]
        term = mapped[None, :] ** 2 * (1.0 - t_before) + m2 - 2.0 * mapped[None, :] * m1
        distortion = (w * term).sum(dim=1, keepdim=True)
    else:
        distortion = torch.zeros_like(t_final)
    max_w = w.detach().amax(dim=0) if m > 0 else w.detach().sum(dim=0)
    return rgb, 1.0 - t_final, depth_sum, median, normal_sum, distortion, max_w


def _chunk(
    lines: Tensor,
    inv_phi_s: Tensor,
    sigmas: Tensor,
    opacities: Tensor,
    colors: Tensor,
    zbar: Tensor,
    normals: Tensor,
    background: Tensor,
    pix: Tensor,
    in_rect: Tensor,
    compute_distortion: bool,
) -> tuple[Tensor, ...]:
    alpha, _ = window_alpha(lines, inv_phi_s, sigmas, opacities, pix)
    alpha = torch.where(in_rect, alpha, torch.zeros_like(alpha))
    return composite_dense(alpha, colors, zbar, normals, background, compute_distortion)


def rasterize_ref(
    proj: ProjectedTriangles, background: Tensor, *, compute_distortion: bool = False
) -> RasterOutput:
    """Dense reference rasterisation of one camera; see :func:`recon.renderers.splat.api.rasterize_projected`.

    Differentiable (autograd) w.r.t. all differentiable fields of ``proj`` and ``background``; any dtype/device.
    """
    h, w_img = proj.height, proj.width
    device, dtype = proj.zbar.device, proj.zbar.dtype
    vis = torch.nonzero(proj.visible).squeeze(1)
    # Stable sort by float32 depth (the sort key of the tile lists), ties by triangle index.
    order = vis[torch.sort(proj.zbar.detach()[vis].to(torch.float32), stable=True).indices]
    lines, inv_phi_s = proj.lines[order], proj.inv_phi_s[order]
    sigmas, opacities = proj.sigmas[order], proj.opacities[order]
    colors, zbar, normals = proj.colors[order], proj.zbar[order], proj.normals[order]
    rect = proj.rect[order]

    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w_img, device=device), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    pix = torch.stack([xs, ys], dim=-1).to(dtype) + 0.5  # pixel centres at +0.5
    tx, ty = xs // TILE_SIZE, ys // TILE_SIZE

    m = order.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // max(m, 1))
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (lines, inv_phi_s, sigmas, opacities, colors, zbar, normals, background)
    )
    outs: list[tuple[Tensor, ...]] = []
    for start in range(0, h * w_img, chunk):
        sl = slice(start, start + chunk)
        in_rect = (
            (tx[sl, None] >= rect[None, :, 0])
            & (tx[sl, None] < rect[None, :, 2])
            & (ty[sl, None] >= rect[None, :, 1])
            & (ty[sl, None] < rect[None, :, 3])
        )
        args = (lines, inv_phi_s, sigmas, opacities, colors, zbar, normals, background, pix[sl], in_rect)
        if needs_grad and m * (sl.stop - sl.start) >= CHUNK_ELEMENTS // 4:
            outs.append(checkpoint(_chunk, *args, compute_distortion, use_reentrant=False))
        else:
            outs.append(_chunk(*args, compute_distortion))
    rgb, alpha, depth_sum, median, normal_sum, distortion = (
        torch.cat([o[i] for o in outs]) for i in range(6)
    )
    max_w_sorted = torch.stack([o[6] for o in outs]).amax(dim=0) if outs else torch.zeros(m, dtype=dtype)
    max_blending = torch.zeros(len(proj), dtype=dtype, device=device)
    max_blending[order] = max_w_sorted
    return RasterOutput(
        rgb=rgb.reshape(h, w_img, 3),
        alpha=alpha.reshape(h, w_img, 1),
        depth_sum=depth_sum.reshape(h, w_img, 1),
        depth_median=median.reshape(h, w_img, 1),
        normals=normal_sum.reshape(h, w_img, 3),
        distortion=distortion.reshape(h, w_img, 1) if compute_distortion else None,
        max_blending=max_blending,
    )
