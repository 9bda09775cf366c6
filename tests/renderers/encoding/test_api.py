"""Hash grid: layout (dense/hashed boundary), hash oracle, gradcheck of the reference, Warp == torch."""

import pytest
import torch

from recon.core.errors import ReconError
from recon.renderers.encoding import HashGrid, HashGridConfig, HashGridLayout, hash_grid_encode, warp_impl
from recon.renderers.encoding.ref import grid_index
from tests.renderers.encoding.helpers import register  # noqa: F401  (tolerances registered on import)
from tests.tolerances import assert_close, tol

# 6 levels at resolutions 4..128 with T = 2^12: levels 0-2 dense (64, 512, 4096 <= 4096), 3-5 hashed.
LAYOUT = HashGridLayout(
    levels=6, features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0
)


def test_default_layout_matches_spec():
    layout = HashGridConfig().layout
    assert abs(layout.per_level_scale - 1.4473) < 1e-4
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] == 4096
    assert layout.num_params <= 16 * 2**19 and layout.output_dim == 32
    assert layout.dense[:5] == (True,) * 5 and not any(layout.dense[5:])  # 71^3 <= 2^19 < 102^3


def test_dense_hashed_boundary():
    # T = 2^12 = 16^3: base 16 gives scale 15, res 16, res^3 == T -> dense; the next level (res 18) hashes.
    layout = HashGridLayout(levels=2, log2_hashmap_size=12, base_resolution=16, per_level_scale=1.1)
    assert layout.resolutions == (16, 18) and layout.dense == (True, False)
    assert layout.sizes == (4096, 4096) and layout.offsets == (0, 4096)
    c = torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = grid_index(c, 16, 4096, dense=True)
    assert torch.equal(idx, c[:, 0] + 16 * c[:, 1] + 256 * c[:, 2])  # one-to-one, x fastest
    assert idx.unique().numel() == 4096


def test_hash_oracle():
    # (c0 * 1 ^ c1 * 2654435761 ^ c2 * 805459861) mod 2^32 mod 2^19, evaluated with Python integers.
    c = torch.tensor([[1, 2, 3], [100, 200, 300], [4095, 17, 2048]])
    assert grid_index(c, 4096, 2**19, dense=False).tolist() == [128476, 110768, 242494]


def test_gradcheck_reference(gen):
    layout = HashGridLayout(
        levels=3, log2_hashmap_size=5, base_resolution=2, per_level_scale=2.0
    )  # dense+hashed
    assert layout.dense == (True, False, False)
    x = (torch.rand(6, 3, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    table = torch.randn(layout.num_params, 2, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: hash_grid_encode(a, b, layout, backend="torch"), (x, table))


def test_trilinear_at_grid_point_and_linearity(gen):
    layout = HashGridLayout(levels=1, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.0)
    table = torch.randn(layout.num_params, 2, generator=gen, dtype=torch.float64)
    # x = (c - 0.5) / scale lands on grid point c: the feature is that row exactly (scale 7, res 8).
    c = torch.tensor([[2, 5, 3]])
    x = (c.double() - 0.5) / 7.0
    out = hash_grid_encode(x, table, layout, backend="torch")
    assert_close(out, table[2 + 8 * 5 + 64 * 3][None], rtol=1e-12, atol=1e-12)
    # Along x inside one cell, the feature is linear in x.
    xs = x + torch.tensor([[0.25 / 7.0, 0.0, 0.0]], dtype=torch.float64)
    mid = hash_grid_encode(xs, table, layout, backend="torch")
    nxt = table[3 + 8 * 5 + 64 * 3][None]
    assert_close(mid, 0.75 * table[2 + 8 * 5 + 64 * 3][None] + 0.25 * nxt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_points", [1, 37, 400])
def test_warp_matches_reference(n_points, device, gen):
    x = torch.rand(n_points, 3, generator=gen).to(device)
    table = torch.randn(LAYOUT.num_params, 2, generator=gen).to(device)
    outs, grads = {}, {}
    cot = None
    for backend in ("torch", "warp"):
        xx, tt = x.clone().requires_grad_(), table.clone().requires_grad_()
        out = hash_grid_encode(xx, tt, LAYOUT, backend=backend)
        if cot is None:
            cot = torch.randn(out.shape, generator=gen).to(device)
        outs[backend] = out
        grads[backend] = torch.autograd.grad((out * cot).sum(), (xx, tt))
    assert_close(outs["warp"], outs["torch"], **tol("hash_grid", torch.float32), name="features")
    assert_close(grads["warp"][1], grads["torch"][1], **tol("hash_grid", torch.float32), name="d_table")
    assert_close(grads["warp"][0], grads["torch"][0], **tol("hash_grid_dx", torch.float32), name="d_x")


def test_warp_table_only_gradient(gen):
    x = torch.rand(50, 3, generator=gen)
    table = torch.randn(LAYOUT.num_params, 2, generator=gen).requires_grad_()
    out = hash_grid_encode(x, table, LAYOUT, backend="warp")
    (g,) = torch.autograd.grad(out.sum(), table)
    # Every point spreads total weight 1 per level and feature: the table gradient sums to N * L * F.
    assert abs(float(g.sum()) - 50 * 6 * 2) < 1e-2


def test_warp_leaves_grad_to_autograd(gen):
    """The Warp path allocates no ``.grad`` of its own: a forward (even under no_grad, as in evaluation) leaves the
    table's and the points' ``.grad`` unset, and after ``backward`` the table's ``.grad`` is exactly the gradient
    the backward returned (``wp.from_torch`` would otherwise attach a zero-filled table-sized ``.grad`` on every
    call, which autograd then adds into: two extra passes over the table per step)."""
    x = torch.rand(50, 3, generator=gen).requires_grad_()
    table = torch.randn(LAYOUT.num_params, 2, generator=gen).requires_grad_()
    with torch.no_grad():
        hash_grid_encode(x, table, LAYOUT, backend="warp")
    out = hash_grid_encode(x, table, LAYOUT, backend="warp")
    assert table.grad is None and x.grad is None
    (expected,) = torch.autograd.grad(out.sum(), table, retain_graph=True)
    assert table.grad is None
    out.sum().backward()
    assert table.grad is not None and torch.equal(table.grad, expected)


def test_warp_table_gradient_memory_is_reused_only_when_free(gen):
    """On CPU the table gradient reuses an earlier step's memory once nothing holds it (no page faults for large
    tables), never while a tensor still uses it: a kept ``.grad`` of the previous step is not overwritten, and two
    encodings of one table in one graph get the sum of both gradients."""
    x = torch.rand(40, 3, generator=gen)
    table = torch.randn(LAYOUT.num_params, 2, generator=gen).requires_grad_()

    def step(points):
        hash_grid_encode(points, table, LAYOUT, backend="warp").sum().backward()
        return table.grad

    first = step(x).clone()
    ptr = table.grad.data_ptr()
    table.grad = None  # zero_grad(set_to_none=True): the memory is free again
    assert torch.equal(step(x), first) and table.grad.data_ptr() == ptr  # reused, and zero-filled before use
    cached = warp_impl._GRAD_STORAGES[(tuple(table.shape), table.dtype)]
    assert any(
        storage.data_ptr() == ptr for storage in cached
    )  # the cache's memory, not a malloc coincidence
    kept = table.grad
    table.grad = None
    second = step(x[:10])  # `kept` still holds the first memory: a fresh one is used
    assert torch.equal(kept, first) and second.data_ptr() != kept.data_ptr()
    del kept, second
    table.grad = None
    y = torch.rand(25, 3, generator=gen)
    (
        hash_grid_encode(x, table, LAYOUT, backend="warp").sum() + hash_grid_encode(y, table, LAYOUT).sum()
    ).backward()
    ref = table.detach().clone().requires_grad_()
    (
        hash_grid_encode(x, ref, LAYOUT, backend="torch").sum()
        + hash_grid_encode(y, ref, LAYOUT, backend="torch").sum()
    ).backward()
    assert_close(table.grad, ref.grad, **tol("hash_grid", torch.float32), name="d_table, two encodings")


def test_module_init_and_validation():
    grid = HashGrid(
        HashGridConfig(levels=4, log2_hashmap_size=10, max_resolution=64), generator=torch.Generator()
    )
    assert grid.table.abs().max() <= 1e-4 and grid.output_dim == 8
    with pytest.raises(ValueError, match="table"):
        hash_grid_encode(torch.rand(2, 3), torch.zeros(3, 2), LAYOUT)
    with pytest.raises(ReconError, match="float32"):
        hash_grid_encode(
            torch.rand(2, 3).double(), torch.zeros(LAYOUT.num_params, 2).double(), LAYOUT, backend="warp"
        )


def test_warp_double_backward_raises(gen):
    # Eikonal-style create_graph=True through the Warp path must fail loudly (the torch path supports it).
    x = torch.rand(4, 3, generator=gen).requires_grad_()
    table = torch.randn(LAYOUT.num_params, 2, generator=gen).requires_grad_()
    (dx,) = torch.autograd.grad(
        hash_grid_encode(x, table, LAYOUT, backend="warp").sum(), x, create_graph=True
    )
    with pytest.raises(RuntimeError):
        dx.sum().backward()
    (dx_ref,) = torch.autograd.grad(
        hash_grid_encode(x, table, LAYOUT, backend="torch").sum(), x, create_graph=True
    )
    (g_table,) = torch.autograd.grad(dx_ref.pow(2).sum(), table)
    assert g_table.abs().sum() > 0
