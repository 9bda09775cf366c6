"""Occupancy-grid estimator (Instant-NGP / nerfacc ``OccGridEstimator``): state, EMA update, sampling."""

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from recon.core.shapes import Backend
from recon.renderers.volume import api
from recon.renderers.volume.types import PackedSamples

__all__ = ["OccupancyGrid"]

EMA_DECAY = 0.95  # occ <- max(0.95 occ, occ_new) (spec section 3)
OCC_THRESHOLD = 0.01  # binary mask: occ > min(mean(occ), 0.01)
WARMUP_STEPS = 256  # steps during which every cell is re-evaluated
UPDATE_EVERY = 16  # update period in training steps

OccEvalFn = Callable[[Tensor], Tensor]
SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class OccupancyGrid(nn.Module):
    """Multi-level binary occupancy over a box, updated from a density field by an EMA.

    Level ``l`` covers ``aabb`` scaled by ``2^l`` about its centre (``levels = 1`` for bounded synthetic scenes,
    4 for 360 scenes); each level has ``resolution^3`` cells indexed ``[level, ix, iy, iz]``. Buffers: ``occs``
    (L, X, X, X) float running occupancy, ``binaries`` (L, X, X, X) bool mask (saved in ``state_dict``).

    Example:
        >>> grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=8)
        >>> grid.update(step=0, occ_eval_fn=lambda x: (x.norm(dim=-1) < 0.5).float())
        >>> bool(grid.binaries[0, 4, 4, 4]), bool(grid.binaries[0, 0, 0, 0])
        (True, False)
    """

    occs: Float[Tensor, "L X X X"]
    binaries: Bool[Tensor, "L X X X"]

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    aabb: Tensor
    occs: Tensor
    binaries: Tensor

    def __init__(self, aabb: Float[Tensor, "2 3"], *, resolution: int = 128, levels: int = 1) -> None:
        super().__init__()
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must be a (2, 3) [min, max] box with max > min, got {aabb.tolist()}")
        if resolution < 1 or levels < 1:
            raise ValueError(f"resolution and levels must be >= 1, got {resolution}, {levels}")
        self.resolution = resolution
        self.levels = levels
        self.register_buffer("aabb", aabb.detach().clone().float())
        shape = (levels, resolution, resolution, resolution)
        self.register_buffer("occs", torch.zeros(shape))
        self.register_buffer(
            "binaries", torch.ones(shape, dtype=torch.bool)
        )  # all occupied before the 1st update

    @property
    def cells_per_level(self) -> int:
        return self.resolution**3

    def level_boxes(self) -> Float[Tensor, "L 2 3"]:
        """(L, 2, 3) box of each level (base box scaled by 2^l about its centre)."""
        center = 0.5 * (self.aabb[0] + self.aabb[1])
        half = 0.5 * (self.aabb[1] - self.aabb[0])
        scale = (2.0 ** torch.arange(self.levels, device=self.aabb.device, dtype=self.aabb.dtype))[:, None]
        return torch.stack([center - half * scale, center + half * scale], 1)

    def _cell_points(self, indices: Int[Tensor, " N"], generator: torch.Generator | None) -> Tensor:
        """A point uniformly jittered inside each flat cell ``level * X^3 + (ix * X + iy) * X + iz``."""
        res = self.resolution
        level = indices // self.cells_per_level
        local = indices % self.cells_per_level
        ijk = torch.stack([local // (res * res), (local // res) % res, local % res], -1).to(self.aabb.dtype)
        jitter = torch.rand(ijk.shape, generator=generator, dtype=ijk.dtype).to(ijk.device)
        u = (ijk + jitter) / res
        boxes = self.level_boxes()[level]
        return boxes[:, 0] + u * (boxes[:, 1] - boxes[:, 0])

    @torch.no_grad()
    def update(
        self,
        *,
        step: int,
        occ_eval_fn: OccEvalFn,
        occ_thre: float = OCC_THRESHOLD,
        ema_decay: float = EMA_DECAY,
        warmup_steps: int = WARMUP_STEPS,
        generator: torch.Generator | None = None,
    ) -> None:
        """One EMA update (spec section 3).

        Cells re-evaluated: all of them while ``step < warmup_steps``; afterwards ``X^3 / 4`` uniformly chosen
        cells per level plus as many drawn from the occupied ones. For each, ``occ_new = occ_eval_fn(x)`` at a
        point ``x`` jittered uniformly in the cell (``occ_eval_fn`` returns ``sigma(x) * step_size``, shape
        (N,) or (N, 1)); then ``occ <- max(ema_decay * occ, occ_new)`` and
        ``binaries = occ > min(mean(occ), occ_thre)``.
        """
        device = self.occs.device
        flat_occs = self.occs.reshape(-1)
        n_cells = self.cells_per_level
        if step < warmup_steps:
            indices = torch.arange(flat_occs.numel(), device=device)
        else:
            chosen = []
            for level in range(self.levels):
                uniform = torch.randint(n_cells, (n_cells // 4,), generator=generator).to(device)
                occupied = torch.nonzero(self.binaries[level].reshape(-1)).squeeze(-1)
                if occupied.numel() > 0:
                    pick = torch.randint(occupied.numel(), (n_cells // 4,), generator=generator).to(device)
                    uniform = torch.cat([uniform, occupied[pick]])
                chosen.append(uniform + level * n_cells)
            indices = torch.cat(chosen)
        points = self._cell_points(indices, generator)
        occ_new = occ_eval_fn(points).reshape(-1).to(flat_occs.dtype)
        if occ_new.shape[0] != indices.shape[0]:
            raise ValueError(
                f"occ_eval_fn must return one value per point ({indices.shape[0]}), got {occ_new.shape}"
            )
        flat_occs[indices] = torch.maximum(flat_occs[indices] * ema_decay, occ_new)
        threshold = torch.clamp(flat_occs.mean(), max=occ_thre)
        self.binaries.copy_(self.occs > threshold)

    def update_every_n_steps(
        self, *, step: int, occ_eval_fn: OccEvalFn, n: int = UPDATE_EVERY, **kwargs
    ) -> bool:
        """Call ``update`` when ``step % n == 0`` (training-step hook); returns whether it ran."""
        if step % n != 0:
            return False
        self.update(step=step, occ_eval_fn=occ_eval_fn, **kwargs)
        return True

    @torch.no_grad()
    def sampling(
        self,
        rays_o: Float[Tensor, "R 3"],
        rays_d: Float[Tensor, "R 3"],
        *,
        render_step_size: float,
        sigma_fn: SigmaFn | None = None,
        alpha_fn: SigmaFn | None = None,
        near_plane: float = 0.0,
        far_plane: float = 1e10,
        cone_angle: float = 0.0,
        alpha_thre: float = 0.0,
        early_stop_eps: float = api.EARLY_STOP_EPS,
        stratified: bool = False,
        generator: torch.Generator | None = None,
        t_offsets: Float[Tensor, " R"] | None = None,
        backend: Backend = "auto",
    ) -> PackedSamples:
        """March the grid, then (with ``sigma_fn`` or ``alpha_fn``) drop invisible samples in a no-grad pass.

        ``sigma_fn(t_starts, t_ends, ray_indices) -> sigmas (S,)`` (or ``alpha_fn`` -> alphas) is evaluated
        once without gradients; samples with ``alpha < alpha_thre`` or after ``T < early_stop_eps`` are dropped.
        The caller then evaluates the field *with* gradients on the returned samples and calls ``composite``.
        Start jitter (stratified marching, in [0, 1) steps): ``t_offsets`` when given (e.g. a function of each
        ray's index in a data-parallel global batch), else drawn from ``generator`` when ``stratified``, else 0.

        Returns:
            ``PackedSamples`` for all ``R`` rays (rays without samples have count 0).
        """
        offsets = t_offsets
        if stratified and t_offsets is None:
            offsets = torch.rand(rays_o.shape[0], generator=generator, dtype=rays_o.dtype).to(rays_o.device)
        samples = api.march_rays(
            rays_o,
            rays_d,
            self.binaries,
            self.aabb,
            step_size=render_step_size,
            near_plane=near_plane,
            far_plane=far_plane,
            cone_angle=cone_angle,
            t_offsets=offsets,
            backend=backend,
        )
        if samples.n_samples == 0 or (sigma_fn is None and alpha_fn is None):
            return samples
        common: dict[str, Any] = dict(
            ray_indices=samples.ray_indices, n_rays=samples.n_rays, early_stop_eps=early_stop_eps
        )
        if sigma_fn is not None:
            sigmas = sigma_fn(samples.t_starts, samples.t_ends, samples.ray_indices).reshape(-1)
            keep = api.render_visibility_from_density(
                samples.t_starts, samples.t_ends, sigmas, alpha_thre=alpha_thre, backend=backend, **common
            )
        else:
            assert alpha_fn is not None
            alphas = alpha_fn(samples.t_starts, samples.t_ends, samples.ray_indices).reshape(-1)
            keep = api.render_visibility_from_alpha(alphas, alpha_thre=alpha_thre, backend=backend, **common)
        return samples.select(keep)
