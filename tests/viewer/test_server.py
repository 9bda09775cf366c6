"""ViewerServer without a browser: binding, controls, training panel, pause, export, camera paths, geometry."""

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.core import Mesh, ReconError
from recon.viewer import PointCloud, TrainingStats, ViewerServer, is_loopback, read_camera_path
from tests.typecheck import assert_rejected, typecheck_disabled

from .procedural import orbit_cameras, sphere_render_fn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.fixture
def viewer(tmp_path):
    exported = tmp_path / "exports" / "mesh.ply"
    paused = []

    def export() -> Path:
        exported.parent.mkdir(parents=True, exist_ok=True)
        exported.write_text("ply")
        return exported

    server = ViewerServer(
        sphere_render_fn,
        port=_free_port(),
        training_cameras=orbit_cameras(4, size=16),
        geometry={"points": PointCloud(points=torch.rand(50, 3)), "soup": _soup()},
        on_export=export,
        on_pause=paused.append,
        camera_path_dir=tmp_path / "paths",
        training=True,
    )
    server.paused_calls = paused  # type: ignore[attr-defined]
    yield server
    server.close()


def _soup() -> Mesh:
    vertices = torch.rand(6, 3)
    faces = torch.arange(6).reshape(2, 3)
    return Mesh(vertices=vertices, faces=faces, face_colors=torch.rand(2, 3))


def test_binds_loopback_by_default(viewer):
    assert viewer.host == "127.0.0.1"
    assert viewer.url == f"http://127.0.0.1:{viewer.port}"
    with socket.create_connection(("127.0.0.1", viewer.port), timeout=5):
        pass


def test_non_loopback_host_warns(monkeypatch, caplog):
    """Binding elsewhere logs a warning (checked without opening a public socket: viser is stubbed)."""
    import recon.viewer.server as server_module

    class Refuse(Exception):
        pass

    def refuse(**kwargs):
        raise Refuse(kwargs["host"])

    monkeypatch.setattr(server_module.viser, "ViserServer", refuse)
    with caplog.at_level("WARNING", logger="recon.viewer"), pytest.raises(Refuse):
        ViewerServer(None, host="0.0.0.0", port=1)
    assert "0.0.0.0" in caplog.text and "SSH port forwarding" in caplog.text


def test_view_state_controls(viewer):
    state = viewer.set_view_state(mode="depth", background=(0.0, 0.0, 0.0), max_resolution=256)
    assert state == viewer.view_state
    assert (state.mode, state.background, state.max_resolution) == ("depth", (0.0, 0.0, 0.0), 256)
    assert viewer._mode_dropdown.value == "depth" and tuple(viewer._background_rgb.value) == (0, 0, 0)
    assert_rejected(lambda: viewer.set_view_state(mode="points"), match="mode")
    assert set(viewer.control_ids()) == {"render_mode", "colormap", "max_resolution", "server_render"}


def test_training_panel(viewer):
    viewer.update_stats(
        TrainingStats(
            step=120, max_steps=1000, loss=0.0123, psnr=27.5, num_primitives=4096, steps_per_second=12.5
        )
    )
    text = viewer._stats_markdown.content
    for expected in ("120 / 1000", "0.01230", "27.50 dB", "4,096", "12.50"):
        assert expected in text


def test_pause_resume(viewer):
    assert not viewer.is_paused()
    viewer.set_paused(True)
    assert viewer.is_paused() and viewer._pause_button.label == "Resume training"
    resumed = threading.Event()

    def trainer():
        viewer.wait_while_paused(poll_seconds=0.01)
        resumed.set()

    thread = threading.Thread(target=trainer)
    thread.start()
    time.sleep(0.1)
    assert not resumed.is_set()  # the training thread waits while paused
    viewer.set_paused(False)
    assert resumed.wait(5.0)
    thread.join()
    assert viewer.paused_calls == [True, False]


def test_export_button_callback(viewer, tmp_path):
    path = viewer.export()
    assert path == tmp_path / "exports" / "mesh.ply" and path.exists()
    assert viewer.last_export_path == path


def test_save_camera_path(viewer, tmp_path):
    with pytest.raises(ReconError, match="no keyframes"):
        viewer.save_camera_path()

    class FakeClient:
        camera = type(
            "C",
            (),
            {
                "wxyz": (1.0, 0.0, 0.0, 0.0),
                "position": (0.0, 0.0, -3.0),
                "fov": 1.0,
                "image_width": 64,
                "image_height": 48,
            },
        )()

    with typecheck_disabled():  # FakeClient stands in for a viser ClientHandle
        viewer.add_keyframe(FakeClient())  # type: ignore[arg-type]
        FakeClient.camera.position = (0.5, 0.0, -3.0)
        viewer.add_keyframe(FakeClient())  # type: ignore[arg-type]
    path = viewer.save_camera_path()
    assert path == tmp_path / "paths" / "camera_path.json"
    keyframes, fps = read_camera_path(path)
    assert [k.time for k in keyframes] == [0.0, 2.0]
    assert torch.allclose(keyframes[1].camera().centers()[0], torch.tensor([0.5, 0.0, -3.0]), atol=1e-6)


def test_geometry_and_frusta(viewer):
    assert set(viewer._geometry_handles) == {"points", "soup"}
    # With a server render the client-side copies start hidden and can be switched on.
    assert not viewer._geometry_boxes["soup"].value
    viewer._geometry_boxes["soup"].value = True
    assert len(viewer._frusta) == 4
    assert not viewer._frusta[0].visible  # the first view sits at camera 0: its frustum is hidden
    viewer.set_geometry("soup", _soup())  # replaced during training
    viewer.set_geometry("new points", PointCloud(points=torch.rand(5, 3), colors=torch.rand(5, 3)))
    assert "new points" in viewer._geometry_boxes
    assert_rejected(
        lambda: viewer.set_geometry("bad", torch.zeros(3)),  # type: ignore[arg-type]
        match="Mesh or a PointCloud",
        argument="geometry",
        error=TypeError,
    )


def test_mesh_only_viewer():
    mesh = Mesh(
        vertices=torch.rand(4, 3), faces=torch.tensor([[0, 1, 2], [0, 2, 3]]), vertex_colors=torch.rand(4, 3)
    )
    with ViewerServer(None, port=_free_port(), geometry=[mesh]) as server:
        assert server._geometry_boxes["geometry 0"].value  # no server render: the mesh is the view
        assert not server._server_render_box.visible and not server._mode_dropdown.visible


def test_stats_redraws_are_rate_limited_but_not_lost(viewer, monkeypatch):
    """Steps that arrive faster than REFRESH_SECONDS are coalesced; the last one is still drawn."""
    import recon.viewer.server as server_module

    monkeypatch.setattr(server_module, "REFRESH_SECONDS", 0.3)
    refreshes = []
    monkeypatch.setattr(
        viewer,
        "refresh",
        lambda: refreshes.append(time.monotonic()) or setattr(viewer, "_last_refresh", time.monotonic()),
    )
    for step in range(1, 11):
        viewer.update_stats(TrainingStats(step=step))
        time.sleep(0.02)
    time.sleep(0.6)
    assert 1 <= len(refreshes) <= 3
    assert viewer._stats_step_drawn == 10


def test_hidden_frustum_returns_when_the_view_leaves(viewer):
    """The frustum of the training camera the view sits at is hidden, and shown again once the view moves away."""
    from types import SimpleNamespace

    from recon.viewer import camera_to_viser

    loop = SimpleNamespace(moves=0)
    loop.camera_moved = lambda: setattr(loop, "moves", loop.moves + 1)
    at_camera_0 = np.asarray(camera_to_viser(viewer._cameras[0].camera)[1])
    # The browser's default camera, reported before the initial view is applied, does not unhide it.
    moved = typecheck_disabled()(viewer._camera_moved)  # namespaces stand in for viser's camera and the loop
    moved(SimpleNamespace(position=np.array([3.0, 3.0, 3.0])), loop)
    assert viewer._hidden_frustum == 0
    moved(SimpleNamespace(position=at_camera_0), loop)
    assert viewer._hidden_frustum == 0 and not viewer._frusta[0].visible
    moved(SimpleNamespace(position=at_camera_0 + 10 * viewer.frustum_scale), loop)
    assert viewer._hidden_frustum is None and viewer._frusta[0].visible
    assert loop.moves == 3
