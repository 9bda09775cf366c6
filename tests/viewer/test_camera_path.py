"""Camera paths: the JSON keyframe format the viewer writes and ``recon render --trajectory`` reads."""

import json
import math

import pytest
import torch

from recon.core import Camera, ReconError
from recon.core.transforms import look_at
from recon.viewer.camera_path import Keyframe, interpolate_camera_path, read_camera_path, write_camera_path


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
