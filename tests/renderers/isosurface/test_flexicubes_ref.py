"""FlexiCubes torch reference: hand-computed dual vertices, regularisers, and float64 gradcheck."""

import math

import torch

from recon.renderers.isosurface import (
    flexicubes_dense,
    grid_edges,
    l_dev,
    sign_flip_loss,
    sparse_voxel_grid,
    weight_regularizer,
)
from recon.renderers.isosurface import flexicubes_ref as ref
from tests.tolerances import assert_close, tol

UNIT = (0.0, 1.0)  # one cube of side 1 at the origin: positions equal the corner offsets


def _one_cube(values: list[float], dtype=torch.float64) -> torch.Tensor:
    """(2, 2, 2) scalars with ``values[c]`` at corner ``c = dx + 2 dy + 4 dz``."""
    s = torch.empty(2, 2, 2, dtype=dtype)
    for c, v in enumerate(values):
        s[c & 1, (c >> 1) & 1, (c >> 2) & 1] = v
    return s


def test_plain_dual_vertex_is_dmc_centroid_of_linear_crossings():
    # Case 1 (corner 0 inside): edges 0-1, 0-2, 0-4 cross. With beta = alpha = 1, delta = 0:
    #   u(0-1) = (s1 x0 - s0 x1) / (s1 - s0) = (1 * 0 + 1 * (1,0,0)) / 2 = (0.5, 0, 0)
    #   u(0-2) = (3 * 0 + 1 * (0,1,0)) / 4 = (0, 0.25, 0)
    #   u(0-4) = (1 * 0 + 1 * (0,0,1)) / 2 = (0, 0, 0.5)
    #   v = mean = (0.5 / 3, 0.25 / 3, 0.5 / 3) = (1/6, 1/12, 1/6)
    s = _one_cube([-1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    out = flexicubes_dense(s, torch.zeros(8, 3, dtype=s.dtype), torch.zeros(1, 21, dtype=s.dtype), box=UNIT,
                           backend="torch")  # fmt: skip
    assert out.faces.shape == (0, 3)  # one cube: no edge is shared by 4 cubes
    assert_close(
        out.vertices,
        torch.tensor([[1 / 6, 1 / 12, 1 / 6]], dtype=s.dtype),
        **tol("flexicubes_oracle", torch.float64),
    )
    # L_dev: distances of the crossings to v are |(1/3, -1/12, -1/6)| = 0.3819, |(-1/6, 1/6, -1/6)| = 0.2887,
    # |(-1/6, -1/12, 1/3)| = 0.3819; mean 0.35083; mean absolute deviation (2 * 0.03109 + 0.06218) / 3 = 0.04145.
    d = torch.tensor(
        [(1 / 9 + 1 / 144 + 1 / 36) ** 0.5, (3 / 36) ** 0.5, (1 / 9 + 1 / 144 + 1 / 36) ** 0.5], dtype=s.dtype
    )
    expected = (d - d.mean()).abs().mean()
    assert_close(out.l_dev, expected[None].to(s.dtype), **tol("flexicubes_oracle", torch.float64))
    assert abs(float(expected) - 0.04145) < 1e-4


def test_two_patches_and_weighted_crossing():
    # Case 6 (corners 1 and 2 inside, diagonal on face z = 0): two dual vertices, around corner 1 and corner 2.
    s = _one_cube([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    raw = torch.zeros(1, 21, dtype=s.dtype)
    raw[0, 12 + 1] = torch.atanh(torch.tensor(0.5 / 0.99))  # alpha_1 = 1.5
    out = flexicubes_dense(s, weights=raw, box=UNIT, backend="torch")
    assert out.num_dual_vertices == 2
    # Around corner 1 (edges 0-1, 1-3, 1-5), w_1 = -1.5, w_other = 1: w vanishes 1.5 / 2.5 = 0.6 of the way from
    # corner 1 (the larger |w| pushes the crossing away): (0.4, 0, 0), (1, 0.6, 0), (1, 0, 0.6) -> (0.8, 0.2, 0.2).
    # Around corner 2 (plain midpoints): (0.5, 1, 0), (0, 0.5, 0), (0, 1, 0.5) -> (1/6, 5/6, 1/6).
    expected = torch.tensor([[0.8, 0.2, 0.2], [1 / 6, 5 / 6, 1 / 6]], dtype=s.dtype)
    assert_close(out.vertices, expected, **tol("flexicubes_oracle", torch.float64))


def test_symmetric_cube_has_zero_l_dev():
    out = flexicubes_dense(_one_cube([-1.0] + [1.0] * 7), box=UNIT, backend="torch")
    assert float(l_dev(out)) < 1e-12  # three crossings at the same distance from their centroid


def test_sign_flip_loss_hand_computed_and_zero_without_crossings():
    s = torch.tensor([-1.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([[0, 1], [1, 2], [2, 3]])
    # Only edge (0, 1) crosses: BCE(-1, target 1) + BCE(1, target 0) = 2 log(1 + e) = 2.62652
    loss = sign_flip_loss(s, edges)
    assert abs(float(loss) - 2 * math.log1p(math.e)) < 1e-12
    (grad,) = torch.autograd.grad(loss, s)
    assert grad[0] < 0 < grad[1] and grad[2:].abs().max() == 0  # both ends pulled towards 0, others untouched
    assert float(sign_flip_loss(s.detach().abs(), edges)) == 0.0


def test_grid_edges_and_weight_regularizer():
    grid = sparse_voxel_grid(torch.tensor([[0, 0, 0], [1, 0, 0]]), 3)
    edges = grid_edges(grid)
    assert edges.shape == (20, 2)  # 12 + 12 - 4 shared on the common face
    delta = grid.corners[edges[:, 1]] - grid.corners[edges[:, 0]]
    assert bool((delta.abs().sum(-1) == 1).all() and (delta >= 0).all())
    raw = torch.zeros(3, 21)
    raw[:, 20] = 100.0  # gamma is not regularised
    raw[0, :20] = 2.0
    assert abs(float(weight_regularizer(raw)) - 2.0 / 3) < 1e-6


def _ball_inputs(gen: torch.Generator):
    """R = 2 grid, centre corner inside: 8 surface cubes, 6 quads; |s| >= 0.4 keeps signs under perturbation."""
    s = 0.6 + 0.5 * torch.rand(3, 3, 3, generator=gen, dtype=torch.float64)
    s[1, 1, 1] = -0.9
    deform = 0.3 * torch.randn(27, 3, generator=gen, dtype=torch.float64)
    weights = 0.5 * torch.randn(8, 21, generator=gen, dtype=torch.float64)
    return s, deform, weights


def test_gradcheck_float64_all_parameters(gen):
    s, deform, weights = _ball_inputs(gen)
    for training in (True, False):

        def fn(s, deform, weights, training=training):
            out = flexicubes_dense(s, deform, weights, box=(-1.0, 1.0), training=training, backend="torch")
            assert out.faces.shape[0] == (24 if training else 12)
            return out.vertices, out.l_dev

        inputs = tuple(t.clone().requires_grad_() for t in (s, deform, weights))
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    # gamma matters in training mode (quad centres), beta/alpha/delta move dual vertices
    inputs = tuple(t.clone().requires_grad_() for t in (s, deform, weights))
    out = flexicubes_dense(*inputs, box=(-1.0, 1.0), training=True, backend="torch")
    grads = torch.autograd.grad(out.vertices.sum() + out.l_dev.sum(), inputs)
    assert all(float(g.abs().max()) > 0 for g in grads)
    assert float(grads[2][:, 20].abs().max()) > 0


def test_ambiguity_fix_inverts_both_cubes_of_a_shared_ambiguous_face():
    # Cube (0, 0, 1) has case 249 (ambiguous face towards -z), cube (0, 0, 0) case 159 (towards +z): both are
    # C16/C19 problems sharing that face, so both invert; a lone problem cube keeps its case.
    coords = torch.tensor([[0, 0, 0], [0, 0, 1]])
    cases = torch.tensor([159, 249])
    assert ref.CHECK_TABLE[159][1:4] == [0, 0, 1] and ref.CHECK_TABLE[249][1:4] == [0, 0, -1]
    assert ref.fix_ambiguity(cases, coords, 2).tolist() == [255 - 159, 255 - 249]
    assert ref.fix_ambiguity(cases[1:], coords[1:], 2).tolist() == [249]


def test_activations_and_deformation_stay_in_their_ranges():
    raw = torch.tensor([-1e4, -3.0, 0.0, 3.0, 1e4], dtype=torch.float64)[:, None].expand(5, 21)
    beta, alpha, gamma = ref.activate_weights(raw)
    for w in (
        beta,
        alpha,
    ):  # tanh(raw) 0.99 + 1: strictly positive, so dual vertices stay convex combinations
        assert float(w.min()) >= 0.01 - 1e-12 and float(w.max()) <= 1.99 + 1e-12
        assert float(w[2].sub(1).abs().max()) == 0  # raw 0 -> weight 1 (plain DMC)
    assert float(gamma.min()) >= 0.005 - 1e-12 and float(gamma.max()) <= 0.995 + 1e-12
    coords = torch.tensor([[0, 0, 0], [3, 1, 2]])
    rest = ref.deformed_positions(coords, None, 4, (-1.0, 1.0))
    assert_close(
        rest, torch.tensor([[-1.0, -1.0, -1.0], [0.5, -0.5, 0.0]]), **tol("flexicubes_oracle", torch.float32)
    )
    huge = ref.deformed_positions(coords, torch.full((2, 3), 1e4, dtype=torch.float64), 4, (-1.0, 1.0))
    assert float((huge - rest.double()).max()) < 0.25  # less than half a cell (h = 0.5): cells never invert
