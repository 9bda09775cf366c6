"""Camera paths: the JSON keyframe format the viewer writes and ``recon render --trajectory`` reads."""

import json
import math
import socket
import time

import pytest
import torch

from recon.core import Camera, ReconError
from recon.core.transforms import look_at
from recon.viewer.camera_path import (
    Keyframe,
    camera_path_target,
    interpolate_camera_path,
    read_camera_path,
    write_camera_path,
)


def _keyframe(eye, t: float, size=(64, 48)) -> Keyframe:
    T = look_at(
        torch.tensor(eye, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
    )
    K = torch.tensor([[50.0, 0, size[0] / 2], [0, 50.0, size[1] / 2], [0, 0, 1]], dtype=torch.float64)
    return Keyframe.from_camera(Camera(T_cam_world=T[None], K=K[None], width=size[0], height=size[1]), t)


def test_round_trip(tmp_path):
    keyframes = [_keyframe([3.0, 0, 1], 0.0), _keyframe([0, 3.0, 1], 2.0)]
    path = write_camera_path(tmp_path / "sub" / "path.json", keyframes, fps=24.0)
    data = json.loads(path.read_text())
    assert data["format"] == "recon-camera-path" and data["version"] == 1
    assert set(data["keyframes"][0]) == {"T_cam_world", "K", "width", "height", "time"}
    read, fps = read_camera_path(path)
    assert fps == 24.0
    for a, b in zip(keyframes, read):
        assert torch.allclose(a.T_cam_world, b.T_cam_world) and torch.allclose(a.K, b.K)
        assert (a.width, a.height, a.time) == (b.width, b.height, b.time)


def test_minimal_file_is_accepted(tmp_path):
    """Only the keyframes list with its five keys is required (hand-written files)."""
    path = tmp_path / "p.json"
    eye = torch.eye(4).tolist()
    path.write_text(
        json.dumps(
            {
                "keyframes": [
                    {"T_cam_world": eye, "K": torch.eye(3).tolist(), "width": 8, "height": 6, "time": 0}
                ]
            }
        )
    )
    keyframes, fps = read_camera_path(path)
    assert len(keyframes) == 1 and fps == 30.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"keyframes": []}', "non-empty 'keyframes'"),
        ('{"keyframes": [{"K": 1}]}', r"keyframes\[0\] lacks T_cam_world"),
        (
            json.dumps(
                {
                    "keyframes": [
                        {
                            "T_cam_world": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                            "K": torch.eye(3).tolist(),
                            "width": 8,
                            "height": 6,
                            "time": 0,
                        }
                    ]
                }
            ),
            "not a rigid transform",
        ),
        (
            json.dumps(
                {
                    "keyframes": [
                        {
                            "T_cam_world": torch.eye(4).tolist(),
                            "K": torch.eye(3).tolist(),
                            "width": 8,
                            "height": 6,
                            "time": t,
                        }
                        for t in (0, 0)
                    ]
                }
            ),
            "strictly increasing",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReconError, match=message):
        read_camera_path(path)
    with pytest.raises(ReconError, match="does not exist"):
        read_camera_path(tmp_path / "missing.json")


def test_write_needs_keyframes(tmp_path):
    with pytest.raises(ReconError, match="no keyframes"):
        write_camera_path(tmp_path / "p.json", [])


def test_interpolation_hits_keyframes_and_stays_on_the_circle():
    # Two keyframes a quarter turn apart on a circle of radius 3 about the z axis, 1 s apart, at 4 fps -> 5 frames.
    a, b = _keyframe([3.0, 0, 0], 0.0), _keyframe([0, 3.0, 0], 1.0, size=(128, 96))
    cams = interpolate_camera_path([a, b], fps=4.0)
    assert len(cams) == 5 and (cams.width, cams.height) == (64, 48)
    assert torch.allclose(cams.T_cam_world[0].double(), a.T_cam_world, atol=1e-5)
    assert torch.allclose(cams.T_cam_world[-1].double(), b.T_cam_world, atol=1e-5)
    # K of the second keyframe is rescaled to the first's size: fx 50 at 128 px -> 25 at 64 px.
    assert float(cams.K[-1, 0, 0]) == pytest.approx(25.0)
    # Orientation is slerped: the middle camera looks at the origin from 45 degrees (its centre is linear, so
    # it lies on the chord, not the arc).
    mid = cams[2]
    forward = mid.T_world_cam()[0, :3, 2]
    expected = -torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0])
    assert torch.allclose(forward, expected, atol=1e-5)
    assert torch.allclose(mid.centers()[0], torch.tensor([1.5, 1.5, 0.0]), atol=1e-5)


def test_single_keyframe():
    cams = interpolate_camera_path([_keyframe([3.0, 0, 1], 0.0)])
    assert len(cams) == 1


def test_written_file_has_interpolated_frames_for_recon_render(tmp_path):
    """The saved file carries "frames" (keyframes interpolated at fps), which ``recon render --trajectory``
    renders; they match interpolate_camera_path."""
    keyframes = [_keyframe([3.0, 0, 1], 0.0), _keyframe([0, 3.0, 1], 1.0)]
    path = write_camera_path(tmp_path / "path.json", keyframes, fps=10.0)
    frames = json.loads(path.read_text())["frames"]
    assert len(frames) == 11 and set(frames[0]) == {"T_cam_world", "K", "width", "height"}
    expected = interpolate_camera_path(keyframes, fps=10.0)
    assert torch.allclose(torch.tensor(frames[5]["T_cam_world"]), expected.T_cam_world[5])


def test_recon_render_reads_the_saved_file(tmp_path):
    from recon.cli.render import json_cameras

    keyframes = [_keyframe([3.0, 0, 1], 0.0), _keyframe([0, 3.0, 1], 0.5)]
    path = write_camera_path(tmp_path / "path.json", keyframes, fps=4.0)
    cams = json_cameras(path)
    assert len(cams) == 3 and (cams.width, cams.height) == (64, 48)
    assert torch.allclose(cams.T_cam_world[0].double(), keyframes[0].T_cam_world, atol=1e-5)
    assert torch.allclose(cams.T_cam_world[-1].double(), keyframes[1].T_cam_world, atol=1e-5)


# --- saving from the viewer: confined to the run's camera_paths/ folder ------------------------------------------


def test_target_is_a_sanitised_name_inside_the_folder(tmp_path):
    folder = tmp_path / "camera_paths"
    folder.mkdir()
    assert camera_path_target(folder, "orbit") == folder / "orbit.json"
    assert camera_path_target(folder, " my path (2).JSON ") == folder / "my_path__2_.JSON"
    for bad in (
        "../escape.json",
        "sub/dir.json",
        "..\\win.json",
        str(tmp_path / "abs.json"),
        ".hidden",
        "",
        "..",
    ):
        with pytest.raises(ReconError, match="expected a plain file name"):
            camera_path_target(folder, bad)
    (folder / "notes.json").write_text('{"not": "a camera path"}')
    with pytest.raises(ReconError, match="exists and is not a camera path; not overwritten"):
        camera_path_target(folder, "notes.json")
    (tmp_path / "outside.json").write_text("{}")
    (folder / "link.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(ReconError, match="is a link or leaves"):
        camera_path_target(folder, "link.json")
    existing = write_camera_path(folder / "old.json", [_keyframe([3.0, 0, 1], 0.0)])
    assert camera_path_target(folder, "old.json") == existing  # a camera path may be replaced


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Browser:
    """A websocket client speaking viser's protocol as the browser app does (camera, field edits, clicks)."""

    def __init__(self, viewer) -> None:
        import viser
        from websockets.sync.client import connect

        self.viewer = viewer
        self.sock = connect(f"ws://127.0.0.1:{viewer.port}", subprotocols=[f"viser-v{viser.__version__}"])

    def send(self, message) -> None:
        import msgspec.msgpack

        self.sock.send(msgspec.msgpack.encode(message.as_serializable_dict()))

    def camera(self, position) -> None:
        from viser._messages import ViewerCameraMessage

        self.send(ViewerCameraMessage(wxyz=(1.0, 0.0, 0.0, 0.0), position=position, fov=1.0, near=0.01,
                                      far=100.0, image_height=48, image_width=64, look_at=(0.0, 0.0, 0.0),
                                      up_direction=(0.0, -1.0, 0.0)))  # fmt: skip

    def click(self, handle) -> None:
        from viser._messages import GuiUpdateMessage

        self.send(GuiUpdateMessage(handle._impl.uuid, {"value": True}))

    def type_text(self, handle, text: str) -> None:
        from viser._messages import GuiUpdateMessage

        self.send(GuiUpdateMessage(handle._impl.uuid, {"value": text}))

    def close(self) -> None:
        self.sock.close()


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_websocket_client_cannot_write_outside_camera_paths(tmp_path):
    from recon.viewer import ViewerServer

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("schema_version: 1\n")
    viewer = ViewerServer(None, port=_free_port(), camera_path_dir=run / "camera_paths")
    browser = _Browser(viewer)
    try:
        for x in (0.0, 0.5):
            browser.camera((x, 0.0, -3.0))
            _wait_for(lambda: viewer.num_clients() == 1, "the client to register")
            count = len(viewer._keyframes)
            browser.click(viewer._add_keyframe_button)
            _wait_for(lambda: len(viewer._keyframes) == count + 1, "the keyframe")  # noqa: B023
        status = viewer._camera_path_markdown
        for name in ("../config.yaml", "../../evil.json", str(tmp_path / "abs.json"), "sub/x.json"):
            before = status.content
            browser.type_text(viewer._path_text, name)
            _wait_for(lambda: viewer._path_text.value == name, "the name")  # noqa: B023
            browser.click(viewer._save_button)
            _wait_for(lambda: status.content != before, "the save result")  # noqa: B023
            assert status.content.startswith("Not saved") and "plain file name" in status.content, (
                status.content
            )
        assert (run / "config.yaml").read_text() == "schema_version: 1\n"
        assert sorted(p.name for p in tmp_path.rglob("*.json")) == []
        browser.type_text(viewer._path_text, "orbit")
        _wait_for(lambda: viewer._path_text.value == "orbit", "the name")
        browser.click(viewer._save_button)
        _wait_for(lambda: status.content.startswith("Wrote"), "the save")
        keyframes, _ = read_camera_path(run / "camera_paths" / "orbit.json")
        assert [k.time for k in keyframes] == [0.0, 2.0]
    finally:
        browser.close()
        viewer.close()
