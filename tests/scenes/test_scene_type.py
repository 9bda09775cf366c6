"""Scene-type detection on synthetic camera rigs: object-centric, forward-facing (LLFF-like), unbounded 360."""

import math

import torch

from recon.core import Camera
from recon.core.transforms import fibonacci_sphere, look_at
from recon.scenes.scene_type import (
    SceneTypeDecision,
    detect_scene_type,
    foreground_box,
    object_region,
    resolve_scene_type,
)
from tests.typecheck import assert_rejected

UP = torch.tensor([0.0, 0.0, 1.0])
K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]])


def cameras_from(eyes: torch.Tensor, targets: torch.Tensor) -> Camera:
    T = torch.stack([look_at(e, t, UP) for e, t in zip(eyes, targets, strict=True)])
    return Camera(T, K.expand(len(T), 3, 3).clone(), 64, 64)


def orbit_rig(n: int = 24, radius: float = 3.0) -> Camera:
    """Cameras on the upper part of a sphere, all looking at the origin (NeRF-synthetic / 360 captures)."""
    dirs = fibonacci_sphere(2 * n)
    dirs = dirs[dirs[:, 2] > 0.1][:n]
    return cameras_from(dirs * radius, torch.zeros(len(dirs), 3))


def forward_rig(gen: torch.Generator) -> Camera:
    """A 4 x 5 grid of cameras in the plane y = 0 looking along +y, each turned by up to ~5 degrees (LLFF)."""
    xs, zs = torch.meshgrid(torch.linspace(-0.3, 0.3, 5), torch.linspace(-0.2, 0.2, 4), indexing="ij")
    eyes = torch.stack([xs.reshape(-1), torch.zeros(20), zs.reshape(-1)], -1)
    jitter = (torch.rand(20, 3, generator=gen) - 0.5) * 2.0 * math.tan(math.radians(5.0))
    targets = eyes + torch.tensor([0.0, 1.0, 0.0]) + jitter
    return cameras_from(eyes, targets)


def ball_points(n: int, radius: float, gen: torch.Generator) -> torch.Tensor:
    p = torch.randn(n, 3, generator=gen)
    return p / p.norm(dim=-1, keepdim=True) * radius * torch.rand(n, 1, generator=gen) ** (1 / 3)


def test_object_centric_rig_is_bounded(gen):
    cams = orbit_rig()
    outliers = (
        torch.nn.functional.normalize(torch.randn(10, 3, generator=gen), dim=-1) * 30.0
    )  # 2 % SfM outliers
    with_points = detect_scene_type(cams, torch.cat([ball_points(490, 0.8, gen), outliers]))
    assert with_points.kind == "bounded", with_points.reason
    without = detect_scene_type(cams, None)  # synthetic renders: no SfM points
    assert without.kind == "bounded", without.reason
    assert "no SfM points" in without.reason


def test_orbit_with_far_background_is_unbounded(gen):
    cams = orbit_rig()
    far = torch.nn.functional.normalize(torch.randn(700, 3, generator=gen), dim=-1) * 20.0
    decision = detect_scene_type(cams, torch.cat([ball_points(300, 0.8, gen), far]))
    assert decision.kind == "unbounded", decision.reason
    assert "70.0 %" in decision.reason  # the measured fraction of far points is stated


def test_forward_facing_rig_is_forward(gen):
    cams = forward_rig(gen)
    points = torch.stack([torch.rand(400, generator=gen) * 4 - 2, torch.rand(400, generator=gen) * 8 + 2,
                          torch.rand(400, generator=gen) * 3 - 1.5], -1)  # fmt: skip
    decision = detect_scene_type(cams, points)
    assert decision.kind == "forward", decision.reason
    # foreground box: centred in front of the rig along +y, half size = the median depth (~6)
    box = foreground_box("forward", cams, points, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    centre, half = 0.5 * (box[0] + box[1]), 0.5 * (box[1] - box[0])
    assert abs(float(half[1]) - float(points[:, 1].median())) < 0.2
    assert float(centre[1]) > 4.0 and abs(float(centre[0])) < 0.1
    assert box.dtype == torch.float32 and box.shape == (2, 3)


def test_outward_looking_walkthrough_without_points_is_unbounded():
    # cameras at the centre of a room, looking out in 12 directions: nothing is looked at
    angles = torch.arange(12) * (2 * math.pi / 12)
    targets = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(12)], -1)
    eyes = targets * 0.05
    decision = detect_scene_type(cameras_from(eyes, targets), None)
    assert decision.kind == "unbounded", decision.reason


def test_unbounded_foreground_box_holds_the_cameras(gen):
    cams = orbit_rig(radius=2.5)
    box = foreground_box("unbounded", cams, None, torch.tensor([[-9.0] * 3, [9.0] * 3]))
    centres = torch.linalg.inv(cams.T_cam_world)[:, :3, 3]
    assert bool(((centres >= box[0] - 1e-4) & (centres <= box[1] + 1e-4)).all())
    assert abs(float(0.5 * (box[1, 0] - box[0, 0])) - 2.5) < 1e-3  # half = max camera distance to the centre
    assert float((0.5 * (box[0] + box[1])).norm()) < 1e-3  # centred on the look-at point (origin)
    bounded = foreground_box("bounded", cams, None, torch.tensor([[-9.0] * 3, [9.0] * 3]))
    assert torch.equal(bounded, torch.tensor([[-9.0] * 3, [9.0] * 3]))


def test_override_and_bad_inputs(gen):
    cams = orbit_rig()
    forced = resolve_scene_type("forward", cams, None)
    assert forced == SceneTypeDecision("forward", "set by the config (scene_type='forward')")
    assert resolve_scene_type("auto", cams, None).kind == "bounded"
    assert_rejected(lambda: resolve_scene_type("ndc", cams, None), match="scene_type", argument="setting")  # type: ignore[arg-type]
    assert_rejected(lambda: detect_scene_type(cams, torch.zeros(10, 2)), match="points")


def test_object_region_frames_the_subject_not_the_room(gen):
    """An orbit around the origin; the subject (a 0.4 x 0.4 x 0.6 box standing on the floor z = -0.3) sits off the
    look-at centre, a few floor points around it and a quarter of the points on far walls."""
    cams = orbit_rig()
    subject = torch.rand(600, 3, generator=gen) * torch.tensor([0.4, 0.4, 0.6]) + torch.tensor(
        [0.1, -0.4, -0.3]
    )
    floor = torch.cat([torch.rand(20, 2, generator=gen) * 2.4 - 1.2, torch.full((20, 1), -0.3)], -1)
    walls = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1) * 20.0
    region = object_region(cams, torch.cat([subject, floor, walls]))
    assert region is not None
    assert float((region.up.float() - UP).norm()) < 0.05  # the rig's up (+z; the upper cap's cameras tilt it)
    assert float((region.centre.float() - torch.tensor([0.3, -0.2, 0.0])).norm()) < 0.08
    half_diagonal = 0.5 * math.sqrt(0.4**2 + 0.4**2 + 0.6**2)
    assert 1.1 * half_diagonal < region.radius < 1.5 * half_diagonal  # 1.25 x, the walls left out
    assert abs(region.floor - 0.3) < 0.03  # the subject's bottom, 0.3 below its centre
    assert 600 <= region.num_points <= 620  # the walls left out (floor corners may lie beyond 1.5)


def test_object_region_is_none_without_a_surrounded_subject(gen):
    assert object_region(orbit_rig(), None) is None  # synthetic renders have no SfM points
    assert object_region(orbit_rig(), ball_points(10, 0.5, gen)) is None  # too few points
    assert object_region(orbit_rig(), ball_points(200, 0.5, gen) + 10.0) is None  # none near the centre
    assert object_region(forward_rig(gen), ball_points(200, 0.5, gen)) is None  # forward capture
