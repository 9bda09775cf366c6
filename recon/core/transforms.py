"""Rigid and similarity transforms, quaternions (wxyz) and checks. Pure maths, no I/O.

Poses are 4x4 matrices named ``T_<to>_<from>``: ``x_to = T_to_from @ x_from`` in homogeneous coordinates.
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor

RIGID_TOL = (
    1e-3  # max |R^T R - I| and |det R - 1| accepted for a rotation read from a file (float32 text files)
)


def make_T(R: Float[Tensor, "*batch 3 3"], t: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 4 4"]:
    """Assemble 4x4 transforms ``[[R, t], [0, 1]]``."""
    batch = R.shape[:-2]
    T = torch.zeros(*batch, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_T(T: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Invert rigid transforms in closed form: ``[[R^T, -R^T t], [0, 1]]``."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_T(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def apply_T(
    T: Float[Tensor, "*#batch 4 4"], points: Float[Tensor, "*#batch N 3"]
) -> Float[Tensor, "... N 3"]:
    """Apply (batched) affine transforms to points: ``x' = R x + t`` (R may include a scale)."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def quat_to_rotmat(q: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices from quaternions in wxyz order (normalised first)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quat(R: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Quaternions (wxyz, w >= 0) from rotation matrices (Shepperd's method, branch-free form)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack(
                [
                    1 + tr,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + 2 * m[..., 0, 0] - tr,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 + 2 * m[..., 1, 1] - tr,
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 + 2 * m[..., 2, 2] - tr,
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # (*batch, 4, 4): row k is 4*q_k*q (up to sign), best conditioned where q_k is largest
    diag = torch.stack(
        [1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1
    )
    best = diag.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_rotmat(v: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Rodrigues' formula; ``v = angle * axis``."""
    angle = v.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(half)/angle -> 1/2 as angle -> 0
    s = torch.where(angle > 1e-8, torch.sin(half) / angle.clamp_min(1e-12), 0.5 - angle**2 / 48)
    q = torch.cat([torch.cos(half), v * s], dim=-1)
    return quat_to_rotmat(q)


def random_rotations(
    n: int, *, generator: torch.Generator | None = None, dtype=torch.float32
) -> Float[Tensor, "n 3 3"]:
    """Uniformly distributed rotations (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quat_to_rotmat(q)


def rigidity_error(T: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch"]:
    """Largest deviation of a transform from a proper rigid motion (orthonormality, det, last row)."""
    R = T[..., :3, :3]
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().flatten(-2).amax(-1)
    det = (torch.linalg.det(R) - 1).abs()
    last = (T[..., 3, :] - torch.tensor([0, 0, 0, 1], dtype=T.dtype, device=T.device)).abs().amax(-1)
    return torch.maximum(torch.maximum(ortho, det), last)


def similarity(scale: float, R: Float[Tensor, "3 3"], t: Float[Tensor, "3"]) -> Float[Tensor, "4 4"]:
    """The similarity ``x' = scale * R x + t`` as a 4x4 matrix."""
    return make_T(scale * R, t)


def similarity_scale(S: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch"]:
    """Uniform scale of a similarity matrix (cube root of the determinant of its linear part)."""
    return torch.linalg.det(S[..., :3, :3]).abs() ** (1.0 / 3.0)


def transform_pose(
    T_cam_world: Float[Tensor, "*batch 4 4"], S_new_old: Float[Tensor, "4 4"]
) -> Float[Tensor, "*batch 4 4"]:
    """Re-express ``T_cam_world`` (old world frame) in a new world frame ``x_new = S x_old`` (a similarity).

    The camera frame keeps metric units of the new frame: with ``S = [[sR, t], [0, 1]]`` the new pose is
    ``[[R_cw R^T, s t_cw - R_cw R^T t], [0, 1]]``, so that ``x_cam_new = s * x_cam_old``.
    """
    s = similarity_scale(S_new_old)
    R = S_new_old[:3, :3] / s
    t = S_new_old[:3, 3]
    R_cw = T_cam_world[..., :3, :3]
    t_cw = T_cam_world[..., :3, 3]
    R_new = R_cw @ R.T
    t_new = s * t_cw - (R_new @ t)
    return make_T(R_new, t_new)


def fibonacci_sphere(n: int, *, dtype=torch.float32) -> Float[Tensor, "n 3"]:
    """``n`` near-uniform unit vectors on the sphere (golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    out = torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1
    )
    return out.to(dtype)


def look_at(
    eye: Float[Tensor, "3"], target: Float[Tensor, "3"], up: Float[Tensor, "3"]
) -> Float[Tensor, "4 4"]:
    """``T_cam_world`` of an OpenCV camera at ``eye`` looking at ``target`` (image up is roughly ``up``)."""
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-8:  # up parallel to the viewing direction: pick any perpendicular axis
        alt = (
            torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype)
            if abs(float(z[0])) < 0.9
            else torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype)
        )
        x = torch.linalg.cross(z, alt)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)  # OpenCV: y points down in the image
    R_world_cam = torch.stack([x, y, z], dim=1)
    return invert_T(make_T(R_world_cam, eye))
