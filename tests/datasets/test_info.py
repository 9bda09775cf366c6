"""dataset_info (the `recon data info --json` layout of CLI.md) and its readable form."""

import json
import re

import numpy as np
import pytest
import torch

from recon.datasets import DatasetError, dataset_info, format_info, load_dataset

W, H = 32, 24  # downscale 2 still leaves the 11 px SSIM minimum
CLI_KEYS = {"format", "splits", "has_masks", "has_depth", "points3d"}
CAMERA_KEYS = {"name", "width", "height", "K", "T_cam_world", "camera_model", "distortion"}


def test_layout_is_plain_json_with_cli_keys(tmp_path, dw):
    K, T = dw.random_cameras(9, width=W, height=H, seed=41)
    dw.colmap(
        tmp_path,
        [("OPENCV", W, H, [20.0, 21.0, 8.0, 6.0, 0.01, 0.0, 0.0, 0.0])],
        T,
        [0] * 9,
        binary=True,
        points=np.zeros((4, 3)),
    )
    info = json.loads(json.dumps(dataset_info(tmp_path)))  # plain JSON types only
    assert set(info) >= CLI_KEYS
    assert info["format"] == "colmap" and info["points3d"] == 4
    assert info["has_masks"] is False and info["has_depth"] is False
    assert set(info["splits"]) == {"train", "test"}
    cam = info["splits"]["train"][0]
    assert set(cam) == CAMERA_KEYS
    assert (cam["width"], cam["height"], cam["camera_model"]) == (W, H, "opencv")
    assert cam["distortion"] == [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert np.array(cam["K"]).shape == (3, 3) and np.array(cam["T_cam_world"]).shape == (4, 4)
    assert "every 8th" in info["split_rule"] and np.array(info["normalization"]).shape == (4, 4)


def test_info_reports_stored_resolution_and_original_frame_after_downscale(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H, seed=42)
    dw.nerfstudio(tmp_path, K, T, width=W, height=H)
    full, half = dataset_info(load_dataset(tmp_path)), dataset_info(load_dataset(tmp_path, downscale=2))
    assert full["splits"] == half["splits"]
    cam = full["splits"]["train"][0]
    assert (
        (cam["width"], cam["height"]) == (W, H)
        and cam["distortion"] == []
        and cam["camera_model"] == "pinhole"
    )
    assert torch.allclose(torch.tensor(cam["K"], dtype=torch.float64), K[1], atol=1e-9)


def test_format_info_summarises(tmp_path, dw):
    K, T = dw.random_cameras(10, width=W, height=H, seed=43)
    dw.llff(tmp_path, K, T, width=W, height=H)
    text = format_info(dataset_info(tmp_path))
    assert "format:        llff" in text
    assert "train 8 views, test 2 views" in text
    assert f"{W}x{H}" in text and "masks:         no" in text and "points3d:      none" in text
    assert "normalization: x_norm = S x_orig, scale" in text


def test_verify_files_names_truncated_images(tmp_path, dw):
    from recon.datasets import verify_files

    K, T = dw.random_cameras(3, width=W, height=H, seed=44)
    dw.nerfstudio(tmp_path, K, T, width=W, height=H, frame_extras=[{"mask_path": "m.png"}, {}, {}])
    dw.write_png(tmp_path / "m.png", W, H, mode="L")
    ds = load_dataset(tmp_path)
    assert verify_files(ds) == 4  # three images and one mask, each decoded once
    bad = tmp_path / "images" / "frame_00002.png"
    bad.write_bytes(bad.read_bytes()[:-40])  # header intact (loading passes), pixel data cut
    ds = load_dataset(tmp_path)
    with pytest.raises(
        DatasetError, match=rf"1 of 4 files of .* failed to decode: .*image file {re.escape(str(bad))}"
    ):
        verify_files(ds)
    (tmp_path / "m.png").write_bytes((tmp_path / "m.png").read_bytes()[:-40])
    with pytest.raises(
        DatasetError, match=r"2 of 4 files .* failed to decode: .*frame_00002.png.*; .*mask file .*m.png"
    ):
        verify_files(load_dataset(tmp_path))
