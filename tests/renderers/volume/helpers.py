"""Tolerances and sample layouts shared by the volume-renderer tests."""

import torch

from tests.tolerances import register

# Warp kernels accumulate per ray in float32 in a different order than the float64-scanned reference:
# relative error ~1e-6 per sample; backward sums over up to ~20 samples per ray.
register("volume_composite", torch.float32, rtol=1e-4, atol=2e-5)
# The gradcheck-ed reference in float64.
register("volume_composite", torch.float64, rtol=1e-7, atol=1e-9)
# Inverse CDF: a division by a bin's cdf increment (>= 1e-5 padding mass) amplifies float32 rounding.
register("volume_importance", torch.float32, rtol=1e-4, atol=1e-4)

# Ragged packed layouts: sample counts per ray, including empty and single-sample rays.
LAYOUTS = {
    "ragged": [3, 0, 1, 5, 2, 0, 7],
    "single": [1, 1, 1],
    "empty_first_last": [0, 4, 0],
    "long": [40, 13],
}


def packed_samples(counts: list[int], gen: torch.Generator, dtype=torch.float32):
    """(ray_indices, t_starts, t_ends) with sorted, contiguous, front-to-back intervals per ray."""
    counts_t = torch.tensor(counts)
    ray_indices = torch.arange(len(counts)).repeat_interleave(counts_t)
    n = int(counts_t.sum())
    dt = torch.rand(n, generator=gen, dtype=torch.float64) * 0.2 + 0.01
    starts = torch.zeros(n, dtype=torch.float64)
    first = 0
    for c in counts:
        if c:
            starts[first : first + c] = torch.cumsum(dt[first : first + c], 0) - dt[first : first + c] + 0.5
        first += c
    return ray_indices, starts.to(dtype), (starts + dt).to(dtype)
