"""A minimal binary glTF 2.0 (GLB) writer and reader for coloured or textured triangle meshes.

We write GLB ourselves rather than through trimesh so that the material is exactly what every viewer needs to show
the reconstruction's colours as they are: ``KHR_materials_unlit`` (colour = base colour, no lights required),
with a non-metallic, fully rough PBR fallback for viewers without the extension, ``doubleSided`` for triangle
soups, ``COLOR_0`` in linear RGB (the glTF rule) and an sRGB PNG base-colour texture.

Layout of a GLB (glTF 2.0 spec, "Binary glTF Layout")::

    header  magic b"glTF", version 2, total length        (3 x uint32 little endian)
    chunk 0 length, type b"JSON", JSON text padded with spaces to 4 bytes
    chunk 1 length, type b"BIN\\0", buffer 0 padded with zeros to 4 bytes
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon.core import ReconError

GLB_MAGIC = b"glTF"
JSON_CHUNK = b"JSON"
BIN_CHUNK = b"BIN\x00"
UNLIT = "KHR_materials_unlit"
# glTF enums
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES = 4
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071


@dataclass(frozen=True)
class GlbMesh:
    """Arrays of one glTF primitive (numpy, ready to write).

    Attributes:
        positions: (V, 3) float32.
        normals: (V, 3) float32 unit normals.
        indices: (F, 3) uint32 counter-clockwise triangles.
        colors_linear: (V, 3) float32 LINEAR RGB in [0, 1] (``COLOR_0``), or None.
        uv: (V, 2) float32 texture coordinates, origin at the top-left of the image (glTF rule), or None.
        png: the base-colour texture as PNG bytes (sRGB), or None.
        double_sided: render back faces too (triangle soups have no consistent orientation).
    """

    positions: np.ndarray
    normals: np.ndarray
    indices: np.ndarray
    colors_linear: np.ndarray | None = None
    uv: np.ndarray | None = None
    png: bytes | None = None
    double_sided: bool = False


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


class _Buffer:
    """Buffer 0 of the GLB: appends 4-byte-aligned views and their accessors to a glTF document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.data = bytearray()

    def view(self, payload: bytes, target: int | None = None) -> int:
        entry: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            entry["target"] = target
        self.data += _pad(payload, b"\x00")
        self.doc["bufferViews"].append(entry)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, kind: str, *, target: int, bounds: bool = False) -> int:
        component = UNSIGNED_INT if array.dtype == np.uint32 else FLOAT
        entry: dict[str, Any] = {
            "bufferView": self.view(np.ascontiguousarray(array).tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]) if kind != "SCALAR" else int(array.size),
            "type": kind,
        }
        if bounds:  # POSITION accessors must carry min/max (glTF 2.0 spec, 3.6.2.3)
            entry["min"] = [float(v) for v in array.min(axis=0)]
            entry["max"] = [float(v) for v in array.max(axis=0)]
        self.doc["accessors"].append(entry)
        return len(self.doc["accessors"]) - 1


def _material(mesh: GlbMesh, image_view: int | None, doc: dict[str, Any]) -> dict[str, Any]:
    pbr: dict[str, Any] = {
        "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
        "metallicFactor": 0.0,
        "roughnessFactor": 1.0,
    }
    if image_view is not None:
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        doc["samplers"] = [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE,
                            "wrapT": CLAMP_TO_EDGE}]  # fmt: skip
        doc["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    return {
        "name": "recon_baked_colour",
        "pbrMetallicRoughness": pbr,
        "doubleSided": bool(mesh.double_sided),
        "extensions": {UNLIT: {}},
    }


def glb_bytes(mesh: GlbMesh) -> bytes:
    """The GLB file of one mesh primitive with an unlit, non-metallic material (see the module docstring)."""
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "recon export"},
        "extensionsUsed": [UNLIT],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "recon"}],
        "bufferViews": [],
        "accessors": [],
    }
    buf = _Buffer(doc)
    attributes = {
        "POSITION": buf.accessor(mesh.positions.astype(np.float32), "VEC3", target=ARRAY_BUFFER, bounds=True),
        "NORMAL": buf.accessor(mesh.normals.astype(np.float32), "VEC3", target=ARRAY_BUFFER),
    }
    if mesh.colors_linear is not None:
        attributes["COLOR_0"] = buf.accessor(
            mesh.colors_linear.astype(np.float32), "VEC3", target=ARRAY_BUFFER
        )
    if mesh.uv is not None:
        attributes["TEXCOORD_0"] = buf.accessor(mesh.uv.astype(np.float32), "VEC2", target=ARRAY_BUFFER)
    indices = buf.accessor(mesh.indices.astype(np.uint32).reshape(-1), "SCALAR", target=ELEMENT_ARRAY_BUFFER)
    image_view = buf.view(mesh.png) if mesh.png is not None else None
    doc["materials"] = [_material(mesh, image_view, doc)]
    doc["meshes"] = [
        {"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": TRIANGLES}]}
    ]
    doc["buffers"] = [{"byteLength": len(buf.data)}]
    json_chunk = _pad(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    bin_chunk = bytes(buf.data)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join([
        struct.pack("<4sII", GLB_MAGIC, 2, total),
        struct.pack("<I4s", len(json_chunk), JSON_CHUNK), json_chunk,
        struct.pack("<I4s", len(bin_chunk), BIN_CHUNK), bin_chunk,
    ])  # fmt: skip


def read_glb(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The JSON document and the binary buffer of a GLB file (chunk lengths checked).

    Raises:
        ReconError: not a GLB 2.0 file, or its chunk lengths do not add up.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise ReconError(f"{path}: not a GLB file (too short)")
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC or version != 2 or total != len(data):
        raise ReconError(f"{path}: not a GLB 2.0 file (magic {magic!r}, version {version}, length {total})")
    length, kind = struct.unpack_from("<I4s", data, 12)
    if kind != JSON_CHUNK or 20 + length > total:
        raise ReconError(f"{path}: first GLB chunk is not a JSON chunk of a valid length")
    doc = json.loads(data[20 : 20 + length].decode("utf-8"))
    binary = b""
    offset = 20 + length
    if offset < total:
        blen, bkind = struct.unpack_from("<I4s", data, offset)
        if bkind != BIN_CHUNK or offset + 8 + blen != total:
            raise ReconError(f"{path}: second GLB chunk is not a BIN chunk ending the file")
        binary = data[offset + 8 : offset + 8 + blen]
    return doc, binary


def accessor_array(doc: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """The data of accessor ``index`` (float32 or uint32 components) as an (count, n) array."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {FLOAT: "<f4", UNSIGNED_INT: "<u4"}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start).reshape(
        acc["count"], width
    )
