"""Shared plumbing of the ray-marched field scenes ``nerf`` and ``neus`` (spec neural_fields.md §3, §4, §6).

* ``HashGridSceneConfig``: the hash-grid fields of both scene configs and their ``HashGridConfig``.
* ``FieldScene``: a ``Scene`` over a cube box with a training-step buffer (stratified offsets of resumed runs),
  chunked full-image and ray-subset rendering, construction and per-parameter learning rates.
* ``RayJitter``: a chunk's stratified jitter in training: per-ray marching offsets that are a function of (step,
  the ray's index in the step's whole ray batch), so data-parallel shards reproduce one process's offsets, and the
  step's generator for the proposal sampler's per-chunk draws.
* Helpers: ``render_camera`` (rays -> chunks -> ``RenderOutput``), ``median_depth``, ``stratified_generator``,
  ``stratified_offsets``, ``closed_mesh`` (watertight marching cubes over the box) and ``vertex_normals``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, EikonalSamples, Mesh, ReconError, RenderOutput
from recon.core.render import ray_t_to_z
from recon.renderers.encoding import HashGrid, HashGridConfig, log2_size_for_rows
from recon.renderers.isosurface import marching_cubes, sample_grid
from recon.renderers.volume import PackedSamples
from recon.scenes.base import ExponentialDecayLr, ParamGroup, RenderOptions, Scene
from recon.scenes.fields import cube_box

__all__ = [
    "FieldScene",
    "HashGridSceneConfig",
    "RayJitter",
    "closed_mesh",
    "median_depth",
    "render_camera",
    "stratified_generator",
    "stratified_offsets",
    "vertex_normals",
]

DEFAULT_BOX_HALF = 1.0  # box of an empty scene before a checkpoint restores the stored one
MEDIAN_TRANSMITTANCE = 0.5  # median depth: where the transmittance crosses 1/2 (2DGS surface depth)
STRATIFIED_SEED = 0x5EED  # stratified marching offsets of training step k come from seed STRATIFIED_SEED + k
_MASK32 = 0xFFFFFFFF
_U24 = 2.0**-24  # the top 24 bits of a 32-bit hash as a float32 in [0, 1) (exactly representable)
RayRenderFn = Callable[..., dict[str, Tensor]]  # (origins, directions[, depth targets]) -> per-ray outputs


@dataclass(frozen=True)
class HashGridSceneConfig:
    """Hash-grid hyper-parameters of a field scene (defaults: Instant-NGP, spec §2)."""

    grid_levels: int = 16
    """Hash-grid levels L."""
    grid_features: int = 2
    """Features per level F."""
    grid_log2_size: int = 19
    """log2 of the hash-table entries per level T."""
    grid_min_resolution: int = 16
    """Coarsest grid resolution N_min."""
    grid_max_resolution: int = 4096
    """Finest grid resolution N_max."""

    def grid(self) -> HashGridConfig:
        return HashGridConfig(
            levels=self.grid_levels,
            features_per_level=self.grid_features,
            log2_hashmap_size=self.grid_log2_size,
            base_resolution=self.grid_min_resolution,
            max_resolution=self.grid_max_resolution,
        )


@runtime_checkable
class FieldSceneConfig(Protocol):
    """What ``FieldScene`` reads from its subclass's config."""

    @property
    def lr(self) -> float: ...
    @property
    def lr_final_ratio(self) -> float: ...
    @property
    def render_chunk(self) -> int: ...


class FieldScene(Scene):
    """A field over a cube box, rendered by marching rays in chunks (the base of ``NerfScene``, ``NeusScene``).

    Buffers: ``aabb`` (2, 3) cube and ``step`` () set by ``set_step``. Subclasses build the field and the
    occupancy grid after ``super().__init__`` and implement ``_render_rays``.

    Args:
        config: scene configuration.
        scene_box: (2, 3) box of the scene (forced to a cube).
    """

    aabb: Float[Tensor, "2 3"]
    config: FieldSceneConfig

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    aabb: Tensor
    step: Tensor

    def __init__(self, config: FieldSceneConfig, scene_box: Float[Tensor, "2 3"]) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("aabb", cube_box(scene_box.detach().float().cpu()))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._host_step: int | None = None  # host copy of ``step`` (None until set_step or the first read)

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, config, dataset, *, generator: torch.Generator):
        """A new field covering ``dataset.scene_box`` (as a cube)."""
        # Every concrete field scene (nerf, neus) takes ``generator``; the abstract base does not.
        return cls(config, dataset.scene_box, generator=generator)  # pyright: ignore[reportCallIssue]

    @classmethod
    def empty(cls, config):
        """A field over a placeholder box; ``load_state_dict_resizing`` restores the stored box and state."""
        half = DEFAULT_BOX_HALF
        return cls(config, torch.tensor([[-half] * 3, [half] * 3]))

    def param_groups(self) -> list[ParamGroup]:
        """One group per parameter at ``_lr(name)``, all on the config's exponential decay."""
        schedule = ExponentialDecayLr(final_ratio=self.config.lr_final_ratio)
        return [
            ParamGroup(name, p, self._lr(name), schedule, per_row=False)
            for name, p in self.named_parameters()
        ]

    def _lr(self, name: str) -> float:
        """Base learning rate of the parameter ``name`` (the config's ``lr`` unless a subclass says otherwise)."""
        return self.config.lr

    def set_step(self, step: int, fraction: float | None = None) -> None:
        """Training-progress hook: the step seeds the stratified sample offsets (resume-exact training);
        ``fraction`` (of the run's budget, None: unchanged) drives subclass schedules."""
        self.step.fill_(step)
        self._host_step = step

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        """Restore a checkpoint; a hash grid whose table grew during training (``recon.train.table_growth``) takes
        the stored table's size first."""
        for name, module in self.named_modules():
            stored = state.get(f"{name}.table")
            if (
                isinstance(module, HashGrid)
                and stored is not None
                and stored.shape[0] != module.table.shape[0]
            ):
                try:
                    module.set_log2_size(log2_size_for_rows(module.cfg, stored.shape[0]))
                except ValueError:
                    raise ReconError(
                        f"scene state: the stored {name}.table has {stored.shape[0]:,} rows, which no hash-table "
                        f"size of the configured grid gives (levels {module.cfg.levels}, finest "
                        f"{module.cfg.max_resolution}); was the run's config.yaml edited?"
                    ) from None
        super().load_state_dict_resizing(state)
        self._host_step = None  # re-read the restored step

    def _training_step(self) -> int:
        if self._host_step is None:  # restored from a checkpoint: one host read of the buffer
            self._host_step = int(self.step)
        return self._host_step

    # --- rendering ------------------------------------------------------------------------------------------
    def render(self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None) -> RenderOutput:
        """Render full images ``(C, H, W)`` or the ray subset ``pixels`` ``(C, R, 2)``.

        The outputs are those of the subclass's ``_render_rays``, with depths converted to camera z; with
        ``options.median_depth`` also ``depth_median`` (see ``median_depth``).

        Differentiable w.r.t.: the field parameters (not the camera).
        """
        step = self._training_step() if self.training else None
        generator = None if step is None else stratified_generator(step)  # one stream across the chunks
        done = 0  # rays of this render handed to ``_render_rays`` so far (chunks arrive in order)

        def render_chunk(
            origins: Tensor, directions: Tensor, depth_target: Tensor | None = None
        ) -> dict[str, Tensor]:
            nonlocal done
            jitter = None
            if step is not None and generator is not None:
                offsets = stratified_offsets(
                    step, options.first_ray + done, origins.shape[0], device=origins.device
                )
                jitter = RayJitter(offsets, generator)
            done += origins.shape[0]
            if depth_target is None:
                return self._render_rays(origins, directions, options, jitter)
            return self._render_rays(origins, directions, options, jitter, depth_target=depth_target)

        targets = options.depth_targets if self.capabilities.depth_deviation else None
        return render_camera(
            render_chunk, camera, pixels=pixels, chunk=self.config.render_chunk, producer=type(self).__name__,
            depth_targets=targets,
        )  # fmt: skip

    def _render_rays(
        self,
        origins: Tensor,
        directions: Tensor,
        options: RenderOptions,
        jitter: "RayJitter | None",
        depth_target: Tensor | None = None,
    ) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Render a chunk of rays into the per-ray outputs described by ``render_camera`` (``jitter``: training
        mode's stratified sampling; None renders deterministically). ``depth_target`` (R,) target distances
        along the rays reach only scenes with the ``depth_deviation`` capability, which then add
        ``"depth_deviation"``."""
        raise NotImplementedError


def depth_deviation(
    t_starts: Tensor, t_ends: Tensor, weights: Tensor, ray_indices: Tensor, target: Tensor
) -> Float[Tensor, "R 1"]:
    """Per ray, ``sum_i w_i min(|t_i - t*| / t*, 1)``: the weight the ray puts off its target distance ``t*`` (R,),
    each sample (``t_i`` at the interval midpoints) counted by its relative miss, capped at 1. 0 on rays with
    ``t* <= 0`` (no target).

    Linear in the weights, so a floater in front and a surface behind cannot average out as they do in
    ``|E[t] - t*|``. What the ray does not stop costs nothing: a term rewarding opacity anywhere made the unbounded
    beer-can field put everything at the near plane (Adam undoes the near-camera gradient scaling there).
    Differentiable w.r.t. ``weights``.
    """
    goal = target[ray_indices]
    miss = (((t_starts + t_ends) * 0.5 - goal).abs() / goal.clamp_min(1e-6)).clamp(max=1.0) * (goal > 0)
    off = torch.zeros(len(target), dtype=weights.dtype, device=weights.device)
    return off.index_add(0, ray_indices, weights * miss.to(weights))[:, None]


@torch.no_grad()
def median_depth(samples: PackedSamples, weights: Tensor, transmittance: Tensor) -> Float[Tensor, "R 1"]:
    """Per ray, the midpoint ``t`` of the sample where the transmittance falls below 1/2 (0 if it never does).

    ``T`` is monotone along a ray, so exactly one sample has ``T_before >= 1/2 > T_after = T_before - w``.
    Differentiable w.r.t.: nothing (the median is a selection).
    """
    t_mid = (samples.t_starts + samples.t_ends) * 0.5
    crossing = (transmittance >= MEDIAN_TRANSMITTANCE) & (transmittance - weights < MEDIAN_TRANSMITTANCE)
    out = torch.zeros(samples.n_rays, 1, dtype=t_mid.dtype, device=t_mid.device)
    out[samples.ray_indices[crossing], 0] = t_mid[crossing]
    return out


@dataclass(frozen=True)
class RayJitter:
    """Stratified sampling of one chunk of training rays.

    Attributes:
        offsets: (R,) start offsets in [0, 1) marching steps: ``stratified_offsets(step, first, R)``, a function of
            each ray's index in the step's whole batch (occupancy-grid marching; data-parallel exact).
        generator: the step's ``stratified_generator`` (the proposal sampler draws its quantile jitter from it
            chunk by chunk, so those draws depend on how the batch is split).
    """

    offsets: Float[Tensor, " R"]
    generator: torch.Generator


def stratified_generator(step: int | Tensor) -> torch.Generator:
    """The RNG of one training step's per-chunk stratified draws (proposal sampling): a function of the step
    only, so a resumed run draws exactly the offsets of the uninterrupted one."""
    return torch.Generator().manual_seed(STRATIFIED_SEED + int(step))


def stratified_offsets(step: int, first: int, count: int, *, device: torch.device | str = "cpu") -> Tensor:
    """Marching start offsets in [0, 1) of rays ``first .. first + count - 1`` of training step ``step``'s batch.

    .. math:: u_i = \\lfloor h(h(i) \\oplus h(\\mathrm{SEED} + \\mathrm{step})) / 2^8 \\rfloor \\, 2^{-24}

    with ``h`` the 32-bit integer hash "lowbias32" (C. Wellons). A counter-based draw: ray ``i`` gets the same
    offset whichever process renders it and however the batch is chunked, so W data-parallel ranks rendering
    contiguous shards draw exactly the offsets of one process rendering the whole batch, and a resumed run those
    of the uninterrupted one. Integer arithmetic only (no overflow in int64): bitwise identical on every device.

    Returns:
        (count,) float32 offsets on ``device``.
    """
    if first < 0 or count < 0:
        raise ValueError(f"first and count must be >= 0, got {first} and {count}")
    key = _hash32(torch.tensor(STRATIFIED_SEED + int(step), dtype=torch.int64) & _MASK32)
    index = torch.arange(first, first + count, dtype=torch.int64, device=device) & _MASK32
    bits = _hash32(_hash32(index) ^ key.to(device))
    return (bits >> 8).to(torch.float32) * _U24


def _mul32(x: Tensor, c: int) -> Tensor:
    """``x * c mod 2^32`` for ``0 <= x, c < 2^32`` in int64 without overflow (16-bit halves of ``c``)."""
    low = x * (c & 0xFFFF)  # < 2^48
    high = ((x * (c >> 16)) & 0xFFFF) << 16  # only the low 16 bits of x * c_high survive mod 2^32
    return (low + high) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons' hash-prospector): a bijection of 32-bit integers with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def closed_mesh(
    values_fn: Callable[[Tensor], Tensor],
    aabb: Float[Tensor, "2 3"],
    resolution: int,
    *,
    level: float,
    outside: float,
    inside: Literal["above", "below"],
) -> Mesh:
    """Marching cubes of ``values_fn`` sampled over ``aabb`` at ``resolution``, with the outer layer of grid nodes
    set to ``outside``: surfaces cut by the box are capped there, so the mesh is always closed (watertight)."""
    values = sample_grid(values_fn, aabb, resolution)
    for dim in range(3):
        values.select(dim, 0).fill_(outside)
        values.select(dim, values.shape[dim] - 1).fill_(outside)
    return marching_cubes(values, level=level, bbox=aabb, inside=inside)


def vertex_normals(mesh: Mesh) -> Float[Tensor, "V 3"]:
    """Area-weighted unit vertex normals of a mesh (outward for counter-clockwise faces)."""
    v = mesh.vertices
    tri = v[mesh.faces]
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # |n| = 2 area
    acc = torch.zeros_like(v).index_add_(0, mesh.faces.reshape(-1), face_n.repeat_interleave(3, dim=0))
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-20)


def render_camera(
    render_rays: RayRenderFn,
    camera: Camera,
    *,
    pixels: Tensor | None,
    chunk: int,
    producer: str = "field",
    depth_targets: Tensor | None = None,
) -> RenderOutput:
    """Generate the rays of ``camera`` (all pixels or ``pixels``), render them in chunks, reshape.

    Ray renderers work with distances ``t`` along unit rays; the output depths are converted here, once, to
    camera-frame z (``z = t * d_z`` with ``d_z`` the camera-frame z component of the unit ray direction), the
    convention of ``RenderOutput``.

    Args:
        render_rays: ``(origins (R, 3), directions (R, 3)) -> {"rgb": (R, 3), "alpha": (R, 1), "depth": (R, 1),
            optional "normals": (R, 3), "depth_median": (R, 1), "eikonal": (R, 1), "num_samples": (R, 1)}`` with
            depths as distances along the unit rays.
        camera: C cameras.
        pixels: (C, R, 2) integer pixels or None (full images).
        chunk: rays per ``render_rays`` call.
        producer: the scene's name (for error messages of consumers).
        depth_targets: (C, R, 1) camera-z targets of a ``pixels`` render (0 = none), or None. Each chunk call then
            gets a third argument, the (R,) targets as distances along the unit rays, and may return
            ``"depth_deviation": (R, 1)`` (``RenderOutput.depth_deviation``).

    Returns:
        ``RenderOutput`` shaped (C, H, W, .) or (C, R, .).
    """
    rays = camera.generate_rays(pixels)
    shape = rays.shape
    origins = rays.origins.reshape(-1, 3).contiguous()
    directions = rays.directions.reshape(-1, 3).contiguous()
    forward = camera.T_cam_world[:, 2, :3].reshape(len(camera), *([1] * (len(shape) - 1)), 3)
    cos_z = (rays.directions * forward.to(rays.directions)).sum(-1, keepdim=True)  # unit-ray camera z
    chunks = zip(origins.split(chunk), directions.split(chunk), strict=True)
    if depth_targets is None:
        parts = [render_rays(o, d) for o, d in chunks]
    else:
        if pixels is None or tuple(depth_targets.shape) != (*shape, 1):
            raise ValueError(
                f"depth_targets must be (C, R, 1) = {(*shape, 1)} for a pixel-subset render, got "
                f"{tuple(depth_targets.shape)}{'' if pixels is not None else ' (and pixels is None)'}"
            )
        # camera z -> distance along the unit ray (0 stays 0: no target)
        t_targets = (depth_targets.to(cos_z) / cos_z.clamp_min(1e-6)).reshape(-1).split(chunk)
        parts = [render_rays(o, d, t) for (o, d), t in zip(chunks, t_targets, strict=True)]
    merged = {k: torch.cat([p[k] for p in parts]).reshape(*shape, -1) for k in parts[0]}
    eikonal = None
    if "eikonal" in merged:
        eikonal = EikonalSamples(residual_sum=merged["eikonal"], num_samples=merged["num_samples"])
    median = merged.get("depth_median")
    return RenderOutput(
        rgb=merged["rgb"], alpha=merged["alpha"], depth=ray_t_to_z(merged["depth"], cos_z),
        normals=merged.get("normals"), depth_median=None if median is None else ray_t_to_z(median, cos_z),
        eikonal=eikonal, depth_deviation=merged.get("depth_deviation"), producer=producer,
    )  # fmt: skip
