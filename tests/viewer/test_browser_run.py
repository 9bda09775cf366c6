"""``recon view RUN_DIR`` end to end in a real browser: a built-in synthetic scene, a short ``recon train
triangles`` run, the viewer on its newest checkpoint (server-side renders by the triangle-splat renderer), and
Chromium checking that the render is drawn and that switching the render mode (a real click) changes it."""

import contextlib
import io
import threading
import time

import numpy as np
import pytest

from .browser_utils import (
    dismiss_notifications,
    ensure_chromium,
    free_port,
    launch_chromium,
    open_viewer,
    screenshot,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIVE_STEPS = 16  # live-training test: long enough to watch, pause and resume
TRAIN_STEPS = 10  # enough for a checkpoint of a real run; the test checks the viewer, not the reconstruction
RESOLUTION = 48  # synthetic images are tiny: CPU training and rendering stay within seconds
MAX_RESOLUTION = 160
PANEL_FRACTION = 0.55  # the control panel floats over the right of the canvas: compare the left part only
BACKGROUND_DELTA = 30  # a frame pixel this far from the background colour shows the scene
PIXEL_TOLERANCE = 48  # screenshot vs the frame the server sent: JPEG, upscaling and downsampling back
MIN_AGREEMENT = 0.5
MIN_SCENE_FRACTION = 0.01


def _compare(
    shot: np.ndarray, frame: np.ndarray, background: tuple[float, float, float]
) -> tuple[float, float]:
    """(agreement on scene pixels, scene fraction) between a screenshot and the frame sent, at the frame's size."""
    from PIL import Image

    h, w = frame.shape[:2]
    small = np.asarray(Image.fromarray(shot.astype(np.uint8)).resize((w, h), Image.BOX)).astype(np.int16)
    frame = frame.astype(np.int16)
    left = np.zeros((h, w), bool)
    left[:, : int(w * PANEL_FRACTION)] = True
    bg = np.array(background) * 255
    scene = (np.abs(frame - bg).max(-1) > BACKGROUND_DELTA) & left
    close = (np.abs(small - frame).max(-1) <= PIXEL_TOLERANCE) & scene
    return float(close.sum() / max(scene.sum(), 1)), float(scene.sum() / left.sum())


@pytest.fixture(scope="module")
def browser():
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory):
    from recon.datasets.synthetic import write_scene

    root = tmp_path_factory.mktemp("viewer_run")
    return write_scene("object", root / "object", views=8, test_views=2, resolution=RESOLUTION, seed=0)


def _open(browser, viewer):
    page = open_viewer(browser, viewer)
    dismiss_notifications(page)
    return page


@pytest.fixture(scope="module")
def run_viewer(browser, scene_data):
    from recon.cli import train as train_cli
    from recon.cli.view import serve_run

    run_dir = scene_data.parent / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = train_cli.main(
            ["triangles", "--data", str(scene_data), "--steps", str(TRAIN_STEPS), "--run-dir", str(run_dir),
             "--no-progress", "--no-final-eval", "--device", "cpu"]
        )  # fmt: skip
    assert code == 0 and out.getvalue().strip().splitlines()[-1] == str(run_dir)
    viewer = serve_run(run_dir, port=free_port(), device="cpu", max_resolution=MAX_RESOLUTION)
    try:
        yield _open(browser, viewer), viewer
    finally:
        viewer.close()


def _drawn(page, viewer, *, mode: str, min_full: int):
    wait_for(lambda: viewer.full_render_count >= min_full, f"{min_full} full renders", timeout=60.0)

    def agreeing():
        frame = viewer.last_frame
        if frame is None or viewer.view_state.mode != mode:
            return None
        agreement, fraction = _compare(screenshot(page), frame, viewer.view_state.background)
        return (
            (agreement, fraction, frame)
            if agreement >= MIN_AGREEMENT and fraction >= MIN_SCENE_FRACTION
            else None
        )

    return wait_for(agreeing, f"the {mode} render of the run to appear in the browser", timeout=60.0)


def test_run_is_rendered_and_modes_switch(run_viewer):
    page, viewer = run_viewer
    assert len(viewer._frusta) == 8 and "native mesh" in viewer._geometry_handles
    agreement, fraction, rgb_frame = _drawn(page, viewer, mode="rgb", min_full=1)
    assert rgb_frame.std() > 5, "the server render is flat"
    full = viewer.full_render_count
    page.locator(f'[id="{viewer.control_ids()["render_mode"]}"]').click()
    page.get_by_role("option", name="normals", exact=True).click()
    _, _, normals_frame = _drawn(page, viewer, mode="normals", min_full=full + 1)
    assert normals_frame.shape == rgb_frame.shape
    changed = np.abs(normals_frame.astype(np.int16) - rgb_frame.astype(np.int16)).max(-1) > PIXEL_TOLERANCE
    assert changed.mean() > MIN_SCENE_FRACTION, "the normals view looks like the RGB view"


def test_stats_panel_shows_the_checkpoint(run_viewer):
    _, viewer = run_viewer
    text = viewer._stats_markdown.content
    assert f"**Step**: {TRAIN_STEPS}" in text and "Primitives" in text and "PSNR" in text


def test_export_button_does_what_recon_export_does(run_viewer):
    """Click "Export mesh": the viewer writes a fresh GLB of the run's scene into RUN_DIR/exports (never over an
    existing file), or shows the error ``recon export`` gives (after a few steps no triangle may be opaque enough
    for the default --min-opacity)."""
    import trimesh

    from recon.cli.export import ExportArgs, export_run
    from recon.core import ReconError

    page, viewer = run_viewer
    before = viewer._export_markdown.content
    page.get_by_role("button", name="Export mesh").click()
    wait_for(lambda: viewer._export_markdown.content != before, "the export result", timeout=60.0)
    run_dir = viewer._camera_path_dir.parent
    shown = viewer._export_markdown.content
    path = viewer.last_export_path
    if path is None:
        with pytest.raises(ReconError) as exc:
            export_run(ExportArgs(run_dir=str(run_dir), format="glb", output=str(run_dir / "probe.glb")))
        assert str(exc.value) in shown
        return
    assert path.suffix == ".glb" and path.parent == run_dir / "exports" and str(path) in shown
    assert len(trimesh.load(path, force="mesh").faces) > 0


def test_live_training_view_and_pause(browser, scene_data, tmp_path):
    """``recon train --viewer`` machinery (attach_training_viewer) on a real trainer in a background thread: the
    view follows training (redrawn as steps advance), the panel shows progress, and Pause/Resume (real clicks)
    stop and restart the optimisation."""
    from dataclasses import replace

    import torch

    from recon.cli.view import attach_training_viewer
    from recon.datasets import load_dataset
    from recon.runs import RunDir
    from recon.train.methods import get_method
    from recon.train.run_io import preset_config
    from recon.train.trainer import Trainer

    method = get_method("triangles")
    cfg = replace(
        preset_config(method, "triangles_cpu"), method="triangles", data=str(scene_data), steps=LIVE_STEPS,
        progress=False, log_every=1, final_eval=False,
    )  # fmt: skip
    run = RunDir(tmp_path / "live")
    run.ensure_dirs()
    run.write_config(cfg)
    trainer = Trainer(cfg, method, load_dataset(cfg.data), run, device=torch.device("cpu"))
    viewer = attach_training_viewer(trainer, port=free_port())
    viewer.set_view_state(max_resolution=MAX_RESOLUTION)
    errors: list[BaseException] = []

    def train():
        try:
            trainer.train()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=train, daemon=True)
    try:
        page = _open(browser, viewer)
        _, _, first = _drawn(page, viewer, mode="rgb", min_full=1)  # the initial scene, before any step
        page.get_by_role("button", name="Pause training").click()
        wait_for(viewer.is_paused, "the pause click to reach the server")
        thread.start()
        time.sleep(1.5)
        assert trainer.step == 0 and not errors, "training stepped while paused"
        renders = viewer.full_render_count
        page.get_by_role("button", name="Resume training").click()
        wait_for(lambda: trainer.step >= 2 or errors, "training to resume", timeout=60.0)
        assert not errors, errors
        wait_for(lambda: viewer.full_render_count > renders, "a redraw as training advances", timeout=60.0)
        text = viewer._stats_markdown.content
        assert "**Step**" in text and "Steps/s" in text and "PSNR" in text
        thread.join(timeout=120)
        _, _, last = _drawn(page, viewer, mode="rgb", min_full=renders + 1)
        assert np.abs(last.astype(np.int16) - first.astype(np.int16)).max() > 0, (
            "the view did not follow training"
        )
    finally:
        viewer.set_paused(False)
        thread.join(timeout=120)
        viewer.close()
    assert not errors, errors
    assert trainer.step == LIVE_STEPS
