"""SparseFlex scene: a sparse voxel band of FlexiCubes parameters fitted by rasterising its extracted mesh.

Spec sparseflex.md sections 2, 4.1, 5 (He et al. 2025; Shen et al. 2023). Stored:

* buffers ``voxels`` (Nv, 3) int64 active voxels (sorted by key), ``resolution`` () current R, ``box_center`` (3,)
  and ``box_size`` () of the cube (world units) that the unit box ``[-0.5, 0.5]^3`` of the grid maps to:
  ``x_world = box_center + box_size * x_box``;
* per-corner parameters ``s`` (Nc,) (voxel units, inside ``s < 0``) and ``deform`` (Nc, 3) (raw delta), per-voxel
  ``weights`` (Nv, 21) (raw ``beta 12, alpha 8, gamma 1``), rows in the order of ``sparse_voxel_grid(voxels, R)``;
* a colour field (hash grid + MLP) queried at world positions normalised to the cube.

Rendering (spec section 5): ``flexicubes_sparse(training=True)`` of the voxels reaching the cameras' frusta
(``frustum_culling``, spec section 3) -> mesh -> ``rasterize`` (hard, 1 layer) ->
``interpolate`` world position -> colour field -> ``Î = c a + b (1 - a)`` -> ``antialias`` (silhouette gradients).
"""

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from recon.core import Camera, Mesh, RenderCapabilities, RenderOutput
from recon.core.errors import ReconError
from recon.core.shapes import Backend
from recon.renderers.encoding import HashGridConfig
from recon.renderers.isosurface import (
    FlexiCubesOutput,
    SparseVoxelGrid,
    flexicubes_sparse,
    grid_edges,
    l_dev,
    sign_flip_loss,
    sparse_voxel_grid,
    weight_regularizer,
)
from recon.renderers.raster import antialias, interpolate, rasterize
from recon.scenes.base import (
    ExponentialDecayLr,
    ExportOptions,
    ParamGroup,
    RenderOptions,
    Scene,
    StepContext,
)
from recon.scenes.field_scene import vertex_normals
from recon.scenes.fields import cube_box
from recon.scenes.sparseflex.color import ColorField
from recon.scenes.sparseflex.frustum import frustum_mask, sub_grid, voxel_spheres
from recon.scenes.sparseflex.grid_ops import dilate, surface_voxel_mask
from recon.scenes.sparseflex.hull import hull_corner_sdf

__all__ = ["CORNER_GROUPS", "VOXEL_GROUPS", "SparseFlexScene", "SparseFlexSceneConfig", "normal_laplacian"]

NUM_WEIGHTS = 21
CORNER_GROUPS = ("s", "deform")
"""Parameter groups whose rows are grid corners."""
VOXEL_GROUPS = ("weights",)
"""Parameter groups whose rows are grid voxels."""
NORMAL_EPS = 1e-12  # floor of |face normal| when normalising (degenerate faces)


def _color_grid() -> HashGridConfig:
    return HashGridConfig(levels=16, features_per_level=2, log2_hashmap_size=19, base_resolution=16,
                          max_resolution=2048)  # fmt: skip


@dataclass(frozen=True)
class SparseFlexSceneConfig:
    """SparseFlex scene: grid, initialisation, colour field, learning rates and regulariser weights (spec 4-5)."""

    resolution: int = 64
    """Initial voxels per axis R of the grid over the scene cube (spec section 4.1: 64)."""
    band_radius: int = 2
    """Voxels around the surface kept active (spec section 4.1-4.2: 2)."""
    hull_tolerance: int = 1
    """Views that may see a point on background before the visual hull carves it (spec section 4.1: 1)."""
    hull_max_views: int = 64
    """Training views used to carve the visual hull (spread over the split)."""
    sdf_clip: float = 2.0
    """|s| of the initial signed distance is clipped to this many voxels (spec section 4.1)."""
    color_grid: HashGridConfig = field(default_factory=_color_grid)
    """Hash grid of the colour field (spec section 5: 16 levels, 2 features, 2^19 entries, 16 to 2048)."""
    color_hidden_dim: int = 64
    """Width of the colour MLP's hidden layers."""
    color_hidden_layers: int = 2
    """Hidden layers of the colour MLP."""
    lr_s: float = 0.01
    """Learning rate of s (FlexiCubes: 0.01)."""
    lr_deform: float = 0.01
    """Learning rate of the raw corner offsets delta."""
    lr_weights: float = 0.01
    """Learning rate of the raw beta/alpha/gamma weights."""
    lr_color_grid: float = 0.01
    """Learning rate of the colour hash grid."""
    lr_color_mlp: float = 0.001
    """Learning rate of the colour MLP."""
    lr_final_ratio: float = 0.1
    """Learning rates decay log-linearly to this ratio over the budget (spec: 10^(-0.0002 it) over 5000 steps)."""
    mask_weight: float = 1.0
    """Weight of L1(alpha, mask) (needs dataset masks)."""
    sign_flip_start: float = 0.2
    """Sign-flip BCE weight at the start (spec: 0.2)."""
    sign_flip_end: float = 0.01
    """Sign-flip BCE weight after ``sign_flip_until_fraction`` (spec: 0.01)."""
    sign_flip_until_fraction: float = 0.25
    """Fraction of the budget over which the sign-flip weight anneals linearly (spec: first 25%)."""
    l_dev_weight: float = 0.5
    """Weight of mean(L_dev) (spec: 0.5)."""
    weight_reg_weight: float = 0.1
    """Weight of mean |raw beta, raw alpha| (spec: 0.1)."""
    smooth_weight: float = 0.0
    """Weight of the smoothness term: the mean squared normal component of the training mesh's uniform Laplacian,
    in voxel units (``normal_laplacian``; not in the spec; 0: off)."""
    export_min_component: float = 0.01
    """Export drops connected components with fewer faces than this fraction of the largest (floaters; 0 keeps
    every component)."""
    frustum_culling: bool = True
    """Extract and rasterise only the voxels whose bounding sphere (plus the reach of their faces) meets the
    frustum of the rendered cameras (spec section 3, FSV); the image is the same, the cost follows the view."""


class SparseFlexScene(Scene):
    """A sparse FlexiCubes voxel band with a colour field.

    Args:
        config: scene configuration.
        voxels: (Nv, 3) integer active voxels in ``[0, resolution)``.
        resolution: R, voxels per axis.
        s: (Nc,) corner values in the row order of ``sparse_voxel_grid(voxels, resolution)`` (voxel units).
        box_center: (3,) world centre of the grid cube.
        box_size: world side of the grid cube.
        generator: initialisation generator of the colour field.
    """

    capabilities = RenderCapabilities(depth=True, normals=True, depth_median=True)
    """depth_median: one opaque layer, so the transmittance crosses 1/2 at the surface: it equals ``depth``."""

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    voxels: Tensor
    resolution: Tensor
    box_center: Tensor
    box_size: Tensor

    def __init__(
        self,
        config: SparseFlexSceneConfig,
        voxels: Int[Tensor, "Nv 3"],
        resolution: int,
        s: Float[Tensor, " Nc"],
        box_center: Float[Tensor, "3"],
        box_size: float,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.config = config
        self.register_buffer("voxels", voxels.detach().to(torch.int64).clone())
        self.register_buffer("resolution", torch.tensor(int(resolution), dtype=torch.int64))
        self.register_buffer("box_center", box_center.detach().float().clone())
        self.register_buffer("box_size", torch.tensor(float(box_size)))
        grid = self.grid()
        if s.shape != (grid.num_corners,):
            raise ValueError(
                f"s must have shape ({grid.num_corners},) for these voxels, got {tuple(s.shape)}"
            )
        self.s = nn.Parameter(s.detach().float().clone())
        self.deform = nn.Parameter(torch.zeros(grid.num_corners, 3))
        self.weights = nn.Parameter(torch.zeros(grid.num_voxels, NUM_WEIGHTS))
        self.color = ColorField(
            config.color_grid, config.color_hidden_dim, config.color_hidden_layers, generator=generator
        )
        self._extraction: FlexiCubesOutput | None = None
        self.rendered_voxels = 0  # voxels extracted by the last render (frustum culling; host int)
        self.rendered_rows: tuple[Tensor, Tensor] | None = None  # its (corner, voxel) rows; None: all rows

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(
        cls, config: SparseFlexSceneConfig, dataset, *, generator: torch.Generator
    ) -> "SparseFlexScene":
        """Band around the visual hull of the training masks (spec section 4.1)."""
        box = cube_box(dataset.scene_box.float())
        center, size = 0.5 * (box[0] + box[1]), float(box[1, 0] - box[0, 0])
        r = config.resolution
        sdf = hull_corner_sdf(dataset, resolution=r, center=center, size=size, tolerance=config.hull_tolerance,
                              max_views=config.hull_max_views, clip=config.sdf_clip)  # fmt: skip
        return cls.from_corner_sdf(config, sdf, center, size, generator=generator)

    @classmethod
    def from_corner_sdf(
        cls,
        config: SparseFlexSceneConfig,
        sdf: Float[Tensor, "R1 R1 R1"],
        box_center: Float[Tensor, "3"],
        box_size: float,
        *,
        generator: torch.Generator | None = None,
    ) -> "SparseFlexScene":
        """Scene from a dense (R+1)^3 corner field (voxel units): the surface voxels dilated by ``band_radius``."""
        r = sdf.shape[0] - 1
        dense = sparse_voxel_grid(_all_voxels(r), r)
        s_dense = sdf.reshape(-1).float()  # dense corner rows are the linear index of (i, j, k)
        surface = dense.voxels[surface_voxel_mask(dense, s_dense)]
        if surface.numel() == 0:
            raise ReconError("the initial field has no zero crossing: nothing to fit")
        band = dilate(surface, config.band_radius, r)
        grid = sparse_voxel_grid(band, r)
        n = r + 1
        rows = (grid.corners[:, 0] * n + grid.corners[:, 1]) * n + grid.corners[:, 2]
        return cls(config, band, r, s_dense[rows], box_center, box_size, generator=generator)

    @classmethod
    def empty(cls, config: SparseFlexSceneConfig) -> "SparseFlexScene":
        return cls(config, torch.zeros(0, 3, dtype=torch.int64), config.resolution, torch.zeros(0),
                   torch.zeros(3), 1.0)  # fmt: skip

    # --- grid -----------------------------------------------------------------------------------------------
    def grid(self) -> SparseVoxelGrid:
        """The sparse grid of the current ``voxels`` (cached until ``set_grid`` or a state load changes them)."""
        key = (self.voxels.data_ptr(), self.voxels.shape[0], self.voxels.device)
        cached = getattr(self, "_grid_cache", None)
        if cached is None or cached[0] != key:
            r = int(self.resolution)  # host read only when the voxel set changed
            grid = sparse_voxel_grid(self.voxels, r)
            cached = self._grid_cache = (key, grid, grid_edges(grid))
        return cached[1]

    def edges(self) -> Int[Tensor, "E 2"]:
        """(E, 2) unique grid edges of the active voxels (corner rows), for the sign-flip loss."""
        self.grid()
        cached = self._grid_cache
        assert cached is not None  # grid() has just set it
        return cached[2]

    @torch.no_grad()
    def set_grid(self, grid: SparseVoxelGrid) -> None:
        """Adopt a new voxel set (the strategy has already re-ordered the parameter rows to match ``grid``)."""
        if self.s.shape[0] != grid.num_corners or self.weights.shape[0] != grid.num_voxels:
            raise AssertionError("parameter rows do not match the new grid")
        self.voxels = grid.voxels.clone()
        self.resolution.fill_(grid.resolution)
        self._grid_cache = None
        self._extraction = None

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict_resizing(state)
        self._grid_cache = None
        self._box_size_host = None

    def num_primitives(self) -> int:
        return self.voxels.shape[0]

    def to_world(self, x_box: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return self.box_center.to(x_box.dtype) + self.box_size.to(x_box.dtype) * x_box

    def to_unit(self, x_world: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        """World -> the colour field's ``[0, 1]^3``."""
        return (x_world - self.box_center.to(x_world.dtype)) / self.box_size.to(x_world.dtype) + 0.5

    def extract(
        self, *, training: bool, backend: Backend = "auto", camera: Camera | None = None
    ) -> FlexiCubesOutput:
        """The FlexiCubes mesh of the band in the unit box (``training``: centre vertex + 4-triangle fans).

        With ``camera`` (and ``config.frustum_culling``), only the voxels that reach its frusta are extracted
        (``recon.scenes.sparseflex.frustum``): every face visible in those cameras is still produced.
        ``rendered_voxels`` records how many voxels were extracted.
        """
        grid = self.grid()
        s, deform, weights = self.s, self.deform, self.weights
        if camera is not None and self.config.frustum_culling and grid.num_voxels > 0:
            centres, radius = self._voxel_spheres()
            mask = frustum_mask(centres, radius, camera)
            if not bool(mask.all()):  # host sync; a view of the whole band keeps the grid (no rebuild)
                grid, corner_rows, voxel_rows = sub_grid(grid, mask)
                s, deform, weights = s[corner_rows], deform[corner_rows], weights[voxel_rows]
                self.rendered_rows = (corner_rows, voxel_rows)
        if grid is self.grid():
            self.rendered_rows = None
        self.rendered_voxels = grid.num_voxels
        return flexicubes_sparse(grid, s, deform, weights, training=training, backend=backend)

    @torch.no_grad()
    def surface(self, *, backend: Backend = "auto") -> FlexiCubesOutput:
        """The inference-mode mesh of the whole band in the unit box (no gradients), leaving the step's
        ``rendered_rows`` / ``rendered_voxels`` bookkeeping as it is (band maintenance and subdivision read the
        surface in the middle of a training step)."""
        return flexicubes_sparse(
            self.grid(), self.s, self.deform, self.weights, training=False, backend=backend
        )

    def _voxel_spheres(self) -> tuple[Tensor, float]:
        """``voxel_spheres`` of the current grid (cached with it)."""
        grid = self.grid()
        cached = getattr(self, "_sphere_cache", None)
        if cached is None or cached[0] is not grid:
            self._sphere_cache = (grid, voxel_spheres(grid, self.box_center, self.box_side()))
        return self._sphere_cache[1]

    def box_side(self) -> float:
        """``box_size`` as a Python float (read from the buffer once per loaded or moved box)."""
        cached = getattr(self, "_box_size_host", None)
        if cached is None or cached[0] is not self.box_size:
            cached = (self.box_size, float(self.box_size))  # one host read per loaded box
            self._box_size_host = cached
        return cached[1]

    # --- Scene interface ------------------------------------------------------------------------------------
    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        decay = ExponentialDecayLr(final_ratio=c.lr_final_ratio)
        return [
            ParamGroup("s", self.s, c.lr_s, decay),
            ParamGroup("deform", self.deform, c.lr_deform, decay),
            ParamGroup("weights", self.weights, c.lr_weights, decay),
            ParamGroup(
                "color.encoding.table", self.color.encoding.table, c.lr_color_grid, decay, per_row=False
            ),
        ] + [
            ParamGroup(f"color.mlp.{name}", p, c.lr_color_mlp, decay, per_row=False)
            for name, p in self.color.mlp.named_parameters()
        ]

    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        """Render the extracted surface into ``camera`` (spec section 5).

        Args:
            camera: C pinhole cameras.
            options: background (black if None), backend, and whether to return normals.
            pixels: optional (C, R, 2) integer pixels ``(column, row)``; the full image is rendered and gathered.

        Returns:
            RenderOutput with rgb ``c a + b (1 - a)`` and alpha (C, H, W, ·) after silhouette antialiasing, depth
            (camera z of the nearest face, 0 off the surface; also ``depth_median`` when asked) and, when asked,
            unit world-space face normals (times coverage).

        Differentiable w.r.t. ``s``, ``deform``, ``weights`` (through positions, colours and the antialiased
        silhouettes) and the colour field. In grad mode the extraction is kept for ``regularizers`` (L_dev).
        """
        camera = camera.to(device=self.s.device, dtype=self.s.dtype)
        training = torch.is_grad_enabled()
        out = self.extract(training=training, backend=options.backend, camera=camera)
        self._extraction = out if training else None
        c, h, w = len(camera), camera.height, camera.width
        background = options.background
        if background is None:
            background = torch.zeros(3, device=self.s.device)
        background = background.to(self.s)
        if out.faces.shape[0] == 0:
            result = self._empty_render(c, h, w, background)
        else:
            result = self._render_mesh(self.to_world(out.vertices), out.faces, camera, background, options)
        return _gather(result, pixels) if pixels is not None else result

    def _render_mesh(self, vertices, faces, camera: Camera, background: Tensor, options: RenderOptions):
        backend = options.backend
        frags = rasterize(vertices, faces, camera, layers=1, backend=backend)
        p2f = frags.pix_to_face[..., 0]
        covered = p2f >= 0
        a = covered[..., None].to(vertices.dtype)
        pos = interpolate(vertices, frags, faces, backend=backend)[..., 0, :]
        index = covered.reshape(-1).nonzero()[:, 0]
        colors = self.color(self.to_unit(pos.reshape(-1, 3)[index]), backend=backend)
        fg = torch.zeros_like(pos.reshape(-1, 3)).index_copy(0, index, colors).reshape(pos.shape)
        image = torch.cat([fg * a + background * (1 - a), a], -1)
        shaded = antialias(image, frags, vertices, faces, camera, backend=backend)
        normals = None
        if options.normals:
            v = vertices[faces]
            n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
            n = n / n.norm(dim=-1, keepdim=True).clamp_min(NORMAL_EPS)
            normals = n[p2f.clamp_min(0)] * a
        depth = frags.depth[..., :1] * a
        return RenderOutput(
            rgb=shaded[..., :3], alpha=shaded[..., 3:], depth=depth, normals=normals,
            depth_median=depth if options.median_depth else None, producer=type(self).__name__,
        )  # fmt: skip

    def _empty_render(self, c: int, h: int, w: int, background: Tensor) -> RenderOutput:
        zero = self.s.sum() * 0  # keeps a graph to the parameters when no face exists
        alpha = torch.zeros(c, h, w, 1, device=self.s.device) + zero
        rgb = background.expand(c, h, w, 3) + zero
        depth = torch.zeros_like(alpha)
        return RenderOutput(
            rgb, alpha, depth, torch.zeros_like(rgb), depth_median=depth, producer=type(self).__name__
        )

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """Mask L1, annealed sign-flip BCE, L_dev and the weight regulariser (spec section 5 table)."""
        c = self.config
        terms: dict[str, Tensor] = {}
        if ctx.target_alpha is not None and ctx.render is not None and c.mask_weight > 0:
            target = ctx.target_alpha.to(ctx.render.alpha)
            terms["mask"] = c.mask_weight * (ctx.render.alpha - target).abs().mean()
        t = min(1.0, ctx.fraction / max(c.sign_flip_until_fraction, 1e-12))
        flip_weight = c.sign_flip_start + (c.sign_flip_end - c.sign_flip_start) * t
        if flip_weight > 0 and self.s.shape[0] > 0:
            terms["sign_flip"] = flip_weight * sign_flip_loss(self.s, self.edges())
        extraction, self._extraction = self._extraction, None  # a kept graph would pin stale parameter shapes
        if extraction is not None and c.l_dev_weight > 0:
            terms["l_dev"] = c.l_dev_weight * l_dev(extraction)
        if c.weight_reg_weight > 0 and self.weights.shape[0] > 0:
            terms["weights"] = c.weight_reg_weight * weight_regularizer(self.weights)
        if extraction is not None and c.smooth_weight > 0 and extraction.faces.shape[0] > 0:
            h = 1.0 / float(self.grid().resolution)
            bending = normal_laplacian(extraction.vertices, extraction.faces) / h
            terms["smooth"] = c.smooth_weight * bending.square().mean()
        return terms

    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """The inference-mode surface (gamma diagonal split) in the world frame, with colour-field vertex colours;
        components smaller than ``export_min_component`` of the largest are dropped (floaters), and unused vertices
        with them."""
        out = self.surface()
        mesh = Mesh(out.vertices, out.faces).without_small_components(self.config.export_min_component)
        vertices, faces = self.to_world(mesh.vertices), mesh.faces
        colors = self.color(self.to_unit(vertices)).clamp(0, 1) if vertices.shape[0] else vertices.clone()
        return Mesh(vertices=vertices, faces=faces, vertex_colors=colors)


def normal_laplacian(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, " V"]:
    """Per vertex, the uniform Laplacian (mean of the edge neighbours minus the vertex; each face edge counted once
    per face) along the unit vertex normal (area-weighted face normals, detached): how far a vertex sticks out of
    its neighbours' surface, without the tangential part that only measures uneven spacing. 0 for vertices without
    faces.

    Differentiable w.r.t.: ``vertices``.
    """
    i = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    total = torch.zeros_like(vertices).index_add(0, i, vertices[j])
    degree = torch.zeros(vertices.shape[0], dtype=vertices.dtype, device=vertices.device).index_add(
        0, i, torch.ones_like(i, dtype=vertices.dtype)
    )
    laplacian = total / degree.clamp_min(1)[:, None] - vertices
    normals = vertex_normals(Mesh(vertices.detach(), faces))
    return torch.where(degree > 0, (laplacian * normals).sum(-1), torch.zeros_like(degree))


def _all_voxels(r: int) -> Int[Tensor, "N 3"]:
    axes = torch.arange(r)
    return torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)


def _gather(out: RenderOutput, pixels: Tensor) -> RenderOutput:
    """Select (C, R, 2) integer pixels ``(column, row)`` from full-image outputs."""
    c = torch.arange(pixels.shape[0], device=pixels.device)[:, None]
    return out.map_pixels(lambda t: t[c, pixels[..., 1], pixels[..., 0]])
