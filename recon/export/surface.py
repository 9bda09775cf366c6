"""A fused surface mesh from rendered depth: TSDF integration (Open3D) + marching cubes, largest component kept.

This is the 2DGS-style extractor of the triangle-splatting spec (§13.3), written against ``Scene.render`` so it
serves every representation that renders depth.
"""

import logging
from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, ReconError, RenderOutput
from recon.core.shapes import Backend
from recon.scenes.base import RenderOptions, Scene

_log = logging.getLogger(__name__)

FUSION_ALPHA = 0.5  # pixels whose accumulated opacity is below this carry no surface depth
EMPTY_ALPHA = 0.05  # pixels below this opacity are free space along their whole ray (carved in the TSDF)
TSDF_RESOLUTION = (
    128  # voxels along the longest side of the object bounding box (~40 MB grid, seconds on CPU)
)
TRUNCATION_VOXELS = 4.0  # TSDF truncation distance in voxels (2DGS uses 4 voxels at DTU settings)
GRID_MARGIN_VOXELS = 2  # empty voxels around the truncation band so the extracted surface closes
BOX_QUANTILE = 0.005  # robust object bounds from depth points (ignores a few stray floaters)
MAX_FUSION_VIEWS = 100  # training views rendered for fusion (evenly spread)
CLOSE_RETRIES = 2  # marching cubes at the full resolution can leave pinholes in thin parts: retry coarser ...
COARSEN = 0.75  # ... by this factor per retry, keeping the first closed surface
MIN_RESOLUTION = 32
DEPTH_TOL = 0.01  # a view sees a point if |z_point - z_render| < DEPTH_TOL * z + DEPTH_TOL_BOX * box diagonal
DEPTH_TOL_BOX = 0.03  # (fused surfaces sit up to ~2 voxels + 1 pixel footprint off the rendered depth)
POINT_CHUNK = 1 << 18  # points projected per step (bounds memory)


def depth_points(cameras: Camera, depths: Float[Tensor, "C H W 1"]) -> Float[Tensor, "P 3"]:
    """World points of every pixel with depth > 0 (pixel centres at +0.5)."""
    points = []
    for c in range(len(cameras)):
        mask = depths[c, ..., 0] > 0
        if bool(mask.any()):
            uv = cameras[c].pixel_grid()[mask].to(cameras.dtype)[None] + 0.5
            points.append(
                cameras[c].unproject(uv, depths[c, ..., 0][mask][None].to(cameras.dtype))[0].float()
            )
    if not points:
        raise ReconError("surface fusion: no pixel has depth (nothing opaque was rendered)")
    return torch.cat(points)


def robust_bounds(points: Float[Tensor, "P 3"]) -> Float[Tensor, "2 3"]:
    """Quantile bounding box of ``points`` (ignores a few stray floaters)."""
    sample = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:200_000]]
    return torch.stack(
        [torch.quantile(sample, BOX_QUANTILE, dim=0), torch.quantile(sample, 1 - BOX_QUANTILE, dim=0)]
    )


def _integrate(volume, camera: Camera, depth: Tensor, color: Tensor | None, depth_max: float) -> None:
    """Integrate one (H, W, 1) depth map (and (H, W, 3) colour) seen by a single camera into an Open3D TSDF."""
    import open3d as o3d

    K = camera.K[0].double().cpu()
    # Open3D puts pixel centres at integers; ours sit at +0.5, so its principal point is ours minus 0.5.
    intrinsic = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, float(K[0, 0]), float(K[1, 1]),
                                                  float(K[0, 2]) - 0.5, float(K[1, 2]) - 0.5)  # fmt: skip
    depth_np = np.ascontiguousarray(depth[..., 0].detach().float().cpu().numpy())
    rgb = color if color is not None else torch.full((*depth.shape[:2], 3), 0.5)
    rgb8 = np.ascontiguousarray((rgb.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(rgb8), o3d.geometry.Image(depth_np), depth_scale=1.0, depth_trunc=depth_max,  # pyright: ignore[reportCallIssue, reportArgumentType]  # open3d's stubs omit the ndarray constructor
        convert_rgb_to_intensity=False,
    )  # fmt: skip
    volume.integrate(rgbd, intrinsic, np.ascontiguousarray(camera.T_cam_world[0].double().cpu().numpy()))


def _clean(mesh, *, keep_largest: bool):
    """Weld the marching-cubes vertices, drop degenerate faces, optionally keep the largest connected component."""
    mesh.remove_duplicated_vertices()  # marching cubes emits one vertex per cell edge and cube: weld them
    mesh.remove_degenerate_triangles()
    if keep_largest and len(mesh.triangles) > 0:
        clusters, counts, _ = mesh.cluster_connected_triangles()
        largest = int(np.argmax(np.asarray(counts)))
        mesh.remove_triangles_by_mask(np.asarray(clusters) != largest)
        mesh.remove_unreferenced_vertices()
    return mesh


def fuse_depth_maps(
    cameras: Camera,
    depths: Float[Tensor, "C H W 1"],
    colors: Float[Tensor, "C H W 3"] | None = None,
    *,
    empty: Tensor | None = None,
    resolution: int = TSDF_RESOLUTION,
    bounds: Float[Tensor, "2 3"] | None = None,
    keep_largest: bool = True,
) -> Mesh:
    """TSDF-fuse camera-z depth maps (0 = no surface) on a uniform grid and extract a triangle mesh.

    Args:
        cameras: C pinhole cameras (OpenCV axes, pixel centres at +0.5).
        depths: (C, H, W, 1) camera-frame z; 0 marks pixels without surface.
        colors: optional (C, H, W, 3) colours in [0, 1] integrated as vertex colours.
        empty: optional (C, H, W, 1) bool, pixels whose ray hits nothing (background). They are integrated at a
            depth beyond the fused region, which carves free space along them; without it the truncation band
            near silhouettes stays unobserved and the extracted surface has holes there.
        resolution: voxels along the longest side of ``bounds``.
        bounds: (2, 3) region to fuse (default: the robust bounding box of the depth points).
        keep_largest: keep only the largest connected component (spec §13.3: "keep the largest cluster").

    Returns:
        Mesh with vertex colours when ``colors`` is given. Not differentiable.
    """
    import open3d as o3d

    if bounds is None:
        bounds = robust_bounds(depth_points(cameras, depths))
    extent = float((bounds[1] - bounds[0]).max())
    voxel = extent / resolution
    pad = (GRID_MARGIN_VOXELS + TRUNCATION_VOXELS) * voxel  # room for the truncation band around the surface
    length = extent + 2 * pad
    origin = ((bounds[0] + bounds[1]) / 2 - length / 2).double().numpy()
    grid = int(round(length / voxel))
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=length, resolution=grid, sdf_trunc=TRUNCATION_VOXELS * voxel,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=origin,
    )  # fmt: skip
    far = float(depths.max()) + 2.0 * length  # beyond every voxel of the grid from any camera that sees it
    if empty is not None:
        depths = torch.where(empty & (depths <= 0), torch.full_like(depths, far), depths)
    depth_max = far * 1.01
    for c in range(len(cameras)):
        _integrate(volume, cameras[c], depths[c], None if colors is None else colors[c], depth_max)
    mesh = _clean(volume.extract_triangle_mesh(), keep_largest=keep_largest)
    if len(mesh.triangles) == 0:
        raise ReconError(
            "surface fusion produced an empty mesh (no rendered depth above the alpha threshold)"
        )
    vertex_colors = torch.from_numpy(np.asarray(mesh.vertex_colors)).float() if colors is not None else None
    return Mesh(
        vertices=torch.from_numpy(np.asarray(mesh.vertices)).float(),
        faces=torch.from_numpy(np.asarray(mesh.triangles)).long(),
        vertex_colors=vertex_colors,
    )


def surface_maps(out: RenderOutput, camera: Camera) -> tuple[Tensor, Tensor, Tensor]:
    """``(camera-z median depth (1, H, W, 1), alpha (1, H, W, 1), un-premultiplied colour (1, H, W, 3))`` of a
    render over a black background (RenderOutput depths are camera z). The only place export reads renders."""
    depth = out.require("depth_median", by="surface export (TSDF fusion, texture baking)")
    alpha = out.alpha.float().cpu()
    color = (out.rgb.float().cpu() / alpha.clamp_min(1e-6)).clamp(0, 1)  # un-premultiply the black background
    return depth.float().cpu(), alpha, color


def render_surface_maps(
    scene: Scene, cams: Camera, *, backend: Backend = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """``surface_maps`` of every camera of ``cams``, concatenated along the first axis."""
    device = next(iter(scene.parameters()), torch.empty(0)).device  # render where the scene lives
    options = RenderOptions(background=torch.zeros(3, device=device), backend=backend, depth=True,
                            median_depth=True)  # fmt: skip
    cams = cams.to(device=device)
    maps = [surface_maps(scene.render(cams[c], options), cams[c]) for c in range(len(cams))]
    return tuple(torch.cat(m) for m in zip(*maps, strict=True))  # type: ignore[return-value]


def spread_views(cams: Camera, max_views: int) -> Camera:
    """At most ``max_views`` cameras, evenly spread over ``cams``."""
    count = len(cams)
    return cams[torch.linspace(0, count - 1, min(count, max_views)).round().long().unique()]


@torch.no_grad()
def fuse_surface(
    scene: Scene,
    dataset,
    *,
    backend: Backend = "auto",
    resolution: int = TSDF_RESOLUTION,
    max_views: int = MAX_FUSION_VIEWS,
) -> Mesh:
    """``fuse_surface_from_cameras`` with the training cameras of a ``recon.datasets.SceneDataset``."""
    return fuse_surface_from_cameras(scene, dataset.cameras("train"), backend=backend, resolution=resolution,
                                     max_views=max_views)  # fmt: skip


@torch.no_grad()
def fuse_surface_from_cameras(
    scene: Scene,
    cameras: Camera,
    *,
    backend: Backend = "auto",
    resolution: int = TSDF_RESOLUTION,
    max_views: int = MAX_FUSION_VIEWS,
) -> Mesh:
    """Render median depth and colour from ``cameras`` (normalised frame) and TSDF-fuse them (spec §13.3).

    The grid spans the robust bounding box of the rendered surface points with ``resolution`` voxels along its
    longest side. Where the object is closed the result should be too: if marching cubes leaves boundary edges
    (pinholes in thin parts), the fusion is retried up to ``CLOSE_RETRIES`` times at a coarser grid and the first
    closed surface is returned. Returns the mesh in the scene (normalised) frame.
    """
    cams = spread_views(cameras, max_views)
    depths, alphas, colors = render_surface_maps(scene, cams, backend=backend)
    empty = alphas < EMPTY_ALPHA
    depths = torch.where(alphas > FUSION_ALPHA, depths, torch.zeros_like(depths))
    bounds = robust_bounds(depth_points(cams, depths))
    first = None
    for attempt in range(CLOSE_RETRIES + 1):
        res = max(MIN_RESOLUTION, int(resolution * COARSEN**attempt))
        mesh = fuse_depth_maps(cams, depths, colors, empty=empty, resolution=res, bounds=bounds)
        first = first or mesh
        if boundary_edge_count(mesh) == 0:
            return recolor(mesh, cams, (depths, alphas, colors))
    _log.info("fused surface keeps boundary edges at every resolution tried; returning the finest")
    assert first is not None  # the loop above runs at least once
    return recolor(first, cams, (depths, alphas, colors))


def recolor(mesh: Mesh, cams: Camera, maps: tuple[Tensor, Tensor, Tensor]) -> Mesh:
    """Vertex colours by ``project_colors`` from the rendered views (the TSDF's own colours average in the
    background of every view whose free-space ray passes near the surface, which darkens them); vertices no view
    sees keep the TSDF colour."""
    from recon.export.mesh_io import vertex_normals

    box = mesh.bounds()
    colors, weight = project_colors(
        mesh.vertices, vertex_normals(mesh), cams, maps, float((box[1] - box[0]).norm())
    )
    keep = mesh.vertex_colors if mesh.vertex_colors is not None else torch.full_like(colors, 0.5)
    return replace(mesh, vertex_colors=torch.where((weight > 0)[:, None], colors, keep))


def project_colors(
    points: Tensor, normals: Tensor, cams: Camera, maps: tuple[Tensor, Tensor, Tensor], box_diag: float
) -> tuple[Tensor, Tensor]:
    """Visibility-weighted mean render colour of world ``points``: ``(colour (P, 3), total weight (P,))``.

    A view counts where the point projects inside the image, the render is opaque there (alpha > FUSION_ALPHA)
    and its median depth agrees with the point's depth (occluded views are skipped); its weight is ``cos^2`` of
    the angle between the view ray and ``normals``. Weight 0 means no view saw the point.
    """
    depths, alphas, colors = maps
    acc = torch.zeros(len(points), 3)
    total = torch.zeros(len(points))
    for c in range(len(cams)):
        cam = cams[c]
        centre = cam.centers()[0]
        for start in range(0, len(points), POINT_CHUNK):
            x = points[start : start + POINT_CHUNK]
            uv, z = cam.project(x[None])
            uv, z = uv[0], z[0]
            col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            ok = (z > 0) & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
            col, row = col.clamp(0, cam.width - 1), row.clamp(0, cam.height - 1)
            seen_z = depths[c, row, col, 0]
            ok &= alphas[c, row, col, 0] > FUSION_ALPHA
            ok &= (z - seen_z).abs() < DEPTH_TOL * z + DEPTH_TOL_BOX * box_diag
            ray = x - centre
            cos = (ray * normals[start : start + POINT_CHUNK]).sum(-1) / ray.norm(dim=-1).clamp_min(1e-12)
            weight = torch.where(ok, cos.square(), torch.zeros_like(cos))
            acc[start : start + POINT_CHUNK] += weight[:, None] * colors[c, row, col]
            total[start : start + POINT_CHUNK] += weight
    return acc / total.clamp_min(1e-12)[:, None], total


def boundary_edge_count(mesh: Mesh) -> int:
    """Number of edges used by exactly one face (0 for a closed surface)."""
    f = mesh.faces.long()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return int((counts == 1).sum())
