"""The viewer in a real browser: Debian Chromium driven headless through Playwright, pixels asserted.

Starts :class:`recon.viewer.ViewerServer` on a free loopback port with a procedural scene (a ray-traced sphere
built only from recon.core), opens it in Chromium, and checks from screenshots that the server render is drawn
where the server put it, that switching the render mode in the GUI (a real click) changes the image, and that
dragging the view triggers new server renders (a low-resolution preview, then full resolution).
"""

import os
import threading
import time

import numpy as np
import pytest
import torch

from recon.core import Camera, RenderOutput
from recon.viewer import ViewerServer, ViewState

from .browser_utils import (
    REPO,
    VIEWPORT,
    WAIT_SECONDS,
    dismiss_notifications,
    ensure_chromium,
    free_port,
    launch_chromium,
    open_viewer,
    screenshot,
    wait_for,
)
from .procedural import orbit_cameras, sphere_render_fn

pytestmark = pytest.mark.browser
# The README's screenshot is this test's output; it is refreshed only on request (RECON_UPDATE_SCREENSHOT=1), so
# that running the suite never modifies tracked files.
SCREENSHOT = REPO / "docs" / "images" / "viewer.png"

MAX_RESOLUTION = 320  # server renders small: the test measures agreement, not detail, on a shared CPU
PIXEL_TOLERANCE = 48  # per-channel difference (of 255) between a screenshot pixel and the server image: JPEG,
# bilinear upscaling of the 320-pixel render to the 800-pixel canvas and sRGB handling in the browser
MIN_AGREEMENT = (
    0.5  # fraction of covered (sphere) pixels that must match the server image (UI panels may cover some)
)
MIN_COVERED_FRACTION = 0.03  # the sphere must cover at least this fraction of the canvas


class RecordingScene:
    """The procedural scene, remembering the cameras and states it rendered for the main tab (thread-safe).

    Renders run in one thread per browser tab; only those of the tab the tests look at are recorded.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[Camera, ViewState]] = []
        self.thread_name: str | None = None  # render thread of the main tab, set once it connected

    def __call__(self, camera: Camera, state: ViewState) -> RenderOutput:
        out = sphere_render_fn(camera, state)
        with self.lock:
            if threading.current_thread().name == self.thread_name:
                self.calls.append((camera, state))
        return out

    def last(self) -> tuple[Camera, ViewState]:
        with self.lock:
            return self.calls[-1]


def _expected(camera: Camera, state: ViewState, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The server image of ``camera`` (re-rendered at the canvas size) and its coverage mask."""
    from recon.viewer import output_to_image

    full = camera.scaled(1.0, width=shape[1], height=shape[0])
    out = sphere_render_fn(full, state)
    return output_to_image(out, state).astype(np.int16), out.alpha[0, ..., 0].numpy() > 0.5


def _agreement(shot: np.ndarray, camera: Camera, state: ViewState) -> tuple[float, float]:
    """(fraction of sphere pixels drawn as the server rendered them, fraction of the canvas the sphere covers)."""
    image, covered = _expected(camera, state, shot.shape[:2])
    close = (np.abs(shot - image).max(-1) <= PIXEL_TOLERANCE) & covered
    return float(close.sum() / max(covered.sum(), 1)), float(covered.mean())


def _settled_shot(
    page, viewer: ViewerServer, scene: RecordingScene, min_full: int
) -> tuple[np.ndarray, Camera, ViewState]:
    """Wait for the min_full-th full render to be drawn, then return a screenshot with the camera/state it used."""
    wait_for(lambda: viewer.full_render_count >= min_full, f"{min_full} full-resolution server renders")

    def drawn():
        if not scene.calls:
            return None
        camera, state = scene.last()
        if state.preview:
            return None
        shot = screenshot(page)
        agreement, _ = _agreement(shot, camera, state)
        return (shot, camera, state) if agreement >= MIN_AGREEMENT else None

    try:
        return wait_for(drawn, "the full-resolution render to appear in the browser")
    except AssertionError as exc:
        camera, state = scene.last()
        agreement, covered = _agreement(screenshot(page), camera, state)
        raise AssertionError(
            f"{exc}: {agreement:.0%} of the {covered:.1%} covered pixels agree with the server's {state.mode} "
            f"render ({viewer.full_render_count} full renders, {viewer.render_count} in all)"
        ) from exc


@pytest.fixture(scope="module")
def browser_session(tmp_path_factory):
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    scene = RecordingScene()
    viewer = ViewerServer(
        scene,
        port=free_port(),
        training_cameras=orbit_cameras(),
        view_state=ViewState(max_resolution=MAX_RESOLUTION),
        camera_path_dir=tmp_path_factory.mktemp("camera_paths"),
    )
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = open_viewer(browser, viewer)
            client_id = next(iter(viewer.viser_server.get_clients()))
            scene.thread_name = f"recon-viewer-client-{client_id}"
            viewer.refresh()  # the first frames may have come before the name was known
            dismiss_notifications(page)
            with torch.no_grad():
                yield page, viewer, scene
        finally:
            browser.close()
            viewer.close()


def test_scene_is_drawn(browser_session, tmp_path):
    page, viewer, scene = browser_session
    shot, camera, state = _settled_shot(page, viewer, scene, min_full=1)
    agreement, covered = _agreement(shot, camera, state)
    assert covered >= MIN_COVERED_FRACTION, f"the sphere covers only {covered:.1%} of the view"
    assert agreement >= MIN_AGREEMENT, f"only {agreement:.0%} of sphere pixels show the server render"
    # Not a blank or background-only canvas: the drawn pixels vary like the textured sphere does.
    _, mask = _expected(camera, state, shot.shape[:2])
    assert shot[mask].std() > 20, "the drawn region is flat"
    from PIL import Image

    target = SCREENSHOT if os.environ.get("RECON_UPDATE_SCREENSHOT") == "1" else tmp_path / "viewer.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shot.astype(np.uint8)).save(target, optimize=True)
    assert target.stat().st_size < 300_000


def test_switching_render_mode_changes_the_image(browser_session):
    page, viewer, scene = browser_session
    before, _, state_before = _settled_shot(page, viewer, scene, min_full=1)
    assert state_before.mode == "rgb"
    full_before = viewer.full_render_count
    # A real click on the dropdown and on the option, as a user would.
    page.locator(f'[id="{viewer.control_ids()["render_mode"]}"]').click()
    page.get_by_role("option", name="depth", exact=True).click()
    wait_for(lambda: viewer.view_state.mode == "depth", "the server to receive the new render mode")
    after, camera, state = _settled_shot(page, viewer, scene, min_full=full_before + 1)
    assert state.mode == "depth"
    _, covered = _expected(camera, state, after.shape[:2])
    change = np.abs(after - before).max(-1)[covered]
    assert (change > PIXEL_TOLERANCE).mean() > 0.5, "the depth view looks like the RGB view"
    viewer.set_view_state(mode="rgb")  # leave the session as found


def test_moving_the_camera_triggers_a_new_render(browser_session):
    page, viewer, scene = browser_session
    before, camera_before, _ = _settled_shot(page, viewer, scene, min_full=1)
    renders_before, full_before = viewer.render_count, viewer.full_render_count
    calls_before = len(scene.calls)
    # Drag on an empty part of the canvas (left side; the control panel is on the right) to orbit the view.
    page.mouse.move(150, 420)
    page.mouse.down()
    for i in range(1, 13):
        page.mouse.move(150 + 12 * i, 420 - 3 * i)
        time.sleep(0.03)
    page.mouse.up()
    after, camera_after, _ = _settled_shot(page, viewer, scene, min_full=full_before + 1)
    assert viewer.render_count > renders_before
    moved = float((camera_after.centers() - camera_before.centers()).norm())
    assert moved > 1e-3, "the drag did not move the browser camera"
    assert any(state.preview for _, state in scene.calls[calls_before:]), (
        "no low-resolution preview while moving"
    )
    agreement, _ = _agreement(after, camera_after, scene.last()[1])
    assert agreement >= MIN_AGREEMENT
    assert np.abs(after - before).max(-1).mean() > 2, "the view did not change on screen"


def test_second_tab_and_disconnect(browser_session):
    """Two tabs watch at once; closing one mid-render breaks nothing for the other."""
    page, viewer, scene = browser_session
    context = page.context
    second = context.new_page()
    second.goto(viewer.url)
    assert viewer.wait_for_clients(2, timeout=WAIT_SECONDS)
    wait_for(lambda: len(viewer._loops) == 2, "a render loop for the second tab")
    second.close()  # probably mid-render: its loop must stop quietly
    page.bring_to_front()  # background tabs do not repaint
    wait_for(lambda: viewer.num_clients() == 1, "the server to notice the closed tab")
    full_before = viewer.full_render_count
    viewer.refresh()
    shot, camera, state = _settled_shot(page, viewer, scene, min_full=full_before + 1)
    assert _agreement(shot, camera, state)[0] >= MIN_AGREEMENT


def test_clicking_a_frustum_moves_the_view_to_it(browser_session):
    """Click the thumbnail of a training camera's frustum: the browser camera jumps to that camera."""
    page, viewer, scene = browser_session
    _settled_shot(page, viewer, scene, min_full=1)
    client = next(iter(viewer.viser_server.get_clients().values()))
    from recon.viewer import viser_to_camera

    cam = client.camera
    view = viser_to_camera(
        cam.wxyz, cam.position, fov_y=cam.fov, width=VIEWPORT["width"], height=VIEWPORT["height"]
    )
    # Where viser draws a frustum's thumbnail: the image plane at depth scale / cbrt(tan(fov/2)^2 * aspect / 3).
    views = orbit_cameras()
    target = None
    for index, training in enumerate(views):
        if index == viewer._hidden_frustum:
            continue
        c = training.camera
        half = c.height / (2 * float(c.K[0, 1, 1]))
        depth = viewer.frustum_scale / (half * half * (c.width / c.height) / 3) ** (1 / 3)
        centre = c.centers()[0] + depth * c.T_world_cam()[0, :3, 2]
        uv, z = view.project(centre[None, None])
        u, v = float(uv[0, 0, 0]), float(uv[0, 0, 1])
        if (
            float(z) > 0 and 20 < u < 440 and 170 < v < VIEWPORT["height"] - 20
        ):  # clear of the panel and notices
            target = (index, u, v)
            break
    assert target is not None, "no training camera frustum is visible to click"
    index, u, v = target
    page.mouse.click(u, v)
    expected = views[index].camera.centers()[0].double()
    wait_for(
        lambda: float((torch.tensor(client.camera.position) - expected).norm()) < 1e-3,
        f"the view to move to training camera {index}",
    )
    assert viewer._hidden_frustum == index


def test_camera_path_buttons_write_a_trajectory(browser_session):
    """Add two keyframes (moving the view between them) and save, through the GUI; the file reads back."""
    from recon.viewer import read_camera_path

    page, viewer, scene = browser_session
    page.get_by_text("Camera path", exact=True).click()  # the folder starts collapsed
    add = page.get_by_role("button", name="Add keyframe")
    add.click()
    wait_for(lambda: "1 keyframe" in viewer._keyframe_markdown.content, "the first keyframe")
    page.mouse.move(150, 420)
    page.mouse.down()
    page.mouse.move(230, 400, steps=8)
    page.mouse.up()
    time.sleep(0.5)
    add.click()
    wait_for(lambda: "2 keyframe" in viewer._keyframe_markdown.content, "the second keyframe")
    page.get_by_role("button", name="Save camera path").click()
    path = wait_for(lambda: viewer.last_camera_path, "the camera path to be written")
    keyframes, fps = read_camera_path(path)
    assert len(keyframes) == 2 and fps == 30.0
    moved = (keyframes[1].camera().centers() - keyframes[0].camera().centers()).norm()
    assert float(moved) > 1e-3


def test_mesh_file_is_shown_in_the_browser(browser_session, tmp_path):
    """``recon view MESH`` (serve_mesh): the mesh shows in the browser, rendered by the server with the mesh
    rasterizer (the same code as ``recon eval --mesh``) and drawn client-side as geometry."""
    import trimesh

    from recon.cli.view import serve_mesh

    page, _, _ = browser_session
    path = tmp_path / "sphere.ply"
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = np.tile([200, 40, 40, 255], (len(sphere.vertices), 1)).astype(np.uint8)
    sphere.export(path)
    viewer = serve_mesh(path, port=free_port())
    tab = (
        page  # the last test: reuse the tab (a new one would compile WebGL shaders again, slowly in software)
    )
    try:
        tab.goto(viewer.url)
        assert viewer.wait_for_clients(1, timeout=WAIT_SECONDS)

        def red_fraction():
            shot = screenshot(tab)
            red = (shot[..., 0] > shot[..., 1] + 60) & (shot[..., 0] > shot[..., 2] + 60)
            return float(red.mean()) if red.mean() > 0.02 else None

        fraction = wait_for(red_fraction, "the red mesh to appear")
        assert fraction > 0.02
        assert wait_for(lambda: viewer.render_count > 0, "a server render of the mesh")  # the rasterizer ran
    finally:
        viewer.close()
