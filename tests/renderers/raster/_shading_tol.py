"""Tolerances of the mesh shading ops (registered in tests/tolerances.py's table at import)."""

import torch

from tests.tolerances import register

# Warp vs reference forward, float32: the same formulas in the same order per slot; the composite sums K <= 10
# slots sequentially where the reference uses cumprod and a reduction, a few ulps of O(1) values.
register("shading_fwd", torch.float32, rtol=1e-5, atol=2e-6)
# Warp vs reference gradients, float32: atomics sum per-slot terms into faces/texels/vertices in another order than
# autograd's index_put/scatter, over up to ~1000 contributions of O(1); the composite backward recursion
# (B_k = g.c_k a_k + (1 - a_k) B_{k+1}) is algebraically equal to autograd's cumprod backward, not bit-equal.
register("shading_bwd", torch.float32, rtol=1e-4, atol=2e-5)
# Hand-computed oracles evaluated in float32 / float64.
register("shading_oracle", torch.float32, rtol=1e-6, atol=1e-6)
register("shading_oracle", torch.float64, rtol=1e-12, atol=1e-12)
# Oracles whose inputs went through a float32 camera round trip (pixel -> world -> pixel at ~10 px): a few ulps
# of 10 (1e-6 each) move an edge crossing, so the expected coverages hold to ~5e-6.
register("shading_projected", torch.float32, rtol=0.0, atol=2e-5)
# Gradients summed over 8 rows in float32 against f / z computed in float64.
register("shading_projected_grad", torch.float32, rtol=1e-4, atol=1e-4)
