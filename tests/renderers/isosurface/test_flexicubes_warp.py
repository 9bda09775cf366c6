"""FlexiCubes Warp path vs the torch reference: forward and backward (random cotangents) on a 16^3 random band,
dense and sparse, inference and training; CPU, and CUDA when present."""

import subprocess
import sys

import pytest
import torch

from recon.renderers._backend import BackendError
from recon.renderers.isosurface import flexicubes_dense, flexicubes_sparse, sparse_voxel_grid
from recon.renderers.isosurface import flexicubes_ref as ref
from tests.tolerances import assert_close, register, tol

# Forward: the kernel sums the same terms in the same order as the reference (per dual vertex, in float32);
# positions are O(0.5), so a few ulps.
register("flexicubes_fwd", torch.float32, rtol=1e-5, atol=1e-6)
# Backward: the adjoint kernel accumulates corner gradients with atomics in another order than autograd's
# index_add and uses the closed-form derivative of the crossing (divisions by w_b - w_a); measured max abs error
# <= 2e-6 on gradients up to ~3 (4 seeds), so 1e-4 leaves a 50x margin for other CPUs and CUDA atomics.
register("flexicubes_bwd", torch.float32, rtol=1e-4, atol=1e-4)

R = 16


def _band(device: str, gen: torch.Generator):
    n = R + 1
    g = torch.linspace(-0.5, 0.5, n)
    p = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1)
    s = (p.norm(dim=-1) - 0.3) * R + torch.randn(n, n, n, generator=gen)  # noisy sphere: many cases
    deform = 0.5 * torch.randn(n, n, n, 3, generator=gen)
    weights = torch.randn(R, R, R, 21, generator=gen)
    return [t.to(device) for t in (s, deform, weights)]


def _run(fn, inputs, backend, gen_seed):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves, backend=backend)
    gen = torch.Generator().manual_seed(gen_seed)
    cot_v = torch.randn(out.vertices.shape, generator=gen).to(out.vertices.device)
    cot_l = torch.randn(out.l_dev.shape, generator=gen).to(out.vertices.device)
    grads = torch.autograd.grad((out.vertices * cot_v).sum() + (out.l_dev * cot_l).sum(), leaves)
    return out, grads


def _compare(fn, inputs):
    ref_out, ref_grads = _run(fn, inputs, "torch", 7)
    fast_out, fast_grads = _run(fn, inputs, "warp", 7)
    assert ref_out.faces.shape[0] > 500
    assert torch.equal(fast_out.faces, ref_out.faces)
    assert torch.equal(fast_out.vertex_voxel, ref_out.vertex_voxel)
    assert_close(fast_out.vertices, ref_out.vertices, **tol("flexicubes_fwd", torch.float32), name="vertices")
    assert_close(fast_out.l_dev, ref_out.l_dev, **tol("flexicubes_fwd", torch.float32), name="l_dev")
    for name, a, b in zip(("s", "deform", "weights"), fast_grads, ref_grads):
        assert float(b.abs().max()) > 0
        assert_close(a, b, **tol("flexicubes_bwd", torch.float32), name=f"grad {name}")


@pytest.mark.parametrize("training", [False, True])
def test_dense_warp_matches_torch(device, gen, training):
    inputs = _band(device, gen)

    def fn(s, deform, weights, backend):
        return flexicubes_dense(s, deform, weights, training=training, backend=backend)

    _compare(fn, inputs)


@pytest.mark.parametrize("training", [False, True])
def test_sparse_warp_matches_torch(device, gen, training):
    s, deform, weights = _band(device, gen)
    keep = torch.rand(R**3, generator=gen) < 0.8  # holes: open surfaces, missing neighbours
    axes = torch.arange(R)
    voxels = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)[keep].to(device)
    grid = sparse_voxel_grid(voxels, R)
    rows = ref.linear_key(grid.corners, R)
    w_rows = (grid.voxels[:, 0] * R + grid.voxels[:, 1]) * R + grid.voxels[:, 2]
    inputs = [s.reshape(-1)[rows], deform.reshape(-1, 3)[rows], weights.reshape(-1, 21)[w_rows]]

    def fn(s, deform, weights, backend):
        return flexicubes_sparse(grid, s, deform, weights, training=training, chunks=2, backend=backend)

    _compare(fn, inputs)


def test_case_kernels_match_reference(device, gen):
    s = torch.randn(9, 9, 9, generator=gen).to(device)
    from recon.renderers.isosurface import flexicubes_warp_impl as wimpl

    assert torch.equal(wimpl.dense_cube_cases_kernel(s).long(), ref.dense_cube_cases(s).long())
    corners = torch.randint(0, s.numel(), (50, 8), generator=gen).to(device)
    assert torch.equal(wimpl.cube_cases(s.reshape(-1), corners), ref.cube_cases(s.reshape(-1), corners))


def test_explicit_warp_on_float64_raises_and_auto_falls_back():
    s = torch.randn(5, 5, 5, dtype=torch.float64)
    with pytest.raises(BackendError, match="isosurface.flexicubes_dense"):
        flexicubes_dense(s, backend="warp")
    auto = flexicubes_dense(s, backend="auto")  # float64: the reference runs
    assert torch.equal(auto.vertices, flexicubes_dense(s, backend="torch").vertices)


def test_importing_the_package_does_not_import_warp():
    code = "import sys, recon.renderers.isosurface as m; m.flexicubes_dense; assert 'warp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_capture_inputs_of_failing_warp_call(monkeypatch, tmp_path):
    from recon.renderers.isosurface import flexicubes_warp_impl

    def broken(*args, **kwargs):
        raise RuntimeError("simulated kernel failure")

    s = torch.randn(5, 5, 5)
    monkeypatch.setattr(flexicubes_warp_impl._DualVertices, "apply", broken)
    monkeypatch.setenv("RECON_CAPTURE_INPUTS", str(tmp_path))
    with pytest.raises(RuntimeError, match="simulated"):
        flexicubes_dense(s, backend="warp")
    saved = list(tmp_path.glob("flexicubes_dual_vertices_*.pt"))
    assert len(saved) == 1
    data = torch.load(saved[0])
    assert data["s"].dtype == torch.float32 and data["corners"].shape[1] == 8
