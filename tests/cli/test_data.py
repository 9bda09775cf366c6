"""recon data: info and synth, end to end through the command line."""

import json

import pytest

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
            "16", "--seed", "3"]  # fmt: skip
    assert data_cli.main(argv) == 0
    assert calls[-1] == ("tabletop", tmp_path, {"views": 7, "test_views": 2, "resolution": 16, "seed": 3})
    mesh = tmp_path / "m.obj"
    assert (
        data_cli.main(["synth", "mesh", "--mesh", str(mesh), "--output", str(tmp_path), "--up-axis", "z"])
        == 0
    )
    assert calls[-1] == (
        mesh,
        tmp_path,
        {"views": 100, "test_views": 50, "resolution": 200, "seed": 0, "up_axis": "z"},
    )
    assert capsys.readouterr().out.splitlines() == [str(tmp_path), str(tmp_path)]
    with pytest.raises(data_cli.ReconError, match="--mesh is only used with NAME 'mesh'"):
        data_cli.main(["synth", "object", "--mesh", str(mesh), "--output", str(tmp_path)])


def test_info_missing_path_names_it(tmp_path):
    with pytest.raises(
        data_cli.ReconError, match=r"no_such: no such file or directory \(expected a dataset folder\)"
    ):
        data_cli.main(["info", str(tmp_path / "no_such")])
