"""Benchmark of the mesh rasterizer ops (recon.renderers.raster): Warp vs the torch reference vs Open3D.

Cases (issue 11, item 3), on a procedural torus of ``--faces`` faces (default 10 240) seen by one camera at
``--size`` x ``--size`` pixels (default 256):
  hard_k1:  layers=1, blur_sq=0 (hard visibility); warp, torch and Open3D's Embree ray casting (forward only)
  soft_k10: layers=10, blur_sq for sigma = 1e-4 in PyTorch3D squared-NDC units,
            ``blur_sq = ln(1/1e-4 - 1) sigma (min(H, W)/2)^2`` (15.1 px^2 at 256x256); warp and torch
plus scaling sweeps of the Warp path over faces (2.5k, 10k, 40k) and pixels (128^2, 256^2, 512^2).

Times are medians over ``--repeats`` runs after one warm-up (which also compiles the Warp kernels); the torch
reference runs once without warm-up (it takes seconds). forward_s runs under ``torch.no_grad()``; forward_backward_s rasterizes with
gradients on the vertices and back-propagates random cotangents on bary, depth and dists. The *_cpu_s fields give
the process CPU time (all threads): on a shared machine wall time includes waiting for a core, CPU time does not.
Open3D's forward_s is ``cast_rays`` of all pixel rays on a prebuilt scene (Embree's best case; the BVH build is
reported as build_s), with Open3D's own threads, timed interleaved with the warp hard forward
(warp_forward_interleaved_s) so that the warp/Open3D ratio compares runs under the same load.

Adding a case: write ``def case_<name>(ctx: BenchContext) -> list[dict]`` returning one row per backend (use
``row`` and ``time_fn``) and append it to ``CASE_FUNCTIONS``.

Usage:
  .venv/bin/python benchmarks/bench_raster.py [--json] [--device cpu|cuda] [--faces 10240] [--size 256]
      [--repeats 5] [--no-reference] [--no-scaling]
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from recon.core.camera import Camera
from recon.renderers.raster import rasterize

SOFT_SIGMA_NDC = (
    1e-4  # coarse-phase sigma of the Differentiable Blocks World recipe (spec superquadrics.md 6)
)
SOFT_LAYERS = 10


@dataclass
class BenchContext:
    """What every case function gets: the mesh, the camera and the run options."""

    vertices: torch.Tensor
    faces: torch.Tensor
    camera: Camera
    device: str
    repeats: int
    reference: bool


def torus_mesh(num_faces: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A torus (radius 1, tube 0.4) with about ``num_faces`` faces (exactly 2 radial tubular)."""
    tubular = max(3, round(math.sqrt(num_faces / 2.5)))
    radial = max(3, round(num_faces / (2 * tubular)))
    u = torch.arange(radial, dtype=torch.float64) * (2 * math.pi / radial)
    v = torch.arange(tubular, dtype=torch.float64) * (2 * math.pi / tubular)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    ring = 1.0 + 0.4 * torch.cos(vv)
    vertices = torch.stack([ring * torch.cos(uu), ring * torch.sin(uu), 0.4 * torch.sin(vv)], -1).reshape(
        -1, 3
    )
    i, j = torch.meshgrid(torch.arange(radial), torch.arange(tubular), indexing="ij")
    a, b = i * tubular + j, ((i + 1) % radial) * tubular + j
    c, d = ((i + 1) % radial) * tubular + (j + 1) % tubular, i * tubular + (j + 1) % tubular
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return vertices.float().to(device), faces.to(device)


def camera(size: int, device: str) -> Camera:
    """One camera 4 units from the torus centre, tilted 35 degrees, the torus filling ~60% of the width."""
    tilt = math.radians(35.0)
    T = torch.eye(4)
    T[1, 1], T[1, 2], T[2, 1], T[2, 2] = math.cos(tilt), -math.sin(tilt), math.sin(tilt), math.cos(tilt)
    T[2, 3] = 4.0
    K = torch.tensor([[1.1 * size, 0.0, size / 2], [0.0, 1.1 * size, size / 2], [0.0, 0.0, 1.0]])
    return Camera(T[None], K[None], size, size).to(device)


def soft_blur_sq(size: int) -> float:
    """blur_sq in px^2 for SOFT_SIGMA_NDC (weight 1e-4 at the blur radius), as in the DBW reference."""
    return math.log(1.0 / 1e-4 - 1.0) * SOFT_SIGMA_NDC * (size / 2) ** 2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, repeats: int, device: str, *, warm_up: bool = True) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn`` over ``repeats`` runs after one warm-up (if asked)."""
    if warm_up:
        fn()
        _sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def row(ctx: BenchContext, name: str, backend: str, **fields) -> dict:
    return dict(
        name=name,
        backend=backend,
        device=ctx.device,
        faces=int(ctx.faces.shape[0]),
        width=ctx.camera.width,
        height=ctx.camera.height,
        **{k: round(v, 5) if isinstance(v, float) else v for k, v in fields.items()},
    )


def time_rasterize(ctx: BenchContext, backend: str, layers: int, blur_sq: float, repeats: int) -> dict:
    """forward_s / forward_backward_s (and CPU times) of ``rasterize`` with one backend."""
    g = torch.Generator().manual_seed(1)
    shape = (1, ctx.camera.height, ctx.camera.width, layers)
    cot_bary = torch.randn(*shape, 3, generator=g).to(ctx.device)
    cot_depth, cot_dists = (torch.randn(*shape, generator=g).to(ctx.device) for _ in range(2))
    leaf = ctx.vertices.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            rasterize(ctx.vertices, ctx.faces, ctx.camera, layers=layers, blur_sq=blur_sq, backend=backend)

    def forward_backward():
        frags = rasterize(leaf, ctx.faces, ctx.camera, layers=layers, blur_sq=blur_sq, backend=backend)
        dists = torch.where(frags.covered(), frags.dists, 0.0)
        (
            (frags.bary * cot_bary).sum() + (frags.depth * cot_depth).sum() + (dists * cot_dists).sum()
        ).backward()

    # The reference compiles nothing and takes seconds: it runs once, without warm-up.
    warm_up = backend != "torch"
    fwd, fwd_cpu = time_fn(forward, repeats, ctx.device, warm_up=warm_up)
    fb, fb_cpu = time_fn(forward_backward, repeats, ctx.device, warm_up=warm_up)
    return dict(forward_s=fwd, forward_backward_s=fb, forward_cpu_s=fwd_cpu, forward_backward_cpu_s=fb_cpu)


def time_open3d(ctx: BenchContext, repeats: int) -> dict | None:
    """Open3D RaycastingScene (Embree): BVH build and cast_rays of every pixel ray (forward only)."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    vertices = ctx.vertices.cpu().numpy()
    faces = ctx.faces.cpu().numpy().astype("uint32")
    t0 = time.perf_counter()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(vertices, faces)
    rays = ctx.camera.to("cpu").generate_rays()
    tensor = o3d.core.Tensor(torch.cat([rays.origins, rays.directions], -1).reshape(-1, 6).numpy())
    scene.cast_rays(tensor)  # the first query builds the BVH
    build = time.perf_counter() - t0

    def warp_forward():
        with torch.no_grad():
            rasterize(ctx.vertices, ctx.faces, ctx.camera, backend="warp")
        _sync(ctx.device)

    # Interleaved runs (Open3D, warp, Open3D, ...): both see the same load of the shared machine, so their ratio
    # is meaningful even when single timings vary by 2-5x.
    o3d_times, o3d_cpu, warp_times = [], [], []
    for _ in range(2 * repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        scene.cast_rays(tensor)
        o3d_times.append(time.perf_counter() - t0)
        o3d_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        warp_forward()
        warp_times.append(time.perf_counter() - t0)
    return dict(
        forward_s=statistics.median(o3d_times),
        forward_cpu_s=statistics.median(o3d_cpu),
        build_s=build,
        warp_forward_interleaved_s=statistics.median(warp_times),
    )


def case_hard_k1(ctx: BenchContext) -> list[dict]:
    rows = [row(ctx, "hard_k1", "warp", **time_rasterize(ctx, "warp", 1, 0.0, ctx.repeats))]
    if ctx.reference:
        rows.append(row(ctx, "hard_k1", "torch", **time_rasterize(ctx, "torch", 1, 0.0, 1)))
    peer = time_open3d(ctx, ctx.repeats)
    if peer is not None:
        rows.append(row(ctx, "hard_k1", "open3d", **peer))
    return rows


def case_soft_k10(ctx: BenchContext) -> list[dict]:
    blur_sq = soft_blur_sq(min(ctx.camera.width, ctx.camera.height))
    rows = [
        row(
            ctx,
            "soft_k10",
            "warp",
            blur_sq=blur_sq,
            **time_rasterize(ctx, "warp", SOFT_LAYERS, blur_sq, ctx.repeats),
        )
    ]
    if ctx.reference:
        rows.append(
            row(
                ctx,
                "soft_k10",
                "torch",
                blur_sq=blur_sq,
                **time_rasterize(ctx, "torch", SOFT_LAYERS, blur_sq, 1),
            )
        )
    return rows


def case_interpolate_texture(ctx: BenchContext) -> list[dict]:
    """Shading of the soft_k10 fragments (rasterized once, outside the timing): interpolate per-vertex uv ->
    sample_texture (4 textures of 256^2 x 3) -> soft_composite (sigma = blur_sq / ln(1/1e-4 - 1)); the backward
    runs to the bary, dists, textures and opacities."""
    from recon.renderers.raster import shading_api as shading

    blur_sq = soft_blur_sq(min(ctx.camera.width, ctx.camera.height))
    with torch.no_grad():
        frags = rasterize(
            ctx.vertices, ctx.faces, ctx.camera, layers=SOFT_LAYERS, blur_sq=blur_sq, backend="warp"
        )
    g = torch.Generator().manual_seed(2)
    x, y, z = ctx.vertices.unbind(-1)
    uv = torch.stack([torch.atan2(y, x) / (2 * math.pi) + 0.5, z / 0.8 + 0.5], -1)  # procedural torus map
    textures = torch.rand(4, 256, 256, 3, generator=g).to(ctx.device)
    face_to_texture = torch.randint(0, 4, (ctx.faces.shape[0],), generator=g).to(ctx.device)
    opacities = (0.5 + 0.5 * torch.rand(ctx.faces.shape[0], generator=g)).to(ctx.device)
    sigma = blur_sq / math.log(1.0 / 1e-4 - 1.0)

    def shade(backend: str, grad: bool) -> None:
        leaves = [
            t.detach().clone().requires_grad_(grad) for t in (frags.bary, frags.dists, textures, opacities)
        ]
        f = type(frags)(frags.pix_to_face, leaves[0], leaves[1], frags.depth)
        uv_px = shading.interpolate(uv, f, ctx.faces, clip_bary=True, backend=backend)
        colors = shading.sample_texture(leaves[2], uv_px, f, face_to_texture, backend=backend)
        rgb, alpha = shading.soft_composite(f, colors, leaves[3], sigma=sigma, backend=backend)
        if grad:
            (rgb.sum() + alpha.sum()).backward()

    rows = []
    for backend in ("warp", "torch") if ctx.reference else ("warp",):
        repeats = ctx.repeats if backend == "warp" else max(1, min(ctx.repeats, 3))
        with torch.no_grad():
            fwd, fwd_cpu = time_fn(lambda b=backend: shade(b, False), repeats, ctx.device)
        fb, fb_cpu = time_fn(lambda b=backend: shade(b, True), repeats, ctx.device)
        times = dict(
            forward_s=fwd, forward_backward_s=fb, forward_cpu_s=fwd_cpu, forward_backward_cpu_s=fb_cpu
        )
        rows.append(row(ctx, "interpolate_texture", backend, layers=SOFT_LAYERS, **times))
    return rows


# One function per case; each returns its rows (one per backend). Shading cases (e.g. "interpolate_texture") go here.
CASE_FUNCTIONS = [case_hard_k1, case_soft_k10, case_interpolate_texture]


def ratios(rows: list[dict]) -> dict:
    """Per case: torch/warp and warp/open3d time ratios."""
    out = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        by = {r["backend"]: r for r in rows if r["name"] == name}
        entry = {}
        if "warp" in by and "torch" in by:
            for key in ("forward_s", "forward_backward_s"):
                entry[f"torch_over_warp_{key}"] = round(by["torch"][key] / by["warp"][key], 1)
        if "warp" in by and "open3d" in by:
            entry["warp_over_open3d_forward_s"] = round(
                by["warp"]["forward_s"] / by["open3d"]["forward_s"], 2
            )
        out[name] = entry
    return out


def scaling(device: str, repeats: int) -> dict:
    """Warp hard K=1 and soft K=10 forward+backward over faces (at 256^2) and pixels (at 10k faces)."""
    out: dict[str, list[dict]] = {"faces": [], "pixels": []}
    for axis, settings in (("faces", [(n, 256) for n in (2_560, 10_240, 40_960)]),
                           ("pixels", [(10_240, s) for s in (128, 256, 512)])):  # fmt: skip
        for faces, size in settings:
            vertices, f = torus_mesh(faces, device)
            ctx = BenchContext(vertices, f, camera(size, device), device, repeats, False)
            entry = dict(faces=int(f.shape[0]), width=size, height=size)
            for name, layers, blur_sq in (("hard_k1", 1, 0.0), ("soft_k10", SOFT_LAYERS, soft_blur_sq(size))):
                res = time_rasterize(ctx, "warp", layers, blur_sq, repeats)
                entry[f"{name}_forward_s"] = round(res["forward_s"], 5)
                entry[f"{name}_forward_backward_s"] = round(res["forward_backward_s"], 5)
            out[axis].append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--faces", type=int, default=10_240)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) torch reference")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling sweeps")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as bench_splat: OpenMP spin-waits on a shared "
                        "2-core machine); 0 keeps torch's default")  # fmt: skip
    args = parser.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    vertices, faces = torus_mesh(args.faces, args.device)
    ctx = BenchContext(
        vertices, faces, camera(args.size, args.device), args.device, args.repeats, not args.no_reference
    )
    rows = []
    for case in CASE_FUNCTIONS:
        for r in case(ctx):
            rows.append(r)
            if not args.json:
                _print_row(r, header=len(rows) == 1)
    report = {
        "benchmark": "raster",
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu cores"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ", no GPU"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "warp_cpu_workers": os.environ.get("RECON_WARP_CPU_THREADS", "default (min(2, cores))"),
        "repeats": args.repeats,
        "cases": rows,
        "ratios": ratios(rows),
        "scaling_warp": {} if args.no_scaling else scaling(args.device, max(1, min(args.repeats, 3))),
    }
    if args.json:
        print(json.dumps(report))
        return
    print("\nratios:", json.dumps(report["ratios"]))
    for axis, entries in report["scaling_warp"].items():
        print(f"warp scaling over {axis} (hard_k1 / soft_k10 forward+backward): " + ", ".join(
            f"{e['faces']} faces {e['width']}^2: {e['hard_k1_forward_backward_s']:.3f} / "
            f"{e['soft_k10_forward_backward_s']:.3f} s" for e in entries))  # fmt: skip
    print(
        json.dumps(
            {k: v for k, v in report.items() if k not in ("cases", "ratios", "scaling_warp")}, indent=1
        )
    )


def _print_row(r: dict, *, header: bool) -> None:
    """One line of the markdown table printed without --json."""
    cols = ("name", "backend", "device", "faces", "width", "height", "forward_s", "forward_backward_s",
            "forward_cpu_s", "forward_backward_cpu_s")  # fmt: skip
    if header:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
    print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
