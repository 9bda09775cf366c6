"""Typed records returned by the volume-rendering ops."""

from dataclasses import dataclass
from typing import NamedTuple

from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["CompositeOutput", "PackedSamples", "RayAABBHits", "WeightsFromAlpha", "WeightsFromDensity"]


class WeightsFromDensity(NamedTuple):
    """``w_i = T_i * alpha_i`` (same layout as the input samples); unpacks like nerfacc's triple."""

    weights: Tensor
    transmittance: Tensor
    alphas: Tensor


class WeightsFromAlpha(NamedTuple):
    """``w_i = T_i * alpha_i`` with ``T_i = prod_{j<i}(1 - alpha_j)``; unpacks like nerfacc's pair."""

    weights: Tensor
    transmittance: Tensor


class RayAABBHits(NamedTuple):
    """Ray/box slab intersection: entry and exit distance along the ray, and whether the ray hits the box."""

    t_near: Float[Tensor, " R"]
    t_far: Float[Tensor, " R"]
    hit: Tensor


@dataclass(frozen=True)
class PackedSamples:
    """Ray intervals in the packed layout.

    ``ray_indices[i] = r`` means interval ``[t_starts[i], t_ends[i]]`` lies on ray ``r``; ``ray_indices`` is sorted
    ascending and the samples of one ray are ordered front to back. ``packed_info[r] = (first, count)``: the
    samples of ray ``r`` are ``first, ..., first + count - 1`` (``count = 0`` for rays without samples).
    """

    ray_indices: Int[Tensor, " S"]
    t_starts: Float[Tensor, " S"]
    t_ends: Float[Tensor, " S"]
    packed_info: Int[Tensor, "R 2"]

    @property
    def n_rays(self) -> int:
        return self.packed_info.shape[0]

    @property
    def n_samples(self) -> int:
        return self.t_starts.shape[0]

    def select(self, keep: Tensor) -> "PackedSamples":
        """The samples where ``keep`` (bool ``(S,)``) is true, repacked (order preserved)."""
        from recon.renderers.volume.ref import pack_info

        ray_indices = self.ray_indices[keep]
        return PackedSamples(
            ray_indices, self.t_starts[keep], self.t_ends[keep], pack_info(ray_indices, self.n_rays)
        )


@dataclass(frozen=True)
class CompositeOutput:
    """Per-ray results of volume compositing (``R`` rays, ``D`` colour channels) and per-sample weights.

    Attributes:
        rgb: (R, D) ``sum_i w_i c_i + (1 - A) c_bg`` (no background term when ``background`` is None).
        opacity: (R, 1) ``A = sum_i w_i``.
        depth: (R, 1) expected depth ``sum_i w_i t_mid_i / max(A, 1e-10)``.
        accumulated_depth: (R, 1) ``sum_i w_i t_mid_i``.
        weights: per-sample ``w_i`` in the input layout ((S,) packed or (R, S) batched).
        transmittance: per-sample ``T_i`` (transmittance *before* sample i), same layout as ``weights``.
    """

    rgb: Float[Tensor, "R D"]
    opacity: Float[Tensor, "R 1"]
    depth: Float[Tensor, "R 1"]
    accumulated_depth: Float[Tensor, "R 1"]
    weights: Tensor
    transmittance: Tensor
