"""Exported GLBs look right in a real glTF viewer: three.js GLTFLoader in headless Chromium renders them from the
dataset's test cameras (no lights added) and its PSNR against the ground-truth images must be within
``PSNR_MARGIN_DB`` of the PSNR of recon's own render of the scene.

three.js comes from npm at set-up time (``tests/export/threejs``: ``npm ci``), never from the network here.
"""

import base64
import functools
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.core.transforms import apply_T
from recon.export.service import DatasetFrame, ExportRequest, export_scene
from recon.scenes.base import RenderOptions
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene

from ..viewer.browser_utils import ensure_chromium, launch_chromium

pytestmark = pytest.mark.browser

THREEJS = Path(__file__).resolve().parent / "threejs"
PSNR_MARGIN_DB = 3.0  # three.js draws hard-edged, unfiltered triangles; recon's splats have soft edges
TEST_VIEWS = 3
RESOLUTION = 128
CONTROL_GAP_DB = 1.0  # the control must lose at least this much PSNR against recon's render
SCENE_FACES = 600  # inradius >= 1 px at 128 px (the rasteriser culls smaller triangles)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean(((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2)))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        return


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A local HTTP server over a folder holding render.html and a link to the npm-installed three.js."""
    three = THREEJS / "node_modules" / "three"
    if not (three / "build" / "three.module.js").is_file():
        pytest.skip(f"{three} is missing: run `npm ci --prefix tests/export/threejs` (scripts/setup.sh does)")
    ensure_chromium()
    root = tmp_path_factory.mktemp("site")
    (root / "three").symlink_to(three, target_is_directory=True)
    (root / "render.html").write_text((THREEJS / "render.html").read_text())
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from recon.datasets import load_dataset
    from recon.datasets.synthetic import write_scene

    folder = write_scene("object", tmp_path_factory.mktemp("data") / "object", views=12, test_views=TEST_VIEWS,
                         resolution=RESOLUTION)  # fmt: skip
    return load_dataset(folder)


def _gt_scene(dataset) -> TriangleSplatScene:
    """Opaque, nearly solid triangle splats on the ground-truth mesh decimated to ``SCENE_FACES`` (normalised
    frame; the full mesh has sub-pixel triangles at this resolution, which the rasteriser culls), face colour = the
    mean albedo of its vertices (the images are shaded, so neither render matches them exactly)."""
    import open3d as o3d

    gt = o3d.io.read_triangle_mesh(str(dataset.gt_mesh_path)).simplify_quadric_decimation(SCENE_FACES)
    verts = apply_T(
        dataset.normalization, torch.from_numpy(np.asarray(gt.vertices, dtype=np.float64))
    ).float()
    faces = torch.from_numpy(np.asarray(gt.triangles, dtype=np.int64))
    albedo = torch.from_numpy(np.asarray(gt.vertex_colors)).float()
    cfg = TriangleSceneConfig(sh_degree=0, init_opacity=0.995, init_sigma=0.02)
    return TriangleSplatScene(cfg, verts[faces], albedo[faces].mean(1))


def _write_unconverted_soup(path: Path, soup: Path) -> None:
    """The soup GLB with its linear COLOR_0 replaced by the sRGB values (the classic export mistake)."""
    from recon.export.gltf import GlbMesh, accessor_array, glb_bytes, read_glb

    doc, binary = read_glb(soup)
    prim = doc["meshes"][0]["primitives"][0]
    arrays = {k: accessor_array(doc, binary, i) for k, i in prim["attributes"].items()}
    linear = torch.from_numpy(arrays["COLOR_0"].copy()).double()
    srgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    faces = accessor_array(doc, binary, prim["indices"]).reshape(-1, 3)
    path.write_bytes(glb_bytes(GlbMesh(positions=arrays["POSITION"], normals=arrays["NORMAL"], indices=faces,
                                       colors_linear=srgb.float().numpy(), double_sided=True)))  # fmt: skip


def _browser_images(page, url: str, cameras: list[dict], background) -> list[np.ndarray]:
    from PIL import Image

    page.wait_for_function("window.ready === true", timeout=20_000)
    urls = page.evaluate("([u, c, w, h, b]) => window.renderGlb(u, c, w, h, b)",
                         [url, cameras, RESOLUTION, RESOLUTION, background])  # fmt: skip
    out = []
    for data in urls:
        png = base64.b64decode(data.split(",", 1)[1])
        out.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    return out


def test_glb_exports_render_in_threejs_like_recon(site, dataset):
    from playwright.sync_api import sync_playwright

    root, base_url = site
    scene = _gt_scene(dataset)
    frame = DatasetFrame.from_dataset(dataset)
    background = [float(c) for c in dataset.background]
    gt, native = [], []
    options = RenderOptions(background=dataset.background.float(), depth=False)
    with torch.no_grad():
        for i in range(TEST_VIEWS):
            gt.append((dataset.image("test", i).numpy() * 255 + 0.5).astype(np.uint8))
            rgb = scene.render(dataset.camera("test", i), options).rgb[0].clamp(0, 1)
            native.append((rgb.numpy() * 255 + 0.5).astype(np.uint8))
    native_psnr = np.mean([_psnr(a, b) for a, b in zip(native, gt)])
    exports = {
        "soup": ExportRequest(output=root / "soup.glb", format="glb", min_opacity=0.0),
        "surface": ExportRequest(output=root / "surface.glb", format="glb", mesh="surface", resolution=64),
        "textured": ExportRequest(output=root / "textured.glb", format="glb", mesh="surface", resolution=64,
                                  texture=True, texture_size=512),
    }  # fmt: skip
    for request in exports.values():
        export_scene(scene, frame, request)
    _write_unconverted_soup(root / "control.glb", root / "soup.glb")
    cameras = [
        {"K": r.K.tolist(), "T_cam_world": r.T_cam_world.tolist()} for r in frame.cameras if r.split == "test"
    ]
    results, versus_native = {}, {}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(viewport={"width": 400, "height": 300}).new_page()
            page.goto(f"{base_url}/render.html")
            for name in [*exports, "control"]:
                images = _browser_images(page, f"{base_url}/{name}.glb", cameras, background)
                results[name] = np.mean([_psnr(a, b) for a, b in zip(images, gt)])
                versus_native[name] = np.mean([_psnr(a, b) for a, b in zip(images, native)])
        finally:
            browser.close()
    report = ", ".join(f"{k} {v:.2f} dB ({versus_native[k]:.2f} dB vs recon)" for k, v in results.items())
    print(f"test-view PSNR against ground truth: recon {native_psnr:.2f} dB, three.js: {report}")
    for name in exports:
        assert results[name] > native_psnr - PSNR_MARGIN_DB, f"recon {native_psnr:.2f} dB; three.js: {report}"
    # the control (sRGB values written as linear COLOR_0) must look measurably worse than every real export
    for name in exports:
        assert versus_native["control"] < versus_native[name] - CONTROL_GAP_DB, report
    # sanity: a blank or mis-posed render would sit far below (the object covers a good part of each view)
    assert native_psnr > 15.0
