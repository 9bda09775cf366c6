"""recon render --camera-path: nerfstudio camera_path.json (OpenGL camera-to-world + fov) besides recon's own."""

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.cli import render as render_cli
from recon.cli import train as train_cli
from recon.core import ReconError
from recon.core.transforms import look_at
from recon.viewer.camera_path import Keyframe, nerfstudio_cameras, write_camera_path


def _nerfstudio(poses: list[list], *, width=40, height=30, fov=90.0, **extra) -> dict:
    return {
        "camera_type": "perspective",
        "render_width": width,
        "render_height": height,
        "camera_path": [{"camera_to_world": pose, "fov": fov, "aspect": width / height} for pose in poses],
        **extra,
    }


def _flat(T: torch.Tensor) -> list[float]:
    return T.reshape(-1).tolist()


def _project(cams, i: int, point: list[float]) -> tuple[float, float, float]:
    p = cams.T_cam_world[i].double() @ torch.tensor([*point, 1.0], dtype=torch.float64)
    uvw = cams.K[i].double() @ p[:3]
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2]), float(p[2])


def test_hand_computed_identity_pose(tmp_path):
    """An OpenGL camera at the origin looks down world -z with world +y up: world (1, 1, -2) is 2 in front of
    it, right and ABOVE the centre, i.e. at OpenCV camera coordinates (1, -1, 2). fov 90 on 30 rows: f = 15."""
    path = tmp_path / "camera_path.json"
    cams, fps = nerfstudio_cameras(path, _nerfstudio([_flat(torch.eye(4))], fps=24))
    assert fps == 24 and len(cams) == 1 and (cams.width, cams.height) == (40, 30)
    torch.testing.assert_close(cams.K[0], torch.tensor([[15.0, 0, 20], [0, 15, 15], [0, 0, 1]]))
    torch.testing.assert_close(cams.T_cam_world[0], torch.diag(torch.tensor([1.0, -1, -1, 1])))
    u, v, z = _project(cams, 0, [1.0, 1.0, -2.0])
    assert z == pytest.approx(2.0) and u == pytest.approx(20 + 15 * 0.5) and v == pytest.approx(15 - 15 * 0.5)


def test_looking_at_a_point_puts_it_at_the_image_centre(tmp_path):
    """A general pose: the OpenGL camera at ``eye`` looking at ``target`` (its -z axis) sees the target at the
    principal point, in front of it; the world's up direction points to the top of the image (smaller v)."""
    eye, target = torch.tensor([3.0, -2.0, 1.5], dtype=torch.float64), torch.tensor([0.2, 0.1, -0.3])
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    T_cam_world_cv = look_at(eye, target.double(), up)  # recon's own OpenCV convention, as the oracle
    T_world_cam_gl = torch.linalg.inv(T_cam_world_cv) @ torch.diag(torch.tensor([1.0, -1, -1, 1]).double())
    data = _nerfstudio(
        [T_world_cam_gl.tolist(), _flat(T_world_cam_gl)], fov=60.0, seconds=0.5
    )  # 4x4 and flat
    cams, fps = nerfstudio_cameras(tmp_path / "p.json", data)
    assert fps == pytest.approx(4.0)  # 2 frames over 0.5 s
    for i in range(2):
        torch.testing.assert_close(cams.T_cam_world[i].double(), T_cam_world_cv, atol=1e-6, rtol=0)
        u, v, z = _project(cams, i, target.tolist())
        assert (u, v) == (pytest.approx(20.0, abs=1e-4), pytest.approx(15.0, abs=1e-4)) and z > 0
        _, v_up, _ = _project(cams, i, (target + 0.1 * up.float()).tolist())
        assert v_up < 15.0
    assert float(cams.K[0, 1, 1]) == pytest.approx(15 / math.tan(math.radians(30)), rel=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"render_width": 0}, "'render_width' must be a positive integer"),
        ({"camera_type": "fisheye"}, "only perspective is supported"),
        ({"camera_path": []}, "'camera_path' is empty"),
        ({"camera_path": [{"camera_to_world": [1.0] * 16, "fov": 50}]}, r"camera_path\[0\]: .* not a rigid"),
        ({"camera_path": [{"camera_to_world": [1.0] * 12, "fov": 50}]}, "must have 16 numbers"),
        ({"camera_path": [{"fov": 50}]}, r"camera_path\[0\] must be an object with camera_to_world"),
        ({"camera_path": [{"camera_to_world": [[1, 0, 0, 0]] * 4, "fov": 180}]}, "not a rigid|fov must be"),
        ({"fps": -1}, "'fps' must be a positive number"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, change, message):
    data = _nerfstudio([_flat(torch.eye(4))]) | change
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReconError, match=message) as info:
        render_cli.path_cameras(path, "--camera-path")
    assert str(path) in str(info.value)


def test_recon_paths_still_read(tmp_path):
    keyframes = [
        Keyframe(look_at(torch.tensor([3.0, 0, 1]).double(), torch.zeros(3).double(), torch.tensor([0, 0, 1.0]).double()),
                 torch.tensor([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]]).double(), 32, 24, t)
        for t in (0.0, 0.5)
    ]  # fmt: skip
    path = write_camera_path(tmp_path / "recon.json", keyframes, fps=4.0)
    cams, fps = render_cli.path_cameras(path)
    assert len(cams) == 3 and fps == 4.0  # "frames": the keyframes interpolated at fps
    only_keyframes = json.loads(path.read_text())
    del only_keyframes["frames"]
    (tmp_path / "keys.json").write_text(json.dumps(only_keyframes))
    cams2, _ = render_cli.path_cameras(tmp_path / "keys.json")
    torch.testing.assert_close(cams2.T_cam_world, cams.T_cam_world)
    (tmp_path / "other.json").write_text(json.dumps({"poses": []}))
    with pytest.raises(ReconError, match="--trajectory .*other.json: expected recon's"):
        render_cli.path_cameras(tmp_path / "other.json")
    with pytest.raises(ReconError, match="--camera-path .*missing.json: no such file"):
        render_cli.path_cameras(tmp_path / "missing.json", "--camera-path")


TINY = ["--scene.random-init-points", "120", "--scene.max-init-points", "120", "--scene.hull-resolution", "24",
        "--no-progress", "--threads", "1", "--no-final-eval", "--logger", "none", "--checkpoint-minutes", "0"]  # fmt: skip


def test_render_command_renders_a_nerfstudio_path_like_the_equivalent_recon_path(tmp_path, capsys):
    from recon.datasets.synthetic import write_scene

    data = write_scene("object", tmp_path / "object", views=6, test_views=1, resolution=24)
    run_dir = tmp_path / "run"
    argv = ["triangles", "--data", str(data), "--steps", "5", "--run-dir", str(run_dir), *TINY]
    assert train_cli.main(argv) == 0
    eyes = [[2.5, 0.5, 1.0], [0.5, 2.5, 1.2]]
    T_cv = [
        look_at(torch.tensor(e).double(), torch.zeros(3).double(), torch.tensor([0, 0, 1.0]).double())
        for e in eyes
    ]
    flip = torch.diag(torch.tensor([1.0, -1, -1, 1]).double())
    ns = _nerfstudio([_flat(torch.linalg.inv(T) @ flip) for T in T_cv], width=20, height=16, fov=50.0, fps=10)
    (tmp_path / "camera_path.json").write_text(json.dumps(ns))
    f = 8 / math.tan(math.radians(25))
    K = [[f, 0, 10], [0, f, 8], [0, 0, 1]]
    frames = [{"T_cam_world": T.tolist(), "K": K, "width": 20, "height": 16} for T in T_cv]
    (tmp_path / "recon_path.json").write_text(json.dumps({"frames": frames}))
    outs = {}
    for name, flag in (("ns", "--camera-path"), ("recon", "--trajectory")):
        file = tmp_path / ("camera_path.json" if name == "ns" else "recon_path.json")
        out = tmp_path / name
        assert render_cli.main([str(run_dir), flag, str(file), "--output", str(out), "--device", "cpu"]) == 0
        assert Path(capsys.readouterr().out.strip().splitlines()[-1]) == out
        outs[name] = sorted((out / "rgb").glob("*.png"))
    # The same cameras written in the dataset's original frame (x_norm = S x_orig), read with --path-frame original.
    from recon.core.transforms import axis_angle_to_rotmat, similarity, transform_pose

    S = similarity(
        1.7, axis_angle_to_rotmat(torch.tensor([0.3, 0.1, -0.5]).double()), torch.tensor([0.2, 0, 1]).double()
    )
    info = json.loads((run_dir / "dataset.json").read_text())
    (run_dir / "dataset.json").write_text(json.dumps(info | {"normalization": S.tolist()}))
    T_orig = [transform_pose(T, torch.linalg.inv(S)) for T in T_cv]
    ns_orig = _nerfstudio(
        [_flat(torch.linalg.inv(T) @ flip) for T in T_orig], width=20, height=16, fov=50.0, fps=10
    )
    (tmp_path / "original.json").write_text(json.dumps(ns_orig))
    out = tmp_path / "original"
    argv = [str(run_dir), "--camera-path", str(tmp_path / "original.json"), "--path-frame", "original",
            "--output", str(out), "--device", "cpu"]  # fmt: skip
    assert render_cli.main(argv) == 0
    outs["original"] = sorted((out / "rgb").glob("*.png"))
    for a, b in zip(outs["ns"], outs["original"]):
        assert np.abs(iio.imread(a).astype(int) - iio.imread(b).astype(int)).max() <= 1
    assert len(outs["ns"]) == len(outs["recon"]) == len(outs["original"]) == 2
    for a, b in zip(outs["ns"], outs["recon"]):
        img_a, img_b = iio.imread(a), iio.imread(b)
        assert img_a.shape == (16, 20, 3)
        assert np.abs(img_a.astype(int) - img_b.astype(int)).max() <= 1  # same cameras, same pixels
    assert outs["ns"][0].read_bytes() != outs["ns"][1].read_bytes()  # two different viewpoints


def test_original_frame_paths_move_into_the_normalised_frame():
    """--path-frame original: a world point seen by an original-frame camera projects to the same pixel as its
    normalised image S @ x through the converted camera (S a similarity with scale, rotation and translation)."""
    from recon.core import Camera
    from recon.core.transforms import axis_angle_to_rotmat, similarity

    T = look_at(torch.tensor([4.0, -1.0, 2.0]).double(), torch.tensor([0.5, 0.2, 0.0]).double(),
                torch.tensor([0, 0, 1.0]).double())  # fmt: skip
    K = torch.tensor([[[20.0, 0, 16], [0, 20, 12], [0, 0, 1]]])
    cams = Camera(T_cam_world=T[None].float(), K=K, width=32, height=24)
    S = similarity(
        0.3,
        axis_angle_to_rotmat(torch.tensor([0.2, -0.4, 0.7]).double()),
        torch.tensor([1.0, -2.0, 0.5]).double(),
    )
    moved = render_cli.to_normalized_frame(cams, S)
    assert (
        float(
            (
                moved.T_cam_world[0, :3, :3].double().T @ moved.T_cam_world[0, :3, :3].double()
                - torch.eye(3).double()
            )
            .abs()
            .max()
        )
        < 1e-5
    )
    for point in ([0.5, 0.2, 0.0], [1.0, 0.5, 0.3], [-0.2, 0.4, 0.8]):
        x = torch.tensor([*point, 1.0], dtype=torch.float64)
        u0, v0, z0 = _project(cams, 0, point)
        u1, v1, z1 = _project(moved, 0, (S @ x)[:3].tolist())
        assert (u1, v1) == (pytest.approx(u0, abs=1e-3), pytest.approx(v0, abs=1e-3))
        assert z1 == pytest.approx(0.3 * z0, rel=1e-4)  # camera units scale with the world
