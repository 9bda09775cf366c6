"""Export of a blocks world (spec superquadrics.md 11): ``primitives.json`` and textured OBJ/MTL/PNG and GLB.

- ``mesh``: the opaque blocks (``α > opaque_threshold``) and a reduced ground (``±export_ground_extent``);
- ``mesh_full``: background, full ground and every block;
- ``primitives.json``: per opaque block ``ε1, ε2, S, R (wxyz), t, α``, the frame ``T_world_canon`` and the ground
  pose; :func:`load_primitives` + :func:`primitive_vertices` rebuild the analytic blocks and their mesh.

Coordinates default to the dataset world frame (``T_world_canon`` applied); ``frame="canonical"`` keeps the blocks
frame. Blocks may be re-tessellated at a finer icosphere level: the surface is parametric and the UVs come from
the same spherical map, so the textures stay valid. Textures are written unpadded; the UV seam duplicates are kept
(``u`` may leave [0, 1] slightly at the seam; samplers wrap in u, the glTF default).
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.errors import ReconError
from recon.core.transforms import apply_T, quat_to_rotmat, rotmat_to_quat
from recon.scenes.superquadrics.blocks import BlockSet
from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.environment import background_mesh, ground_mesh, posed_ground_vertices
from recon.scenes.superquadrics.geometry import base_angles, block_vertices, superquadric_points
from recon.scenes.superquadrics.losses import opaque_mask
from recon.scenes.superquadrics.template import BlockTemplate, block_template
from recon.scenes.superquadrics.tessellation import BaseMesh, icosphere

__all__ = [
    "PRIMITIVES_SCHEMA",
    "ExportPaths",
    "Primitives",
    "TexturedPart",
    "export_blocks",
    "load_primitives",
    "primitive_vertices",
    "scene_parts",
    "write_glb",
    "write_primitives",
    "write_textured_obj",
]

PRIMITIVES_SCHEMA = "recon.superquadrics.primitives/1"
ExportFrame = Literal["world", "canonical"]


@dataclass(frozen=True)
class Primitives:
    """Analytic blocks read from ``primitives.json`` (P opaque blocks), float64.

    Attributes:
        exponents: (P, 2) ``(ε1, ε2)``.
        scales: (P, 3) S.
        rotations: (P, 3, 3) R (from the stored wxyz quaternions).
        translations: (P, 3) t, canonical frame.
        opacities: (P,) α.
        block_index: (P,) index of each block in the trained set.
        ratio: block/scene ratio (local vertex ``ratio·S ⊙ x_sq``).
        T_world_canon: (4, 4) canonical -> dataset world similarity.
        ground_rotation: (3, 3); ground_translation: (3,) the ground pose in the canonical frame.
    """

    exponents: Float[Tensor, "P 2"]
    scales: Float[Tensor, "P 3"]
    rotations: Float[Tensor, "P 3 3"]
    translations: Float[Tensor, "P 3"]
    opacities: Float[Tensor, " P"]
    block_index: Int[Tensor, " P"]
    ratio: float
    T_world_canon: Float[Tensor, "4 4"]
    ground_rotation: Float[Tensor, "3 3"]
    ground_translation: Float[Tensor, "3"]


def write_primitives(
    blocks: BlockSet, path: str | Path, *, T_world_canon: Float[Tensor, "4 4"], opaque_threshold: float = 0.5
) -> Path:
    """Write ``primitives.json`` for the blocks with ``α > opaque_threshold`` (values as float64 JSON numbers)."""
    b = blocks.detached()
    keep = opaque_mask(b.alpha_logits, opaque_threshold=opaque_threshold)
    quats = rotmat_to_quat(b.rotations().double())
    entries = []
    for j in torch.nonzero(keep).flatten().tolist():
        eps = b.exponents()[j].double()
        entries.append(
            {
                "index": j,
                "epsilon1": float(eps[0]),
                "epsilon2": float(eps[1]),
                "scale": b.scales()[j].double().tolist(),
                "rotation_wxyz": quats[j].tolist(),
                "translation": b.translations[j].double().tolist(),
                "opacity": float(b.opacities()[j]),
            }
        )
    doc = {
        "schema": PRIMITIVES_SCHEMA,
        "frame": "block poses and the ground pose are in the canonical frame; x_world = T_world_canon x_canon",
        "ratio_block_scene": b.ratio,
        "T_world_canon": T_world_canon.detach().double().cpu().tolist(),
        "ground": {
            "rotation_wxyz": rotmat_to_quat(b.ground_rotation().double()).tolist(),
            "translation": b.ground_translation.double().tolist(),
        },
        "blocks": entries,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def _tensor(value, shape: tuple[int, ...], what: str, path: Path) -> Tensor:
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ReconError(f"{path}: {what} is not numeric ({exc})") from exc
    if tuple(t.shape) != shape or not bool(torch.isfinite(t).all()):
        raise ReconError(f"{path}: {what} must be finite with shape {shape}, got shape {tuple(t.shape)}")
    return t


def load_primitives(path: str | Path) -> Primitives:
    """Read ``primitives.json`` written by :func:`write_primitives`.

    Raises:
        ReconError: missing file, wrong schema, missing keys or malformed values (naming the file and the key).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReconError(f"{path}: cannot read primitives ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != PRIMITIVES_SCHEMA:
        raise ReconError(f"{path}: expected schema {PRIMITIVES_SCHEMA!r}, got {doc.get('schema')!r}")
    try:
        blocks, ground = doc["blocks"], doc["ground"]
        rows = [
            [e["epsilon1"], e["epsilon2"], *e["scale"], *e["rotation_wxyz"], *e["translation"], e["opacity"]]
            for e in blocks
        ]
        index = [int(e["index"]) for e in blocks]
        ratio = float(doc["ratio_block_scene"])
        T = _tensor(doc["T_world_canon"], (4, 4), "T_world_canon", path)
        g_rot = _tensor(ground["rotation_wxyz"], (4,), "ground.rotation_wxyz", path)
        g_t = _tensor(ground["translation"], (3,), "ground.translation", path)
    except (KeyError, TypeError) as exc:
        raise ReconError(f"{path}: missing or malformed key {exc}") from exc
    table = (
        _tensor(rows, (len(rows), 13), "blocks", path) if rows else torch.zeros(0, 13, dtype=torch.float64)
    )
    return Primitives(
        exponents=table[:, 0:2],
        scales=table[:, 2:5],
        rotations=quat_to_rotmat(table[:, 5:9]),
        translations=table[:, 9:12],
        opacities=table[:, 12],
        block_index=torch.tensor(index, dtype=torch.int64),
        ratio=ratio,
        T_world_canon=T,
        ground_rotation=quat_to_rotmat(g_rot),
        ground_translation=g_t,
    )


def primitive_vertices(
    prims: Primitives, *, base: BaseMesh | None = None, frame: ExportFrame = "canonical"
) -> tuple[Float[Tensor, "P V 3"], Int[Tensor, "F 3"]]:
    """Rebuild the block meshes of ``prims`` on ``base`` (default: the level-1 icosphere): ``(vertices, faces)``."""
    base = icosphere(1) if base is None else base
    eta, omega = base_angles(base)
    unit = superquadric_points(eta, omega, prims.exponents)
    verts = block_vertices(unit, prims.scales, prims.rotations, prims.translations, ratio=prims.ratio)
    if frame == "world":
        verts = apply_T(prims.T_world_canon, verts)
    return verts, base.faces


@dataclass(frozen=True)
class TexturedPart:
    """One textured piece of an exported scene, one UV per vertex (seam duplicates are separate vertices).

    Attributes:
        name: material / object name (``block_03``, ``ground``, ``background``).
        vertices: (V, 3) float64 positions.
        faces: (F, 3) int64 indices.
        uv: (V, 2) texture coordinates (OBJ convention, v up).
        image: (H, W, 3) uint8 texture, row 0 = top (v = 1).
    """

    name: str
    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    uv: Float[Tensor, "V 2"]
    image: np.ndarray


def _to_image(texture_logits: Tensor) -> np.ndarray:
    colors = torch.sigmoid(texture_logits.detach().double().cpu()).clamp(0, 1)
    return (colors * 255.0 + 0.5).to(torch.uint8).numpy()


def _block_parts(b: BlockSet, keep: Tensor, template: BlockTemplate) -> list[TexturedPart]:
    atlas = template.atlas
    verts = b.select(keep).vertices(template.eta, template.omega).double().cpu()
    names = [f"block_{j:02d}" for j in torch.nonzero(keep.cpu()).flatten().tolist()]
    logits = b.texture_logits[keep]
    return [
        TexturedPart(name, verts[k][atlas.vertex_index], atlas.faces_uv, atlas.uv, _to_image(logits[k]))
        for k, name in enumerate(names)
    ]


def _ground_part(b: BlockSet, cfg: SuperquadricsConfig, extent: float) -> TexturedPart:
    ground = ground_mesh(cfg.z_far, cfg.ground_subdivisions, extent=extent)
    vertices = posed_ground_vertices(
        ground.vertices, b.ground_rot6d.double().cpu(), b.ground_translation.double().cpu()
    )
    return TexturedPart("ground", vertices, ground.faces, ground.uv, _to_image(b.ground_texture_logits))


def _background_part(b: BlockSet, cfg: SuperquadricsConfig) -> TexturedPart:
    bkg = background_mesh(cfg.z_far, cfg.background_level)
    return TexturedPart("background", bkg.vertices, bkg.faces, bkg.uv, _to_image(b.background_texture_logits))


def scene_parts(
    blocks: BlockSet,
    *,
    cfg: SuperquadricsConfig,
    T_world_canon: Float[Tensor, "4 4"],
    full: bool = False,
    frame: ExportFrame = "world",
    level: int | None = None,
    ground: bool = True,
) -> list[TexturedPart]:
    """Textured parts of ``mesh`` (``full=False``: opaque blocks + reduced ground) or ``mesh_full`` (all blocks,
    full ground, background), in the dataset world frame or the canonical frame. Without ``cfg.ground`` (a scene
    rendered without its ground) neither has a ground.

    Args:
        blocks: the trained parameters.
        cfg: thresholds, extents, tessellation sizes.
        T_world_canon: (4, 4) canonical -> world similarity.
        full: which mesh.
        frame: "world" applies ``T_world_canon``; "canonical" keeps the blocks frame.
        level: tessellation level of the blocks (default ``cfg.export_tessellation_level``; see
            :func:`~recon.scenes.superquadrics.template.block_template`).
        ground: ``full=False`` only: include the reduced ground (``False``: the opaque blocks alone,
            ``--objects-only``).
    """
    if frame not in ("world", "canonical"):
        raise ValueError(f"frame must be 'world' or 'canonical', got {frame!r}")
    b = blocks.detached()
    level = cfg.export_tessellation_level if level is None else level  # still None: as trained
    if full:
        keep = torch.ones(len(b), dtype=torch.bool, device=b.alpha_logits.device)
        parts = [_background_part(b, cfg), *([_ground_part(b, cfg, cfg.z_far)] if cfg.ground else [])]
    else:
        keep = opaque_mask(b.alpha_logits, opaque_threshold=cfg.opaque_threshold)
        parts = [_ground_part(b, cfg, cfg.export_ground_extent)] if cfg.ground and ground else []
    parts += _block_parts(b, keep, block_template(cfg, level=level))
    if frame == "world":
        T = T_world_canon.detach().double().cpu()
        parts = [TexturedPart(p.name, apply_T(T, p.vertices), p.faces, p.uv, p.image) for p in parts]
    return parts


def write_textured_obj(parts: list[TexturedPart], path: str | Path) -> Path:
    """Write ``<stem>.obj``, ``<stem>.mtl`` and one ``<stem>_<part>.png`` per part (one material each)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mtl_lines, obj_lines = [], [f"mtllib {path.stem}.mtl"]
    offset = 0
    for part in parts:
        png = f"{path.stem}_{part.name}.png"
        Image.fromarray(part.image).save(path.parent / png)
        mtl_lines += [
            f"newmtl {part.name}",
            "Ka 1 1 1",
            "Kd 1 1 1",
            "Ks 0 0 0",
            "d 1",
            "illum 1",
            f"map_Kd {png}",
            "",
        ]
        obj_lines += [f"o {part.name}", f"usemtl {part.name}"]
        obj_lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in part.vertices.tolist()]
        obj_lines += [f"vt {u:.9g} {v:.9g}" for u, v in part.uv.tolist()]
        obj_lines += [
            "f " + " ".join(f"{i}/{i}" for i in face) for face in (part.faces + offset + 1).tolist()
        ]
        offset += part.vertices.shape[0]
    path.with_suffix(".mtl").write_text("\n".join(mtl_lines))
    path.write_text("\n".join(obj_lines) + "\n")
    return path


UNLIT = (
    "KHR_materials_unlit"  # glTF extension: colour = base colour (texture), no lighting (spec 4: ambient 1)
)


def _unlit_glb(glb: bytes) -> bytes:
    """The GLB ``glb`` with every material made unlit (``KHR_materials_unlit``, listed in ``extensionsUsed``), its
    base colour factor white (trimesh writes 0.4 grey, which multiplies the texture) and its PBR fallback
    non-metallic and fully rough, as recon's other GLBs (docs/export.md): the blocks are textured without lighting,
    and a lit PBR material renders black in a viewer that adds no lights.

    Layout (glTF 2.0, "Binary glTF Layout"): 12-byte header, a JSON chunk padded with spaces to 4 bytes, then the
    binary chunk, which is copied unchanged."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    json_length, json_type = struct.unpack_from("<I4s", glb, 12)
    if magic != b"glTF" or version != 2 or json_type != b"JSON":
        raise ValueError("glb must be a binary glTF 2.0 file starting with its JSON chunk")
    doc = json.loads(glb[20 : 20 + json_length])
    for material in doc.get("materials", []):
        pbr = material.setdefault("pbrMetallicRoughness", {})
        pbr.update(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
        material.setdefault("extensions", {})[UNLIT] = {}
    doc["extensionsUsed"] = sorted({*doc.get("extensionsUsed", []), UNLIT})
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    rest = glb[20 + json_length :]
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + len(rest))
    return header + struct.pack("<I4s", len(text), b"JSON") + text + rest


def write_glb(parts: list[TexturedPart], path: str | Path) -> Path:
    """Write a binary glTF with one textured, unlit mesh per part (trimesh ``TextureVisuals`` + PIL images, then
    :func:`_unlit_glb`)."""
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = trimesh.Scene()
    for part in parts:
        visual = TextureVisuals(uv=part.uv.numpy(), image=Image.fromarray(part.image))
        mesh = trimesh.Trimesh(part.vertices.numpy(), part.faces.numpy(), visual=visual, process=False)
        scene.add_geometry(mesh, geom_name=part.name, node_name=part.name)
    glb = scene.export(file_type="glb")
    assert isinstance(glb, bytes)  # trimesh returns the GLB as bytes (its annotation covers every format)
    path.write_bytes(_unlit_glb(glb))
    return path


@dataclass(frozen=True)
class ExportPaths:
    """Files written by :func:`export_blocks`."""

    primitives: Path
    mesh_obj: Path
    mesh_glb: Path
    mesh_full_obj: Path
    mesh_full_glb: Path


def export_blocks(
    blocks: BlockSet,
    out_dir: str | Path,
    *,
    cfg: SuperquadricsConfig,
    T_world_canon: Float[Tensor, "4 4"],
    frame: ExportFrame = "world",
    level: int | None = None,
    ground: bool = True,
) -> ExportPaths:
    """Write ``primitives.json``, ``mesh.{obj,glb}`` and ``mesh_full.{obj,glb}`` (with MTL and PNGs) to ``out_dir``;
    ``ground=False`` leaves the reduced ground out of ``mesh`` (the opaque blocks alone)."""
    out = Path(out_dir)
    mesh = scene_parts(blocks, full=False, cfg=cfg, T_world_canon=T_world_canon, frame=frame, level=level,
                       ground=ground)  # fmt: skip
    mesh_full = scene_parts(blocks, full=True, cfg=cfg, T_world_canon=T_world_canon, frame=frame, level=level)
    return ExportPaths(
        primitives=write_primitives(
            blocks,
            out / "primitives.json",
            T_world_canon=T_world_canon,
            opaque_threshold=cfg.opaque_threshold,
        ),
        mesh_obj=write_textured_obj(mesh, out / "mesh.obj"),
        mesh_glb=write_glb(mesh, out / "mesh.glb"),
        mesh_full_obj=write_textured_obj(mesh_full, out / "mesh_full.obj"),
        mesh_full_glb=write_glb(mesh_full, out / "mesh_full.glb"),
    )
