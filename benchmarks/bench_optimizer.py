"""Benchmark of the table-sized work of one hash-grid training step: the Adam update and the gradient buffers.

For hash tables of the nerf presets' layout (16 levels, 2 features, resolutions 16..1024, T = 2^15 / 2^17 / 2^19
entries per level) it times, side by side in one process:

  adam_per_op   ``torch.optim.Adam`` with its per-op (for-loop) implementation, the CPU default before
  adam_fused    the fused kernel ``recon.train.ParamOptimizer`` uses on CPU and CUDA for groups of >= 2^19 entries
  grad_old      Warp encoding forward + backward on ``--points`` points with a zero-filled table-sized ``.grad``
                already attached, as ``wp.from_torch`` attached one on every call before (autograd then adds
                the returned gradient into it)
  grad_now      the same forward + backward as the glue runs it now (no ``.grad`` attached by Warp)

Times are medians over ``--repeats`` runs after one warm-up (which also compiles the Warp kernels).

Usage:
  .venv/bin/python benchmarks/bench_optimizer.py [--threads 1] [--repeats 7] [--points 12288] [--device cpu]
"""

import argparse
import statistics
import time

import torch

from recon.renderers.encoding import HashGridConfig, hash_grid_encode


def _median_seconds(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _adam_seconds(table: torch.Tensor, fused: bool, repeats: int, device: str) -> float:
    param = torch.nn.Parameter(table.clone())
    param.grad = torch.randn_like(param) * 1e-3
    adam = torch.optim.Adam([param], lr=1e-2, eps=1e-15, **({"fused": True} if fused else {"foreach": False}))
    return _median_seconds(adam.step, repeats, device)


def _encode_seconds(layout, table, x, cotangent, preallocated_grad: bool, repeats: int, device: str) -> float:
    param = torch.nn.Parameter(table.clone())

    def step():
        param.grad = torch.zeros_like(param) if preallocated_grad else None
        out = hash_grid_encode(x, param, layout, backend="warp")
        (out * cotangent).sum().backward()

    return _median_seconds(step, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--points", type=int, default=12288, help="encoded points per step (~512 rays x 24)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.points, 3, generator=gen).to(args.device)
    print(
        f"device {args.device}, {args.threads} torch thread(s), {args.points} points, medians of {args.repeats}"
    )
    print(
        "| log2 T | table rows | adam per-op ms | adam fused ms | speed-up | fwd+bwd old ms | fwd+bwd now ms | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for log2 in (15, 17, 19):
        layout = HashGridConfig(levels=16, log2_hashmap_size=log2, max_resolution=1024).layout
        table = (torch.rand(layout.num_params, 2, generator=gen) * 2e-4 - 1e-4).to(args.device)
        cot = torch.randn(args.points, layout.levels * 2, generator=gen).to(args.device)
        per_op = _adam_seconds(table, False, args.repeats, args.device)
        fused = _adam_seconds(table, True, args.repeats, args.device)
        old = _encode_seconds(layout, table, x, cot, True, args.repeats, args.device)
        now = _encode_seconds(layout, table, x, cot, False, args.repeats, args.device)
        print(
            f"| {log2} | {layout.num_params:,} | {per_op * 1e3:.1f} | {fused * 1e3:.1f} | {per_op / fused:.1f}x "
            f"| {old * 1e3:.1f} | {now * 1e3:.1f} | {old / now:.2f}x |"
        )


if __name__ == "__main__":
    main()
