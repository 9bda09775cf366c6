"""Per-level geometry of the multiresolution hash grid (tiny-cuda-nn ``encodings/grid.h`` conventions)."""

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["HASH_PRIMES", "HashGridLayout"]

# Spatial-hash primes of Instant-NGP (first dimension multiplies by 1); uint32 arithmetic (tcnn common_device.h).
HASH_PRIMES = (1, 2654435761, 805459861)
PARAM_ALIGNMENT = 8  # tcnn rounds each level's entry count up to a multiple of 8


@dataclass(frozen=True)
class HashGridLayout:
    """Level resolutions and table offsets of a 3D hash grid.

    For level ``l``: ``scale_l = N_min * b^l - 1`` (float32 as tcnn), ``res_l = ceil(scale_l) + 1``; the level
    owns ``size_l = min(next_multiple(res_l^3, 8), T)`` rows of the table starting at ``offsets[l]``; it is
    *dense* (index ``c0 + c1 res + c2 res^2``) when ``res_l^3 <= T``, hashed otherwise.

    Attributes:
        levels: number of levels L.
        features_per_level: features F per level.
        log2_hashmap_size: ``log2 T``.
        base_resolution: ``N_min``.
        per_level_scale: growth factor ``b``.
    """

    levels: int = 16
    features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4472692012786865  # exp((ln 4096 - ln 16) / 15): N_max = 4096 (spec section 2)

    @staticmethod
    def scale_for(base_resolution: int, max_resolution: int, levels: int) -> float:
        """``b = exp((ln N_max - ln N_min) / (L - 1))``."""
        if levels <= 1:
            return 1.0
        return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))

    @property
    def hashmap_size(self) -> int:
        return 1 << self.log2_hashmap_size

    @cached_property
    def scales(self) -> tuple[float, ...]:
        """float32 ``exp2(l * log2(b)) * N_min - 1`` (tcnn's expression, so an optional tcnn backend agrees)."""
        log2_b = np.log2(np.float32(self.per_level_scale), dtype=np.float32)
        out = []
        for level in range(self.levels):
            s = np.exp2(np.float32(level) * log2_b, dtype=np.float32) * np.float32(self.base_resolution)
            out.append(float(np.float32(s) - np.float32(1.0)))
        return tuple(out)

    @cached_property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(math.ceil(s) + 1 for s in self.scales)

    @cached_property
    def dense(self) -> tuple[bool, ...]:
        return tuple(r**3 <= self.hashmap_size for r in self.resolutions)

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        aligned = [-(-(r**3) // PARAM_ALIGNMENT) * PARAM_ALIGNMENT for r in self.resolutions]
        return tuple(min(a, self.hashmap_size) for a in aligned)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum([0, *self.sizes[:-1]]))

    @property
    def num_params(self) -> int:
        """Table rows ``sum_l size_l`` (the table is ``(num_params, F)``; at most ``L * T`` rows)."""
        return sum(self.sizes)

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level
