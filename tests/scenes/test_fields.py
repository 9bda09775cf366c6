"""Neural fields: MLP, Instant-NGP density/colour field, hash-grid SDF with geometric init and analytic gradients."""

import math

import torch

from recon.renderers.encoding import HashGridConfig
from recon.scenes.fields import MLP, NGPField, SDFField, cube_box, normalize_to_box, unit_normals

SMALL_GRID = HashGridConfig(levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32)
BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_mlp_is_bias_free_with_relu_hidden_layers(gen):
    mlp = MLP(5, 3, hidden_dim=8, hidden_layers=2)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(8, 5), (8, 8), (3, 8)]
    assert all(layer.bias is None for layer in mlp.layers)
    x = torch.randn(7, 5, generator=gen)
    w = [layer.weight for layer in mlp.layers]
    expected = torch.relu(torch.relu(x @ w[0].T) @ w[1].T) @ w[2].T
    torch.testing.assert_close(mlp(x), expected)


def test_cube_box_and_normalisation():
    box = torch.tensor([[-1.0, -3.0, 0.0], [1.0, 1.0, 0.5]])
    cube = cube_box(box)
    torch.testing.assert_close(cube, torch.tensor([[-2.0, -3.0, -1.75], [2.0, 1.0, 2.25]]))
    assert bool((cube[0] <= box[0]).all() and (cube[1] >= box[1]).all())
    u = normalize_to_box(torch.stack([cube[0], cube[1], cube.mean(0)]), cube)
    torch.testing.assert_close(u, torch.tensor([[0.0] * 3, [1.0] * 3, [0.5] * 3]))


def test_ngp_density_rule_and_outside_zero(gen):
    field = NGPField(BOX, grid=SMALL_GRID, hidden_dim=16, generator=gen)
    x = torch.tensor([[0.1, 0.2, -0.3], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, -1.2, 0.0]])
    out = field.density(x, backend="torch")
    assert out.sigmas.shape == (4,) and out.geometry.shape == (4, 15)
    # sigma = exp(logit - 1) inside (spec §2), 0 outside the box
    logits = field.density_mlp(field.encoding(normalize_to_box(x[:2], BOX), backend="torch"))[:, 0]
    torch.testing.assert_close(out.sigmas[:2], torch.exp(logits - 1.0))
    assert out.sigmas[2:].tolist() == [0.0, 0.0]
    rgb = field.color(unit_normals(torch.randn(4, 3, generator=gen)), out.geometry)
    assert rgb.shape == (4, 3) and bool(((rgb > 0) & (rgb < 1)).all())


def test_ngp_gradients_reach_table_and_mlps(gen):
    field = NGPField(BOX, grid=SMALL_GRID, hidden_dim=16, generator=gen)
    x = torch.rand(64, 3, generator=gen) * 1.6 - 0.8
    out = field.density(x, backend="torch")
    (out.sigmas.sum() + field.color(unit_normals(x), out.geometry).sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_ngp_warp_matches_torch(gen):
    field = NGPField(BOX, grid=SMALL_GRID, hidden_dim=16, generator=gen)
    x = torch.rand(50, 3, generator=gen) * 1.8 - 0.9
    torch.testing.assert_close(
        field.density(x, backend="warp").sigmas,
        field.density(x, backend="torch").sigmas,
        rtol=1e-4,
        atol=1e-5,
    )


def test_sdf_geometric_init_is_a_sphere(gen):
    box = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])  # half size 2: sphere of radius 0.5 * 2 = 1
    field = SDFField(box, grid=SMALL_GRID, hidden_dim=256, generator=gen)
    x = torch.randn(200, 3, generator=gen)
    x = x / x.norm(dim=-1, keepdim=True) * (torch.rand(200, 1, generator=gen) * 1.5 + 0.25)
    out = field.evaluate(x, backend="torch")
    # |x| - 1 in expectation over the random first layer; one draw of 256 units deviates by ~10% of |x| along
    # some directions (measured mean |error| 0.11 for |x| in [0.25, 1.75]); the sign pattern is that of a sphere
    assert float((out.sdf.detach() - (x.norm(dim=-1) - 1.0)).abs().mean()) < 0.2
    assert bool(((out.sdf < 0) == (x.norm(dim=-1) < 0.8))[(x.norm(dim=-1) - 1.0).abs() > 0.3].all())
    assert float((out.gradients.norm(dim=-1) - 1.0).abs().mean()) < 0.1
    assert out.features.shape == (200, 13)
    assert math.isclose(float(field.inv_s().detach()), math.exp(3.0), rel_tol=1e-6)  # s = exp(10 * 0.3)


def test_sdf_analytic_gradient_matches_finite_differences(gen):
    field = SDFField(BOX, grid=SMALL_GRID, hidden_dim=16, generator=gen).double()
    with torch.no_grad():
        field.encoding.table.normal_(
            0.0, 0.1, generator=gen
        )  # make the hash-grid part of the gradient matter
    x = torch.rand(20, 3, generator=gen, dtype=torch.float64) * 1.4 - 0.7
    grad = field.evaluate(x, backend="torch").gradients
    eps = 1e-6  # well inside a grid cell (cells are >= 2 / 32 wide): the field is smooth there
    fd = torch.stack(
        [(field.sdf(x + eps * e, backend="torch") - field.sdf(x - eps * e, backend="torch")) / (2 * eps)
         for e in torch.eye(3, dtype=torch.float64)], -1,
    )  # fmt: skip
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)


def test_sdf_eikonal_backpropagates_with_create_graph(gen):
    field = SDFField(BOX, grid=SMALL_GRID, hidden_dim=16, generator=gen)
    with torch.no_grad():  # the geometric init zeroes the hash-feature weights; give them a value
        field.sdf_layers[0].parametrizations.weight.original1[:, 3:].normal_(0.0, 1.0, generator=gen)
        field.encoding.table.normal_(0.0, 0.1, generator=gen)
    x = torch.rand(32, 3, generator=gen) - 0.5
    out = field.evaluate(x, create_graph=True)
    ((out.gradients.norm(dim=-1) - 1.0) ** 2).mean().backward()
    assert float(field.encoding.table.grad.abs().sum()) > 0
    assert float(field.sdf_layers[0].parametrizations.weight.original1.grad.abs().sum()) > 0
    # without create_graph (rendering under no_grad) the gradients come back detached
    with torch.no_grad():
        detached = field.evaluate(x)
    assert not detached.gradients.requires_grad and not detached.sdf.requires_grad
    torch.testing.assert_close(detached.gradients, out.gradients.detach(), rtol=1e-4, atol=1e-5)
