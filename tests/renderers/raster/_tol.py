"""Tolerances of the rasterize op (registered in tests/tolerances.py's table at import)."""

import torch

from tests.tolerances import register

# Warp vs reference attributes, float32: the same formulas in the same order, but LLVM may contract a*b+c into
# FMAs and torch sums its triple products with a different reduction; bary = n_i / s of 3x3 triple products of
# O(1..5) coordinates, depth O(1..5), dists O(1..100) px^2: a few ulps relative.
register("raster_fwd", torch.float32, rtol=1e-4, atol=2e-5)
# Warp vs reference vertex gradients, float32, compared after dividing both by the largest reference magnitude:
# per-slot terms (O(1..100) for near-grazing faces) summed over up to ~1000 slots in a different order (atomics vs
# autograd's index_add) cancel; the measured worst case over the test scenes is 7.5e-5 of the largest entry.
register("raster_bwd", torch.float32, rtol=2e-3, atol=5e-4)
# Hand-computed oracles: exact small fractions, float32 rounding of divisions only.
register("raster_oracle", torch.float32, rtol=1e-5, atol=1e-5)
register("raster_oracle", torch.float64, rtol=1e-10, atol=1e-12)
