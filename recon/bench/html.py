"""report.html of a bench: one self-contained file (no network): the table, the PSNR-vs-time plot and the test
view grid as PNG data URIs, and each exported mesh in an inline hand-written WebGL viewer (viewer.js, the mesh
as base64 arrays in a JSON script tag)."""

import base64
import html
import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_VIEWER_FACES", "mesh_json", "render_html"]

MAX_VIEWER_FACES = 60_000
"""The 3D view shows at most this many faces (an even subsample of larger meshes, said under the view)."""

_COLUMNS = [
    ("status", "status", None), ("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4), ("lpips", "LPIPS", 4),
    ("mesh_psnr", "mesh PSNR", 2), ("chamfer_l1", "Chamfer L1", 5), ("fscore", "F-score", 3),
    ("train_seconds", "train s", 1), ("train_cpu_seconds", "train CPU s", 1), ("steps", "steps", 0), ("peak_rss_mib", "peak RSS MiB", 0),
    ("model_mib", "model MiB", 2), ("mesh_vertices", "mesh V", 0), ("mesh_faces", "mesh F", 0),
    ("seconds_per_image", "s / image", 4), ("mesh_seconds_per_image", "mesh s / image", 4),
    ("backend", "backend", None), ("device", "device", None),
]  # fmt: skip

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}
.failed{background:#fde8e8}pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:6px}
.grid img{width:160px;image-rendering:pixelated;margin:2px}canvas.mesh-view{border:1px solid #ccc}
.meshes>div{display:inline-block;margin:6px;vertical-align:top}"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{_data_uri(png)}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'


def _cell(row: dict[str, Any], key: str, digits: int | None) -> str:
    if key == "fscore":
        fs = row.get("fscores") or []
        value = fs[-1]["fscore"] if fs else None
    elif key == "peak_rss_mib":
        value = row["peak_rss_bytes"] / 2**20 if row.get("peak_rss_bytes") else None
    elif key == "model_mib":
        value = row["model_bytes"] / 2**20 if row.get("model_bytes") else None
    else:
        value = row.get(key)
    if value is None:
        return '<td title="unavailable: see report.json for the reason">-</td>'
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, float) and digits is not None:
        return f"<td>{value:.{digits}f}</td>"
    return f'<td class="l">{html.escape(str(value))}</td>' if isinstance(value, str) else f"<td>{value}</td>"


def _table(rows: list[dict[str, Any]]) -> str:
    head = "<tr><th>method</th>" + "".join(f"<th>{t}</th>" for _, t, _ in _COLUMNS) + "</tr>"
    body = []
    for row in rows:
        cls = ' class="failed"' if row["status"] != "ok" else ""
        cells = "".join(_cell(row, k, d) for k, _, d in _COLUMNS)
        body.append(f'<tr{cls}><td class="l">{html.escape(row["method"])}</td>{cells}</tr>')
    return f"<table>{head}{''.join(body)}</table>"


def _failures(rows: list[dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        if row.get("failure"):
            f = row["failure"]
            parts.append(f"<h3>{html.escape(row['method'])}: {html.escape(f['step'])} failed (exit status "
                         f"{f['exit_status']})</h3><pre>{html.escape(f['stderr_tail'])}</pre>")  # fmt: skip
    return "<h2>Failures</h2>" + "".join(parts) if parts else ""


def _grid(grid: dict[str, Any]) -> str:
    if not grid.get("views"):
        return "<h2>Test views</h2><p>No test renders to show.</p>"
    lines = [f'<h2>Test views {grid["views"]}</h2><table class="grid">']
    lines.append(
        "<tr><th>ground truth</th><td>" + "".join(_img(p, "ground truth") for p in grid["gt"]) + "</td></tr>"
    )
    for name, images in grid["methods"].items():
        for kind, pngs in images.items():
            label = f"{name} {kind}"
            lines.append(
                f"<tr><th>{html.escape(label)}</th><td>"
                + "".join(_img(p, label) for p in pngs)
                + "</td></tr>"
            )
    return "".join(lines) + "</table>"


def mesh_json(path: Path, max_faces: int = MAX_VIEWER_FACES) -> tuple[str, int]:
    """The mesh file as the viewer's JSON (base64 float32 positions, uint32 indices, uint8 colours) and the number
    of faces it holds (an even subsample when the mesh has more than ``max_faces``)."""
    vertices, faces, colors = _read_mesh(path)
    if len(faces) > max_faces:
        faces = faces[np.linspace(0, len(faces) - 1, max_faces).astype(np.int64)]

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")

    data = {"positions": b64(np.asarray(vertices, dtype="<f4")), "indices": b64(faces.astype("<u4")),
            "colors": b64(colors) if colors is not None else None}  # fmt: skip
    return json.dumps(data), len(faces)


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices, faces (uint32) and sRGB uint8 vertex colours (or None) of a mesh file; a GLB of one primitive
    is read directly (its ``COLOR_0`` is linear RGB, which trimesh turns into a material), others by trimesh."""
    if path.suffix.lower() == ".glb":
        try:
            return _read_recon_glb(path)
        except (
            KeyError,
            ValueError,
        ):  # not one float/uint32 primitive as recon writes them: trimesh reads it
            pass
    import trimesh

    mesh = trimesh.load_mesh(str(path), process=False)
    colors = None
    visual: Any = mesh.visual  # trimesh visuals are told apart by ``.kind`` (duck typing), not by class
    if getattr(visual, "kind", None) == "vertex":
        colors = np.ascontiguousarray(np.asarray(visual.vertex_colors)[:, :3], dtype=np.uint8)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.uint32), colors


def _read_recon_glb(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from recon.export.gltf import accessor_array, read_glb

    doc, binary = read_glb(path)
    primitives = [p for m in doc.get("meshes", []) for p in m.get("primitives", [])]
    if len(primitives) != 1 or "indices" not in primitives[0]:
        raise ValueError(f"{path}: not a single indexed primitive")
    prim = primitives[0]
    vertices = accessor_array(doc, binary, prim["attributes"]["POSITION"])
    faces = accessor_array(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.uint32)
    colors = None
    if "COLOR_0" in prim["attributes"]:
        linear = np.clip(accessor_array(doc, binary, prim["attributes"]["COLOR_0"])[:, :3], 0.0, 1.0)
        srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
        colors = (srgb * 255 + 0.5).astype(np.uint8)
    return vertices, faces, colors


def _meshes(rows: list[dict[str, Any]]) -> str:
    parts = []
    for i, row in enumerate(rows):
        if not row.get("mesh_file") or not row.get("mesh_faces"):
            continue
        data, shown = mesh_json(Path(row["mesh_file"]))
        note = f"{row['mesh_faces']:,} faces" + (f" ({shown:,} shown)" if shown < row["mesh_faces"] else "")
        parts.append(f'<div><h3>{html.escape(row["method"])}</h3><canvas class="mesh-view" width="360" height="300" '
                     f'data-mesh="mesh{i}"></canvas><script type="application/json" id="mesh{i}">{data}</script>'
                     f"<p>{note}; drag to orbit, wheel to zoom</p></div>")  # fmt: skip
    if not parts:
        return "<h2>Exported meshes</h2><p>No exported mesh.</p>"
    return '<h2>Exported meshes (original frame)</h2><div class="meshes">' + "".join(parts) + "</div>"


def render_html(report: dict[str, Any], plot: bytes | None, grid: dict[str, Any]) -> str:
    """The whole report page (self-contained)."""
    rows = report["methods"]
    js = (importlib.resources.files("recon.bench") / "viewer.js").read_text(encoding="utf-8")
    title = f"recon bench: {Path(report['data']).name}, {report['minutes']} min per method"
    plot_html = _img(plot, "PSNR vs training time") if plot else "<p>No periodic evaluations recorded.</p>"
    return "\n".join([
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>data: {html.escape(report['data'])}; device: {html.escape(report['device'])}; numbers and their "
        "protocol: report.json and docs/bench.md. '-': unavailable (report.json says why).</p>",
        _table(rows), _failures(rows), "<h2>PSNR vs training time</h2>", plot_html, _grid(grid), _meshes(rows),
        f"<script>{js}</script></body></html>",
    ])  # fmt: skip
