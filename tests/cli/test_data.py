"""recon data: info and synth, end to end through the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cli import data as data_cli

CLI_MD_INFO_KEYS = {"format", "splits", "has_masks", "has_depth", "points3d"}
CLI_MD_CAMERA_KEYS = {"name", "width", "height", "K", "T_cam_world", "camera_model", "distortion"}


def test_synth_then_info_json(recon_cli, tmp_path, capsys):
    out = tmp_path / "object"
    result = recon_cli("data", "synth", "object", "--output", str(out), "--views", "6", "--test-views", "3",
                       "--resolution", "32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (out / "transforms_train.json").is_file() and (out / "gt_mesh.ply").is_file()

    info = recon_cli("data", "info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert set(data) >= CLI_MD_INFO_KEYS
    assert data["format"] == "blender"
    assert [len(data["splits"]["train"]), len(data["splits"]["test"])] == [6, 3]
    camera = data["splits"]["train"][0]
    assert set(camera) == CLI_MD_CAMERA_KEYS
    assert (camera["width"], camera["height"]) == (32, 32)
    assert len(camera["K"]) == 3 and len(camera["T_cam_world"]) == 4
    assert data["has_masks"] is True and data["has_depth"] is True

    assert data_cli.main(["info", str(out)]) == 0  # the readable summary, in-process (saves a subprocess)
    text = capsys.readouterr().out
    assert "blender" in text and "train 6 views" in text


def test_synth_errors(tmp_path):
    with pytest.raises(
        data_cli.ReconError, match="unknown synthetic scene 'nosuch'; expected one of: .*object"
    ):
        data_cli.main(["synth", "nosuch", "--output", str(tmp_path / "x")])
    with pytest.raises(data_cli.ReconError, match="needs --mesh FILE"):
        data_cli.main(["synth", "mesh", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as info:  # --output is required: a usage error from tyro
        data_cli.main(["synth", "object"])
    assert info.value.code == 2
    assert not (tmp_path / "x").exists()


def test_synth_dispatch_arguments(monkeypatch, tmp_path, capsys):
    """The CLI passes every option through to the synthetic-scene writers unchanged."""
    import recon.datasets.synthetic as synthetic

    calls = []
    monkeypatch.setattr(
        synthetic, "write_scene", lambda name, output, **kw: calls.append((name, output, kw)) or output
    )
    monkeypatch.setattr(
        synthetic, "write_mesh_scene", lambda mesh, output, **kw: calls.append((mesh, output, kw)) or output
    )
    argv = ["synth", "tabletop", "--output", str(tmp_path), "--views", "7", "--test-views", "2", "--resolution",
            "16", "--seed", "3", "--supersample", "4"]  # fmt: skip
    assert data_cli.main(argv) == 0
    assert calls[-1] == (
        "tabletop", tmp_path, {"views": 7, "test_views": 2, "resolution": 16, "seed": 3, "supersample": 4}
    )  # fmt: skip
    mesh = tmp_path / "m.obj"
    assert (
        data_cli.main(["synth", "mesh", "--mesh", str(mesh), "--output", str(tmp_path), "--up-axis", "z"])
        == 0
    )
    assert calls[-1] == (
        mesh,
        tmp_path,
        {
            "views": 100,
            "test_views": 50,
            "resolution": 200,
            "seed": 0,
            "supersample": 1,
            "up_axis": "z",
            "upper_views": False,
        },  # fmt: skip
    )
    assert capsys.readouterr().out.splitlines() == [str(tmp_path), str(tmp_path)]
    with pytest.raises(data_cli.ReconError, match="--mesh is only used with NAME 'mesh'"):
        data_cli.main(["synth", "object", "--mesh", str(mesh), "--output", str(tmp_path)])


def test_info_missing_path_names_it(tmp_path):
    with pytest.raises(
        data_cli.ReconError, match=r"no_such: no such file or directory \(expected a dataset folder\)"
    ):
        data_cli.main(["info", str(tmp_path / "no_such")])


def _llff_images_2_only(root: Path, count: int = 9) -> Path:
    """A forward-facing LLFF folder holding only images_2/ (hwf states the 2x larger size)."""
    rows = []
    for i in range(count):
        M = np.zeros((3, 5))
        M[:, :3] = [
            [0, 1, 0],
            [1, 0, 0],
            [0, 0, -1],
        ]  # LLFF [down, right, backwards] columns of a camera looking -z
        M[:, 3] = [0.1 * i, 0.0, 0.0]
        M[:, 4] = [48, 64, 60.0]  # h, w, focal at the full size
        rows.append(np.concatenate([M.reshape(-1), [1.0, 10.0]]))
        (root / "images_2").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), 10 * i, np.uint8)).save(root / "images_2" / f"{i:03d}.png")
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return root


def test_info_downscale_test_every_and_verification(tmp_path, capsys):
    root = _llff_images_2_only(tmp_path / "llff")
    assert data_cli.main(["info", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["downscale"] == 2.0 and len(data["splits"]["test"]) == 2  # images 0 and 8
    assert data["splits"]["train"][0]["K"][0][0] == pytest.approx(30.0)  # focal 60 at 64 px -> 30 at 32 px
    assert data_cli.main(["info", str(root), "--test-every", "3", "--downscale", "4"]) == 0
    text = capsys.readouterr().out
    assert "train 6 views, test 3 views" in text and "every 3rd image" in text and "downscale:     4" in text
    with pytest.raises(data_cli.ReconError, match=r"stored 2x smaller .* expected downscale >= 2, got 1"):
        data_cli.main(["info", str(root), "--downscale", "1"])
    bad = root / "images_2" / "004.png"
    bad.write_bytes(bad.read_bytes()[:-30])  # the header still parses: only a full decode finds it
    with pytest.raises(data_cli.ReconError, match=rf"1 of 9 files .* failed to decode: .*{bad.name}"):
        data_cli.main(["info", str(root)])
    assert data_cli.main(["info", str(root), "--no-verify"]) == 0  # headers only


def test_process_passes_options_and_prints_the_report(monkeypatch, tmp_path, capsys):
    import recon.datasets.process as process

    calls = []

    class Report:
        def summary(self) -> str:
            return "registered 3/3 images"

    monkeypatch.setattr(process, "process_capture", lambda *a, **kw: calls.append((a, kw)) or Report())
    argv = ["process", str(tmp_path / "v.mp4"), "--output", str(tmp_path / "out"), "--matching", "sequential",
            "--num-frames", "40", "--camera-model", "PINHOLE", "--camera-params", "90", "91", "64", "48",
            "--no-single-camera", "--min-init-inliers", "30"]  # fmt: skip
    assert data_cli.main(argv) == 0
    (source, output, options), kw = calls[-1]
    assert (source, output, kw) == (tmp_path / "v.mp4", tmp_path / "out", {"progress": True})
    assert (options.matching, options.num_frames, options.camera_model) == ("sequential", 40, "PINHOLE")
    assert options.camera_params == (90.0, 91.0, 64.0, 48.0)
    assert (options.single_camera, options.min_init_inliers) == (False, 30)
    assert capsys.readouterr().out.splitlines() == ["registered 3/3 images", str(tmp_path / "out")]


def test_process_errors_exit_nonzero(tmp_path, capsys):
    from recon.cli.main import main

    assert main(["data", "process", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "recon data: error: source not found:" in err and "missing" in err
    assert not (tmp_path / "out").exists()
