"""Superquadric maths of the blocks (spec superquadrics.md 2-3): activations, signed power map, rot6d, poses.

Every function is a pure torch function of tensors, differentiable where its docstring says so, and batched over
``N`` blocks. Conventions: y is a block's polar ("up") axis; rotations act on column vectors, ``x = R x_loc + t``.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from recon.scenes.superquadrics.tessellation import BaseMesh

__all__ = [
    "EXPONENT_MAX",
    "EXPONENT_MIN",
    "base_angles",
    "block_vertices",
    "exponents_from_raw",
    "implicit_function",
    "matrix_to_rot6d",
    "raw_from_exponents",
    "rot6d_to_matrix",
    "scales_from_log",
    "sdf_proxy",
    "signed_pow",
    "superquadric_points",
]

EXPONENT_MIN = 0.1  # eps = 1.8 sigmoid(raw) + 0.1 lies in (0.1, 1.9) (spec 2)
EXPONENT_RANGE = 1.8
EXPONENT_MAX = EXPONENT_MIN + EXPONENT_RANGE
POW_BASE_MIN = 1.5e-8  # clamp of every fractional-power base in F(x): exponents reach 20 (spec 2)
COORD_CLAMP = 5.0  # |x| clamp before F(x): 5^(2*10) is still finite in float32 (spec 2)
SIGNED_POW_TINY = 1e-300  # keeps log(|f|) finite inside the f > 0 branch of signed_pow's gradient
TRIG_ZERO = (
    1e-12  # cos(pi/2) is 6e-17 in float64 and 6e-17^0.1 = 0.02: trig values this small are exact zeros
)
ROT6D_NORM_MIN = 1e-12  # guard of the normalisations in rot6d (a degenerate input has no rotation)


def exponents_from_raw(raw: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """Shape exponents ``(ε1, ε2) = 1.8·sigmoid(raw) + 0.1 ∈ (0.1, 1.9)``; raw 0 gives the sphere (1, 1).

    Differentiable w.r.t. ``raw``.
    """
    return EXPONENT_RANGE * torch.sigmoid(raw) + EXPONENT_MIN


def raw_from_exponents(eps: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """Inverse of :func:`exponents_from_raw` (``eps`` must lie strictly inside (0.1, 1.9))."""
    return torch.logit((eps - EXPONENT_MIN) / EXPONENT_RANGE)


def scales_from_log(
    log_scales: Float[Tensor, "*batch 3"], *, scale_min: float = 0.2
) -> Float[Tensor, "*batch 3"]:
    """Block scales ``S = exp(log_scales) + scale_min`` (spec 3). Differentiable w.r.t. ``log_scales``."""
    return torch.exp(log_scales) + scale_min


def signed_pow(f: Float[Tensor, "*#batch"], eps: Float[Tensor, "*#batch"]) -> Float[Tensor, "..."]:
    """Signed power ``f^ε := sign(f)·|f|^ε`` with the exponent gradient ``sign(f)|f|^ε ln|f|``, 0 at ``f = 0``.

    .. math:: \\partial_\\varepsilon\\, \\mathrm{sign}(f)|f|^\\varepsilon = \\mathrm{sign}(f)|f|^\\varepsilon \\ln|f|

    The ``f = 0`` branch is selected with ``torch.where`` so its gradient is exactly 0 and the other branch never
    sees ``log 0`` (spec 2: finite ε-gradients on the equator and the meridians).

    Differentiable w.r.t. ``eps`` (and ``f`` away from 0; the angles are constants in practice).
    """
    mag = f.abs()
    positive = mag > 0
    safe = torch.where(positive, mag, torch.ones_like(mag)).clamp_min(SIGNED_POW_TINY)
    powered = torch.where(positive, safe.pow(eps), torch.zeros_like(mag))
    return torch.sign(f) * powered


def base_angles(base: BaseMesh) -> tuple[Float[Tensor, " V"], Float[Tensor, " V"]]:
    """Fixed angles per base vertex ``u``: ``η = asin(u_y) ∈ [−π/2, π/2]``, ``ω = atan2(u_x, u_z) ∈ (−π, π]``.

    The base vertices are normalised first (float64), so a slightly off-sphere input gives the same angles.
    """
    u = base.vertices.to(torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return torch.asin(u[:, 1].clamp(-1.0, 1.0)), torch.atan2(u[:, 0], u[:, 2])


def _trig(angle: Tensor, fn, like: Tensor) -> Tensor:
    """``fn(angle)`` evaluated in float64 with near-zeros snapped to 0, then cast to ``like`` (the angles are
    constants, so computing them precisely costs nothing and keeps float32 blocks exact at poles and meridians)."""
    value = fn(angle.to(torch.float64))
    value = torch.where(value.abs() < TRIG_ZERO, torch.zeros_like(value), value)
    return value.to(like)[None]


def superquadric_points(
    eta: Float[Tensor, " V"], omega: Float[Tensor, " V"], eps: Float[Tensor, "N 2"]
) -> Float[Tensor, "N V 3"]:
    """Unit superquadric surface points of ``N`` blocks at fixed angles (spec 2).

    .. math:: x = \\cos^{\\varepsilon_1}\\eta \\sin^{\\varepsilon_2}\\omega,\\quad y = \\sin^{\\varepsilon_1}\\eta,
        \\quad z = \\cos^{\\varepsilon_1}\\eta \\cos^{\\varepsilon_2}\\omega

    Args:
        eta: (V,) latitude angles (constants; float64 recommended, trig is evaluated in float64).
        omega: (V,) longitude angles (constants).
        eps: (N, 2) exponents ``(ε1, ε2)``.

    Returns:
        (N, V, 3) points in the block's unit frame, dtype of ``eps``. Differentiable w.r.t. ``eps``.

    Example:
        >>> from recon.scenes.superquadrics.tessellation import icosphere
        >>> eta, omega = base_angles(icosphere(1))
        >>> superquadric_points(eta, omega, torch.ones(1, 2, dtype=torch.float64)).norm(dim=-1).max().item()
        1.0
    """
    if eps.ndim != 2 or eps.shape[-1] != 2:
        raise ValueError(f"eps must have shape (N, 2), got {tuple(eps.shape)}")
    e1, e2 = eps[:, 0:1], eps[:, 1:2]
    cos_eta, sin_eta = signed_pow(_trig(eta, torch.cos, eps), e1), signed_pow(_trig(eta, torch.sin, eps), e1)
    cos_om, sin_om = (
        signed_pow(_trig(omega, torch.cos, eps), e2),
        signed_pow(_trig(omega, torch.sin, eps), e2),
    )
    return torch.stack([cos_eta * sin_om, sin_eta.expand_as(cos_eta * sin_om), cos_eta * cos_om], dim=-1)


def rot6d_to_matrix(r6: Float[Tensor, "*batch 6"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation from the 6D representation of Zhou et al. (CVPR 2019), columns ``[b1 b2 b3]``.

    .. math:: b_1 = a_1/\\lVert a_1\\rVert,\\ b_2 = \\mathrm{normalize}(a_2 - (b_1\\cdot a_2) b_1),\\
        b_3 = b_1 \\times b_2

    Args:
        r6: (..., 6) ``[a1, a2]``; ``[1, 0, 0, 0, 1, 0]`` is the identity.

    Returns:
        (..., 3, 3) rotation acting on column vectors. Differentiable w.r.t. ``r6``.
    """
    if r6.shape[-1] != 6:
        raise ValueError(f"r6 must have shape (..., 6), got {tuple(r6.shape)}")
    a1, a2 = r6[..., :3], r6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(ROT6D_NORM_MIN)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True).clamp_min(ROT6D_NORM_MIN)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 6"]:
    """The 6D representation ``[first column, second column]`` of rotations (inverse of :func:`rot6d_to_matrix`)."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def block_vertices(
    unit_points: Float[Tensor, "N V 3"],
    scales: Float[Tensor, "N 3"],
    rotations: Float[Tensor, "N 3 3"],
    translations: Float[Tensor, "N 3"],
    *,
    ratio: float = 0.25,
) -> Float[Tensor, "N V 3"]:
    """World (canonical) vertices ``x = R (ratio·S ⊙ x_sq) + t`` of N blocks (spec 3).

    Differentiable w.r.t. all tensor inputs.
    """
    local = unit_points * (ratio * scales)[:, None, :]
    return local @ rotations.transpose(-1, -2) + translations[:, None, :]


def _safe_pow(base: Tensor, exponent: Tensor) -> Tensor:
    return base.clamp_min(POW_BASE_MIN).pow(exponent)


def implicit_function(
    points: Float[Tensor, "N P 3"], eps: Float[Tensor, "N 2"], *, safe: bool = True
) -> Float[Tensor, "N P"]:
    """Superquadric inside-outside function in each block's unit frame; inside iff ``F < 1`` (spec 2).

    .. math:: F(x) = \\left((x^2)^{1/\\varepsilon_2} + (z^2)^{1/\\varepsilon_2}\\right)^{\\varepsilon_2/\\varepsilon_1}
        + (y^2)^{1/\\varepsilon_1}

    Args:
        points: (N, P, 3) points, row n in block n's unit frame (local coordinates divided by ``ratio·S``).
        eps: (N, 2) exponents.
        safe: apply the spec's numerics: coordinates clamped to [-5, 5], squares first, every base of a
            fractional power clamped at 1.5e-8. ``safe=False`` evaluates the exact formula (tests, analysis).

    Returns:
        (N, P) values of F. Differentiable w.r.t. ``points`` and ``eps`` (finite everywhere when ``safe``).
    """
    if safe:
        points = points.clamp(-COORD_CLAMP, COORD_CLAMP)
    power = _safe_pow if safe else torch.pow
    e1, e2 = eps[:, 0:1], eps[:, 1:2]
    x2, y2, z2 = (points[..., k].pow(2) for k in range(3))
    horizontal = power(x2, 1.0 / e2) + power(z2, 1.0 / e2)
    return power(horizontal, e2 / e1) + power(y2, 1.0 / e1)


def sdf_proxy(
    points: Float[Tensor, "N P 3"], eps: Float[Tensor, "N 2"], *, safe: bool = True
) -> Float[Tensor, "N P"]:
    """Signed-distance proxy ``F(x)^{ε1/2} − 1`` (negative inside; exact radial distance for a unit sphere).

    Same arguments and numerics as :func:`implicit_function`. Differentiable w.r.t. ``points`` and ``eps``.
    """
    power = _safe_pow if safe else torch.pow
    return power(implicit_function(points, eps, safe=safe), eps[:, 0:1] / 2.0) - 1.0
