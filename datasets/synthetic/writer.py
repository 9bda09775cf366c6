"""Write synthetic scenes as Blender-format dataset folders (images, depth, normals, ground-truth mesh)."""

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import trimesh
from PIL import Image
from trimesh.exchange.ply import export_ply

from recon.core.errors import ReconError
from recon.datasets.synthetic.raycast import (
    CAMERA_ANGLE_X,
    Caster,
    bounding_sphere,
    camera_distance,
    intrinsics,
    orbit_poses,
    train_poses,
)
from recon.datasets.synthetic.shapes import SCENE_BUILDERS, Part, rainbow_albedo

SCENES: tuple[str, ...] = tuple(SCENE_BUILDERS)
FORMAT_VERSION = 1  # "recon_synthetic.version" in the transforms files
VIEWS_PER_BATCH = 16  # views ray-cast together (bounds memory at ~100 MB for 200x200 images), / supersample^2
MAX_SUPERSAMPLE = 8  # rays per pixel side of the anti-aliased renders (64 rays per pixel)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # camera axes: flip y (down -> up) and z (forward -> back)
ALL_AROUND_Z = (-0.95, 0.95)  # training-view zone (unit-sphere z) for free-floating objects
UPPER_Z = (math.sin(math.radians(10.0)), math.sin(math.radians(75.0)))  # tabletop: above the ground only
TEST_ELEVATION = {"object": math.radians(20.0), "tabletop": math.radians(30.0)}
# checker cell of the procedural texture of uncoloured meshes (scene units; the mesh is scaled into [-1, 1]^3)
MESH_TEXTURE_CELL = 0.2
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # rotation +90 deg about x


def _check_counts(views: int, test_views: int, resolution: int, supersample: int) -> None:
    if views < 1:
        raise ReconError(f"views must be >= 1, got {views}")
    if test_views < 0:
        raise ReconError(f"test_views must be >= 0, got {test_views}")
    if resolution < 8:
        raise ReconError(f"resolution must be >= 8 pixels, got {resolution}")
    if not 1 <= supersample <= MAX_SUPERSAMPLE:
        raise ReconError(f"supersample must be 1-{MAX_SUPERSAMPLE} rays per pixel side, got {supersample}")


def _prepare_output(output: Path) -> Path:
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ReconError(f"output {output} exists and is not a folder (expected a folder for the dataset)")
    for sub in ("train", "test"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    return output


def _write_split(
    caster: Caster,
    output: Path,
    split: str,
    T_cam_world: np.ndarray,
    resolution: int,
    supersample: int,
    meta: dict,
) -> None:
    K = intrinsics(resolution)
    frames = []
    per_batch = max(1, VIEWS_PER_BATCH // supersample**2)  # the same number of rays per batch
    for start in range(0, len(T_cam_world), per_batch):
        batch = T_cam_world[start : start + per_batch]
        renders = caster.render(batch, K, resolution, supersample)
        for k in range(len(batch)):
            i = start + k
            Image.fromarray(renders.rgba[k], mode="RGBA").save(output / split / f"r_{i}.png")
            np.save(output / split / f"r_{i}_depth.npy", renders.depth[k])
            np.save(
                output / split / f"r_{i}_normal.npy", renders.normals[k].astype(np.float16)
            )  # float16: 2.5x smaller, ample for unit normals
            T_world_cam_gl = np.linalg.inv(batch[k]) @ OPENCV_TO_OPENGL
            frames.append(
                {
                    "file_path": f"./{split}/r_{i}",
                    "transform_matrix": T_world_cam_gl.tolist(),
                    "depth_file_path": f"./{split}/r_{i}_depth.npy",
                    "normal_file_path": f"./{split}/r_{i}_normal.npy",
                }
            )
    doc = {
        "camera_angle_x": CAMERA_ANGLE_X,
        "white_background": True,
        "gt_mesh": "gt_mesh.ply",
        "recon_synthetic": meta,
        "frames": frames,
    }
    (output / f"transforms_{split}.json").write_text(json.dumps(doc, indent=2) + "\n")


def _write_gt_mesh(parts: list[Part], path: Path) -> None:
    vertices = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets[:-1])])
    colors = np.concatenate([p.albedo_at_vertices() for p in parts])
    rgba = np.concatenate([np.round(np.clip(colors, 0, 1) * 255), np.full((len(colors), 1), 255)], 1)
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=rgba.astype(np.uint8), process=False)
    path.write_bytes(export_ply(mesh, encoding="binary"))


def _write(
    parts: list[Part], output: Path, *, views: int, test_views: int, resolution: int, seed: int,
    supersample: int, z_range: tuple[float, float], test_elevation: float, meta: dict,
) -> Path:  # fmt: skip
    _check_counts(views, test_views, resolution, supersample)
    output = _prepare_output(output)
    center, radius = bounding_sphere(parts)
    distance = camera_distance(radius)
    meta = {**meta, "seed": seed, "version": FORMAT_VERSION, "views": views, "test_views": test_views,
            "resolution": resolution, "supersample": supersample, "camera_distance": distance,
            "look_at": center.tolist()}  # fmt: skip
    caster = Caster(parts)
    train = train_poses(views, seed=seed, center=center, distance=distance, z_range=z_range)
    _write_split(caster, output, "train", train, resolution, supersample, meta)
    test = orbit_poses(test_views, center=center, distance=distance, elevation=test_elevation)
    _write_split(caster, output, "test", test, resolution, supersample, meta)
    _write_gt_mesh(parts, output / "gt_mesh.ply")
    return output


def write_scene(
    name: str, output: Path, *, views: int = 100, test_views: int = 50, resolution: int = 200, seed: int = 0,
    supersample: int = 1,
) -> Path:  # fmt: skip
    """Render a built-in scene (one of :data:`SCENES`) into a Blender-format dataset folder.

    The folder holds ``transforms_{train,test}.json`` (``camera_angle_x``, per-frame OpenGL camera-to-world
    ``transform_matrix``, ``file_path`` ``./train/r_i`` of an RGBA PNG, ``depth_file_path`` (float32 (H, W) camera
    z, 0 = background) and ``normal_file_path`` (float16 (H, W, 3) world normals, 0 = background)), top-level
    ``"gt_mesh": "gt_mesh.ply"`` (exact geometry, vertex colours = albedo, same world frame as the cameras),
    ``"white_background": true`` and ``"recon_synthetic"`` metadata. The world is z-up. Geometry does not depend
    on the seed; the seed jitters the training cameras. Same arguments -> byte-identical files.

    Args:
        name: scene name, one of SCENES ("object": a closed torus knot; "tabletop": objects on an open ground patch).
        output: folder to write (created; existing files of the same names are overwritten).
        views: number of training views (spiral over the sphere / upper hemisphere, jittered by ``seed``).
        test_views: number of test views (a ring orbit, independent of the seed).
        resolution: image width = height in pixels.
        seed: camera jitter seed.
        supersample: N > 1 anti-aliases colour and alpha with N x N rays per pixel (box filter, as a camera pixel
            or Blender's NeRF-synthetic renders); 1 = one ray through each pixel centre, alpha exactly 0 or 1.
            Depth and normals are always the centre ray's. At most MAX_SUPERSAMPLE.

    Returns:
        The output folder.

    Example:
        >>> write_scene("object", Path("/tmp/object"), views=8, test_views=2, resolution=32)  # doctest: +SKIP
    """
    if name not in SCENE_BUILDERS:
        raise ReconError(f"unknown synthetic scene {name!r}; expected one of {', '.join(SCENES)}")
    z_range = UPPER_Z if name == "tabletop" else ALL_AROUND_Z
    return _write(
        SCENE_BUILDERS[name](), output, views=views, test_views=test_views, resolution=resolution, seed=seed,
        supersample=supersample, z_range=z_range, test_elevation=TEST_ELEVATION[name], meta={"scene": name},
    )  # fmt: skip


def _load_mesh(mesh_path: Path) -> trimesh.Trimesh:
    if not mesh_path.is_file():
        raise ReconError(f"mesh file {mesh_path} does not exist (expected an OBJ/PLY/GLB/STL/OFF mesh file)")
    try:
        mesh = trimesh.load_mesh(mesh_path)
    except Exception as exc:  # trimesh raises many types for bad files; report them all as bad input
        raise ReconError(f"mesh file {mesh_path} could not be read as a triangle mesh: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ReconError(f"mesh file {mesh_path} holds no triangles (expected a triangle mesh)")
    return mesh


def _mesh_colors(mesh: trimesh.Trimesh) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(vertex_colors, face_colors) in [0, 1] from the file's colours or texture (sampled at vertices)."""
    visual: Any = mesh.visual  # trimesh visuals are told apart by ``.kind`` (duck typing), not by class
    if visual.kind == "texture":
        try:
            visual = visual.to_color()
        except (
            ValueError,
            IndexError,
            AttributeError,
        ):  # no UVs or no image: fall back to procedural colours
            return None, None
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0, None
    if visual.kind == "face":
        return None, np.asarray(visual.face_colors[:, :3], dtype=np.float64) / 255.0
    return None, None


def write_mesh_scene(
    mesh_path: Path | str, output: Path, *, views: int = 100, test_views: int = 50, resolution: int = 200,
    seed: int = 0, up_axis: Literal["y", "z"] = "y", upper_views: bool = False, supersample: int = 1,
) -> Path:  # fmt: skip
    """Render any mesh file (OBJ, PLY, GLB, ...) like a built-in scene into a Blender-format folder.

    The mesh (scenes are concatenated into one mesh) is normalised by the similarity
    ``x' = s R (x - c)``: ``c`` the bounding-box centre, ``s = 2 / (largest side)``, so it fits ``[-1, 1]^3``, and
    ``R`` turning the file's ``up_axis`` into +z (y-up is the glTF rule and the common OBJ habit). The 4x4
    similarity is recorded as ``recon_synthetic.normalization`` (original -> written frame); gt_mesh.ply is
    written in the written (camera) frame. Colours come from the file's vertex/face colours or texture (sampled
    at the vertices), else a procedural hue-and-checker texture. Cameras as for the "object" scene; with
    ``upper_views`` the training views see it only from above (elevations 10-75 degrees, as the "tabletop" scene),
    so its underside is never observed (the open-surface case of sparseflex's ``open_surfaces``).

    Args:
        mesh_path: mesh file readable by trimesh.
        output: folder to write.
        views, test_views, resolution, seed, supersample: as in :func:`write_scene`.
        up_axis: the file's up axis.
        upper_views: training cameras on the upper hemisphere only.

    Returns:
        The output folder.

    Raises:
        ReconError: the file is missing, unreadable or holds no triangles.
    """
    mesh_path = Path(mesh_path)
    if up_axis not in ("y", "z"):
        raise ReconError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    mesh = _load_mesh(mesh_path)
    vertex_colors, face_colors = _mesh_colors(mesh)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ReconError(f"mesh file {mesh_path} has degenerate or non-finite vertices")
    R = Y_UP_TO_Z_UP if up_axis == "y" else np.eye(3)
    S = np.eye(4)
    S[:3, :3] = (2.0 / extent) * R
    S[:3, 3] = -S[:3, :3] @ (0.5 * (lo + hi))
    part = Part(
        vertices @ S[:3, :3].T + S[:3, 3], np.asarray(mesh.faces, dtype=np.int64),
        albedo=rainbow_albedo(cell=MESH_TEXTURE_CELL), vertex_colors=vertex_colors, face_colors=face_colors,
    )  # fmt: skip
    meta = {"scene": f"mesh:{mesh_path.name}", "source_mesh": str(mesh_path), "up_axis": up_axis,
            "training_views": "upper hemisphere" if upper_views else "all around",
            "normalization": S.tolist(), "colors": "vertex" if vertex_colors is not None else
            "face" if face_colors is not None else "procedural"}  # fmt: skip
    return _write(
        [part], output, views=views, test_views=test_views, resolution=resolution, seed=seed,
        supersample=supersample, z_range=UPPER_Z if upper_views else ALL_AROUND_Z, test_elevation=TEST_ELEVATION["object"], meta=meta,
    )  # fmt: skip
