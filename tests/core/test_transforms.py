"""Transforms: quaternions (wxyz), rigid inverses, similarities, rigidity checks."""

import math

import torch

from recon.core.transforms import (
    apply_T,
    axis_angle_to_rotmat,
    fibonacci_sphere,
    invert_T,
    make_T,
    quat_to_rotmat,
    random_rotations,
    rigidity_error,
    rotmat_to_quat,
    similarity,
    transform_pose,
)
from tests.tolerances import assert_close


def test_quaternion_hand_case():
    # 90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45) maps x -> y.
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    R = quat_to_rotmat(q)
    assert_close(
        R @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
        torch.tensor([0.0, 1, 0], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )


def test_quaternion_round_trip(gen):
    R = random_rotations(200, generator=gen, dtype=torch.float64)
    assert_close(quat_to_rotmat(rotmat_to_quat(R)), R, rtol=0, atol=1e-10)
    q = rotmat_to_quat(R)
    assert bool((q[:, 0] >= 0).all())


def test_axis_angle_matches_quaternion(gen):
    v = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    angle = v.norm(dim=-1, keepdim=True)
    q = torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * v / angle], -1)
    assert_close(axis_angle_to_rotmat(v), quat_to_rotmat(q), rtol=0, atol=1e-12)
    assert_close(
        axis_angle_to_rotmat(torch.zeros(1, 3, dtype=torch.float64)),
        torch.eye(3, dtype=torch.float64)[None],
        rtol=0,
        atol=0,
    )


def test_rigidity_error_detects_scale_and_shear(gen):
    T = make_T(
        random_rotations(3, generator=gen, dtype=torch.float64),
        torch.randn(3, 3, generator=gen, dtype=torch.float64),
    )
    assert float(rigidity_error(T).max()) < 1e-12
    bad = T.clone()
    bad[0, :3, :3] *= 1.1
    bad[1, 0, 1] += 0.2
    err = rigidity_error(bad)
    assert float(err[0]) > 0.1 and float(err[1]) > 0.1 and float(err[2]) < 1e-12


def test_transform_pose_preserves_projection_geometry(gen):
    # x_new = S x_old; camera-frame points scale by s, so normalised image coordinates are unchanged.
    R = random_rotations(1, generator=gen, dtype=torch.float64)[0]
    S = similarity(2.5, R, torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    T_old = make_T(
        random_rotations(2, generator=gen, dtype=torch.float64),
        torch.randn(2, 3, generator=gen, dtype=torch.float64),
    )
    T_new = transform_pose(T_old, S)
    x_old = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64)
    x_new = apply_T(S, x_old)
    cam_old = apply_T(T_old, x_old)
    cam_new = apply_T(T_new, x_new)
    assert_close(cam_new, 2.5 * cam_old, rtol=0, atol=1e-10)
    assert float(rigidity_error(T_new).max()) < 1e-12
    assert_close(invert_T(invert_T(T_new)), T_new, rtol=0, atol=1e-12)


def test_fibonacci_sphere_unit():
    p = fibonacci_sphere(64, dtype=torch.float64)
    assert_close(p.norm(dim=-1), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(p.mean(0).norm()) < 0.05
