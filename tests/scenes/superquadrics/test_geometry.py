"""Superquadric maths: signed power map, implicit form, rot6d, block vertices, initialisation (spec 2-3, 13)."""

import math

import pytest
import torch

from recon.scenes.superquadrics.blocks import IDENTITY_ROT6D, BlockSet, init_block_set
from recon.scenes.superquadrics.geometry import (
    EXPONENT_MAX,
    EXPONENT_MIN,
    base_angles,
    block_vertices,
    exponents_from_raw,
    implicit_function,
    matrix_to_rot6d,
    raw_from_exponents,
    rot6d_to_matrix,
    scales_from_log,
    sdf_proxy,
    signed_pow,
    superquadric_points,
)
from recon.scenes.superquadrics.tessellation import icosphere, uv_sphere
from tests.typecheck import assert_rejected

F64 = torch.float64
EPS_GRID = [(1.0, 1.0), (0.1, 0.1), (1.9, 1.9), (0.1, 1.9), (1.9, 0.1), (0.3, 1.4), (1.2, 0.6)]


def _angles(level: int = 1):
    return base_angles(icosphere(level))


def test_signed_pow_oracle():
    # sign(-0.25) |−0.25|^0.5 = −0.5 ; 0^ε = 0 ; 0.5^2 = 0.25
    f = torch.tensor([-0.25, 0.0, 0.5], dtype=F64)
    eps = torch.tensor([0.5, 0.7, 2.0], dtype=F64, requires_grad=True)
    out = signed_pow(f, eps)
    torch.testing.assert_close(out, torch.tensor([-0.5, 0.0, 0.25], dtype=F64))
    (grad,) = torch.autograd.grad(out.sum(), eps)
    # d/dε = sign(f)|f|^ε ln|f|: −0.5 ln 0.25 = 0.6931..., 0 at f = 0, 0.25 ln 0.5 = −0.1733...
    torch.testing.assert_close(
        grad, torch.tensor([-0.5 * math.log(0.25), 0.0, 0.25 * math.log(0.5)], dtype=F64)
    )


def test_unit_exponents_give_the_unit_sphere():
    eta, omega = _angles(2)
    pts = superquadric_points(eta, omega, torch.ones(1, 2, dtype=F64))
    torch.testing.assert_close(pts[0], icosphere(2).vertices, rtol=0, atol=1e-12)


def test_small_exponents_approach_the_cube_surface():
    eta, omega = _angles(2)
    pts = superquadric_points(eta, omega, torch.full((1, 2), 0.1, dtype=F64))[0]
    chebyshev = pts.abs().amax(-1)  # 1 exactly on the surface of [-1, 1]^3
    assert float(chebyshev.max()) <= 1.0 + 1e-12
    # with ε = 0.1 every |cos|, |sin| >= 0.05 is raised to >= 0.74; the largest coordinate of a vertex is >= 0.95
    assert float(chebyshev.min()) > 0.95
    sphere_cheb = icosphere(2).vertices.abs().amax(-1)
    assert float(sphere_cheb.min()) < 0.7  # the sphere itself is far from the cube: the test discriminates


@pytest.mark.parametrize("e", EPS_GRID)
def test_generated_vertices_satisfy_the_implicit_equation(e):
    eta, omega = _angles(2)
    eps = torch.tensor([e], dtype=F64)
    pts = superquadric_points(eta, omega, eps)
    F_exact = implicit_function(pts, eps, safe=False)
    torch.testing.assert_close(F_exact, torch.ones_like(F_exact), rtol=0, atol=1e-6)
    # the safe numerics change F only through the 1.5e-8 clamp: off by ~clamp^(small exponent) at most
    assert bool(torch.isfinite(implicit_function(pts, eps)).all())


def test_implicit_function_safe_matches_exact_away_from_the_clamp():
    eps = torch.tensor([[0.7, 1.3]], dtype=F64)
    pts = torch.tensor([[[0.3, -0.4, 0.5], [0.9, 0.1, -0.2]]], dtype=F64)
    torch.testing.assert_close(implicit_function(pts, eps), implicit_function(pts, eps, safe=False))


def test_implicit_oracle_and_sdf_sign():
    # ε = (2, 1), point (0, 0.5, 0.5): F = ((0)^1 + 0.25^1)^(1/2) + 0.25^(1/2) = 0.5 + 0.5 = 1 (on the surface)
    eps = torch.tensor([[2.0, 1.0]], dtype=F64)
    pts = torch.tensor([[[0.0, 0.5, 0.5], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]], dtype=F64)
    F = implicit_function(pts, eps, safe=False)
    assert float(F[0, 0]) == pytest.approx(1.0, abs=1e-12)
    sdf = sdf_proxy(pts, eps)
    assert float(sdf[0, 1]) < -0.99 and float(sdf[0, 2]) > 0
    # unit sphere: sdf proxy = |x| - 1 exactly
    sphere = torch.ones(1, 2, dtype=F64)
    x = torch.tensor([[[0.0, 0.0, 2.0], [0.3, 0.4, 0.0]]], dtype=F64)
    torch.testing.assert_close(sdf_proxy(x, sphere), x.norm(dim=-1) - 1)


def test_extreme_points_stay_finite():
    eps = torch.tensor([[0.1, 0.1]], dtype=torch.float32, requires_grad=True)
    pts = torch.tensor([[[100.0, -100.0, 100.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    sdf = sdf_proxy(pts, eps)
    grads = torch.autograd.grad(sdf.sum(), (pts, eps))
    assert bool(torch.isfinite(sdf).all()) and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("base", ["ico1", "ico2", "uv"])
def test_exponent_gradients_are_finite_on_every_vertex(dtype, base):
    mesh = {"ico1": icosphere(1), "ico2": icosphere(2), "uv": uv_sphere(8, 16)}[base]
    eta, omega = base_angles(mesh)
    zeros = (eta.cos().abs() < 1e-7) | (omega.sin().abs() < 1e-12) | (omega.cos().abs() < 1e-12)
    assert bool(zeros.any()), "the base has f = 0 vertices (poles, meridians); the test must cover them"
    raw = torch.tensor([[0.3, -1.2], [-2.0, 2.0]], dtype=dtype, requires_grad=True)
    jac = torch.autograd.functional.jacobian(
        lambda r: superquadric_points(eta, omega, exponents_from_raw(r)), raw
    )  # (N, V, 3, N, 2)
    assert bool(torch.isfinite(jac).all())


def test_superquadric_points_gradcheck():
    eta, omega = _angles(1)
    eps = torch.tensor([[0.4, 1.3], [1.0, 0.2]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: superquadric_points(eta, omega, e), (eps,))


def test_sdf_gradcheck():
    gen = torch.Generator().manual_seed(1)
    pts = (torch.rand(2, 5, 3, generator=gen, dtype=F64) * 2 - 1).requires_grad_()
    eps = torch.tensor([[0.5, 1.5], [1.2, 0.8]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, e: sdf_proxy(p, e), (pts, eps))


def test_activations():
    raw = torch.tensor([-50.0, 0.0, 50.0], dtype=F64)
    torch.testing.assert_close(
        exponents_from_raw(raw), torch.tensor([EXPONENT_MIN, 1.0, EXPONENT_MAX], dtype=F64)
    )
    eps = torch.tensor([0.15, 1.0, 1.85], dtype=F64)
    torch.testing.assert_close(exponents_from_raw(raw_from_exponents(eps)), eps)
    torch.testing.assert_close(scales_from_log(torch.zeros(3, dtype=F64)), torch.full((3,), 1.2, dtype=F64))


# --- rot6d -------------------------------------------------------------------------------------------------------


def _gram_schmidt_qr(r6: torch.Tensor) -> torch.Tensor:
    """Independent reference: QR of [a1 a2] (positive diagonal) gives b1, b2; b3 completes a right-handed frame."""
    A = torch.stack([r6[..., :3], r6[..., 3:]], dim=-1)  # (..., 3, 2)
    Q, Rr = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(Rr, dim1=-2, dim2=-1))[..., None, :]
    b3 = torch.linalg.cross(Q[..., 0], Q[..., 1], dim=-1)
    return torch.cat([Q, b3[..., None]], dim=-1)


def test_rot6d_matches_gram_schmidt_and_is_a_rotation():
    gen = torch.Generator().manual_seed(0)
    r6 = torch.randn(64, 6, generator=gen, dtype=F64)
    R = rot6d_to_matrix(r6)
    torch.testing.assert_close(R, _gram_schmidt_qr(r6), rtol=0, atol=1e-12)
    eye = torch.eye(3, dtype=F64).expand(64, 3, 3)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(R)), R, rtol=0, atol=1e-12)


def test_rot6d_identity_and_gradcheck():
    torch.testing.assert_close(
        rot6d_to_matrix(torch.tensor(IDENTITY_ROT6D, dtype=F64)), torch.eye(3, dtype=F64)
    )
    r6 = torch.tensor([[0.3, -1.0, 0.5, 0.2, 0.8, -0.1]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(rot6d_to_matrix, (r6,))
    assert_rejected(lambda: rot6d_to_matrix(torch.zeros(2, 5)), match="r6")


# --- block vertices and BlockSet ------------------------------------------------------------------------------------


def test_block_vertices_oracle():
    # unit point (1, 0, 0), S = (2, 1, 1), ratio 1/4 -> local (0.5, 0, 0); R = 90° about z maps x to y; t = (1, 2, 3)
    unit = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=F64)
    R = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], dtype=F64)
    out = block_vertices(
        unit, torch.tensor([[2.0, 1.0, 1.0]], dtype=F64), R, torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    )
    torch.testing.assert_close(out, torch.tensor([[[1.0, 2.5, 3.0]]], dtype=F64))


def test_blockset_vertices_are_batched_and_differentiable():
    blocks = init_block_set(3, generator=torch.Generator().manual_seed(0), texture_size=8, dtype=F64)
    leaves = {
        k: getattr(blocks, k).clone().requires_grad_()
        for k in ("raw_exponents", "log_scales", "rot6d", "translations")
    }
    b = BlockSet(**{**blocks.__dict__, **leaves})
    eta, omega = _angles(1)
    verts = b.vertices(eta, omega)
    assert verts.shape == (3, 42, 3)
    for n in range(3):  # each block equals its own unbatched computation
        unit = superquadric_points(eta, omega, b.exponents()[n : n + 1])[0]
        expected = (unit * 0.25 * b.scales()[n]) @ b.rotations()[n].T + b.translations[n]
        torch.testing.assert_close(verts[n], expected)
    v = torch.randn(verts.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    grads = torch.autograd.grad((verts * v).sum(), list(leaves.values()))
    for name, g in zip(leaves, grads):
        assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0, name


def test_init_follows_the_spec():
    n = 2000
    b = init_block_set(
        n, generator=torch.Generator().manual_seed(0), texture_size=8, translation_range=(1.0, 2.0, 1.0)
    )
    S = b.scales()
    assert float(S.min()) >= 0.5 - 1e-6 and float(S.max()) < 1.5 + 1e-6
    assert float(S.mean()) == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(b.exponents(), torch.ones(n, 2))
    torch.testing.assert_close(b.opacities(), torch.full((n,), 0.5), atol=1e-3, rtol=0)
    assert bool((b.opacities() > 0.5).all())  # logit(0.5) + 1e-3: just above the fine-phase threshold
    std = b.translations.std(0)
    torch.testing.assert_close(std, torch.tensor([0.5, 1.0, 0.5]), atol=0.05, rtol=0)
    R = b.rotations()
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(n), atol=1e-5, rtol=0)
    # uniform rotations: E[R] = 0
    assert float(R.mean(0).abs().max()) < 0.06
    torch.testing.assert_close(b.ground_rotation(), torch.eye(3))
    torch.testing.assert_close(b.ground_translation, torch.tensor([0.0, -1.8, 0.0]))
    assert float(b.texture_logits.std()) == pytest.approx(0.1, rel=0.05)


def test_init_is_deterministic_and_uniform_mode():
    a = init_block_set(4, generator=torch.Generator().manual_seed(3), texture_size=8)
    b = init_block_set(4, generator=torch.Generator().manual_seed(3), texture_size=8)
    for name in ("log_scales", "rot6d", "translations", "texture_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    u = init_block_set(
        500, generator=torch.Generator().manual_seed(0), texture_size=8, translation_init="uniform"
    )
    assert float(u.translations.abs().max()) <= 1.0 and float(u.translations.abs().max()) > 0.95
    assert_rejected(
        lambda: init_block_set(2, generator=torch.Generator(), translation_init="normal"),
        match="translation_init",
    )  # type: ignore[arg-type]


def test_blockset_validates_shapes():
    b = init_block_set(2, generator=torch.Generator().manual_seed(0), texture_size=8)
    assert_rejected(lambda: BlockSet(**{**b.__dict__, "log_scales": torch.zeros(3, 3)}), match="log_scales")


def test_float32_blocks_are_exact_at_poles_and_meridians():
    # trig of the constant angles is evaluated in float64 with exact zeros: float32 cos(π/2) = -4.4e-8 raised to
    # ε = 0.1 would otherwise put the pole vertex at x = -0.18 instead of 0
    eta, omega = _angles(2)
    eps = torch.tensor([[0.1, 0.25], [1.9, 0.1]])
    p32 = superquadric_points(eta, omega, eps)
    p64 = superquadric_points(eta, omega, eps.double())
    torch.testing.assert_close(p32.double(), p64, rtol=0, atol=1e-5)
    poles = eta.abs() == math.pi / 2
    assert int(poles.sum()) == 2 and bool((p32[:, poles][..., [0, 2]] == 0).all())
