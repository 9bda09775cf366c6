"""Benchmark of the tile splat rasteriser (recon.renderers.splat): Warp vs the dense torch reference.

Cases (issue "Shared renderer I", item 6):
  a: 128x128, 10k triangles   (warp and ref; speed-up ratio reported)
  b: 200x200, 100k triangles  (warp only)
  c: 800x800, 500k triangles  (warp only; meant for a GPU, run on CPU only with --include-c-on-cpu)
plus scaling sweeps of the Warp path over pixel count and primitive count.

Times are medians over ``--repeats`` runs after one warm-up (which also compiles the kernels). forward_s renders
under ``torch.no_grad()``; forward_backward_s renders with gradients on vertices, colours, opacities and sigmas
and back-propagates random cotangents on rgb, alpha, depth and normals. peak_mem_mb is the peak CUDA allocation on
GPUs and, on CPU, the peak resident-set growth over the baseline, sampled every millisecond, of one forward+backward
run in a fresh process (glibc told to return freed memory at once, see _return_freed_memory_to_os). The
*_cpu_s fields give the process CPU time (all threads) of the same runs: on a shared machine wall time includes
waiting for a core, CPU time does not.

Usage:
  .venv/bin/python benchmarks/bench_splat.py [--json] [--device cpu|cuda] [--repeats 5] [--cases a,b]
"""

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch

from recon.core.camera import Camera
from recon.renderers.splat import rasterize_triangles

CASES = {"a": (128, 128, 10_000), "b": (200, 200, 100_000), "c": (800, 800, 500_000)}
DEPTH_COMPLEXITY = 24.0  # mean number of triangles covering a pixel (before early stop)
MIN_RADIUS_PX = 4.0  # smallest mean projected circumradius of the benchmark triangles


def make_scene(width: int, height: int, n: int, device: str, seed: int = 0):
    """Random triangles filling the view frustum at depths 2..6, sized for ~DEPTH_COMPLEXITY overlap."""
    g = torch.Generator().manual_seed(seed)
    focal = 0.8 * width
    z = 2.0 + 4.0 * torch.rand(n, generator=g)
    u = (torch.rand(n, generator=g) * 1.2 - 0.1) * width
    v = (torch.rand(n, generator=g) * 1.2 - 0.1) * height
    centers = torch.stack([(u - width / 2) * z / focal, (v - height / 2) * z / focal, z], -1)
    # Circumradius r_px with n * area / (W H) ~ DEPTH_COMPLEXITY (area ~ 1.3 r^2 for equilateral triangles), but
    # at least MIN_RADIUS_PX so that most triangles pass the inradius >= 1 px cull.
    r_px = max(MIN_RADIUS_PX, math.sqrt(DEPTH_COMPLEXITY * width * height / (1.3 * n)))
    r_world = r_px * z / focal * (0.75 + 0.5 * torch.rand(n, generator=g))
    # Near-equilateral triangles in random planes: vertices at 0, 120, 240 degrees (+ jitter) on a circle.
    axes = torch.linalg.qr(torch.randn(n, 3, 3, generator=g)).Q  # random orthonormal frames
    angles = torch.tensor([0.0, 2.0944, 4.1888]) + 0.3 * torch.randn(n, 3, generator=g)
    offsets = (
        torch.cos(angles)[..., None] * axes[:, None, :, 0]
        + torch.sin(angles)[..., None] * axes[:, None, :, 1]
    )
    vertices = centers[:, None, :] + r_world[:, None, None] * offsets
    colors = torch.rand(n, 3, generator=g)
    opacities = 0.1 + 0.8 * torch.rand(n, generator=g)
    sigmas = 0.5 + 1.5 * torch.rand(n, generator=g)
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    camera = Camera(T_cam_world=torch.eye(4)[None], K=K[None], width=width, height=height).to(device)
    return [t.to(device) for t in (vertices, colors, opacities, sigmas)], camera


def _return_freed_memory_to_os() -> None:
    """glibc: serve allocations >= 64 KiB with mmap and never raise that threshold, so freed tensors leave the
    resident set at once and the sampled RSS peak of a case is its own (otherwise the allocator keeps the memory
    of earlier cases and later peaks read 0). Best effort; a no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    except OSError:
        pass


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter id


class PeakMemory:
    """Peak memory during a block: CUDA max allocation, or sampled RSS growth on CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self.peak = self.base
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, self._rss())
            self.peak_mb = (self.peak - self.base) / 2**20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(width, height, n, backend, device, repeats):
    (vertices, colors, opacities, sigmas), camera = make_scene(width, height, n, device)
    bg = torch.zeros(3, device=device)
    g = torch.Generator().manual_seed(1)
    cot = {
        k: torch.randn(1, height, width, c, generator=g).to(device)
        for k, c in (("rgb", 3), ("alpha", 1), ("depth", 1), ("normals", 3))
    }

    def forward():
        with torch.no_grad():
            rasterize_triangles(vertices, colors, opacities, sigmas, camera, background=bg, backend=backend)
        _sync(device)

    leaves = [t.clone().requires_grad_() for t in (vertices, colors, opacities, sigmas)]

    def forward_backward():
        out = rasterize_triangles(*leaves, camera, background=bg, backend=backend)
        loss = sum((getattr(out, k) * v).sum() for k, v in cot.items())
        loss.backward()
        _sync(device)

    results = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn()  # warm-up (compiles the Warp kernels on first use)
        times, cpu_times = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        results[f"{name}_s"] = statistics.median(times)
        # process CPU time (all threads): the work done, independent of other load on a shared machine
        results[f"{name}_cpu_s"] = statistics.median(cpu_times)
    return results


def _memory_probe(spec: str, device: str) -> None:
    """Child process: peak memory of one forward+backward of a case (printed as JSON)."""
    name, backend = spec.split(":")
    width, height, n = CASES[name]
    _return_freed_memory_to_os()
    (vertices, colors, opacities, sigmas), camera = make_scene(width, height, n, device)
    leaves = [t.clone().requires_grad_() for t in (vertices, colors, opacities, sigmas)]
    if backend == "warp":  # load the (cached) kernels outside the measurement
        rasterize_triangles(*(t.detach() for t in leaves), camera, backend=backend)
    with PeakMemory(device) as mem:
        out = rasterize_triangles(*leaves, camera, backend=backend)
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum() + out.normals.sum()).backward()
        _sync(device)
    print(json.dumps({"peak_mem_mb": round(mem.peak_mb, 1)}))


def peak_memory(name: str, backend: str, device: str) -> float | None:
    """Peak memory of one forward+backward, measured in a fresh process (so earlier cases do not mask it)."""
    cmd = [sys.executable, __file__, "--memory-probe", f"{name}:{backend}", "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["peak_mem_mb"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--include-c-on-cpu", action="store_true", help="also run case c on a CPU device")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling sweeps")
    parser.add_argument("--memory-probe", default="", help=argparse.SUPPRESS)  # internal: "<case>:<backend>"
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine OpenMP spin-waits made small torch ops "
        "10-20x slower with 2 threads); 0 keeps torch's default",
    )
    args = parser.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.memory_probe:
        _memory_probe(args.memory_probe, args.device)
        return
    device = args.device
    rows, skipped = [], []
    for name in args.cases.split(","):
        width, height, n = CASES[name]
        if name == "c" and device == "cpu" and not args.include_c_on_cpu:
            skipped.append({"name": "c", "reason": "GPU-only case (800x800, 500k); pass --include-c-on-cpu"})
            continue
        backends = ("warp", "torch") if name == "a" else ("warp",)
        for backend in backends:
            res = time_case(width, height, n, backend, device, args.repeats if backend == "warp" else 1)
            res["peak_mem_mb"] = peak_memory(name, backend, device)
            rows.append(
                dict(
                    name=name,
                    backend=backend,
                    device=device,
                    width=width,
                    height=height,
                    primitives=n,
                    **{k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()},
                )
            )
            if not args.json:
                _print_row(rows[-1], header=len(rows) == 1)
    speedup = {}
    a_rows = {r["backend"]: r for r in rows if r["name"] == "a"}
    if "warp" in a_rows and "torch" in a_rows:
        for k in ("forward_s", "forward_backward_s"):
            speedup[k] = round(a_rows["torch"][k] / a_rows["warp"][k], 1)
    scaling = {}
    if not args.no_scaling:
        scaling["pixels"] = [
            dict(width=s, height=s, primitives=20_000, **time_case(s, s, 20_000, "warp", device, 3))
            for s in (64, 128, 256)
        ]
        scaling["primitives"] = [
            dict(width=128, height=128, primitives=n, **time_case(128, 128, n, "warp", device, 3))
            for n in (5_000, 20_000, 80_000)
        ]
    report = {
        "benchmark": "splat",
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu cores"
        + (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ", no GPU"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "warp_cpu_workers": os.environ.get("RECON_WARP_CPU_THREADS", "default (min(2, cores))"),
        "repeats": args.repeats,
        "cases": rows,
        "skipped": skipped,
        "speedup_warp_over_ref_a": speedup,
        "scaling_warp": scaling,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"\nspeed-up warp/ref on (a): {speedup or 'not measured'}")
        for axis, entries in scaling.items():
            print(f"warp forward+backward scaling over {axis}: " + ", ".join(
                f"{e['width']}x{e['height']}/{e['primitives']}: {e['forward_backward_s']:.3f} s" for e in entries))  # fmt: skip
        print(
            json.dumps(
                {
                    k: v
                    for k, v in report.items()
                    if k not in ("cases", "scaling_warp", "speedup_warp_over_ref_a")
                },
                indent=1,
            )
        )


def _print_row(row: dict, *, header: bool) -> None:
    """One line of the markdown table printed without --json."""
    cols = (
        "name",
        "backend",
        "device",
        "width",
        "height",
        "primitives",
        "forward_s",
        "forward_backward_s",
        "peak_mem_mb",
    )
    if header:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
    print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
