"""Built-in synthetic scenes: Blender layout, determinism, exact depth/normals/alpha against the ground truth.

Every check re-derives the cameras from the JSON files (camera_angle_x, OpenGL transform_matrix) with code
independent of the writer, so conventions are tested together with the ray caster.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from recon.core.errors import ReconError
from recon.datasets.synthetic import SCENES, write_mesh_scene, write_scene

RES = 32
VIEWS = 8
TEST_VIEWS = 3
SURFACE_TOL = 1e-4  # unprojected depth vs gt surface: float32 t_hit at distance ~5 is good to ~1e-6


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {
        name: write_scene(name, root / name, views=VIEWS, test_views=TEST_VIEWS, resolution=RES, seed=3)
        for name in SCENES
    }


@pytest.fixture(scope="module")
def cube_scene(tmp_path_factory) -> Path:
    """A 4 x 4 x 4 cube centred at (10, -2, 5) (y-up file): written as [-1, 1]^3 after normalisation."""
    root = tmp_path_factory.mktemp("cube")
    mesh = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    mesh.apply_translation((10.0, -2.0, 5.0))
    path = root / "cube.ply"
    mesh.export(path)
    return write_mesh_scene(path, root / "scene", views=VIEWS, test_views=TEST_VIEWS, resolution=RES, seed=1)


def _frames(root: Path, split: str) -> tuple[dict, list[dict]]:
    doc = json.loads((root / f"transforms_{split}.json").read_text())
    return doc, doc["frames"]


def _world_points(doc: dict, frame: dict, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """World points of the hit pixels (from depth, camera_angle_x and the OpenGL pose) and the hit mask."""
    depth = np.load(root / frame["depth_file_path"]).astype(np.float64)
    H, W = depth.shape
    focal = 0.5 * W / math.tan(0.5 * doc["camera_angle_x"])
    j, i = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    # OpenGL camera: x right, y up, looking down -z; depth is the distance along the viewing axis.
    cam = np.stack([(i - 0.5 * W) / focal * depth, -(j - 0.5 * H) / focal * depth, -depth], -1)
    T_world_cam = np.asarray(frame["transform_matrix"])
    world = cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    hit = depth > 0
    return world[hit], hit


def _distance_to_mesh(
    points: np.ndarray, mesh: trimesh.Trimesh, *, within: float = SURFACE_TOL
) -> np.ndarray:
    """Distance of each point to the mesh surface, exact below ``within`` (inf when no face is that close).

    A face can be within ``within`` of a point only if its centroid is within (its circumradius about the
    centroid + ``within``): faces are grouped by that radius (powers of two), each group searched with a k-d tree
    over centroids, and the candidates measured exactly. Independent of the ray caster.
    """
    tri = mesh.triangles
    centroid = tri.mean(1)
    radius = np.linalg.norm(tri - centroid[:, None], axis=-1).max(1)
    group = np.ceil(np.log2(np.maximum(radius, 1e-12))).astype(np.int64)
    out = np.full(len(points), np.inf)
    for g in np.unique(group):
        faces = np.nonzero(group == g)[0]
        near = cKDTree(centroid[faces]).query_ball_point(points, r=2.0**g + within)
        pi = np.repeat(np.arange(len(points)), [len(n) for n in near])
        if len(pi) == 0:
            continue
        fi = faces[np.concatenate(near).astype(np.int64)]
        dist = np.linalg.norm(trimesh.triangles.closest_point(tri[fi], points[pi]) - points[pi], axis=-1)
        np.minimum.at(out, pi, dist)
    return out


def test_scene_names() -> None:
    assert {"object", "tabletop"} <= set(SCENES)


@pytest.mark.parametrize("name", ["object", "tabletop"])
def test_blender_layout(scenes, name) -> None:
    root = scenes[name]
    for split, count in (("train", VIEWS), ("test", TEST_VIEWS)):
        doc, frames = _frames(root, split)
        assert len(frames) == count
        assert doc["white_background"] is True
        assert doc["gt_mesh"] == "gt_mesh.ply" and (root / "gt_mesh.ply").is_file()
        assert doc["recon_synthetic"]["scene"] == name
        assert doc["recon_synthetic"]["seed"] == 3 and doc["recon_synthetic"]["version"] == 1
        assert 0 < doc["camera_angle_x"] < math.pi
        for k, frame in enumerate(frames):
            assert frame["file_path"] == f"./{split}/r_{k}"
            img = Image.open(root / f"{split}/r_{k}.png")
            assert img.mode == "RGBA" and img.size == (RES, RES)
            T = np.asarray(frame["transform_matrix"])
            assert T.shape == (4, 4)
            np.testing.assert_allclose(T[3], [0, 0, 0, 1])
            np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
            assert abs(np.linalg.det(T[:3, :3]) - 1) < 1e-9
            assert np.load(root / frame["depth_file_path"]).dtype == np.float32
            assert np.load(root / frame["normal_file_path"]).shape == (RES, RES, 3)


@pytest.mark.parametrize("name", ["object", "tabletop"])
def test_cameras_look_at_the_scene(scenes, name) -> None:
    """The OpenGL -z axis of every camera points at the recorded look-at centre; the scene is fully in view."""
    root = scenes[name]
    for split in ("train", "test"):
        doc, frames = _frames(root, split)
        center = np.asarray(doc["recon_synthetic"]["look_at"])
        for frame in frames:
            T = np.asarray(frame["transform_matrix"])
            to_center = center - T[:3, 3]
            np.testing.assert_allclose(-T[:3, 2], to_center / np.linalg.norm(to_center), atol=1e-9)
            alpha = np.asarray(Image.open(root / (frame["file_path"][2:] + ".png")))[..., 3]
            border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
            assert alpha.any() and not border.any(), "object touches the image border"


@pytest.mark.parametrize("name", ["object", "tabletop"])
def test_alpha_depth_normals_agree(scenes, name) -> None:
    root = scenes[name]
    for split in ("train", "test"):
        _, frames = _frames(root, split)
        for frame in frames:
            rgba = np.asarray(Image.open(root / (frame["file_path"][2:] + ".png")))
            depth = np.load(root / frame["depth_file_path"])
            normals = np.load(root / frame["normal_file_path"])
            hit = depth > 0
            assert set(np.unique(rgba[..., 3])) <= {0, 255}
            np.testing.assert_array_equal(rgba[..., 3] == 255, hit)
            assert not rgba[~hit].any()
            np.testing.assert_allclose(
                np.linalg.norm(normals[hit], axis=-1), 1.0, atol=2e-3
            )  # stored as float16 (10-bit mantissa)
            assert not normals[~hit].any()


@pytest.mark.parametrize("name", ["object", "tabletop"])
def test_depth_lies_on_gt_mesh(scenes, name) -> None:
    root = scenes[name]
    mesh = trimesh.load(root / "gt_mesh.ply", force="mesh", process=False)
    for split in ("train", "test"):
        doc, frames = _frames(root, split)
        for frame in frames[:3]:
            points, _ = _world_points(doc, frame, root)
            assert len(points) > 20
            dist = _distance_to_mesh(points, mesh)
            assert dist.max() < SURFACE_TOL, f"{frame['file_path']}: max distance {dist.max():.2e}"


def test_object_gt_mesh_is_closed(scenes) -> None:
    mesh = trimesh.load(scenes["object"] / "gt_mesh.ply", force="mesh")
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)


def test_tabletop_is_open_with_background(scenes) -> None:
    root = scenes["tabletop"]
    mesh = trimesh.load(root / "gt_mesh.ply", force="mesh", process=False)
    assert not mesh.is_watertight  # the ground is an open patch
    # upper-hemisphere cameras only: every training camera is above the ground
    _, frames = _frames(root, "train")
    assert all(np.asarray(f["transform_matrix"])[2, 3] > 0 for f in frames)


def test_cube_depth_and_normals_are_analytic(cube_scene) -> None:
    """Hits on the normalised cube [-1, 1]^3 lie on a face plane, and the normal is that face's axis."""
    root = cube_scene
    for split in ("train", "test"):
        doc, frames = _frames(root, split)
        for frame in frames:
            points, hit = _world_points(doc, frame, root)
            normals = np.load(root / frame["normal_file_path"])[hit].astype(np.float64)
            axis = np.abs(normals).argmax(-1)
            np.testing.assert_allclose(np.abs(normals).max(-1), 1.0, atol=1e-6)
            on_plane = np.take_along_axis(points, axis[:, None], 1)[:, 0]
            np.testing.assert_allclose(on_plane, np.sign(np.take_along_axis(normals, axis[:, None], 1)[:, 0]),
                                       atol=SURFACE_TOL)  # fmt: skip
            assert np.abs(points).max() < 1 + SURFACE_TOL


def test_mesh_scene_records_normalization(cube_scene) -> None:
    doc, _ = _frames(cube_scene, "train")
    meta = doc["recon_synthetic"]
    assert meta["scene"] == "mesh:cube.ply" and meta["colors"] == "procedural"
    S = np.asarray(meta["normalization"])
    corner = S @ np.array([12.0, 0.0, 7.0, 1.0])  # (+2, +2, +2) from the centre (10, -2, 5)
    np.testing.assert_allclose(
        corner[:3], [1.0, -1.0, 1.0], atol=1e-12
    )  # y-up -> z-up: (x, y, z) -> (x, -z, y)
    gt = trimesh.load(cube_scene / "gt_mesh.ply", force="mesh")
    np.testing.assert_allclose(gt.bounds, [[-1, -1, -1], [1, 1, 1]], atol=1e-12)


def test_mesh_scene_uses_vertex_colors(tmp_path) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(mesh.vertices), 1)).astype(np.uint8)
    mesh.export(tmp_path / "red.ply")
    out = write_mesh_scene(tmp_path / "red.ply", tmp_path / "s", views=2, test_views=0, resolution=16)
    rgba = np.asarray(Image.open(out / "train/r_0.png"))
    hit = rgba[..., 3] == 255
    assert hit.any() and not rgba[hit][:, 1:3].any() and rgba[hit][:, 0].min() > 0


def test_mesh_scene_upper_views_never_see_the_underside(tmp_path) -> None:
    """``upper_views``: every training camera sits 10-75 degrees above the object's centre (so its underside is
    never observed); the default spreads them all around, below the centre too."""
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "ball.ply")

    def elevations(out: Path) -> np.ndarray:
        frames = json.loads((out / "transforms_train.json").read_text())["frames"]
        centres = np.array([np.asarray(f["transform_matrix"])[:3, 3] for f in frames])
        return np.degrees(np.arcsin(centres[:, 2] / np.linalg.norm(centres, axis=1)))

    upper = write_mesh_scene(tmp_path / "ball.ply", tmp_path / "u", views=12, test_views=0, resolution=8,
                             upper_views=True)  # fmt: skip
    around = write_mesh_scene(tmp_path / "ball.ply", tmp_path / "a", views=12, test_views=0, resolution=8)
    assert elevations(upper).min() > 9.0 and elevations(upper).max() < 76.0
    assert elevations(around).min() < 0.0  # the default also looks from below
    meta = json.loads((upper / "transforms_train.json").read_text())["recon_synthetic"]
    assert meta["training_views"] == "upper hemisphere"


def test_mesh_scene_samples_texture(tmp_path) -> None:
    """A textured GLB (left half of the texture red, right half blue) renders in red and blue only."""
    mesh = trimesh.creation.icosphere(subdivisions=3)
    uv = np.c_[
        (np.arctan2(mesh.vertices[:, 1], mesh.vertices[:, 0]) / (2 * np.pi)) % 1,
        0.5 + 0.5 * mesh.vertices[:, 2],
    ]
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = (255, 0, 0)
    texture[:, 4:] = (0, 0, 255)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture))
    mesh.export(tmp_path / "tex.glb")
    out = write_mesh_scene(tmp_path / "tex.glb", tmp_path / "s", views=2, test_views=0, resolution=24)
    assert _frames(out, "train")[0]["recon_synthetic"]["colors"] == "vertex"
    rgba = np.asarray(Image.open(out / "train/r_0.png"))
    rgb = rgba[rgba[..., 3] == 255][:, :3].astype(int)
    assert len(rgb) > 0 and not rgb[:, 1].any()  # no green anywhere: colours come from the texture
    assert rgb[:, 0].max() > 100 and rgb[:, 2].max() > 100


def test_deterministic(tmp_path, scenes) -> None:
    again = write_scene(
        "object", tmp_path / "again", views=VIEWS, test_views=TEST_VIEWS, resolution=RES, seed=3
    )
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(scenes["object"]) for p in scenes["object"].rglob("*") if p.is_file()
    )
    for rel in files:
        assert (again / rel).read_bytes() == (scenes["object"] / rel).read_bytes(), rel


def test_seed_moves_training_cameras_only(tmp_path, scenes) -> None:
    other = write_scene(
        "object", tmp_path / "other", views=VIEWS, test_views=TEST_VIEWS, resolution=RES, seed=4
    )
    base = scenes["object"]
    assert (other / "gt_mesh.ply").read_bytes() == (base / "gt_mesh.ply").read_bytes()
    poses = [[np.asarray(f["transform_matrix"]) for f in _frames(root, "train")[1]] for root in (base, other)]
    assert not np.allclose(poses[0], poses[1])
    tests = [[f["transform_matrix"] for f in _frames(root, "test")[1]] for root in (base, other)]
    assert tests[0] == tests[1]


def test_supersample_box_filters_a_finer_render(tmp_path, cube_scene) -> None:
    """supersample = 2: alpha is the covered fraction and colour the mean colour of the covered rays of a 2 x 2
    ray grid, i.e. exactly the box filter of the same scene written at twice the resolution (same cameras, the
    intrinsics scale with the resolution); depth and normals stay the centre ray's (the 1-ray files)."""
    mesh = tmp_path / "cube.ply"
    trimesh.creation.box(extents=(4.0, 4.0, 4.0)).apply_translation((10.0, -2.0, 5.0)).export(mesh)
    kw = {"views": VIEWS, "test_views": TEST_VIEWS, "seed": 1}
    smooth = write_mesh_scene(mesh, tmp_path / "ss2", resolution=RES, supersample=2, **kw)
    fine = write_mesh_scene(mesh, tmp_path / "fine", resolution=2 * RES, **kw)
    assert _frames(smooth, "train")[0]["recon_synthetic"]["supersample"] == 2
    partial = 0
    for split, n in (("train", VIEWS), ("test", TEST_VIEWS)):
        for i in range(n):
            got = np.asarray(Image.open(smooth / split / f"r_{i}.png")).astype(np.float64)
            hi = np.asarray(Image.open(fine / split / f"r_{i}.png")).astype(np.float64)
            blocks = hi.reshape(RES, 2, RES, 2, 4)
            alpha = blocks[..., 3].mean(axis=(1, 3))  # the 1-ray alphas are 0 or 255
            np.testing.assert_array_equal(got[..., 3], np.round(alpha))
            premultiplied = (blocks[..., :3] * blocks[..., 3:] / 255.0).mean(axis=(1, 3))
            covered = alpha > 0
            colour = premultiplied[covered] / (alpha[covered, None] / 255.0)
            assert np.abs(got[covered][:, :3] - colour).max() <= 1.0 + 1e-9  # uint8 rounding of both files
            assert not got[~covered][:, :3].any()
            partial += int(((got[..., 3] > 0) & (got[..., 3] < 255)).sum())
            for key in ("depth", "normal"):
                one_ray = cube_scene / split / f"r_{i}_{key}.npy"  # the same cube, cameras and resolution
                assert (smooth / split / f"r_{i}_{key}.npy").read_bytes() == one_ray.read_bytes()
    assert partial > 0  # the silhouettes are anti-aliased


def test_bad_supersample_is_refused_by_name(tmp_path) -> None:
    for bad in (0, 9):
        with pytest.raises(ReconError, match=f"supersample must be 1-8 rays per pixel side, got {bad}"):
            write_scene("object", tmp_path / "x", views=2, test_views=0, resolution=8, supersample=bad)
    assert not (tmp_path / "x").exists()


def test_unknown_scene_lists_names(tmp_path) -> None:
    with pytest.raises(ReconError, match="object.*tabletop"):
        write_scene("nope", tmp_path / "x")


def test_missing_mesh_names_file(tmp_path) -> None:
    with pytest.raises(ReconError, match="missing.obj"):
        write_mesh_scene(tmp_path / "missing.obj", tmp_path / "x")


def test_unreadable_mesh_names_file(tmp_path) -> None:
    bad = tmp_path / "garbage.glb"
    bad.write_bytes(b"\x00\x01 not a mesh at all")
    with pytest.raises(ReconError, match="garbage.glb"):
        write_mesh_scene(bad, tmp_path / "x")


def test_bad_counts(tmp_path) -> None:
    with pytest.raises(ReconError, match="views"):
        write_scene("object", tmp_path / "x", views=0)
