"""Pure-PyTorch reference of the mesh shading ops (the oracle of the Warp kernels; any device, float64 welcome).

Every function here has the signature and semantics documented in ``shading_api.py``; inputs arrive validated
and already reduced to the form both backends share (per-corner attributes, one texture pyramid level, projected
vertices). Written for clarity: dense tensors over all slots, autograd for every gradient.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "antialias",
    "decoupled_composite",
    "edge_opposites",
    "interpolate",
    "layer_alphas",
    "mip_level_texture",
    "sample_texture",
    "silhouette",
    "soft_composite",
]

AA_EPS = 0.0625  # nvdiffrast's tolerance: an edge crossing up to 1/16 px outside the pixel pair still counts


def _only_covered(values: Tensor, covered: Tensor) -> Tensor:
    """``values`` with empty slots set to 0 *before* any arithmetic: whatever an empty slot holds (even NaN) then
    reaches neither the output nor, through a 0 * NaN, the gradients. ``covered`` broadcasts from the left."""
    mask = covered.reshape(*covered.shape, *([1] * (values.ndim - covered.ndim)))
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def interpolate(corner_attributes: Tensor, pix_to_face: Tensor, bary: Tensor) -> Tensor:
    """``out[..., k, :] = sum_i bary[..., k, i] * corner_attributes[pix_to_face[..., k], i]``; 0 in empty slots.

    Args:
        corner_attributes: (F, 3, D) attribute of each face corner.
        pix_to_face: (C, H, W, K) face per slot, -1 empty.
        bary: (C, H, W, K, 3).
    """
    # No faces: every slot is empty (the result stays connected to the inputs: autograd gives zero gradients).
    if corner_attributes.shape[0] == 0:
        return bary.new_zeros(*pix_to_face.shape, corner_attributes.shape[-1]) + 0 * corner_attributes.sum()
    covered = pix_to_face >= 0
    corners = corner_attributes[pix_to_face.clamp_min(0)]  # (C, H, W, K, 3, D)
    return _only_covered((_only_covered(bary, covered).unsqueeze(-1) * corners).sum(dim=-2), covered)


def mip_level_texture(textures: Tensor, level: int) -> Tensor:
    """(T, H_t, W_t, D) -> level ``level`` of the 2x2 box-filtered pyramid (differentiable).

    Each level halves each side rounding up; a 2x2 window that hangs over an odd border averages only the texels it
    covers (``avg_pool2d(ceil_mode=True)`` without padding does exactly that).
    """
    tex = textures.permute(0, 3, 1, 2)
    for _ in range(level):
        if tex.shape[-1] == 1 and tex.shape[-2] == 1:
            break
        tex = F.avg_pool2d(tex, kernel_size=2, stride=2, ceil_mode=True)
    return tex.permute(0, 2, 3, 1).contiguous()


def _texel_coords(coord: Tensor, size: int, wrap: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Continuous coordinate in [0, 1] -> (i0, i1, frac) along an axis of ``size`` texels (aligned corners).

    Clamped axis: ``x = clamp(coord * (size - 1), 0, size - 1)``, so coord 0 and 1 hit the centres of the first and
    last texels. Wrapped axis (period 1): ``x = coord * size`` modulo ``size``, texel ``size - 1`` blends into 0.
    """
    if wrap:
        x = coord * size
        x0f = torch.floor(x)
        frac = x - x0f
        i0 = torch.remainder(x0f.long(), size)
        i1 = torch.remainder(i0 + 1, size)
        return i0, i1, frac
    x = (coord * (size - 1)).clamp(0.0, float(size - 1))
    i0 = torch.floor(x).long().clamp(0, max(size - 2, 0))
    i1 = (i0 + 1).clamp_max(size - 1)
    return i0, i1, x - i0.to(x.dtype)


def sample_texture(
    textures: Tensor, uv: Tensor, pix_to_face: Tensor, face_to_texture: Tensor, *, wrap_u: bool
) -> Tensor:
    """Bilinear lookup of ``textures[face_to_texture[f]]`` at ``uv`` per slot; 0 in empty slots.

    Args:
        textures: (T, H_t, W_t, D) one pyramid level. ``u`` runs along W_t (columns), ``v`` along H_t (rows),
            ``(0, 0)`` is the centre of texel ``[t, 0, 0]`` (nvdiffrast's orientation, no v flip).
        uv: (C, H, W, K, 2).
        pix_to_face: (C, H, W, K).
        face_to_texture: (F,) int64.
    """
    _, height_t, width_t, channels = textures.shape
    if face_to_texture.shape[0] == 0:  # no faces: every slot is empty (see interpolate)
        return uv.new_zeros(*pix_to_face.shape, channels) + 0 * (textures.sum() + uv.sum())
    covered = pix_to_face >= 0
    tex_index = face_to_texture[pix_to_face.clamp_min(0)]
    uv = _only_covered(uv, covered)
    x0, x1, fx = _texel_coords(uv[..., 0], width_t, wrap_u)
    y0, y1, fy = _texel_coords(uv[..., 1], height_t, False)
    fx, fy = fx.unsqueeze(-1), fy.unsqueeze(-1)
    top = textures[tex_index, y0, x0] * (1 - fx) + textures[tex_index, y0, x1] * fx
    bottom = textures[tex_index, y1, x0] * (1 - fx) + textures[tex_index, y1, x1] * fx
    return _only_covered(top * (1 - fy) + bottom * fy, covered)


def layer_alphas(pix_to_face: Tensor, dists: Tensor, opacities: Tensor | None, sigma: float) -> Tensor:
    """``a_k = exp(-max(d_k, 0) / sigma) * alpha_f`` per slot (0 when empty); ``sigma = 0`` is the hard limit
    ``[d_k <= 0] * alpha_f``. Returns (C, H, W, K)."""
    covered = pix_to_face >= 0
    dists = _only_covered(dists, covered)
    if sigma > 0:
        coverage = torch.exp(-dists.clamp_min(0.0) / sigma)
    else:
        coverage = (dists <= 0).to(dists.dtype)
    if opacities is not None and opacities.shape[0] > 0:  # with no faces every slot is empty
        coverage = coverage * opacities[pix_to_face.clamp_min(0)]
    return _only_covered(coverage, covered)


def _front_to_back(alphas: Tensor, colors: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum_k c_k a_k prod_{j<k}(1 - a_j), prod_k (1 - a_k))`` over the last slot axis."""
    one_minus = 1 - alphas
    transmittance = torch.cumprod(torch.cat([torch.ones_like(one_minus[..., :1]), one_minus], dim=-1), dim=-1)
    weights = alphas * transmittance[..., :-1]
    rgb = (weights.unsqueeze(-1) * colors).sum(dim=-2)
    return rgb, transmittance[..., -1:]


def decoupled_composite(fg_rgb: Tensor, fg_mask: Tensor, env_rgb: Tensor, mode: str) -> Tensor:
    """Blocks over environment: ``"over"``: ``fg + (1 - m) env``; ``"reference"``: ``fg m + (1 - m) env`` (DBW)."""
    if mode == "reference":
        return fg_rgb * fg_mask + (1 - fg_mask) * env_rgb
    return fg_rgb + (1 - fg_mask) * env_rgb


def soft_composite(
    pix_to_face: Tensor,
    dists: Tensor,
    colors: Tensor,
    opacities: Tensor | None,
    *,
    sigma: float,
    background: Tensor | None,
    mode: str,
) -> tuple[Tensor, Tensor]:
    """Layered soft compositing; see ``shading_api.soft_composite``. ``background`` is (C, H, W, D) or None."""
    alphas = layer_alphas(pix_to_face, dists, opacities, sigma)
    fg, transmittance = _front_to_back(alphas, _only_covered(colors, pix_to_face >= 0))
    mask = 1 - transmittance
    env = torch.zeros_like(fg) if background is None else background
    return decoupled_composite(fg, mask, env, mode), mask


def silhouette(pix_to_face: Tensor, dists: Tensor, opacities: Tensor | None, *, sigma: float) -> Tensor:
    """``1 - prod_k (1 - a_k)``, (C, H, W, 1)."""
    alphas = layer_alphas(pix_to_face, dists, opacities, sigma)
    return 1 - torch.prod(1 - alphas, dim=-1, keepdim=True)


def edge_opposites(faces: Tensor) -> Tensor:
    """(F, 3) int64: for edge ``e`` of face ``f`` (the edge opposite corner ``e``, from corner ``e+1`` to ``e+2``),
    the vertex of a neighbouring face across that edge that is not on the edge, or -1 for a boundary edge.

    With more than two faces on an edge (non-manifold) the neighbour is one of them (any).
    """
    num_faces = faces.shape[0]
    a = faces[:, [1, 2, 0]].reshape(-1)
    b = faces[:, [2, 0, 1]].reshape(-1)
    opposite_vertex = faces.reshape(-1)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = lo * (int(faces.max()) + 1 if faces.numel() else 1) + hi
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    result = torch.full((num_faces * 3,), -1, dtype=torch.int64, device=faces.device)
    if sorted_key.numel() > 1:
        same_next = sorted_key[1:] == sorted_key[:-1]
        left, right = order[:-1][same_next], order[1:][same_next]
        result[left] = opposite_vertex[right]
        result[right] = opposite_vertex[left]
    return result.reshape(num_faces, 3)


def _pair_indices(height: int, width: int, vertical: bool, device) -> tuple[Tensor, Tensor]:
    """Flat pixel indices (within one image) of every right-neighbour or down-neighbour pair."""
    y, x = torch.meshgrid(
        torch.arange(height - int(vertical), device=device),
        torch.arange(width - int(not vertical), device=device),
        indexing="ij",
    )
    p0 = (y * width + x).reshape(-1)
    return p0, p0 + (width if vertical else 1)


def _orient(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor, cx: Tensor, cy: Tensor) -> Tensor:
    return (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)


def _pair_deltas(
    color: Tensor,
    face0: Tensor,
    screen: Tensor,
    depth_ok: Tensor,
    opposite: Tensor,
    faces: Tensor,
    pairs: tuple,
) -> tuple[Tensor, Tensor, Tensor]:
    """Colour deltas of the pixel pairs of one direction in one camera; see :func:`antialias`.

    Returns ``(target pixel (P,), delta (P, D), active (P,) bool)``.
    """
    p0, p1, vertical, width, depth0 = pairs
    f0, f1 = face0[p0], face0[p1]
    tri = torch.where(f0 < 0, f1, torch.where(f1 < 0, f0, torch.where(depth0[p0] < depth0[p1], f0, f1)))
    active = (f0 != f1) & (tri >= 0)
    tri_c = tri.clamp_min(0)
    active = active & depth_ok[faces[tri_c]].all(dim=-1)
    use0 = tri == f0
    ds = torch.where(use0, 1.0, -1.0).to(screen.dtype)
    pt = torch.where(use0, p0, p1)
    centre = torch.stack([(pt % width).to(screen.dtype), (pt // width).to(screen.dtype)], dim=-1) + 0.5
    verts = screen[faces[tri_c]] - centre[:, None, :]  # (P, 3, 2)
    opp_idx = opposite[tri_c]
    opp = torch.where((opp_idx >= 0)[..., None], screen[opp_idx.clamp_min(0)] - centre[:, None, :], verts)
    if vertical:
        verts, opp = verts.flip(-1), opp.flip(-1)
    x, y = verts[..., 0], verts[..., 1]
    bb = _orient(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    dcs, crosses, steep, silhouette_edge = [], [], [], []
    for e in range(3):
        a, b = (e + 1) % 3, (e + 2) % 3
        dx, dy = x[:, b] - x[:, a], y[:, b] - y[:, a]
        crosses.append((y[:, a] < 0) != (y[:, b] < 0))
        safe_dy = torch.where(crosses[-1], dy, torch.ones_like(dy))
        dcs.append(ds * (x[:, a] * dy - y[:, a] * dx) / safe_dy)
        steep.append(dy.abs() >= dx.abs())
        wing = _orient(opp[:, e, 0], opp[:, e, 1], x[:, a], y[:, a], x[:, b], y[:, b])
        silhouette_edge.append((wing < 0) == (bb < 0))
    dc_all = torch.stack(dcs, dim=-1)
    ranked = torch.where(torch.stack(crosses, dim=-1), dc_all.detach(), torch.full_like(dc_all, -torch.inf))
    best = ranked.argmax(dim=-1, keepdim=True)
    ok = torch.stack(crosses, -1) & torch.stack(steep, -1) & torch.stack(silhouette_edge, -1)
    dc = dc_all.gather(-1, best).squeeze(-1)
    active = active & ok.gather(-1, best).squeeze(-1) & (dc > -AA_EPS) & (dc < 1 + AA_EPS)
    alpha = ds * (0.5 - dc.clamp(0.0, 1.0))
    target = torch.where(alpha > 0, p0, p1)
    delta = alpha[:, None] * (color[p1] - color[p0])
    return target, delta * active[:, None].to(delta.dtype), active


def antialias(
    color: Tensor, pix_to_face: Tensor, depth: Tensor, screen: Tensor, depth_ok: Tensor, faces: Tensor
) -> Tensor:
    """Analytic silhouette antialiasing (Laine et al. 2020, section 3.4); see ``shading_api.antialias``.

    Args:
        color: (C, H, W, D).
        pix_to_face: (C, H, W, K) (layer 0 is used).
        depth: (C, H, W, K) (layer 0 is used to pick the front face of a pair).
        screen: (C, V, 2) projected vertex positions in pixels.
        depth_ok: (C, V) bool, the vertex lies in front of the camera (faces with a vertex behind are skipped).
        faces: (F, 3) int64.
    """
    cams, height, width, channels = color.shape
    if faces.shape[0] == 0:  # no faces: no silhouette
        return color + 0 * screen.sum()
    opposite = edge_opposites(faces)
    outputs = []
    for c in range(cams):
        flat = color[c].reshape(-1, channels)
        face0 = pix_to_face[c, ..., 0].reshape(-1)
        depth0 = depth[c, ..., 0].reshape(-1)
        out = flat
        for vertical in (False, True):
            p0, p1 = _pair_indices(height, width, vertical, color.device)
            pairs = (p0, p1, vertical, width, depth0)
            target, delta, _ = _pair_deltas(flat, face0, screen[c], depth_ok[c], opposite, faces, pairs)
            out = out.index_add(0, target, delta)
        outputs.append(out.reshape(height, width, channels))
    return torch.stack(outputs)
