"""A trivial Warp kernel that ``recon doctor`` compiles and runs to check each kernel backend.

Imported lazily by :mod:`recon.cli.doctor` only (it imports warp at module level; Warp kernels must live in a
module file, not in ``exec``'d code).
"""

import warp as wp


@wp.kernel
def saxpy(a: float, x: wp.array(dtype=float), y: wp.array(dtype=float), out: wp.array(dtype=float)):
    """out[i] = a * x[i] + y[i]."""
    i = wp.tid()
    out[i] = a * x[i] + y[i]
