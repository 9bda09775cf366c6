"""Tolerances of the splat op family (registered in tests/tolerances.py's table at import)."""

import torch

from tests.tolerances import register

# Warp vs dense reference, forward, float32: identical arithmetic per blended triangle, but the reference takes
# T from a cumprod and sums colours with a matmul while the kernel accumulates sequentially; depth sums reach ~10,
# so a few float32 ulps of 10 (~1e-6) plus summation-order differences.
register("splat_fwd", torch.float32, rtol=1e-4, atol=2e-5)
# Warp vs reference gradients, float32: the kernel recovers T_i = T_{i+1}/(1 - alpha_i) back to front (3DGS), which
# loses ~1 ulp per division over up to ~100 blended triangles with T down to 1e-4, and atomics sum per-pixel terms
# in a different order than autograd; gradients are O(1..100) sums of O(100) pixels with cancellations.
register("splat_bwd", torch.float32, rtol=2e-3, atol=2e-4)
# Hand-computed oracles evaluated in float32 (pow/log of values near 1).
register("splat_oracle", torch.float32, rtol=1e-5, atol=1e-6)
register("splat_oracle", torch.float64, rtol=1e-10, atol=1e-12)
