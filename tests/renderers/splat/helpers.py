"""Scene builders and a literal spec-pseudo-code oracle for the splat tests."""

import torch

from recon.core.camera import Camera
from recon.renderers.splat.constants import ALPHA_MAX, ALPHA_MIN, T_EARLY_STOP
from tests.renderers.splat import _tol  # noqa: F401  (registers the splat tolerances)

FOCAL = 40.0


def camera(
    width: int = 40, height: int = 24, *, focal: float = FOCAL, dtype=torch.float32, device="cpu"
) -> Camera:
    """Identity-pose pinhole camera looking down +z with the principal point at the image centre."""
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return Camera(T_cam_world=torch.eye(4, dtype=dtype)[None], K=K[None], width=width, height=height).to(
        device
    )


def pixel_camera(width: int, height: int, *, dtype=torch.float32, device="cpu") -> Camera:
    """Camera with f = 1 and c = 0, so a vertex (x z, y z, z) projects to pixel coordinates (x, y)."""
    K = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return Camera(T_cam_world=torch.eye(4, dtype=dtype)[None], K=K[None], width=width, height=height).to(
        device
    )


def lift(p: torch.Tensor, z: float) -> torch.Tensor:
    """World vertices (N, 3, 3) that project to pixel points ``p`` (N, 3, 2) at depth ``z`` in ``pixel_camera``."""
    return torch.cat([p * z, torch.full_like(p[..., :1], z)], dim=-1)


def random_scene(
    n: int,
    gen: torch.Generator,
    *,
    width: int = 40,
    height: int = 24,
    size: float = 0.45,
    behind: int = 0,
    edge_on: int = 0,
    dtype=torch.float32,
):
    """n random triangles in front of ``camera(width, height)`` at depths 1.5..3.5, with some special cases.

    ``behind`` triangles get their centroid behind the camera (z < 0), ``edge_on`` triangles lie in a plane
    through the camera centre (seen exactly edge-on).
    """
    z = 1.5 + 2.0 * torch.rand(n, generator=gen, dtype=dtype)
    half_w, half_h = width / (2 * FOCAL), height / (2 * FOCAL)
    centers = torch.stack(
        [
            (torch.rand(n, generator=gen, dtype=dtype) * 2.4 - 1.2) * half_w * z,
            (torch.rand(n, generator=gen, dtype=dtype) * 2.4 - 1.2) * half_h * z,
            z,
        ],
        -1,
    )
    offsets = (
        torch.randn(n, 3, 3, generator=gen, dtype=dtype) * size * torch.tensor([1.0, 1.0, 0.5], dtype=dtype)
    )
    vertices = centers[:, None, :] + offsets
    if behind:
        vertices[:behind, :, 2] -= 6.0  # centroid depth < 0.2 and vertices behind the camera plane
    if edge_on:
        sl = slice(behind, behind + edge_on)
        d = centers[sl] / centers[sl].norm(dim=-1, keepdim=True)
        u = torch.linalg.cross(d, torch.tensor([0.0, 1.0, 0.0], dtype=dtype).expand_as(d))
        u = u / u.norm(dim=-1, keepdim=True)
        # the triangle spans d (the view ray) and u: its plane contains the camera centre
        vertices[sl] = centers[sl, None] + torch.stack([d * 0.4, u * 0.4, -d * 0.3 - u * 0.3], dim=1)
    colors = torch.rand(n, 3, generator=gen, dtype=dtype)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=gen, dtype=dtype)
    sigmas = 0.3 + 2.5 * torch.rand(n, generator=gen, dtype=dtype)
    return vertices, colors, opacities, sigmas


def spec_loop_render(proj, background: torch.Tensor):
    """Literal spec-section-4 pseudo-code (python loops over pixels and sorted triangles), float64.

    Returns (rgb (H, W, 3), alpha (H, W), max_w (N,)).
    """
    h, w_img = proj.height, proj.width
    lines = proj.lines.detach().double()
    inv = proj.inv_phi_s.detach().double()
    sig, op = proj.sigmas.detach().double(), proj.opacities.detach().double()
    col, zbar = proj.colors.detach().double(), proj.zbar.detach()
    vis = torch.nonzero(proj.visible).squeeze(1).tolist()
    order = sorted(vis, key=lambda j: (float(zbar[j].float()), j))
    rgb = torch.zeros(h, w_img, 3, dtype=torch.float64)
    alpha_img = torch.zeros(h, w_img, dtype=torch.float64)
    max_w = torch.zeros(len(proj), dtype=torch.float64)
    for y in range(h):
        for x in range(w_img):
            p = torch.tensor([x + 0.5, y + 0.5], dtype=torch.float64)
            T, C = 1.0, torch.zeros(3, dtype=torch.float64)
            for j in order:
                x0, y0, x1, y1 = proj.rect[j].tolist()
                if not (x0 <= x // 16 < x1 and y0 <= y // 16 < y1):
                    continue  # tile not binned for this triangle
                L = lines[j, :, :2] @ p + lines[j, :, 2]
                if bool((L > 0).any()):
                    continue
                a = min(ALPHA_MAX, float(op[j]) * max(float(L.max() * inv[j]), 0.0) ** float(sig[j]))
                if a < ALPHA_MIN:
                    continue
                if T * (1 - a) < T_EARLY_STOP:
                    break
                wgt = a * T
                C += wgt * col[j]
                max_w[j] = max(float(max_w[j]), wgt)
                T *= 1 - a
            rgb[y, x] = C + T * background.double()
            alpha_img[y, x] = 1 - T
    return rgb, alpha_img, max_w
