"""``recon render --trajectory orbit``: a fly-around of the subject in any world frame (NeRF-synthetic z up at the
origin, a COLMAP capture tilted and off-centre, a forward-facing LLFF rig)."""

import math

import torch

from recon.cli.render import orbit_cameras
from recon.core import Camera
from recon.core.transforms import look_at

K = torch.tensor([[40.0, 0.0, 16.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]])


def _rig(eyes: torch.Tensor, targets: torch.Tensor, up: torch.Tensor) -> Camera:
    T = torch.stack([look_at(e, t, up) for e, t in zip(eyes.double(), targets.double(), strict=True)])
    return Camera(T.float(), K.expand(len(T), 3, 3).clone(), 32, 24)


def _rotation(axis: torch.Tensor, angle: float) -> torch.Tensor:
    k = axis / axis.norm()
    Kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx


def _ring(n: int, radius: float, height: float, gen: torch.Generator) -> torch.Tensor:
    """Uneven azimuths (a hand-held capture), a radius and height that vary by +-10 %."""
    a = torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi).values
    r = radius * (1 + 0.1 * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1))
    h = height * (1 + 0.1 * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1))
    return torch.stack([r * a.cos(), r * a.sin(), h], -1)


def _check_fly_around(
    cams: Camera, centre: torch.Tensor, up: torch.Tensor, radius: float, height: float
) -> None:
    eyes = cams.centers().double()
    rel = eyes - centre
    h = rel @ up
    horizontal = (rel - h[:, None] * up).norm(dim=-1)
    assert float((h - height).abs().max()) < 0.1 * height  # one height along the capture's up
    assert float((horizontal - radius).abs().max()) < 0.1 * radius  # one circle about the up axis
    forward = cams.T_world_cam()[:, :3, 2].double()
    to_centre = torch.nn.functional.normalize(centre - eyes, dim=-1)
    assert float((forward * to_centre).sum(-1).min()) > 0.999  # every frame looks at the subject
    image_up = -cams.T_world_cam()[:, :3, 1].double()
    assert float((image_up @ up).min()) > 0.5  # upright frames
    steps = torch.nn.functional.normalize(rel - h[:, None] * up, dim=-1)
    turn = torch.linalg.cross(steps[:-1], steps[1:]) @ up
    assert bool((turn > 0).all()) or bool((turn < 0).all())  # one way round, evenly


def test_orbit_of_a_z_up_ring_at_the_origin(gen):
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eyes = _ring(40, 4.0, 2.0, gen)
    cams = orbit_cameras(_rig(eyes, torch.zeros(40, 3), up), 24)
    assert len(cams) == 24 and (cams.width, cams.height) == (32, 24)
    _check_fly_around(cams, torch.zeros(3, dtype=torch.float64), up, 4.0, 2.0)


def test_orbit_of_a_tilted_off_centre_capture(gen):
    """COLMAP frames: up is wherever the first photo put it and the subject is not at the origin."""
    R = _rotation(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), 2.1)
    centre = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)
    up = R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eyes = _ring(40, 0.8, 0.25, gen) @ R.T + centre
    cams = orbit_cameras(_rig(eyes, centre.expand(40, 3), up), 30)
    _check_fly_around(cams, centre, up, 0.8, 0.25)


def test_orbit_of_a_forward_capture_faces_the_scene(gen):
    eyes = torch.rand(20, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [0.6, 0.4, 0.0], dtype=torch.float64
    )
    targets = eyes + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    cams = orbit_cameras(_rig(eyes, targets, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)), 16)
    forward = cams.T_world_cam()[:, :3, 2].double()
    assert float(forward[:, 2].min()) > 0.999  # every frame looks into the scene
    centre = eyes.mean(0)
    spread = float((eyes - centre)[:, :2].norm(dim=-1).mean())
    rel = cams.centers().double() - centre
    assert float(rel[:, 2].abs().max()) < 1e-5  # in the cameras' plane, about their mean
    assert float((rel[:, :2].norm(dim=-1) - spread).abs().max()) < 1e-5


def _arc_rig(gen: torch.Generator, start_deg: float, span_deg: float) -> tuple[Camera, torch.Tensor]:
    """A z-up ring of 30 cameras whose azimuths cover only [start, start + span] (a partial hand-held capture)."""
    a = torch.deg2rad(start_deg + span_deg * torch.rand(30, generator=gen, dtype=torch.float64))
    a[:2] = torch.deg2rad(torch.tensor([start_deg, start_deg + span_deg], dtype=torch.float64))
    eyes = torch.stack([2.0 * a.cos(), 2.0 * a.sin(), torch.full_like(a, 0.8)], -1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return _rig(eyes, torch.zeros(30, 3), up), up


def _azimuths_deg(cams: Camera) -> torch.Tensor:
    eyes = cams.centers().double()
    return torch.rad2deg(torch.atan2(eyes[:, 1], eyes[:, 0]))


def test_orbit_of_a_partial_capture_sweeps_the_captured_arc(gen):
    # the cameras cover azimuths 150..300 degrees (through 180): the far side was never seen
    cams, up = _arc_rig(gen, 150.0, 150.0)
    orbit = orbit_cameras(cams, 40)
    _check_circle_and_gaze(orbit, up)
    az = torch.remainder(_azimuths_deg(orbit), 360.0)
    assert (
        float(az.min()) > 150.0 - 1e-3 and float(az.max()) < 300.0 + 1e-3
    )  # never looks from the unseen side
    assert float(az.max() - az.min()) > 149.0  # ... but covers the whole captured arc
    end = min(abs(float(az[0]) - 150.0), abs(float(az[0]) - 300.0))
    assert end < 1e-3  # out from one end and back: the video loops
    turn = torch.diff(az)
    assert bool((turn[:19] * turn[0] > 0).all()) and bool((turn[21:] * turn[0] < 0).all())
    full = torch.remainder(_azimuths_deg(orbit_cameras(cams, 40, "full")), 360.0)
    assert float(full.min()) < 10.0 and float(full.max()) > 350.0  # full: once round anyway


def test_orbit_of_a_surrounding_capture_stays_full_unless_asked(gen):
    cams, up = _arc_rig(gen, 0.0, 300.0)  # a 60-degree gap: surrounding
    az = torch.remainder(_azimuths_deg(orbit_cameras(cams, 36)), 360.0)
    assert float(az.max() - az.min()) > 340.0
    captured = torch.remainder(_azimuths_deg(orbit_cameras(cams, 36, "captured")), 360.0)
    assert float(captured.min()) > -1e-3 and float(captured.max()) < 300.0 + 1e-3


def _check_circle_and_gaze(cams: Camera, up: torch.Tensor) -> None:
    eyes = cams.centers().double()
    assert float((eyes @ up - 0.8).abs().max()) < 0.05  # the cameras' height
    assert float(((eyes - (eyes @ up)[:, None] * up).norm(dim=-1) - 2.0).abs().max()) < 0.05
    forward = cams.T_world_cam()[:, :3, 2].double()
    to_centre = torch.nn.functional.normalize(-eyes, dim=-1)
    assert float((forward * to_centre).sum(-1).min()) > 0.99
