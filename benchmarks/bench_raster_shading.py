"""Benchmark of the mesh shading ops (recon.renderers.raster.shading_api): Warp vs the torch reference.

Case (issue 11): 256x256 px, K = 10 layers, one camera; synthetic Fragments (no rasterizer in the loop): every
slot holds one of 20k faces with probability ``--coverage``, random barycentrics and signed distances.
Pipelines timed, each as forward (``torch.no_grad``) and forward + backward (random cotangents):
  shade:     interpolate (per-vertex uv) -> sample_texture (8 textures of 256^2 x 3) -> soft_composite
  antialias: antialias of a 256x256 RGB image over layer 0 of the same fragments and a 20k-face mesh
Times are medians over ``--repeats`` runs after one warm-up (which also compiles the Warp kernels); the
``*_cpu_s`` fields are the process CPU time of the same runs (on a shared machine wall time includes waiting).

Usage:
  .venv/bin/python benchmarks/bench_raster_shading.py [--json] [--device cpu|cuda] [--repeats 5]
"""

import argparse
import json
import platform
import statistics
import time

import torch

from recon.core.camera import Camera
from recon.renderers.raster import shading_api as shading
from recon.renderers.raster.types import Fragments


def make_inputs(size: int, layers: int, faces: int, coverage: float, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (1, size, size, layers)
    p2f = torch.randint(0, faces, shape, generator=g)
    p2f = torch.where(torch.rand(shape, generator=g) < coverage, p2f, -1)
    bary = torch.rand(*shape, 3, generator=g)
    bary = bary / bary.sum(-1, keepdim=True)
    dists = torch.randn(shape, generator=g) * 2.0
    depth = 2.0 + torch.rand(shape, generator=g)
    vertices_count = faces * 3 // 2
    # Mesh for antialias: vertices spread over the image at depth ~3 (focal = size).
    screen = torch.rand(vertices_count, 2, generator=g) * size
    z = 3.0 + torch.rand(vertices_count, 1, generator=g)
    world = torch.cat([(screen - size / 2) * z / size, z], -1)
    cam_k = torch.tensor([[[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]]])
    camera = Camera(T_cam_world=torch.eye(4)[None], K=cam_k, width=size, height=size)
    tensors = dict(
        frags=Fragments(p2f, bary, dists, depth),
        faces=torch.randint(0, vertices_count, (faces, 3), generator=g),
        vertex_uv=torch.rand(vertices_count, 2, generator=g),
        textures=torch.rand(8, 256, 256, 3, generator=g),
        face_to_texture=torch.randint(0, 8, (faces,), generator=g),
        opacities=torch.rand(faces, generator=g),
        image=torch.rand(1, size, size, 3, generator=g),
        vertices=world,
    )
    moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
    fr = tensors["frags"]
    moved["frags"] = Fragments(*(t.to(device) for t in (fr.pix_to_face, fr.bary, fr.dists, fr.depth)))
    moved["camera"] = camera.to(device)
    return moved


def shade(inp: dict, backend: str, grad: bool):
    uv_attr = inp["vertex_uv"].clone().requires_grad_(grad)
    textures = inp["textures"].clone().requires_grad_(grad)
    opacities = inp["opacities"].clone().requires_grad_(grad)
    frags = inp["frags"]
    uv = shading.interpolate(uv_attr, frags, inp["faces"], backend=backend)
    colors = shading.sample_texture(textures, uv, frags, inp["face_to_texture"], backend=backend)
    rgb, alpha = shading.soft_composite(frags, colors, opacities, sigma=0.5, background=None, backend=backend)
    if grad:
        (rgb.sum() + alpha.sum()).backward()
    return rgb


def antialias(inp: dict, backend: str, grad: bool):
    image = inp["image"].clone().requires_grad_(grad)
    vertices = inp["vertices"].clone().requires_grad_(grad)
    out = shading.antialias(image, inp["frags"], vertices, inp["faces"], inp["camera"], backend=backend)
    if grad:
        out.sum().backward()
    return out


def _time(fn, repeats: int, device: str) -> tuple[float, float]:
    fn()  # warm-up (compiles Warp kernels on first use)
    walls, cpus = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def run(args) -> list[dict]:
    inp = make_inputs(args.size, args.layers, args.faces, args.coverage, args.device)
    rows = []
    for name, pipeline in (("shade", shade), ("antialias", antialias)):
        row = dict(case=name, size=args.size, layers=args.layers, faces=args.faces, device=args.device)
        for backend in ("torch", "warp"):
            for grad in (False, True):
                key = f"{backend}_{'forward_backward' if grad else 'forward'}"

                def call(pipeline=pipeline, backend=backend, grad=grad):
                    if grad:
                        return pipeline(inp, backend, True)
                    with torch.no_grad():
                        return pipeline(inp, backend, False)

                row[f"{key}_s"], row[f"{key}_cpu_s"] = _time(call, args.repeats, args.device)
        row["speedup_forward"] = row["torch_forward_s"] / row["warp_forward_s"]
        row["speedup_forward_backward"] = row["torch_forward_backward_s"] / row["warp_forward_backward_s"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--coverage", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.processor())
    if args.json:
        print(json.dumps(dict(meta=meta, rows=rows), indent=2))
        return
    print(f"# {meta}")
    print(
        f"{'case':10s} {'backend':8s} {'fwd s':>8s} {'fwd+bwd s':>10s} {'fwd cpu s':>10s} {'fwd+bwd cpu s':>14s}"
    )
    for row in rows:
        for backend in ("torch", "warp"):
            print(
                f"{row['case']:10s} {backend:8s} {row[f'{backend}_forward_s']:8.4f} "
                f"{row[f'{backend}_forward_backward_s']:10.4f} {row[f'{backend}_forward_cpu_s']:10.4f} "
                f"{row[f'{backend}_forward_backward_cpu_s']:14.4f}"
            )
        print(
            f"{row['case']:10s} speed-up warp/torch: forward {row['speedup_forward']:.2f}x, "
            f"forward+backward {row['speedup_forward_backward']:.2f}x"
        )


if __name__ == "__main__":
    main()
