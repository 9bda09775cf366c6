"""Test-view PSNR of a run's exported GLB rendered by three.js, beside recon's splat and hard-rasterizer renders.

Usage: python benchmarks/threejs_psnr.py RUN_DIR [--max-images N] [--min-opacity O] [--json]

The run's newest checkpoint is exported as ``recon export RUN --format glb`` writes it (the native mesh: for
triangles the soup, faces with opacity >= ``--min-opacity``; unlit sRGB face colours), in the normalised frame, and
drawn by three.js's GLTFLoader with WebGL in headless Chromium (``tests/export/threejs/render.html``, no lights, no
antialiasing) from the dataset's test cameras over the dataset's background. Printed, for the same views (all of
the split, or ``--max-images`` evenly spread ones as ``recon eval --max-images``), the mean PSNR against the ground
truth of: the splat render (``recon eval``), the hard rasterizer render of the same mesh (``recon eval --mesh``)
and the three.js render (8-bit PNG read back from the canvas).

Needs three.js from npm (``npm ci --prefix tests/export/threejs``; scripts/setup.sh does it), Chromium at
``/usr/bin/chromium`` and Playwright's Python package.
"""

import argparse
import base64
import functools
import http.server
import io
import json
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
THREEJS = REPO / "tests" / "export" / "threejs"
sys.path.insert(0, str(REPO))  # the browser settings of the test suite's Chromium pages, shared
from tests.viewer.browser_utils import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

BATCH = 8  # views per page call: bounds the PNG data URLs held at once (800 px views are ~1 MB each)
PAGE_TIMEOUT_MS = (
    600_000  # software WebGL draws ~10^5 triangles at 800 px in seconds per view on a loaded CPU
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        return


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float images in [0, 1]."""
    return float(-10.0 * np.log10(max(float(np.mean((a - b) ** 2)), 1e-12)))


def _export(run_dir: Path, folder: Path, min_opacity: float, max_images: int):
    """Load the run, write its GLB into ``folder``; the dataset, views, cameras, splat and mesh PSNRs."""
    from recon.export.service import DatasetFrame, ExportRequest, build_mesh, export_scene
    from recon.scenes.base import RenderOptions
    from recon.scenes.mesh_scene import MeshRenderer
    from recon.train.evaluate import eval_indices
    from recon.train.run_io import load_run_dataset, open_run_config
    from recon.train.trainer import load_scene

    run, method, cfg = open_run_config(run_dir)
    dataset = load_run_dataset(cfg)
    scene, _ = load_scene(method, cfg, run)
    request = ExportRequest(
        output=folder / "scene.glb", format="glb", frame="normalized", min_opacity=min_opacity
    )
    export_scene(scene, DatasetFrame.from_dataset(dataset), request)
    mesh = MeshRenderer(build_mesh(scene, None, request))
    indices = eval_indices(dataset, "test", max_images)
    options = RenderOptions(background=dataset.background.float(), backend=cfg.backend, depth=False)
    gt, splat, raster = [], [], []
    with torch.no_grad():
        for i in indices:
            camera = dataset.camera("test", i)
            target = dataset.image("test", i).float().numpy()
            gt.append(target)
            splat.append(_psnr(scene.render(camera, options).rgb[0].clamp(0, 1).numpy(), target))
            raster.append(_psnr(mesh.render(camera, options).rgb[0].clamp(0, 1).numpy(), target))
    cameras = [dataset.camera("test", i) for i in indices]
    return dataset, cameras, gt, float(np.mean(splat)), float(np.mean(raster)), mesh.num_faces


def _threejs_images(folder: Path, cameras, background: list[float]) -> list[np.ndarray]:
    """three.js renders of ``folder/scene.glb`` from ``cameras`` (float RGB in [0, 1])."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    (folder / "three").symlink_to(THREEJS / "node_modules" / "three", target_is_directory=True)
    shutil.copy(THREEJS / "render.html", folder / "render.html")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    images = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 400, "height": 300}).new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(f"{base}/render.html")
            page.wait_for_function("window.ready === true")
            for start in range(0, len(cameras), BATCH):
                batch = cameras[start : start + BATCH]
                records = [{"K": c.K[0].tolist(), "T_cam_world": c.T_cam_world[0].tolist()} for c in batch]
                width, height = int(batch[0].width), int(batch[0].height)
                urls = page.evaluate("([u, c, w, h, b]) => window.renderGlb(u, c, w, h, b)",
                                     [f"{base}/scene.glb", records, width, height, background])  # fmt: skip
                for data in urls:
                    png = base64.b64decode(data.split(",", 1)[1])
                    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255.0
                    images.append(rgb)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-images", type=int, default=0, help="evenly spread test views (0: all)")
    parser.add_argument("--min-opacity", type=float, default=0.5, help="as recon export --min-opacity")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    if not (THREEJS / "node_modules" / "three" / "build" / "three.module.js").is_file():
        raise SystemExit(f"three.js is missing: run `npm ci --prefix {THREEJS.relative_to(REPO)}`")
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset, cameras, gt, splat, raster, faces = _export(
            args.run_dir, folder, args.min_opacity, args.max_images
        )
        background = [float(c) for c in dataset.background]
        images = _threejs_images(folder, cameras, background)
    three = float(np.mean([_psnr(a, b) for a, b in zip(images, gt, strict=True)]))
    result = {"run": str(args.run_dir), "views": len(cameras), "resolution": [int(cameras[0].width),
              int(cameras[0].height)], "faces": faces, "splat_psnr": splat, "mesh_psnr": raster,
              "threejs_psnr": three}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.run_dir}: {len(cameras)} test views at {cameras[0].width}x{cameras[0].height}, {faces} faces; "
              f"PSNR vs ground truth: splat {splat:.2f} dB, mesh (hard rasterizer) {raster:.2f} dB, "
              f"three.js {three:.2f} dB")  # fmt: skip


if __name__ == "__main__":
    main()
