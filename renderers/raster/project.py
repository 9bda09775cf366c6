"""Per-camera face set-up of ``rasterize``, shared by both backends (torch, differentiable w.r.t. vertices).

For every camera ``c`` and face ``f`` it computes, in this order:

1. camera-frame vertices ``v_cam = R v + t`` (OpenCV axes, z forward);
2. the part of the face in front of the near plane ``z = z_near`` (Sutherland-Hodgman against one plane: a
   triangle stays a triangle, becomes a smaller triangle or a quad, or vanishes), as a convex polygon of at most
   4 points;
3. that polygon projected to pixels (pinhole, pixel centres at +0.5): ``poly`` is what the coverage test and the
   signed distance ``dists`` use;
4. the plane of the *unclipped* face, ``N = (v1 - v0) x (v2 - v0)`` and ``D = v0 . (v1 x v2)``: the camera-z depth
   of the face along the ray ``d = K^-1 (u, v, 1)`` is ``D / (d . N)`` whether or not the face was clipped, so
   barycentrics and depth are always those of the original face (clipping never changes them);
5. ``valid``: faces with a polygon of at least 3 points and a projected area above ``MIN_AREA_PX2`` (this drops
   faces fully behind the near plane, zero-area faces and faces seen exactly edge-on), minus back faces when
   culling.

The intrinsics ``K`` are treated as constants (detached): the Warp attribute pass does not differentiate the ray
directions, and both backends must share one differentiability contract. Gradients do flow to ``T_cam_world``.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.core.camera import Camera

__all__ = [
    "MIN_AREA_PX2",
    "POLY_POINTS",
    "ProjectedFaces",
    "clip_near",
    "clip_near_general",
    "project_faces",
    "ray_params",
]

POLY_POINTS = 4  # a triangle clipped by one plane has at most 4 corners
# Projected area (px^2) at or below which a face is degenerate: no fragments (its barycentrics would divide by a
# near-zero d . N). 1e-8 px^2 is far below any face that covers a pixel centre in a float32 image.
MIN_AREA_PX2 = 1e-8


@dataclass
class ProjectedFaces:
    """Faces of one mesh set up for C cameras (see the module docstring).

    Attributes:
        v_cam: (C, V, 3) camera-frame vertices; differentiable.
        poly: (C, F, 4, 2) pixel coordinates of the near-clipped convex polygon; polygons with 3 corners repeat
            corner 0 in slot 3 (a zero-length edge changes neither the inside test nor the distance).
        plane: (C, F, 4) detached ``(N, D)`` of each face's plane (depth ``D / (d . N)`` for visibility).
        valid: (C, F) the face can produce fragments in camera c.
        rays: (C, 5) detached ``(fx, fy, cx, cy, skew)``: ``d = ((u - cx - skew (v - cy) / fy) / fx, (v - cy) / fy,
            1)``.
        width, height: image size in pixels.
    """

    v_cam: Float[Tensor, "C V 3"]
    poly: Float[Tensor, "C F 4 2"]
    plane: Float[Tensor, "C F 4"]
    valid: Bool[Tensor, "C F"]
    rays: Float[Tensor, "C 5"]
    width: int
    height: int


def ray_params(camera: Camera, dtype: torch.dtype) -> Float[Tensor, "C 5"]:
    """(C, 5) detached ``(fx, fy, cx, cy, skew)`` of the pinhole intrinsics in ``dtype``."""
    K = camera.K.detach().to(dtype)
    return torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 0, 1]], dim=-1)


def clip_near(
    tri: Float[Tensor, "C F 3 3"], z_near: float
) -> tuple[Float[Tensor, "C F 4 3"], Int[Tensor, "C F"]]:
    """Clip camera-frame triangles to ``z >= z_near``: (C, F, 4, 3) polygon corners (unused slots repeat corner
    0) and (C, F) corner counts (0 for faces fully behind).

    When no corner lies behind the plane (the common case) the polygons are the triangles themselves; this skips
    the clipping arithmetic (about half of the set-up time at 10k faces) at the price of one host sync.
    """
    if not bool((tri[..., 2] < z_near).any()):
        count = torch.full(tri.shape[:-2], 3, dtype=torch.int64, device=tri.device)
        return torch.cat([tri, tri[..., :1, :]], dim=-2), count
    return clip_near_general(tri, z_near)


def clip_near_general(
    tri: Float[Tensor, "C F 3 3"], z_near: float
) -> tuple[Float[Tensor, "C F 4 3"], Int[Tensor, "C F"]]:
    """:func:`clip_near` for any input. Edge ``i -> i+1`` emits its start corner if in front, then its crossing
    point if it crosses the plane; the emitted sequence is the clipped polygon in order (Sutherland-Hodgman with
    one plane)."""
    a, b = tri, tri.roll(-1, dims=-2)
    za, zb = a[..., 2], b[..., 2]
    a_in, b_in = za >= z_near, zb >= z_near
    crosses = a_in != b_in
    denominator = torch.where(crosses, zb - za, torch.ones_like(za))
    t = torch.where(crosses, (z_near - za) / denominator, torch.zeros_like(za))
    crossing = a + t[..., None] * (b - a)
    candidates = torch.stack([a, crossing], dim=-2).flatten(-3, -2)  # (C, F, 6, 3)
    keep = torch.stack([a_in, crosses], dim=-1).flatten(-2)  # (C, F, 6)
    order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices[..., :POLY_POINTS]
    corners = torch.gather(candidates, -2, order[..., None].expand(*order.shape, 3))
    count = keep.sum(-1)
    slot = torch.arange(POLY_POINTS, device=tri.device)
    corners = torch.where((slot < count[..., None])[..., None], corners, corners[..., :1, :])
    return corners, count


def _project(points: Float[Tensor, "C F P 3"], rays: Float[Tensor, "C 5"]) -> Float[Tensor, "C F P 2"]:
    fx, fy, cx, cy, skew = (rays[:, i, None, None] for i in range(5))
    x, y, z = points.unbind(-1)
    return torch.stack([fx * x / z + skew * y / z + cx, fy * y / z + cy], dim=-1)


def _area(poly: Float[Tensor, "C F P 2"]) -> Float[Tensor, "C F"]:
    """Signed shoelace area of the (closed) polygons."""
    nxt = poly.roll(-1, dims=-2)
    return 0.5 * (poly[..., 0] * nxt[..., 1] - poly[..., 1] * nxt[..., 0]).sum(-1)


def project_faces(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    camera: Camera,
    *,
    z_near: float,
    cull_backfaces: bool,
) -> ProjectedFaces:
    """Set up ``faces`` of ``vertices`` for every camera of ``camera`` (see the module docstring).

    Differentiable w.r.t. ``vertices`` and ``camera.T_cam_world`` (``v_cam`` and ``poly``).
    """
    T = camera.T_cam_world.to(vertices.dtype)
    v_cam = vertices[None] @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]
    tri = v_cam[:, faces]  # (C, F, 3, 3)
    corners, count = clip_near(tri, z_near)
    rays = ray_params(camera, vertices.dtype)
    if bool((count == 0).any()):
        # Faces fully behind get a harmless dummy polygon (z = 1) so no 0/0 reaches the gradients.
        dummy = torch.zeros_like(corners)
        dummy[..., 2] = 1.0
        corners = torch.where((count > 0)[..., None, None], corners, dummy)
    poly = _project(corners, rays)
    v0, v1, v2 = tri.detach().unbind(-2)
    normal = torch.linalg.cross(v1 - v0, v2 - v0)
    offset = (v0 * torch.linalg.cross(v1, v2)).sum(-1)
    valid = (count >= 3) & (_area(poly.detach()).abs() > MIN_AREA_PX2)
    if cull_backfaces:
        # Front faces have their normal (v1 - v0) x (v2 - v0) pointing towards the camera: N . v0 = D < 0.
        valid = valid & (offset < 0)
    return ProjectedFaces(
        v_cam=v_cam,
        poly=poly,
        plane=torch.cat([normal, offset[..., None]], dim=-1),
        valid=valid,
        rays=rays,
        width=int(camera.width),
        height=int(camera.height),
    )
