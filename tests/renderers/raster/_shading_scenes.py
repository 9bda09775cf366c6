"""Procedural scenes and a tiny brute-force rasterizer producing ``Fragments`` for the shading tests.

The brute-force oracle is independent of ``recon.renderers.raster.rasterize``: every (pixel, face) pair is tested
densely in torch (any dtype, differentiable w.r.t. vertices), which is fine for the <= 32x32 px, <= 40 face scenes
of the tests.
"""

import torch
from torch import Tensor

from recon.core.camera import Camera
from recon.renderers.raster.types import Fragments
from tests.renderers.raster import _shading_tol  # noqa: F401  (registers the shading tolerances)

PAD_DIST = 1e6  # large finite distance of empty slots (as the Fragments contract asks)


def camera(width: int, height: int, *, focal: float = 30.0, cams: int = 1, dtype=torch.float32) -> Camera:
    """``cams`` pinhole cameras at the origin looking down +z (the later ones slightly shifted along x)."""
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    T = torch.eye(4, dtype=dtype).repeat(cams, 1, 1)
    T[:, 0, 3] = torch.linspace(0.0, 0.1 * (cams - 1), cams, dtype=dtype)
    return Camera(T_cam_world=T, K=K.repeat(cams, 1, 1), width=width, height=height)


def _segment_dist_sq(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    closest = a + t.unsqueeze(-1) * ab
    return ((p - closest) ** 2).sum(-1)


def brute_rasterize(
    vertices: Tensor, faces: Tensor, cam: Camera, *, layers: int, blur_sq: float = 0.0
) -> Fragments:
    """Fragments of a mesh: per pixel the ``layers`` nearest faces whose signed squared distance is <= blur_sq.

    Barycentrics are perspective-correct, from screen-space barycentrics clamped to [0, 1] and renormalised.
    """
    cams, height, width = len(cam), cam.height, cam.width
    screen, z = cam.project(vertices.unsqueeze(0).expand(cams, -1, -1))  # (C, V, 2), (C, V)
    tri = screen[:, faces]  # (C, F, 3, 2)
    tz = z[:, faces]  # (C, F, 3)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(1, -1, 1, 2).to(vertices.dtype) + 0.5  # (1, P, 1, 2)
    a, b, c = (tri[:, None, :, i] for i in range(3))  # (C, 1, F, 2)
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (c[..., 0] - a[..., 0]) * (
        b[..., 1] - a[..., 1]
    )

    def edge(p, q):
        return (q[..., 0] - p[..., 0]) * (pix[..., 1] - p[..., 1]) - (pix[..., 0] - p[..., 0]) * (
            q[..., 1] - p[..., 1]
        )

    lam = torch.stack([edge(b, c), edge(c, a), edge(a, b)], -1) / area.unsqueeze(-1)  # (C, P, F, 3)
    inside = (lam >= 0).all(-1)
    d2 = torch.stack(
        [_segment_dist_sq(pix, b, c), _segment_dist_sq(pix, c, a), _segment_dist_sq(pix, a, b)]
    ).amin(0)
    dists = torch.where(inside, -d2, d2)
    lam_c = lam.clamp(0.0, 1.0)
    lam_c = lam_c / lam_c.sum(-1, keepdim=True).clamp_min(1e-12)
    w = lam_c / tz[:, None]
    depth = 1.0 / w.sum(-1)
    bary = w * depth.unsqueeze(-1)
    keep = (dists <= blur_sq) & (tz[:, None] > 0).all(-1)
    key = torch.where(keep, depth.detach(), torch.full_like(depth, float("inf")))
    order = key.argsort(dim=-1)[..., :layers]
    valid = torch.gather(keep, -1, order)
    face_idx = torch.where(valid, order, torch.full_like(order, -1))

    def take(t: Tensor, fill: float) -> Tensor:
        if t.ndim == 4:
            got = torch.gather(t, 2, order.unsqueeze(-1).expand(-1, -1, -1, t.shape[-1]))
            return torch.where(valid.unsqueeze(-1), got, torch.full_like(got, fill))
        return torch.where(valid, torch.gather(t, 2, order), torch.full_like(order, fill, dtype=t.dtype))

    k = order.shape[-1]
    shape = (cams, height, width, k)
    return Fragments(
        pix_to_face=face_idx.reshape(shape),
        bary=take(bary, 0.0).reshape(*shape, 3),
        dists=take(dists, PAD_DIST).reshape(shape),
        depth=take(depth, 0.0).reshape(shape),
    )


def random_mesh(gen: torch.Generator, faces: int, *, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """A soup of ``faces`` random triangles at depth 2..4 in front of ``camera`` (independent vertices)."""
    centres = torch.stack(
        [
            (torch.rand(faces, generator=gen, dtype=dtype) - 0.5) * 1.2,
            (torch.rand(faces, generator=gen, dtype=dtype) - 0.5) * 1.2,
            2.0 + 2.0 * torch.rand(faces, generator=gen, dtype=dtype),
        ],
        -1,
    )
    offsets = (torch.rand(faces, 3, 3, generator=gen, dtype=dtype) - 0.5) * torch.tensor(
        [0.9, 0.9, 0.4], dtype=dtype
    )
    vertices = (centres[:, None] + offsets).reshape(-1, 3)
    return vertices, torch.arange(faces * 3).reshape(faces, 3)


def grid_mesh(n: int, *, size: float = 1.0, depth: float = 3.0, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """A connected (n x n quads) square of side ``size`` at depth ``depth``, consistently oriented."""
    lin = torch.linspace(-size / 2, size / 2, n + 1, dtype=dtype)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    vertices = torch.stack([xx, yy, torch.full_like(xx, depth)], -1).reshape(-1, 3)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return vertices, faces
