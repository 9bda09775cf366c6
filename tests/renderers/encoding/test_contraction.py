"""Scene contraction (Mip-NeRF 360 Eq. 10) for both norms: maths, inverse round trip, continuity, finite Jacobian."""

import pytest
import torch

from recon.renderers.encoding.contraction import contract_to_unisphere, uncontract_from_unisphere
from tests.tolerances import assert_close as _assert_close
from tests.typecheck import assert_rejected

BOX = torch.tensor([[-2.0, -1.0, 0.0], [2.0, 3.0, 4.0]], dtype=torch.float64)
CENTER = 0.5 * (BOX[0] + BOX[1])
HALF = 0.5 * (BOX[1] - BOX[0])
NORMS = ("l2", "linf")
F64 = {"rtol": 1e-12, "atol": 1e-12}  # float64 closed forms


def assert_close(actual, expected, **kw):
    _assert_close(actual, expected, **(F64 | kw))


def _norm(y: torch.Tensor, norm: str) -> torch.Tensor:
    return y.norm(dim=-1) if norm == "l2" else y.abs().amax(dim=-1)


def test_hand_computed_points():
    box = torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=torch.float64)
    # y = x for this box. (3, 0, 0): |y| = 3 in both norms -> (2 - 1/3) * (1, 0, 0) = (5/3, 0, 0) -> u_x = 5/12 + 1/2.
    # (2, 2, 0): l2 |y| = 2 sqrt 2 -> (2 - 1/(2 sqrt 2)) / sqrt 2 per component;
    #            linf |y| = 2 -> (2 - 1/2) * (1, 1, 0) = (1.5, 1.5, 0) -> u = (0.875, 0.875, 0.5).
    x = torch.tensor([[3.0, 0.0, 0.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    l2 = contract_to_unisphere(x, box, norm="l2")
    linf = contract_to_unisphere(x, box, norm="linf")
    c = (2.0 - 1.0 / (2.0 * 2.0**0.5)) / 2.0**0.5
    assert_close(
        l2, torch.tensor([[5 / 12 + 0.5, 0.5, 0.5], [c / 4 + 0.5, c / 4 + 0.5, 0.5]], dtype=torch.float64)
    )
    assert_close(linf, torch.tensor([[5 / 12 + 0.5, 0.5, 0.5], [0.875, 0.875, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("norm", NORMS)
def test_identity_region_is_affine(norm, gen):
    y = (torch.rand(500, 3, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * 1.2
    y = y[_norm(y, norm) <= 1.0]
    assert len(y) > 50
    x = CENTER + HALF * y
    assert_close(contract_to_unisphere(x, BOX, norm=norm), y / 4.0 + 0.5, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_inverse_round_trip(norm, gen):
    x = (
        CENTER
        + HALF
        * torch.randn(2000, 3, generator=gen, dtype=torch.float64)
        * torch.tensor([0.3, 3.0, 30.0], dtype=torch.float64).repeat_interleave(667)[:2000, None]
    )
    u = contract_to_unisphere(x, BOX, norm=norm)
    assert_close(uncontract_from_unisphere(u, BOX, norm=norm), x, rtol=1e-9, atol=1e-9)
    # and the other way: points of the contracted domain (|y| < 2) come back to themselves
    v = 0.5 + (torch.rand(500, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.9
    yv = (v - 0.5) * 4.0
    v = v[_norm(yv, norm) < 1.9]
    assert_close(contract_to_unisphere(uncontract_from_unisphere(v, BOX, norm=norm), BOX, norm=norm), v,
                 rtol=1e-9, atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("norm", NORMS)
def test_continuous_at_unit_ball_monotone_and_bounded(norm, gen):
    direction = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    direction = direction / _norm(direction, norm)[:, None]  # |direction| = 1 in the contraction's norm
    radii = torch.tensor([1 - 1e-9, 1.0, 1 + 1e-9, 1.5, 2.0, 10.0, 1e3, 1e9], dtype=torch.float64)
    y = direction[:, None, :] * radii[None, :, None]
    out = contract_to_unisphere(CENTER + HALF * y, BOX, norm=norm)
    dist = _norm((out - 0.5) * 4.0, norm)  # contracted radius |y'| in the same norm
    assert bool((dist.diff(dim=-1) >= 0).all())  # radially monotone
    assert float((dist[:, 2] - dist[:, 0]).abs().max()) < 1e-8  # continuous across |y| = 1
    assert float((dist[:, -1] - 2.0).abs().max()) < 1e-8  # infinity -> |y'| = 2 (u on the limit surface)
    far = contract_to_unisphere(
        torch.randn(1000, 3, generator=gen, dtype=torch.float64) * 1e6, BOX, norm=norm
    )
    assert bool(((far >= 0) & (far <= 1)).all())


@pytest.mark.parametrize("norm", NORMS)
def test_jacobian_finite_and_gradcheck(norm, gen):
    # float64 gradcheck on points away from the kinks (|y| = 1 and, for linf, ties between components)
    y = torch.tensor(
        [[0.3, -0.2, 0.1], [1.7, 0.4, -0.6], [-5.0, 2.0, 0.5], [40.0, -3.0, 7.0]], dtype=torch.float64
    )
    x = (CENTER + HALF * y).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: contract_to_unisphere(p, BOX, norm=norm), (x,))
    # The Jacobian is finite everywhere, including exactly on the unit ball and at the box centre.
    points = torch.cat([CENTER[None], CENTER + HALF * torch.randn(64, 3, generator=gen, dtype=torch.float64) * 5.0,
                        CENTER + HALF * torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)])  # fmt: skip
    for p in points:
        jac = torch.autograd.functional.jacobian(lambda q: contract_to_unisphere(q, BOX, norm=norm), p)
        assert bool(torch.isfinite(jac).all())
    jac0 = torch.autograd.functional.jacobian(lambda q: contract_to_unisphere(q, BOX, norm=norm), CENTER)
    assert_close(jac0, torch.diag(1.0 / (4.0 * HALF)))  # affine part: d out / dx = 1 / (2 (max - min))


def test_bad_inputs_name_the_argument():
    assert_rejected(lambda: contract_to_unisphere(torch.zeros(4, 3), torch.zeros(3)), match="aabb")
    assert_rejected(lambda: contract_to_unisphere(torch.zeros(4, 3), BOX.float(), norm="l1"), match="norm")
    assert_rejected(lambda: uncontract_from_unisphere(torch.zeros(4, 2), BOX.float()), match="u must")
