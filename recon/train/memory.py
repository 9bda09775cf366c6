"""Peak memory of the training process, recorded with every checkpoint and reported in eval.json.

* ``max_rss_bytes``: the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``; kB on
  Linux, bytes on macOS). It covers the whole process life up to the call (dataset decoding, initialisation and
  training), host memory only; ``None`` where the ``resource`` module does not exist (Windows).
* ``cuda_max_allocated_bytes``: ``torch.cuda.max_memory_allocated`` of the training device (tensors allocated by
  torch, not the caching allocator's reserve nor Warp's own allocations); ``None`` when training on the CPU.

Example:
    >>> import torch
    >>> record = peak_memory(torch.device("cpu"))
    >>> record["cuda_max_allocated_bytes"] is None
    True
"""

import sys

import torch

__all__ = ["peak_memory"]

RSS_UNIT_BYTES = (
    1 if sys.platform == "darwin" else 1024
)  # ru_maxrss is bytes on macOS, kilobytes on Linux/BSD


def peak_memory(device: torch.device) -> dict[str, int | None]:
    """``{"max_rss_bytes", "cuda_max_allocated_bytes"}`` of this process so far (see the module docstring)."""
    try:
        import resource
    except ImportError:  # Windows: no getrusage
        rss = None
    else:
        rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * RSS_UNIT_BYTES
    cuda = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return {"max_rss_bytes": rss, "cuda_max_allocated_bytes": cuda}
