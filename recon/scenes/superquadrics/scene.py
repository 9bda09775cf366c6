"""``SuperquadricScene``: the blocks world rendered through ``recon.renderers.raster`` (spec superquadrics.md).

Rendering (spec 6, the reference's decoupled renderer): the background sphere and the ground go through a hard
pass (K = 1, no blur) into the environment colour, with barycentrics *not* detached so that the ground pose (spec 1:
learnable) gets gradients through its texture lookups; the blocks through a soft layered pass (K = ``faces_per_pixel``,
blur from the stage's σ converted to px² for the image size) with per-face opacity = the block's α̂ (coarse) or 1
(fine, opaque blocks only); textures are sampled at the clipped barycentrics (detached, as the DBW recipe) with the
padded atlas UVs; ``composite`` picks "over" (``C_fg + (1 − m) C_env``) or "reference" (``C_fg m + (1 − m) C_env``).

Geometry lives in the canonical frame; ``T_world_canon`` (a buffer computed once from the training cameras, so it
is checkpointed) maps it to the dataset's normalised frame where the cameras live and meshes are exported.

Per-step state set by the curriculum strategy (``recon.scenes.superquadrics.strategy``): the stage index, the
``alive`` mask (kill rule; frozen to the opaque blocks in the fine stage) and the opacity-logit noise of the
next step. All are buffers, so checkpoints resume exactly.
"""

import math
from dataclasses import replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from recon.core import Camera, Mesh, RenderCapabilities, RenderOutput
from recon.core.transforms import apply_T
from recon.renderers.raster import decoupled_composite, interpolate, rasterize, sample_texture, soft_composite
from recon.scenes.base import ExportOptions, ParamGroup, RenderOptions, Scene, StepContext, StepLr
from recon.scenes.superquadrics.blocks import GEOMETRY_FIELDS, TEXTURE_FIELDS, BlockSet, init_block_set
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.curriculum import Stage, stage_at
from recon.scenes.superquadrics.environment import background_mesh, ground_mesh, posed_ground_vertices
from recon.scenes.superquadrics.export import scene_parts
from recon.scenes.superquadrics.frame import canonical_frame
from recon.scenes.superquadrics.losses import effective_opacities, weighted_regularizers
from recon.scenes.superquadrics.template import block_template
from recon.scenes.superquadrics.uv import decimate_texture, pad_texture

__all__ = ["STAGES", "SuperquadricScene", "blur_sq_from_sigma", "stage_named"]

STAGES = ("coarse_decimated", "coarse", "fine")
"""Stage names by index (the ``stage_index`` buffer)."""
BLUR_GAMMA = 1e-4  # PyTorch3D blur radius: a_k falls to 1e-4 at d = ln(1/1e-4 - 1) sigma (spec 6)
KILLED_LOGIT = -30.0  # logit given to killed blocks on export (α ~ 1e-13)
PER_BLOCK = ("raw_exponents", "log_scales", "rot6d", "translations", "alpha_logits", "texture_logits")


def blur_sq_from_sigma(sigma_px2: float) -> float:
    """Squared blur radius (px²) of the soft pass: ``ln(1/1e-4 − 1)·σ`` (≈ 9.21 σ)."""
    return math.log(1.0 / BLUR_GAMMA - 1.0) * sigma_px2


def stage_named(index: int, cfg: SuperquadricsConfig) -> Stage:
    """The curriculum stage ``STAGES[index]`` whatever the milestones (its ``lr_multiplier`` is not used)."""
    if index == 2:
        return stage_at(1.0, cfg)
    pinned = replace(cfg, decimate_until=1.0 if index == 0 else 0.0, coarse_until=1.0, lr_decay_at=1.0)
    return stage_at(0.0, pinned)


def _roi(dataset, cfg: SuperquadricsConfig) -> tuple[float, Tensor]:
    box = dataset.scene_box.double()
    radius = cfg.roi_radius or 0.5 * float((box[1] - box[0]).max())
    centre = box.mean(0) if cfg.roi_center is None else torch.tensor(cfg.roi_center, dtype=torch.float64)
    return radius, centre


class SuperquadricScene(Scene):
    """N textured superquadric blocks, a textured ground and a textured background sphere (spec 1-6).

    Args:
        config: representation, losses and curriculum.
        blocks: the initial parameters (``init_block_set``).
        T_world_canon: (4, 4) canonical -> normalised-world similarity (from ``canonical_frame``).
        T_original_world: (4, 4) normalised -> the dataset's original world frame (the inverse of the dataset's
            ``normalization``; identity when None), used by ``write_native`` exports.
    """

    capabilities = RenderCapabilities(depth=True)

    # Parameters (GEOMETRY_FIELDS + TEXTURE_FIELDS, set by name in __init__) and buffers, declared so that static
    # type checkers know they are tensors.
    raw_exponents: Tensor
    log_scales: Tensor
    rot6d: Tensor
    translations: Tensor
    alpha_logits: Tensor
    ground_rot6d: Tensor
    ground_translation: Tensor
    texture_logits: Tensor
    ground_texture_logits: Tensor
    background_texture_logits: Tensor
    T_world_canon: Tensor
    T_original_world: Tensor
    stage_index: Tensor
    alive: Tensor
    opacity_noise: Tensor

    def __init__(
        self,
        config: SuperquadricsConfig,
        blocks: BlockSet,
        T_world_canon: Float[Tensor, "4 4"],
        T_original_world: Float[Tensor, "4 4"] | None = None,
    ):
        super().__init__()
        self.config = config
        for name in GEOMETRY_FIELDS + TEXTURE_FIELDS:
            setattr(self, name, nn.Parameter(getattr(blocks, name).detach().float().clone()))
        n = len(blocks)
        self.register_buffer("T_world_canon", T_world_canon.detach().double().clone())
        original = torch.eye(4, dtype=torch.float64) if T_original_world is None else T_original_world
        self.register_buffer("T_original_world", original.detach().double().clone())
        self.register_buffer("stage_index", torch.zeros((), dtype=torch.int64))
        self.register_buffer("alive", torch.ones(n))
        self.register_buffer("opacity_noise", torch.zeros(n))
        self.template = block_template(config)
        self._constants: dict = {}
        self.lpips_absent: str | None = None  # why the perceptual term is skipped (set by regularizers)

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, config: SuperquadricsConfig, dataset, *, generator: torch.Generator):
        """Blocks drawn from ``generator`` (spec 3) in the canonical frame of the training cameras (spec 9)."""
        radius, center = _roi(dataset, config)
        frame = canonical_frame(
            dataset.cameras("train").to(dtype=torch.float64), roi_radius=radius, roi_center=center
        )
        blocks = init_block_set(
            config.n_blocks, generator=generator, texture_size=config.texture_size,
            translation_range=config.translation_range, translation_init=config.translation_init,
            opacity_init=config.opacity_init, scale_min=config.scale_min, ratio=config.ratio_block_scene,
            ground_height=config.ground_height,
        )  # fmt: skip
        return cls(config, blocks, frame.T_world_canon, torch.linalg.inv(dataset.normalization.double()))

    @classmethod
    def empty(cls, config: SuperquadricsConfig) -> "SuperquadricScene":
        blocks = init_block_set(
            1, generator=torch.Generator().manual_seed(0), texture_size=config.texture_size
        )
        return cls(config, blocks.select(torch.zeros(1, dtype=torch.bool)), torch.eye(4, dtype=torch.float64))

    # --- accessors ------------------------------------------------------------------------------------------
    def blocks(self) -> BlockSet:
        """The parameters as a ``BlockSet`` (sharing the tensors, with gradients)."""
        tensors = {name: getattr(self, name) for name in GEOMETRY_FIELDS + TEXTURE_FIELDS}
        return BlockSet(**tensors, scale_min=self.config.scale_min, ratio=self.config.ratio_block_scene)

    def num_primitives(self) -> int:
        return int(self.alpha_logits.shape[0])

    def stage(self) -> Stage:
        """The current curriculum stage (set by the strategy)."""
        return stage_named(int(self.stage_index), self.config)

    def set_stage(self, index: int) -> None:
        """Enter stage ``STAGES[index]``; entering the fine stage keeps only the opaque blocks alive."""
        with torch.no_grad():
            self.stage_index.fill_(index)
            if STAGES[index] == "fine":
                opaque = torch.sigmoid(self.alpha_logits) > self.config.opaque_threshold
                self.alive.mul_(opaque.to(self.alive))

    def opacities(self) -> Float[Tensor, " N"]:
        """Noise-free α of every block."""
        return torch.sigmoid(self.alpha_logits)

    def num_opaque(self) -> int:
        """#P: alive blocks with α above the opaque threshold."""
        return int(((self.opacities() > self.config.opaque_threshold) & (self.alive > 0)).sum())

    def alpha_hat(self, stage: Stage, *, noisy: bool) -> Float[Tensor, " N"]:
        """α̂ of this step (spec 5): noisy soft α of the alive blocks (coarse) or 0/1 (fine)."""
        logits = self.alpha_logits
        noisy_logits = logits + self.opacity_noise if noisy and stage.opacity_noise else None
        cfg = self.config
        alpha = effective_opacities(logits, coarse=stage.coarse, noisy_logits=noisy_logits,
                                    kill_threshold=cfg.kill_threshold, opaque_threshold=cfg.opaque_threshold)  # fmt: skip
        return alpha * self.alive

    def _training_step(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def _const(self, device: torch.device) -> dict:
        """Fixed meshes and UVs on ``device`` (derived from the config, not stored in checkpoints)."""
        if device not in self._constants:
            cfg, atlas = self.config, self.template.atlas
            bkg, ground = (
                background_mesh(cfg.z_far, cfg.background_level),
                ground_mesh(cfg.z_far, cfg.ground_subdivisions),
            )
            flip = torch.tensor(
                [1.0, -1.0], dtype=torch.float64
            )  # atlas v = 1 is row 0; sample_texture: v = 0 is
            shift = torch.tensor([0.0, 1.0], dtype=torch.float64)
            f32: dict[str, Any] = dict(device=device, dtype=torch.float32)
            self._constants[device] = {
                "eta": self.template.eta.to(device), "omega": self.template.omega.to(device),
                "faces": atlas.faces.to(device), "block_uv": (atlas.padded_uv()[atlas.faces_uv] * flip + shift).to(**f32),
                "bkg_v": bkg.vertices.to(**f32), "bkg_f": bkg.faces.to(device), "bkg_uv": (bkg.uv[bkg.faces] * flip + shift).to(**f32),
                "ground_v": ground.vertices.to(**f32), "ground_f": ground.faces.to(device),
                "ground_uv": (ground.uv[ground.faces] * flip + shift).to(**f32),
            }  # fmt: skip
        return self._constants[device]

    def _to_world(self, points: Tensor) -> Tensor:
        return apply_T(self.T_world_canon.to(points.dtype), points)

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        """Render the blocks world into ``camera`` (spec 6).

        Args:
            camera: C cameras in the dataset's normalised frame.
            options: backend (``options.background`` is ignored: the background sphere is learnt).
            pixels: optional (C, R, 2) integer pixel indices; the full image is rendered and gathered.

        Returns:
            RenderOutput with rgb (C, H, W, 3), alpha = block coverage (C, H, W, 1) and depth (camera z of the
            front block layer where a block covers the pixel centre, else of the environment).

        Differentiable w.r.t. every parameter: block geometry through the soft coverage (the blocks' barycentrics
        are detached), α through the layer alphas (coarse stages), textures through the lookups, the ground pose
        through its texture lookups (the environment pass keeps its barycentrics' gradient).
        """
        device = self.alpha_logits.device
        camera = camera.to(device=device, dtype=torch.float32)
        stage, const = self.stage(), self._const(device)
        env_rgb, env_depth = self._render_environment(camera, stage, const, options.backend)
        fg, mask, fg_depth = self._render_blocks(camera, stage, const, options.backend)
        rgb = decoupled_composite(fg, mask, env_rgb, self.config.composite)
        depth = torch.where(fg_depth > 0, fg_depth, env_depth)
        out = RenderOutput(
            rgb=rgb, alpha=mask, depth=depth if options.depth else None, producer=type(self).__name__
        )
        if pixels is None:
            return out
        c = torch.arange(pixels.shape[0], device=pixels.device)[:, None]
        return out.map_pixels(lambda t: t[c, pixels[..., 1], pixels[..., 0]])

    def _textures(self, logits: Tensor, stage: Stage) -> Tensor:
        colors = torch.sigmoid(logits)
        return decimate_texture(colors, self.config.decimate_factor) if stage.decimate_textures else colors

    def _render_environment(
        self, camera: Camera, stage: Stage, const: dict, backend
    ) -> tuple[Tensor, Tensor]:
        """Hard pass (K = 1) of the background sphere and the ground into (C, H, W, 3) colour and depth.

        Differentiable w.r.t. the background and ground textures and the ground pose (through the barycentrics of
        the texture lookups); the depth is detached."""
        verts, faces, uvs = [const["bkg_v"]], [const["bkg_f"]], [const["bkg_uv"]]
        if self.config.ground:
            ground = posed_ground_vertices(const["ground_v"], self.ground_rot6d, self.ground_translation)
            verts.append(ground)
            faces.append(const["ground_f"] + const["bkg_v"].shape[0])
            uvs.append(const["ground_uv"])
        # Barycentrics keep their gradient here (unlike the blocks' pass): a hard pass has no coverage gradient,
        # so the texture lookups are the only path from the image to the ground pose (rot6d, translation).
        frags = rasterize(
            self._to_world(torch.cat(verts)), torch.cat(faces), camera, layers=1, backend=backend
        )
        uv = interpolate(torch.cat(uvs), frags, backend=backend)
        textures = self._textures(
            torch.stack([self.background_texture_logits, self.ground_texture_logits]), stage
        )
        face_to_texture = torch.cat([torch.full((len(f),), k, device=uv.device) for k, f in enumerate(faces)])
        colors = sample_texture(textures, uv, frags, face_to_texture, backend=backend)
        rgb, _ = soft_composite(frags, colors, sigma=0.0, backend=backend)
        return rgb, frags.depth[..., :1].detach()

    def _render_blocks(
        self, camera: Camera, stage: Stage, const: dict, backend
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Soft layered pass of the rendered blocks: premultiplied colour, coverage mask and front depth."""
        cfg = self.config
        alpha = self.alpha_hat(stage, noisy=self._training_step())
        shown = (alpha > 0).nonzero().flatten()
        c, h, w = len(camera), camera.height, camera.width
        if len(shown) == 0:
            zeros = self.alpha_logits.new_zeros(c, h, w, 1)
            return zeros.expand(c, h, w, 3).clone(), zeros, zeros
        blocks = self.blocks()
        verts = blocks.vertices(const["eta"].to(self.alpha_logits), const["omega"].to(self.alpha_logits))[
            shown
        ]
        n_v, n_f = verts.shape[1], const["faces"].shape[0]
        faces = (
            const["faces"][None] + n_v * torch.arange(len(shown), device=verts.device)[:, None, None]
        ).reshape(-1, 3)
        block_of_face = torch.arange(len(shown), device=verts.device).repeat_interleave(n_f)
        sigma = stage.sigma_px2(h, w)
        frags = rasterize(self._to_world(verts.reshape(-1, 3)), faces, camera, layers=cfg.faces_per_pixel,
                          blur_sq=blur_sq_from_sigma(sigma), detach_bary=True, face_to_mesh=block_of_face,
                          backend=backend)  # fmt: skip
        uv = interpolate(const["block_uv"].repeat(len(shown), 1, 1), frags, clip_bary=True, backend=backend)
        atlas = self.template.atlas
        textures = pad_texture(
            self._textures(self.texture_logits[shown], stage), atlas.pad_left, atlas.pad_right
        )
        colors = sample_texture(textures, uv, frags, block_of_face, backend=backend)
        opacities = None if stage.opaque_only else alpha[shown][block_of_face]
        fg, mask = soft_composite(frags, colors, opacities, sigma=sigma, backend=backend)
        front = (frags.pix_to_face[..., :1] >= 0) & (frags.dists[..., :1] <= 0)
        return fg, mask, torch.where(front, frags.depth[..., :1], 0.0).detach()

    # --- training -------------------------------------------------------------------------------------------
    def param_groups(self) -> list[ParamGroup]:
        """Adam groups of spec 8: geometry/pose/opacity/exponents at ``lr_geometry``, textures at ``lr_texture``,
        all multiplied by ``lr_decay_factor`` from ``lr_decay_at`` of the budget on."""
        cfg = self.config
        decay = StepLr(at_fraction=cfg.lr_decay_at, factor=cfg.lr_decay_factor)
        return [
            ParamGroup(name, getattr(self, name), cfg.lr_texture if name in TEXTURE_FIELDS else cfg.lr_geometry,
                       decay, per_row=name in PER_BLOCK)
            for name in GEOMETRY_FIELDS + TEXTURE_FIELDS
        ]  # fmt: skip

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """Parsimony, TV and overlap of the current stage (spec 7, already weighted) with the α̂ of the render,
        plus ``0.1 f_p LPIPS`` when the LPIPS weights are available locally (else ``lpips_absent`` says why)."""
        stage = self.stage()
        alpha = self.alpha_hat(stage, noisy=self._training_step())
        terms = weighted_regularizers(self.blocks(), alpha, stage=stage, cfg=self.config)
        weight = self.config.perceptual_weight * stage.perceptual_factor
        if weight <= 0:
            self.lpips_absent = "the perceptual weight is 0"
        elif ctx.render is not None:
            from recon.metrics.image import _lpips_model, lpips_unavailable_reason

            self.lpips_absent = lpips_unavailable_reason()
            if self.lpips_absent is None:
                model = _lpips_model().to(ctx.image.device)
                x, y = (t.permute(0, 3, 1, 2) * 2 - 1 for t in (ctx.render.rgb, ctx.image))
                terms["lpips"] = weight * model(x, y).mean()
        return terms

    # --- export ---------------------------------------------------------------------------------------------
    def export_block_set(self) -> BlockSet:
        """Detached parameters with killed blocks given α ≈ 0 (so no export keeps them)."""
        blocks = self.blocks().detached()
        dead = torch.full_like(blocks.alpha_logits, KILLED_LOGIT)
        return replace(blocks, alpha_logits=torch.where(self.alive > 0, blocks.alpha_logits, dead))

    @torch.no_grad()
    def export_mesh(self, options: ExportOptions) -> Mesh:
        """Opaque alive blocks (α > ``opaque_threshold``) and the reduced ground (spec 11) in the normalised frame,
        vertex colours sampled from the textures (``recon.core.Mesh`` holds no textures; the textured OBJ/GLB and
        ``primitives.json`` come from :func:`recon.scenes.superquadrics.export.export_blocks`). With
        ``options.objects_only`` the ground is left out: only the blocks."""
        blocks = self.export_block_set()
        parts = scene_parts(blocks, cfg=self.config, T_world_canon=self.T_world_canon, full=False,
                            ground=not options.objects_only)  # fmt: skip
        if not parts:
            return Mesh(
                torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), vertex_colors=torch.zeros(0, 3)
            )
        vertices, faces, colors, offset = [], [], [], 0
        for part in parts:
            image = torch.from_numpy(part.image).double() / 255.0
            h, w = image.shape[:2]
            col = (part.uv[:, 0] % 1.0 * (w - 1)).round().long()
            row = ((1.0 - part.uv[:, 1]).clamp(0, 1) * (h - 1)).round().long()
            vertices.append(part.vertices)
            faces.append(part.faces + offset)
            colors.append(image[row, col])
            offset += part.vertices.shape[0]
        return Mesh(torch.cat(vertices).float(), torch.cat(faces), vertex_colors=torch.cat(colors).float())

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict_resizing(state)
        self._constants.clear()
