"""recon bench: a tiny bench (triangles, nerf and a method that fails) on a built-in synthetic scene, its
report.json, --resume, and report.html in headless Chromium; plus the runner's pieces on their own."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.bench.html import mesh_json
from recon.bench.report import psnr_curve
from recon.bench.runner import run_child
from recon.cli import bench as bench_cli
from recon.core import ReconError

TRIANGLES = ("triangles=--scene.random-init-points 150 --scene.max-init-points 150 --scene.hull-resolution 24 "
             "--strategy.min-every-steps 10")  # fmt: skip
NERF = ("nerf=--scene.grid-levels 4 --scene.grid-log2-size 12 --scene.grid-max-resolution 64 "
        "--scene.occupancy-resolution 16 --scene.render-step-size 0.05 --scene.mesh-resolution 32 "
        "--strategy.warmup-steps 4 --rays-per-batch 128")  # fmt: skip
BOGUS = "nosuchmethod"


def _bench_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--methods", f"triangles,nerf,{BOGUS}", "--minutes", "0.03", "--output", str(out),
        "--device", "cpu", "--threads", "1", "--no-eval-geometry", "--eval-every-minutes", "0.01", "--eval-images", "1",
        "--train-args", TRIANGLES, "--train-args", NERF, "--export-args", "triangles=--all-triangles", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny bench, run through the command module: (output folder, report, dataset folder)."""
    from recon.datasets.synthetic import write_scene

    root = tmp_path_factory.mktemp("bench")
    data = write_scene("object", root / "data", views=6, test_views=2, resolution=24)
    out = root / "out"
    with pytest.raises(ReconError, match="--train-args"):  # the bogus method is only known to recon train
        bench_cli.main(_bench_argv(data, out, "--train-args", f"{BOGUS}x=--steps 1"))
    assert bench_cli.main(_bench_argv(data, out)) == 0
    return out, json.loads((out / "report.json").read_text()), data


def _row(report, method):
    return next(r for r in report["methods"] if r["method"] == method)


@pytest.mark.parametrize("method", ["triangles", "nerf"])
def test_finished_methods_have_every_field(bench, method):
    out, report, data = bench
    row = _row(report, method)
    assert row["status"] == "ok", row.get("failure")
    assert 0 < row["psnr"] < 60 and 0 < row["ssim"] <= 1
    assert row["lpips"] is not None or row["lpips_unavailable_reason"]
    assert row["mesh_psnr"] is not None or row["mesh_psnr_unavailable_reason"]
    assert row["steps"] > 0 and 0 < row["train_seconds"] < 60
    assert row["peak_rss_bytes"] > 50 * 2**20  # a python process with torch is far above 50 MiB
    assert row["train_cpu_seconds"] > 0  # the training process's own CPU time (what it got under load)
    assert row["model_bytes"] == Path(row["model_file"]).stat().st_size > 0
    assert row["mesh_faces"] > 0 and row["mesh_vertices"] > 0
    assert report["gt_mesh"] and row["chamfer_l1"] > 0 and 0 <= row["fscores"][0]["fscore"] <= 1
    assert row["seconds_per_image"] > 0 and row["device"] == "cpu" and row["backend"]
    assert row["psnr_curve"] and all(p["train_seconds"] >= 0 for p in row["psnr_curve"])
    assert [s["name"] for s in row["steps_run"]] == ["train", "eval", "export"]
    assert "rgb" in report["grid_rows"][method] and report["grid_views"]


def test_failing_method_has_a_row_with_the_reason(bench):
    _, report, _ = bench
    row = _row(report, BOGUS)
    assert row["status"] == "failed" and row["failure"]["step"] == "train"
    assert row["failure"]["exit_status"] != 0 and BOGUS in row["failure"]["stderr_tail"]
    assert row["psnr"] is None and row["geometry_unavailable_reason"]
    assert [r["method"] for r in report["methods"]] == ["triangles", "nerf", BOGUS]


def test_resume_reuses_finished_runs(bench):
    out, report, data = bench
    logs = {m: (out / "logs" / f"{m}.train.log").stat().st_mtime_ns for m in ("triangles", "nerf")}
    with pytest.raises(ReconError, match="--resume"):
        bench_cli.main(_bench_argv(data, out))  # the output holds runs: refuse to start over them
    assert bench_cli.main(_bench_argv(data, out, "--resume")) == 0
    again = json.loads((out / "report.json").read_text())
    for method in ("triangles", "nerf"):
        row = _row(again, method)
        assert row["reused"] and row["status"] == "ok"
        assert (out / "logs" / f"{method}.train.log").stat().st_mtime_ns == logs[method]  # not trained again
        assert row["psnr"] == _row(report, method)["psnr"] and row["peak_rss_bytes"] == _row(report, method)[
            "peak_rss_bytes"]  # fmt: skip
    assert _row(again, BOGUS)["status"] == "failed" and not _row(again, BOGUS)["reused"]


def test_html_renders_with_every_image_in_chromium(bench):
    from tests.viewer.browser_utils import ensure_chromium, launch_chromium

    out, report, _ = bench
    page_html = (out / "report.html").read_text()
    assert "http://" not in page_html and "https://" not in page_html  # self-contained
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            drawn = page.eval_on_selector_all("canvas.mesh-view", "els => els.map(e => e.dataset.drawn)")
        finally:
            browser.close()
    views = len(report["grid_views"])
    # PSNR plot + ground truth row + per method: rgb, depth and normals rows where rendered
    expected = 1 + views + views * sum(len(rows) for rows in report["grid_rows"].values())
    assert len(images) == expected and all(done and width > 0 for done, width in images)
    assert drawn == ["1", "1"]  # triangles and nerf meshes, both drawn


def test_run_child_reports_exit_status_and_its_own_peak_memory(tmp_path):
    code = (
        "import sys; block = bytearray(200 * 2**20); block[::4096] = b'x' * len(block[::4096]); sys.exit(3)"
    )
    step = run_child("probe", [sys.executable, "-c", code], tmp_path / "probe.log", timeout_s=120)
    assert step.returncode == 3 and not step.ok
    assert step.max_rss_bytes > 200 * 2**20
    small = run_child("small", [sys.executable, "-c", "print('hi')"], tmp_path / "small.log", timeout_s=120)
    # its own peak, not the test process's (torch loaded: far above 100 MiB) that it was started from
    assert small.ok and small.max_rss_bytes < 100 * 2**20 and "hi" in small.stderr_tail
    assert json.loads((tmp_path / "probe.json").read_text())["exit_status"] == 3


def test_run_child_kills_a_hung_process(tmp_path):
    step = run_child(
        "hang", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "h.log", timeout_s=1
    )
    assert step.returncode == 124 and "killed after" in step.stderr_tail


def test_runner_continues_interrupted_runs_and_skips_finished_ones(tmp_path, monkeypatch):
    from recon.bench import runner

    calls = []

    def fake_child(name, argv, log, timeout_s):
        calls.append((name, argv))
        return runner.StepResult(name, argv, 0, 0.0, 1)

    monkeypatch.setattr(runner, "run_child", fake_child)
    s = runner.BenchSettings(data=tmp_path / "data", output=tmp_path / "out", minutes=1.0)
    runner.run_method("nerf", s, resume=True, mesh_flag=True)  # nothing there yet: a fresh run
    assert [c[0] for c in calls] == ["train", "eval", "export"]
    assert "--data" in calls[0][1] and "--resume" not in calls[0][1] and "--mesh" in calls[1][1]
    run_dir = s.run_dir("nerf")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: nerf\n")
    calls.clear()
    runner.run_method("nerf", s, resume=True, mesh_flag=False)  # interrupted: continue it
    assert calls[0][1][calls[0][1].index("train") :][:4] == ["train", "nerf", "--resume", "--run-dir"]
    assert "--mesh" not in calls[1][1]
    (run_dir / "eval.json").write_text("{}")
    (run_dir / "exports").mkdir()
    (run_dir / "exports" / runner.EXPORT_NAME).write_bytes(b"glb")
    calls.clear()
    done = runner.run_method("nerf", s, resume=True, mesh_flag=False)  # finished: reused
    assert calls == [] and done.reused and done.status == "ok"


def test_psnr_curve_reads_periodic_evaluations(tmp_path):
    lines = [{"step": 1, "loss": 0.5, "train_seconds": 0.5}, {"step": 2, "eval_psnr": 12.5, "train_seconds": 1.0},
             {"step": 4, "eval_psnr": 14.0, "train_seconds": 2.5}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert psnr_curve(tmp_path) == [{"train_seconds": 1.0, "step": 2, "psnr": 12.5},
                                    {"train_seconds": 2.5, "step": 4, "psnr": 14.0}]  # fmt: skip


def test_mesh_json_round_trips_and_subsamples(tmp_path):
    import base64

    import trimesh

    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([[255, 0, 0, 255]], (len(box.vertices), 1))
    path = tmp_path / "box.glb"
    box.export(path)
    data, shown = mesh_json(path)
    mesh = json.loads(data)
    positions = np.frombuffer(base64.b64decode(mesh["positions"]), dtype="<f4").reshape(-1, 3)
    indices = np.frombuffer(base64.b64decode(mesh["indices"]), dtype="<u4").reshape(-1, 3)
    assert shown == len(indices) == 12 and indices.max() < len(positions)
    assert np.allclose(np.sort(np.abs(positions).max(0)), 0.5)
    assert mesh["colors"] is not None
    assert mesh_json(path, max_faces=5)[1] == 5


def test_mesh_json_reads_recon_glb_colours_as_srgb(tmp_path):
    import base64

    from recon.export.gltf import GlbMesh, glb_bytes

    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    linear = np.array([[0.0, 0.2140, 1.0]] * 3, dtype=np.float32)  # sRGB 0, ~128, 255
    glb = GlbMesh(positions=positions, normals=np.tile([0, 0, 1], (3, 1)).astype(np.float32),
                  indices=np.array([0, 1, 2], dtype=np.uint32), colors_linear=linear, uv=None, png=None,
                  double_sided=True)  # fmt: skip
    path = tmp_path / "tri.glb"
    path.write_bytes(glb_bytes(glb))
    mesh = json.loads(mesh_json(path)[0])
    colors = np.frombuffer(base64.b64decode(mesh["colors"]), dtype=np.uint8).reshape(-1, 3)
    assert colors[0, 0] == 0 and abs(int(colors[0, 1]) - 128) <= 1 and colors[0, 2] == 255


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--data", "/nonexistent/data"], "--data"),
        (["--data", ".", "--methods", "nerf,nerf"], "twice"),
        (["--data", ".", "--minutes", "0"], "--minutes"),
        (["--data", ".", "--methods", "nerf", "--export-args", "nerf"], "--export-args"),
        (["--data", ".", "--methods", "nerf", "--device", "cuda:0,cuda:0"], "--device"),
    ],
)
def test_bad_arguments_name_the_flag(argv, match, tmp_path):
    with pytest.raises(ReconError, match=match):
        bench_cli.main([*argv, "--output", str(tmp_path / "out")])


def test_several_devices_run_methods_side_by_side(tmp_path, monkeypatch):
    """``--device a,b``: each method runs on a free device, two at a time; rows keep the order of --methods."""
    import threading
    import time

    import recon.bench as bench

    lock, active, seen = threading.Lock(), set(), []
    both_started = threading.Barrier(2, timeout=30)  # the first two methods must run at the same time

    def fake_run_method(method, settings, *, resume, mesh_flag):
        with lock:
            assert settings.device not in active  # a device runs one method at a time
            active.add(settings.device)
            seen.append((method, settings.device))
            first_two = len(seen) <= 2
        if first_two:
            both_started.wait()
        time.sleep(0.05)
        with lock:
            active.discard(settings.device)
        return bench.MethodRun(method, settings.run_dir(method))

    monkeypatch.setattr(bench, "run_method", fake_run_method)
    monkeypatch.setattr(bench, "eval_has_mesh_flag", lambda: True)
    monkeypatch.setattr(bench, "write_outputs", lambda settings, runs, mesh_flag: {"runs": runs})
    s = bench.BenchSettings(
        data=tmp_path / "data", output=tmp_path / "out", minutes=1.0, device="cuda:0,cuda:1"
    )
    runs = bench.run_bench(s, ["nerf", "neus", "triangles", "sparseflex"], say=lambda _: None)["runs"]
    assert [r.method for r in runs] == ["nerf", "neus", "triangles", "sparseflex"]
    assert {d for _, d in seen} == {"cuda:0", "cuda:1"} and len(seen) == 4
    with pytest.raises(ValueError, match="distinct"):
        bench.bench_devices("cuda:0,cuda:0")
