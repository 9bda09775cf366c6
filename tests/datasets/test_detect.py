"""Format detection and load_dataset argument checks."""

import json

import numpy as np
import pytest

from recon.datasets import FORMATS, DatasetError, detect_format, load_dataset


def test_each_format_is_recognised_by_its_files(tmp_path):
    cases = {
        "blender": ["transforms_train.json"],
        "nerfstudio": ["transforms.json"],
        "colmap": ["sparse/0/cameras.bin"],
        "llff": ["poses_bounds.npy"],
        "dtu": ["cameras.npz"],
    }
    assert set(cases) == set(FORMATS)
    for name, files in cases.items():
        root = tmp_path / name
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_text("{}")
        assert detect_format(root) == name
    (tmp_path / "text_colmap").mkdir()
    (tmp_path / "text_colmap" / "cameras.txt").write_text("")
    assert detect_format(tmp_path / "text_colmap") == "colmap"


def test_colmap_wins_over_llff_when_both_exist(tmp_path):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.txt").write_text("")
    np.save(tmp_path / "poses_bounds.npy", np.zeros((1, 17)))
    assert detect_format(tmp_path) == "colmap"


def test_unknown_format_names_the_folder_and_what_was_expected(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(
        DatasetError, match=rf"unknown dataset format in {tmp_path}: expected transforms_train.json"
    ):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        detect_format(tmp_path / "missing")
    with pytest.raises(DatasetError, match="is a file: expected a dataset folder"):
        detect_format(tmp_path / "photo.png")


def test_bad_arguments(tmp_path):
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(DatasetError, match="downscale must be a positive number"):
        load_dataset(tmp_path, downscale=0)
    with pytest.raises(DatasetError, match=r"background must be three numbers in \[0, 1\]"):
        load_dataset(tmp_path, background=(2.0, 0.0, 0.0))
    with pytest.raises(DatasetError, match="format 'ply' is not supported"):
        load_dataset(tmp_path, format="ply")


def test_a_defining_file_stands_for_its_folder(tmp_path):
    (tmp_path / "transforms.json").write_text("{}")
    assert detect_format(tmp_path / "transforms.json") == "nerfstudio"
