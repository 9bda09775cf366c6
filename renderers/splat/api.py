"""Public API of the tile splat rasteriser (triangle splats; spec triangle_splats.md sections 1-7).

Stages, each callable on its own (tests do):

1. :func:`project_triangles` (torch, differentiable): world triangles + one camera -> :class:`ProjectedTriangles`
   (edge lines, ``1/phi(s)``, depth, view normal, culling, footprint tile rectangles, statistics).
2. :func:`bin_tiles`: 16x16 tile binning and the (tile, depth) sort -> :class:`TileBins` (torch twin or Warp).
3. :func:`rasterize_projected`: front-to-back compositing, forward and backward (dense torch reference or Warp
   kernels with hand-written backward) -> :class:`RasterOutput`.

:func:`rasterize_triangles` chains them for a batch of cameras.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core.camera import Camera
from recon.core.shapes import Backend
from recon.renderers._backend import ResolvedBackend, resolve_backend
from recon.renderers.splat import binning, ref
from recon.renderers.splat.project import project_triangles
from recon.renderers.splat.types import (
    PrimitiveStats,
    ProjectedTriangles,
    RasterOutput,
    SplatOutput,
    TileBins,
)

__all__ = [
    "bin_tiles",
    "project_triangles",
    "rasterize_projected",
    "rasterize_triangles",
    "resolve_splat_backend",
]


def resolve_splat_backend(backend: Backend, *tensors: Tensor) -> ResolvedBackend:
    """``resolve_backend`` for the splat family (the float32 rule lives there).

    Raises:
        BackendError: explicit ``backend="warp"`` that cannot run (e.g. float64 tensors).
    """
    return resolve_backend(backend, *tensors, op="splat.rasterize")


def bin_tiles(proj: ProjectedTriangles, *, backend: Backend = "auto") -> TileBins:
    """Bin visible triangles into 16x16 tiles and sort each tile's list front to back.

    One key per (tile, triangle): ``key = (tile_id << 32) | bits_u32(zbar)``, one stable sort of all keys, then
    per-tile ``[start, end)`` ranges (spec 5).

    Args:
        proj: projected triangles of one camera.
        backend: "torch" (torch.sort twin), "warp" (Warp kernels + radix sort) or "auto".

    Returns:
        TileBins. Not differentiable (integer output).
    """
    if resolve_splat_backend(backend, proj.zbar) == "warp":
        from recon.renderers.splat import warp_impl

        return warp_impl.bin_tiles_warp(proj)
    return binning.bin_tiles_torch(proj)


def rasterize_projected(
    proj: ProjectedTriangles,
    bins: TileBins | None,
    background: Float[Tensor, "3"],
    *,
    backend: Backend = "auto",
    compute_distortion: bool = False,
) -> RasterOutput:
    """Composite the projected triangles of one camera front to back (spec 4) and return the raw buffers.

    .. math::
        \\alpha_j(p) = \\min(0.99, o_j\\,\\mathrm{ReLU}(\\phi_j(p)/\\phi_j(s))^{\\sigma_j}),\\quad
        C(p) = \\sum_j w_j c_j + T_{final}\\,bg,\\quad w_j = \\alpha_j T_j

    with skips below ``1/255``, early stop at ``T < 1e-4`` and only the binned tiles of each triangle.

    Args:
        proj: projected triangles (from :func:`project_triangles`).
        bins: tile bins of ``proj`` (required by the Warp path; the dense reference ignores them and applies the
            same footprint rule from ``proj.rect``). None lets the Warp path bin on its own.
        background: (3,) background colour.
        backend: "torch" (dense reference), "warp" or "auto".
        compute_distortion: also return the 2DGS distortion map (and its gradient).

    Returns:
        RasterOutput. Differentiable w.r.t. ``proj.lines``, ``inv_phi_s``, ``sigmas``, ``opacities``, ``colors``,
        ``zbar``, ``normals`` and ``background`` (``max_blending`` is a detached statistic).
    """
    if resolve_splat_backend(backend, proj.zbar, background) == "warp":
        from recon.renderers.splat import warp_impl

        if bins is None:
            bins = warp_impl.bin_tiles_warp(proj)
        return warp_impl.rasterize_warp(proj, bins, background, compute_distortion=compute_distortion)
    return ref.rasterize_ref(proj, background, compute_distortion=compute_distortion)


def _validate(
    vertices: Tensor,
    colors: Tensor,
    opacities: Tensor,
    sigmas: Tensor,
    camera: Camera,
    background: Tensor | None,
) -> None:
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a recon.core.Camera, got {type(camera).__name__}")
    for name, t in (("vertices", vertices), ("colors", colors), ("opacities", opacities), ("sigmas", sigmas)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if vertices.ndim != 3 or vertices.shape[1:] != (3, 3):
        raise ValueError(f"vertices must have shape (N, 3, 3), got {tuple(vertices.shape)}")
    n, c = vertices.shape[0], len(camera)
    if colors.shape not in ((n, 3), (c, n, 3)):
        raise ValueError(f"colors must have shape ({n}, 3) or ({c}, {n}, 3), got {tuple(colors.shape)}")
    if opacities.shape != (n,):
        raise ValueError(f"opacities must have shape ({n},), got {tuple(opacities.shape)}")
    if sigmas.shape != (n,):
        raise ValueError(f"sigmas must have shape ({n},), got {tuple(sigmas.shape)}")
    tensors = {
        "colors": colors,
        "opacities": opacities,
        "sigmas": sigmas,
        "camera.T_cam_world": camera.T_cam_world,
    }
    if background is not None:
        if background.shape != (3,):
            raise ValueError(f"background must have shape (3,), got {tuple(background.shape)}")
        tensors["background"] = background
    for name, t in tensors.items():
        if t.device != vertices.device:
            raise ValueError(f"{name} is on {t.device} but vertices are on {vertices.device}; use one device")
        if t.dtype != vertices.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but vertices have {vertices.dtype}; use one dtype")
    if camera.camera_model != "pinhole":
        raise ValueError(
            f"camera.camera_model must be 'pinhole' (undistort images first), got {camera.camera_model!r}"
        )


def rasterize_triangles(
    vertices: Float[Tensor, "N 3 3"],
    colors: Float[Tensor, "C N 3"] | Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    sigmas: Float[Tensor, " N"],
    camera: Camera,
    *,
    background: Float[Tensor, "3"] | None = None,
    backend: Backend = "auto",
    incenter_grad: bool = False,
    compute_distortion: bool = False,
) -> SplatOutput:
    """Render triangle splats (Held et al. 2025, Eq. 1 window) into ``C`` cameras.

    .. math::
        I(p) = \\mathrm{ReLU}(\\phi(p)/\\phi(s))^{\\sigma},\\quad \\phi(p) = \\max_k (n_k\\cdot p + d_k)

    Args:
        vertices: (N, 3, 3) world-space vertices ``[triangle, vertex, xyz]``.
        colors: (C, N, 3) per-view colours (evaluate SH with :func:`recon.renderers.splat.sh.eval_sh`) or (N, 3)
            shared by all views.
        opacities: (N,) activated opacities ``o`` in [0, 1].
        sigmas: (N,) activated window exponents ``sigma > 0``.
        camera: ``C`` pinhole cameras of one image size.
        background: (3,) background colour; None means black.
        backend: "torch" (dense reference, small inputs only), "warp" (CPU/CUDA kernels) or "auto" (warp when
            it can run on the inputs' device and dtype is float32).
        incenter_grad: False (published behaviour) detaches ``1/phi(s)``; True differentiates through the
            incenter and inradius.
        compute_distortion: also compute the 2DGS distortion map.

    Returns:
        SplatOutput with rgb, alpha, expected depth, median depth, view-space normals, optional distortion and
        per-primitive statistics.

    Differentiable w.r.t.: vertices (through projection), colors, opacities, sigmas, background (and the camera
    pose/intrinsics through projection). Statistics carry no gradient.

    Example:
        >>> import torch
        >>> from recon.core.camera import Camera
        >>> cam = Camera(T_cam_world=torch.eye(4)[None], K=torch.tensor([[[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]]),
        ...              width=32, height=32)
        >>> tri = torch.tensor([[[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.5, 2.0]]])
        >>> out = rasterize_triangles(tri, torch.ones(1, 3), torch.full((1,), 0.9), torch.ones(1), cam,
        ...                           backend="torch")
        >>> out.rgb.shape
        torch.Size([1, 32, 32, 3])
    """
    _validate(vertices, colors, opacities, sigmas, camera, background)
    if background is None:
        background = torch.zeros(3, device=vertices.device, dtype=vertices.dtype)
    resolved = resolve_splat_backend(backend, vertices, colors, opacities, sigmas)
    outs: list[RasterOutput] = []
    projs: list[ProjectedTriangles] = []
    for c in range(len(camera)):
        view_colors = colors if colors.ndim == 2 else colors[c]
        proj = project_triangles(
            vertices, view_colors, opacities, sigmas, camera[c], incenter_grad=incenter_grad
        )
        bins = bin_tiles(proj, backend=resolved) if resolved == "warp" else None
        outs.append(
            rasterize_projected(
                proj, bins, background, backend=resolved, compute_distortion=compute_distortion
            )
        )
        projs.append(proj)
    alpha = torch.stack([o.alpha for o in outs])
    depth_sum = torch.stack([o.depth_sum for o in outs])
    # Expected depth = sum w zbar / alpha; 0 where nothing was blended (NaN -> 0 guard of spec 6).
    depth = torch.where(
        alpha > 0, depth_sum / alpha.clamp_min(torch.finfo(alpha.dtype).tiny), torch.zeros_like(alpha)
    )
    stats = PrimitiveStats(
        means2d=torch.stack([p.means2d for p in projs]),
        radius_px=torch.stack([p.radius_px for p in projs]),
        inradius_px=torch.stack([p.inradius_px for p in projs]),
        max_blending=torch.stack([o.max_blending for o in outs]),
        visible=torch.stack([p.visible for p in projs]),
    )
    return SplatOutput(
        rgb=torch.stack([o.rgb for o in outs]),
        alpha=alpha,
        depth=depth,
        depth_median=torch.stack([o.depth_median for o in outs]),
        normals=torch.stack([o.normals for o in outs]),
        distortion=torch.stack([o.distortion for o in outs]) if compute_distortion else None,  # type: ignore[misc]
        stats=stats,
    )
