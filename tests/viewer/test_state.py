"""View settings and the records hosts hand the viewer."""

import pytest
import torch

from recon.core import Camera
from recon.viewer.state import CameraView, PointCloud, TrainingStats, ViewState
from tests.typecheck import assert_rejected


def test_view_state_defaults_and_scale():
    state = ViewState()
    assert state.mode == "rgb" and state.background == (1.0, 1.0, 1.0) and not state.preview
    assert state.resolution_scale == 1.0
    preview = ViewState(preview=True, preview_scale=0.5)
    assert preview.resolution_scale == 0.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "wireframe"}, "mode"),
        ({"colormap": "jet"}, "colormap"),
        ({"background": (1.0, 2.0, 0.0)}, "background"),
        ({"background": (1.0, 0.0)}, "background"),
        ({"max_resolution": 0}, "max_resolution"),
        ({"preview_scale": 0.0}, "preview_scale"),
        ({"preview_scale": 1.5}, "preview_scale"),
    ],
)
def test_view_state_validation(changes, message):
    assert_rejected(lambda: ViewState(**changes), match=message)


def _camera(count: int = 1) -> Camera:
    return Camera(
        T_cam_world=torch.eye(4).expand(count, 4, 4).clone(),
        K=torch.eye(3).expand(count, 3, 3).clone(),
        width=4,
        height=3,
    )


def test_camera_view_validation():
    CameraView(camera=_camera(), image=torch.zeros(3, 4, 3), name="a.png")
    with pytest.raises(ValueError, match="one camera"):
        CameraView(camera=_camera(2))
    assert_rejected(lambda: CameraView(camera=_camera(), image=torch.zeros(3, 4)), match="image")


def test_point_cloud_validation():
    PointCloud(points=torch.zeros(5, 3), colors=torch.ones(5, 3))
    assert_rejected(lambda: PointCloud(points=torch.zeros(5, 2)), match="points")
    assert_rejected(lambda: PointCloud(points=torch.zeros(5, 3), colors=torch.ones(4, 3)), match="colors")


def test_training_stats_optional_fields():
    stats = TrainingStats(step=10)
    assert stats.loss is None and stats.max_steps is None
