"""Every file a dataset names resolves inside the dataset root (``..``, absolute paths and symlinks out are
errors naming the field and file) unless ``allow_outside_root=True``."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.datasets import DatasetError, load_dataset
from recon.datasets.paths import copy_folder, find_image_folder, resolve_inside

W, H = 16, 12
FRAME_FIELDS = ("file_path", "mask_path", "depth_file_path", "normal_file_path")


def _outside_files(folder: Path, dw) -> dict[str, Path]:
    """One valid file per field, outside the dataset root."""
    import trimesh

    files = {
        "file_path": folder / "image.png",
        "mask_path": folder / "mask.png",
        "depth_file_path": folder / "depth.npy",
        "normal_file_path": folder / "normal.npy",
        "ply_file_path": folder / "points.ply",
        "gt_mesh": folder / "mesh.ply",
    }
    dw.write_png(files["file_path"], W, H, seed=5)
    dw.write_png(files["mask_path"], W, H, seed=6, mode="L")
    np.save(files["depth_file_path"], np.ones((H, W), np.float32))
    np.save(files["normal_file_path"], np.ones((H, W, 3), np.float32))
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(10, 3))).export(files["ply_file_path"])
    trimesh.creation.box().export(files["gt_mesh"])
    return files


def _escape(root: Path, target: Path, how: str) -> str:
    """The path a dataset file would write to reach ``target`` from ``root`` in the given way."""
    if how == "dotdot":
        return f"../{target.parent.name}/{target.name}"
    if how == "absolute":
        return str(target)
    link = root / f"link_{target.name}"
    link.symlink_to(target)
    return link.name


def _nerfstudio(tmp_path, dw) -> tuple[Path, dict[str, Path]]:
    K, T = dw.random_cameras(2, width=W, height=H, seed=1)
    root = dw.nerfstudio(tmp_path / "data", K, T, width=W, height=H)
    return root, _outside_files(tmp_path / "outside", dw)


def _edit(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("field", [*FRAME_FIELDS, "ply_file_path"])
def test_json_fields_outside_root(tmp_path, dw, field, how):
    root, files = _nerfstudio(tmp_path, dw)
    escape = _escape(root, files[field], how)
    where = "frames" if field in FRAME_FIELDS else "top"
    _edit(
        root / "transforms.json",
        lambda m: (m["frames"][1] if where == "frames" else m).update({field: escape}),
    )
    context = r"\(frame 1\)" if where == "frames" else ""
    pattern = (
        rf"{field} of {re.escape(str(root / 'transforms.json'))} ?{context} names {re.escape(repr(escape))}, which "
        rf"resolves to {re.escape(str(files[field]))}, outside the dataset root {re.escape(str(root))}: expected"
    )
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(root)
    ds = load_dataset(root, allow_outside_root=True)  # the caller's explicit permission: the file is used
    frames = [f for fs in ds.splits.values() for f in fs]
    attribute = {"file_path": "image_path", "mask_path": "mask_path", "depth_file_path": "depth_path",
                 "normal_file_path": "normal_path"}  # fmt: skip
    if field in attribute:
        assert files[field].resolve() in {getattr(f, attribute[field]) for f in frames}
    else:
        assert ds.points3d is not None and len(ds.points3d) == 10


def test_blender_gt_mesh_outside_root(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    root = dw.blender(tmp_path / "data", {"train": (K, T)}, width=W, height=H)
    files = _outside_files(tmp_path / "outside", dw)
    _edit(root / "transforms_train.json", lambda m: m.update(gt_mesh="../outside/mesh.ply"))
    with pytest.raises(DatasetError, match=r"gt_mesh of transforms_train.json names '../outside/mesh.ply'"):
        load_dataset(root)
    assert load_dataset(root, allow_outside_root=True).gt_mesh_path == files["gt_mesh"]


def test_blender_suffixless_file_path_escaping(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    root = dw.blender(tmp_path / "data", {"train": (K, T)}, width=W, height=H)
    _outside_files(tmp_path / "outside", dw)
    _edit(root / "transforms_train.json", lambda m: m["frames"][0].update(file_path="./../outside/image"))
    with pytest.raises(
        DatasetError, match=r"file_path of .*\(frame 0\) names './../outside/image.png', which"
    ):
        load_dataset(root)


def test_colmap_image_name_outside_root(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H)
    cams = [("PINHOLE", W, H, [10.0, 10.0, 8.0, 6.0])]
    root = dw.colmap(tmp_path / "data", cams, T, [0, 0], binary=False)
    _outside_files(tmp_path / "outside", dw)
    text = (
        (root / "sparse" / "0" / "images.txt").read_text().replace("img_001.png", "../../outside/image.png")
    )
    (root / "sparse" / "0" / "images.txt").write_text(text)
    with pytest.raises(
        DatasetError, match=r"image 2 \(../../outside/image.png\) in .*: the image name names"
    ):
        load_dataset(root)
    assert len(load_dataset(root, allow_outside_root=True).splits["train"]) == 1


def test_symlinked_images_of_llff_and_dtu(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, square_pixels=True, centered=True)
    files = _outside_files(tmp_path / "outside", dw)
    llff = dw.llff(tmp_path / "llff", K, T, width=W, height=H)
    (llff / "images" / "IMG_0001.png").unlink()
    (llff / "images" / "IMG_0001.png").symlink_to(files["file_path"])
    with pytest.raises(
        DatasetError, match=r"image IMG_0001.png of .*images names .* outside the dataset root"
    ):
        load_dataset(llff)
    dtu = dw.dtu(tmp_path / "dtu", K, T, torch.eye(4, dtype=torch.float64), width=W, height=H)
    (dtu / "mask" / "001.png").unlink()
    (dtu / "mask" / "001.png").symlink_to(files["mask_path"])
    with pytest.raises(DatasetError, match=r"mask 001.png of .*mask names .* outside the dataset root"):
        load_dataset(dtu)
    assert load_dataset(dtu, allow_outside_root=True).splits["test"][0].mask_path.name == "000.png"


def test_resolve_inside_accepts_links_that_stay_inside(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert resolve_inside(tmp_path, "alias/a.png", what="w") == tmp_path.resolve() / "real" / "a.png"
    assert resolve_inside(tmp_path, "real/../real/a.png", what="w") == tmp_path.resolve() / "real" / "a.png"
    with pytest.raises(DatasetError, match=r"^mask_path of f.json names '../x'"):
        resolve_inside(tmp_path, "../x", what="mask_path of f.json")


def test_image_folder_helpers(tmp_path):
    assert find_image_folder(tmp_path) is None
    for name in ("images_8", "images_2", "images_x", "other_1"):
        (tmp_path / name).mkdir()
    assert find_image_folder(tmp_path) == tmp_path / "images_2"  # the finest copy
    (tmp_path / "images").mkdir()
    assert find_image_folder(tmp_path) == tmp_path / "images"
    assert copy_folder(tmp_path / "images", 4) == tmp_path / "images_4"
    assert copy_folder(tmp_path / "images_2", 8) == tmp_path / "images_8"
