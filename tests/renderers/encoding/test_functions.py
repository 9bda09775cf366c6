"""Spherical harmonics, trunc_exp, contraction."""

import math

import torch

from recon.core.transforms import fibonacci_sphere
from recon.renderers.encoding import (
    contract_to_unisphere,
    spherical_harmonics,
    trunc_exp,
    uncontract_from_unisphere,
)
from tests.tolerances import assert_close

BOX = torch.tensor([[-2.0, -1.0, 0.0], [2.0, 3.0, 4.0]])


def test_sh_orthonormal_on_sphere():
    d = fibonacci_sphere(20000).double()
    y = spherical_harmonics(d)
    gram = y.T @ y * (4.0 * math.pi / d.shape[0])  # quadrature of int Y_i Y_j dOmega
    assert y.shape == (20000, 16)
    assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0.0, atol=2e-3, name="gram")


def test_sh_values_and_degrees():
    z = torch.tensor([[0.0, 0.0, 1.0]])
    y = spherical_harmonics(z)
    # Y_0 = 1 / (2 sqrt(pi)); Y_2 = sqrt(3 / (4 pi)) z; Y_6 = sqrt(5 / (16 pi)) (3 z^2 - 1).
    assert_close(y[0, [0, 2, 6]], torch.tensor([0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi)),
                                                 math.sqrt(5 / (16 * math.pi)) * 2.0]), rtol=1e-6, atol=1e-7)  # fmt: skip
    assert spherical_harmonics(z, degree=2).shape == (1, 4)


def test_trunc_exp():
    x = torch.tensor([-1.0, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    assert_close(y, torch.exp(x), rtol=1e-12, atol=0.0)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert_close(g, torch.exp(torch.tensor([-1.0, 3.0, 15.0], dtype=torch.float64)), rtol=1e-12, atol=0.0)


def test_contraction_properties(gen):
    center = 0.5 * (BOX[0] + BOX[1])
    half = 0.5 * (BOX[1] - BOX[0])
    # Affine inside the inscribed ball: y = (x - c) / half, out = y / 4 + 1/2.
    inner = center + half * (torch.rand(100, 3, generator=gen) - 0.5) * 1.1
    inner = inner[((inner - center) / half).norm(dim=-1) < 1.0]
    assert_close(contract_to_unisphere(inner, BOX), (inner - center) / half / 4 + 0.5, rtol=1e-6, atol=1e-6)
    # Continuous at |y| = 1 and radially monotone beyond.
    direction = torch.nn.functional.normalize(torch.randn(1, 3, generator=gen), dim=-1)
    radii = torch.tensor([0.999999, 1.0, 1.000001, 2.0, 10.0, 1e3, 1e8])[:, None]
    out = contract_to_unisphere(center + half * direction * radii, BOX)
    dist = (out - 0.5).norm(dim=-1)
    assert (dist.diff() >= 0).all() and abs(float(dist[2] - dist[0])) < 1e-5
    # Infinity -> the sphere of radius 1/2 about the unit cube centre; everything stays in [0, 1]^3.
    assert abs(float(dist[-1]) - 0.5) < 1e-6
    far = contract_to_unisphere(torch.randn(1000, 3, generator=gen) * 1e4, BOX)
    assert ((far >= 0) & (far <= 1)).all()


def test_uncontract_round_trip(gen):
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64) * 5
    assert_close(
        uncontract_from_unisphere(contract_to_unisphere(x, BOX.double()), BOX.double()),
        x,
        rtol=1e-9,
        atol=1e-9,
    )
