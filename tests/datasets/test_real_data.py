"""Checks on the real captures in ../shared/data (located relative to the checkout; skipped when absent)."""

from pathlib import Path

import pytest
import torch

from recon.datasets import load_dataset, verify_files

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FERN = SHARED_DATA / "llff_fern"  # images_8/ only (504x378) + poses_bounds.npy stated for 4032x3024
BEER_CAN = SHARED_DATA / "colmap_beer_can"  # COLMAP model with one SIMPLE_RADIAL camera per image, 71 photos


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(
            f"real capture {path} is not present in this checkout (shared data lives outside the repo)"
        )
    return path


def test_llff_fern_images_8_only():
    ds = load_dataset(_require(FERN))
    assert ds.format == "llff" and ds.downscale == 8.0
    assert [len(ds.splits["train"]), len(ds.splits["test"])] == [17, 3]  # llffhold 8: images 0, 8, 16
    assert [f.name for f in ds.splits["test"]] == [f"images_8/image{i:03d}.png" for i in (0, 8, 16)]
    cam = ds.camera("train", 0)
    assert (cam.width, cam.height) == (504, 378)
    # poses_bounds states f = 3260.526 px at 4032x3024: the 8x smaller copies have f / 8
    assert float(cam.K[0, 0, 0]) == pytest.approx(3260.526 / 8, rel=1e-4)
    assert verify_files(ds) == 20
    # colmap_points/points3D.bin (same world frame as poses_bounds): the SfM points, in front of the cameras
    assert ds.points3d is not None and len(ds.points3d) == 10_091 and ds.points3d_rgb is not None
    cams = ds.cameras("train")
    _, depth = cams.project(ds.points3d[None].expand(len(cams), -1, -1))
    assert float((depth > 0).double().mean()) > 0.95


def test_colmap_beer_can_one_camera_per_image():
    ds = load_dataset(_require(BEER_CAN), test_every=10)
    frames = [f for fs in ds.splits.values() for f in fs]
    assert len(frames) == 71 and len(ds.splits["test"]) == 8  # 0, 10, ..., 70
    assert ds.points3d is not None and len(ds.points3d) == 4414
    focals = torch.tensor([float(f.K[0, 0]) for f in frames])
    assert 1100 < float(focals.min()) < float(focals.max()) < 1160  # per-image cameras, not one shared
    assert all(f.camera_model == "opencv" and (f.width, f.height) == (720, 1280) for f in frames)
    assert ds.cameras("train").width == 720  # one size: the cameras stack
