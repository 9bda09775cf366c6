"""``recon export``: writes only what was asked, refuses to overwrite without --force, works from any working
directory (the dataset frame comes from the run, a relative dataset path is found from the run folder)."""

import json
import os
import shutil
from pathlib import Path

import plyfile
import pytest

from recon.cli import export as export_cli
from recon.cli import train as train_cli
from recon.core import ReconError

TINY = ["--scene.random-init-points", "150", "--scene.max-init-points", "150", "--scene.hull-resolution", "24",
        "--strategy.min-every-steps", "10", "--no-progress", "--threads", "1", "--no-final-eval",
        "--scene.sh-degree", "0", "--scene.init-opacity", "0.9"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-step triangles run on a tiny synthetic scene, trained with a RELATIVE --data path."""
    from recon.datasets.synthetic import write_scene

    root = tmp_path_factory.mktemp("project")
    write_scene("object", root / "data" / "object", views=6, test_views=2, resolution=32)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        code = train_cli.main(
            ["triangles", "--data", "data/object", "--steps", "2", "--run-dir", "runs/r", *TINY]
        )
    finally:
        os.chdir(cwd)
    assert code == 0
    return root / "runs" / "r"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """Run the command from an unrelated working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _export(argv, capsys) -> list[Path]:
    assert export_cli.main(argv) == 0
    return [Path(line) for line in capsys.readouterr().out.strip().splitlines()]


def test_writes_only_the_requested_file_and_never_clobbers(run_dir, elsewhere, capsys):
    out = elsewhere / "mesh.glb"
    assert _export([str(run_dir), "--format", "glb", "--all-triangles", "--output", str(out)], capsys) == [
        out
    ]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mesh.glb"]
    before = out.read_bytes()
    with pytest.raises(ReconError, match=r"mesh\.glb.*--force"):
        export_cli.main([str(run_dir), "--format", "glb", "--output", str(out)])
    assert out.read_bytes() == before
    assert _export([str(run_dir), "--format", "glb", "--all-triangles", "--output", str(out), "--force"],
                   capsys) == [out]  # fmt: skip


def test_ply_mesh_has_no_splat_sibling_and_splat_ply_on_request(run_dir, elsewhere, capsys):
    folder = elsewhere / "out"
    mesh = _export(
        [str(run_dir), "--format", "ply", "--all-triangles", "--output", str(folder / "m.ply")], capsys
    )
    assert [p.name for p in folder.iterdir()] == ["m.ply"] and mesh == [folder / "m.ply"]
    splats = _export([str(run_dir), "--format", "splat-ply", "--all-triangles", "--output", str(folder / "s.ply")],
                     capsys)  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["m.ply", "s.ply"]
    header = plyfile.PlyData.read(str(splats[0])).comments
    assert any("f_rest channel_major" in c for c in header)


def test_surface_and_cameras_from_another_directory(run_dir, elsewhere, capsys):
    surface = _export([str(run_dir), "--format", "obj", "--mesh", "surface", "--resolution", "32",
                       "--output", str(elsewhere / "s.obj")], capsys)  # fmt: skip
    assert surface[0].stat().st_size > 0
    cams = _export([str(run_dir), "--format", "cameras", "--output", str(elsewhere / "c.json")], capsys)
    doc = json.loads(cams[0].read_text())
    assert doc["frame"] == "original" and len(doc["cameras"]) == 8  # 6 train + 2 test views


def test_default_output_goes_to_the_run_exports(run_dir, elsewhere, capsys):
    written = _export([str(run_dir), "--format", "3dgs-ply", "--all-triangles"], capsys)
    assert written == [run_dir / "exports" / "gaussians_original.ply"]
    with pytest.raises(ReconError, match="gaussians_original.ply"):
        export_cli.main([str(run_dir), "--format", "3dgs-ply"])


def test_native_format_writes_the_methods_own_file(run_dir, elsewhere, capsys):
    """--format native: triangles' write_native (every triangle, splat PLY, normalised frame) into a folder."""
    from recon.export.splat_ply import scene_from_splat_ply
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene

    folder = elsewhere / "native"
    written = _export([str(run_dir), "--format", "native", "--output", str(folder)], capsys)
    assert written == [folder / "splats_normalized.ply"] and [p.name for p in folder.iterdir()] == [
        written[0].name
    ]
    run, method, cfg = open_run_config(run_dir)
    scene, _ = load_scene(method, cfg, run)
    reloaded = scene_from_splat_ply(written[0])
    assert reloaded.num_primitives() == scene.num_primitives() > 0
    with pytest.raises(ReconError, match=r"not empty; pass --force"):
        export_cli.main([str(run_dir), "--format", "native", "--output", str(folder)])
    assert (
        _export([str(run_dir), "--format", "native", "--output", str(folder), "--force"], capsys) == written
    )


def test_native_format_of_a_method_without_one_names_the_formats_it_offers(run_dir, elsewhere):
    from dataclasses import replace

    from recon.train.run_io import open_run_config

    run, method, cfg = open_run_config(run_dir)
    args = export_cli.ExportArgs(str(run_dir), format="native")
    with pytest.raises(
        ReconError, match=r"method 'triangles' has no native format; it offers --format ply, obj"
    ):
        export_cli.export_native(args, run, replace(method, write_native=None), cfg)
    assert not (run_dir / "exports" / "native").exists()


def test_dataset_found_from_the_run_folder_without_dataset_json(run_dir, tmp_path, monkeypatch):
    copy = run_dir.parent / "copy"
    shutil.copytree(run_dir, copy)
    try:
        (copy / "dataset.json").unlink()
        monkeypatch.chdir(tmp_path)
        run, _, cfg = export_cli.open_run_config(copy)
        frame = export_cli.run_dataset_frame(run, cfg)
        assert (
            frame is not None and len(frame.cameras) == 8
        )  # "data/object" resolved against the run's parents
    finally:
        shutil.rmtree(copy)


def test_resolve_dataset_path(tmp_path, monkeypatch):
    (tmp_path / "proj" / "data" / "d").mkdir(parents=True)
    run = tmp_path / "proj" / "outputs" / "exp" / "triangles" / "stamp"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert export_cli.resolve_dataset_path(run, "data/d") == tmp_path / "proj" / "data" / "d"
    assert (
        export_cli.resolve_dataset_path(run, str(tmp_path / "proj" / "data" / "d"))
        == tmp_path / "proj/data/d"
    )
    assert export_cli.resolve_dataset_path(run, "data/missing") is None
    assert export_cli.resolve_dataset_path(run, "d", created_in=str(tmp_path / "proj" / "data")) == (
        tmp_path / "proj" / "data" / "d"
    )


def test_command_line_refusal_is_one_clear_message(run_dir, tmp_path, recon_cli):
    out = tmp_path / "soup.ply"
    first = recon_cli("export", str(run_dir), "--all-triangles", "--output", str(out), cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.strip() == str(out)
    second = recon_cli("export", str(run_dir), "--all-triangles", "--output", str(out), cwd=tmp_path)
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert str(out) in second.stderr and "--force" in second.stderr


def test_viewer_export_button_writes_fresh_files(run_dir):
    from recon.cli import view

    first, second = view._export_run(run_dir), view._export_run(run_dir)
    assert first != second and first.is_file() and second.is_file() and first.suffix == ".glb"
    first.unlink()
    second.unlink()


def test_live_training_export_uses_the_in_memory_scene_under_the_lock(run_dir, tmp_path, monkeypatch):
    import threading
    from types import SimpleNamespace

    import recon.export.service as service
    from recon.cli import view
    from recon.datasets import load_dataset
    from recon.runs import RunDir

    from ..export.procedural import sphere_scene

    lock = threading.Lock()
    seen = []
    original = service.export_scene

    def recording_export_scene(scene, frame, request):
        seen.append((scene, lock.locked()))
        return original(scene, frame, request)

    monkeypatch.setattr(service, "export_scene", recording_export_scene)
    scene = sphere_scene(1)  # not the run's checkpoint: the export must use this live object
    trainer = SimpleNamespace(scene=scene, dataset=load_dataset(run_dir.parent.parent / "data" / "object"),
                              run=RunDir(tmp_path), cfg=SimpleNamespace(backend="auto"), step=7)  # fmt: skip
    path = view._export_training_snapshot(trainer, lock)
    assert path == tmp_path / "exports" / "native_original_step7.glb" and path.is_file()
    assert seen == [(scene, True)]
    assert not (tmp_path / "checkpoints").exists()  # no checkpoint round trip
