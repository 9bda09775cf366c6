"""Benchmark of the volume-rendering ops and the hash-grid encoding: Warp vs the torch reference, one process.

Cases:
  composite_fwd     packed density compositing (rgb, opacity, depth), no grad
  composite_fwd_bwd same with gradients on sigmas and colours, random cotangents on rgb/opacity/depth
  hashgrid_fwd      Instant-NGP hash grid (L=16, F=2, T=2^19, 16..4096) on N points, no grad
  hashgrid_fwd_bwd  same with gradients on the table
  march             occupancy-grid marching (128^3, one level, sphere occupancy, step 5e-3), no grad

Times are medians over ``--repeats`` runs after one warm-up run (which also compiles the Warp kernels).
Throughput: rays/s (rays per call / median time) and samples/s (samples or points per call / median time).

Usage:
  .venv/bin/python benchmarks/bench_volume.py [--json] [--device cpu|cuda] [--repeats 5] [--rays 4096]
      [--samples-per-ray 64] [--points 65536] [--threads 1] [--cases composite_fwd,hashgrid_fwd]

On a shared CPU, torch's OpenMP threads spin against other processes; ``--threads 1`` gives stable numbers.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch

from recon.renderers.encoding import HashGrid, HashGridConfig
from recon.renderers.volume import composite, march_rays

CASES = ("composite_fwd", "composite_fwd_bwd", "hashgrid_fwd", "hashgrid_fwd_bwd", "march")
BACKENDS = ("torch", "warp")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (compiles Warp kernels on first use)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _composite_case(args, device: str, backward: bool):
    g = torch.Generator().manual_seed(0)
    n_rays, per_ray = args.rays, args.samples_per_ray
    n = n_rays * per_ray
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray).to(device)
    t_starts = (torch.arange(per_ray).repeat(n_rays) * 0.01 + 2.0).to(device)
    t_ends = t_starts + 0.01
    sigmas = (torch.rand(n, generator=g) * 5.0).to(device)
    colors = torch.rand(n, 3, generator=g).to(device)
    background = torch.ones(3, device=device)
    cot = [torch.randn(n_rays, d, generator=g).to(device) for d in (3, 1, 1)]

    def make(backend):
        def run():
            s = sigmas.clone().requires_grad_(backward)
            c = colors.clone().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                out = composite(t_starts, t_ends, c, sigmas=s, ray_indices=ray_indices, n_rays=n_rays,
                                background=background, backend=backend)  # fmt: skip
                if backward:
                    loss = (
                        (out.rgb * cot[0]).sum() + (out.opacity * cot[1]).sum() + (out.depth * cot[2]).sum()
                    )
                    loss.backward()

        return run

    return make, n_rays, n


def _hashgrid_case(args, device: str, backward: bool):
    g = torch.Generator().manual_seed(0)
    grid = HashGrid(HashGridConfig(), generator=g).to(device)
    x = torch.rand(args.points, 3, generator=g).to(device)
    cot = torch.randn(args.points, grid.output_dim, generator=g).to(device)

    def make(backend):
        def run():
            grid.table.grad = None
            with torch.set_grad_enabled(backward):
                out = grid(x, backend=backend)
                if backward:
                    (out * cot).sum().backward()

        return run

    return make, 0, args.points


def _march_case(args, device: str):
    res = 128
    axis = (torch.arange(res) + 0.5) / res * 3.0 - 1.5
    xx, yy, zz = torch.meshgrid(axis, axis, axis, indexing="ij")
    binaries = ((xx**2 + yy**2 + zz**2).sqrt() < 0.8)[None].to(device)
    aabb = torch.tensor([[-1.5] * 3, [1.5] * 3], device=device)
    g = torch.Generator().manual_seed(0)
    n_rays = min(args.rays, 1024)  # the lock-step torch reference loops over every step on the host
    origins = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g), dim=-1) * 4.0
    targets = (torch.rand(n_rays, 3, generator=g) - 0.5) * 1.2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    origins, directions = origins.to(device), directions.to(device)
    counts = []

    def make(backend):
        def run():
            out = march_rays(
                origins, directions, binaries, aabb, step_size=5e-3, near_plane=0.0, backend=backend
            )
            counts.append(out.n_samples)

        return run

    make("warp")()  # sample count for the throughput column
    return make, n_rays, counts[-1]


def run_benchmarks(args) -> dict:
    device = args.device
    results = []
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        if case.startswith("composite"):
            make, n_rays, n_samples = _composite_case(args, device, case.endswith("bwd"))
        elif case.startswith("hashgrid"):
            make, n_rays, n_samples = _hashgrid_case(args, device, case.endswith("bwd"))
        else:
            make, n_rays, n_samples = _march_case(args, device)
        row = {"case": case, "rays": n_rays, "samples": n_samples}
        for backend in BACKENDS:
            seconds = _time(make(backend), device, args.repeats)
            row[f"{backend}_s"] = seconds
            row[f"{backend}_rays_per_s"] = n_rays / seconds if n_rays else None
            row[f"{backend}_samples_per_s"] = n_samples / seconds
        row["speedup_warp_vs_torch"] = row["torch_s"] / row["warp_s"]
        results.append(row)
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "results": results,
    }


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def print_table(report: dict) -> None:
    print(f"bench_volume on {report['device']} ({report['cpu_count']} CPUs, {report['torch_threads']} torch threads), "
          f"median of {report['repeats']}, {report['date_utc']} UTC")  # fmt: skip
    header = ["case", "rays", "samples", "torch s", "warp s", "torch rays/s", "warp rays/s", "torch samples/s",
              "warp samples/s", "speed-up"]  # fmt: skip
    rows = [
        [r["case"], str(r["rays"] or "-"), str(r["samples"]), _fmt(r["torch_s"]), _fmt(r["warp_s"]),
         _fmt(r["torch_rays_per_s"]), _fmt(r["warp_rays_per_s"]), _fmt(r["torch_samples_per_s"]),
         _fmt(r["warp_samples_per_s"]), f"{r['speedup_warp_vs_torch']:.2f}x"]
        for r in report["results"]
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--samples-per-ray", type=int, default=64)
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); Warp's CPU path is serial",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_benchmarks(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
