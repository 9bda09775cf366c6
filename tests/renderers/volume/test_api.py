"""Volume ops: oracles, batched == packed == Warp (forward and backward), nerfacc parity, marching, samplers."""

import math

import nerfacc
import pytest
import torch

from recon.core.errors import ReconError
from recon.renderers.volume import (
    accumulate_along_rays,
    composite,
    importance_sampling,
    march_rays,
    pack_info,
    ray_aabb_intersect,
    render_visibility_from_density,
    render_weight_from_alpha,
    render_weight_from_density,
    uniform_intervals,
)
from recon.renderers.volume.ref import grid_cell_index
from tests.renderers.volume.helpers import LAYOUTS, packed_samples
from tests.tolerances import assert_close, tol

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_weight_oracle(backend):
    # sigma * dt = (0, ln 2, ln 4): alpha = (0, 1/2, 3/4), T = (1, 1, 1/2), w = T * alpha = (0, 1/2, 3/8).
    t = torch.tensor([[0.0, 1.0, 2.0]])
    sigmas = torch.tensor([[0.0, math.log(2.0), math.log(4.0)]])
    out = render_weight_from_density(t, t + 1.0, sigmas, backend=backend)
    assert_close(out.weights, torch.tensor([[0.0, 0.5, 0.375]]), rtol=1e-6, atol=1e-7, name="w")
    assert_close(out.transmittance, torch.tensor([[1.0, 1.0, 0.5]]), rtol=1e-6, atol=1e-7, name="T")
    assert_close(out.alphas, torch.tensor([[0.0, 0.5, 0.75]]), rtol=1e-6, atol=1e-7, name="alpha")
    # Same alphas given directly.
    out_a = render_weight_from_alpha(torch.tensor([[0.0, 0.5, 0.75]]), backend=backend)
    assert_close(out_a.weights, torch.tensor([[0.0, 0.5, 0.375]]), rtol=1e-6, atol=1e-7, name="w(alpha)")


def test_infinite_density_gives_finite_weights_and_gradients(backend):
    """An exp activation that overflows hands the op sigma = inf; the ray must stay finite (inf - inf in the
    transmittance scan would make it NaN), with the inf sample opaque."""
    t = torch.tensor([[0.0, 1e-6, 2e-6, 3e-6], [0.0, 1.0, 2.0, 3.0]])
    sigmas = torch.tensor([[0.5, math.inf, 2.0, 1.0], [0.0, math.inf, math.inf, 0.3]], requires_grad=True)
    out = render_weight_from_density(t, t + 1e-6, sigmas, backend=backend)
    assert bool(torch.isfinite(out.weights).all()) and bool(torch.isfinite(out.transmittance).all())
    assert float(out.weights[1, 1]) == pytest.approx(1.0) and float(out.weights[1, 2:].abs().sum()) == 0.0
    assert float(out.weights[0].sum()) == pytest.approx(1.0, abs=1e-5)  # the inf sample absorbs what is left
    out.weights.sum().backward()
    assert sigmas.grad is not None and bool(torch.isfinite(sigmas.grad).all())


def test_inverted_tiny_interval_counts_as_empty(backend):
    """Importance samples packed into ~1e-8 of a ray in float32 can come out with t_end < t_start (a 20-minute
    beer-can run: dt = -1.5e-8 at sigma = 2.7e12 gave alpha = -inf and a NaN weight); such an interval is empty."""
    ts = torch.tensor([[0.19693741, 0.19693743, 0.19693745]])
    te = ts + torch.tensor([[2e-8, -1.5e-8, 2e-8]])
    sigmas = torch.full((1, 3), 2.7e12, requires_grad=True)
    out = render_weight_from_density(ts, te, sigmas, backend=backend)
    assert bool(torch.isfinite(out.weights).all()) and float(out.weights[0, 1]) == 0.0
    out.weights.sum().backward()
    assert bool(torch.isfinite(sigmas.grad).all())
    colors = torch.full(
        (1, 3, 3), 0.5, requires_grad=True
    )  # composite (the nerf path) computes weights itself
    rendered = composite(ts, te, colors, sigmas=sigmas, backend=backend)
    assert bool(torch.isfinite(rendered.rgb).all()) and bool(torch.isfinite(rendered.weights).all())


def test_pack_info_layout():
    info = pack_info(torch.tensor([0, 0, 2, 2, 2, 4]), 5)
    assert info.tolist() == [[0, 2], [2, 0], [2, 3], [5, 0], [5, 1]]


def test_batched_equals_packed(backend, gen):
    ts = torch.rand(4, 6, generator=gen).sort(-1).values
    te = ts + 0.1
    sigmas = torch.rand(4, 6, generator=gen) * 5
    colors = torch.rand(4, 6, 3, generator=gen)
    batched = composite(ts, te, colors, sigmas=sigmas, background=torch.ones(3), backend=backend)
    ri = torch.arange(4).repeat_interleave(6)
    packed = composite(
        ts.reshape(-1), te.reshape(-1), colors.reshape(-1, 3), sigmas=sigmas.reshape(-1), ray_indices=ri, n_rays=4,
        background=torch.ones(3), backend=backend,
    )  # fmt: skip
    t = tol("volume_composite", torch.float32)
    assert_close(packed.rgb, batched.rgb, **t, name="rgb")
    assert_close(packed.weights, batched.weights.reshape(-1), **t, name="weights")
    assert batched.weights.shape == (4, 6)


def _inputs(counts, gen, device, mode):
    ri, ts, te = packed_samples(counts, gen)
    n = ts.shape[0]
    field = torch.rand(n, generator=gen) * 4.0 if mode == "density" else torch.rand(n, generator=gen)
    colors = torch.rand(n, 3, generator=gen)
    background = torch.rand(3, generator=gen)
    return [x.to(device) for x in (ri, ts, te, field, colors, background)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", ["density", "alpha"])
def test_composite_warp_matches_ref(layout, mode, device, gen):
    counts = LAYOUTS[layout]
    ri, ts, te, field, colors, background = _inputs(counts, gen, device, mode)
    results = {}
    cot = None
    for backend in ("torch", "warp"):
        leaves = [x.clone().requires_grad_() for x in (field, colors, background)]
        key = "sigmas" if mode == "density" else "alphas"
        out = composite(
            ts, te, leaves[1], **{key: leaves[0]}, ray_indices=ri, n_rays=len(counts), background=leaves[2],
            backend=backend,
        )  # fmt: skip
        outputs = [out.rgb, out.opacity, out.depth, out.weights, out.transmittance]
        if cot is None:
            cot = [torch.randn(o.shape, generator=gen).to(device) for o in outputs]
        loss = sum((o * v).sum() for o, v in zip(outputs, cot))
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        results[backend] = (outputs, grads)
    t = tol("volume_composite", torch.float32)
    names = ["rgb", "opacity", "depth", "weights", "transmittance"]
    for name, a, b in zip(names, results["warp"][0], results["torch"][0]):
        assert_close(a, b, **t, name=name)
    for name, a, b in zip(["d_field", "d_colors", "d_background"], results["warp"][1], results["torch"][1]):
        assert_close(a, b, **t, name=name)


@pytest.mark.parametrize("layout", ["ragged", "long"])
def test_weight_ops_warp_matches_ref(layout, device, gen):
    counts = LAYOUTS[layout]
    ri, ts, te, sigmas, _, _ = _inputs(counts, gen, device, "density")
    alphas = torch.rand(sigmas.shape, generator=gen).to(device)
    alphas[::5] = 1.0  # alpha = 1 must not produce inf/nan gradients (no division by 1 - alpha)
    t = tol("volume_composite", torch.float32)
    res = {}
    for backend in ("torch", "warp"):
        s = sigmas.clone().requires_grad_()
        a = alphas.clone().requires_grad_()
        wd = render_weight_from_density(ts, te, s, ray_indices=ri, n_rays=len(counts), backend=backend)
        wa = render_weight_from_alpha(a, ray_indices=ri, n_rays=len(counts), backend=backend)
        outs = [*wd, *wa]
        cot = [
            torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(device)
            for i, o in enumerate(outs)
        ]
        loss = sum((o * v).sum() for o, v in zip(outs, cot))
        res[backend] = (outs, torch.autograd.grad(loss, [s, a]))
    for i, (x, y) in enumerate(zip(res["warp"][0], res["torch"][0])):
        assert_close(x, y, **t, name=f"output {i}")
    assert_close(res["warp"][1][0], res["torch"][1][0], **t, name="d_sigmas")
    assert_close(res["warp"][1][1], res["torch"][1][1], **t, name="d_alphas")
    assert torch.isfinite(res["warp"][1][1]).all()


def test_nerfacc_parity_batched(backend, gen):
    # nerfacc's batched path (packed_info=None) is pure torch, so it runs on the CPU.
    ts = torch.rand(5, 8, generator=gen).sort(-1).values
    te = ts + torch.rand(5, 8, generator=gen) * 0.1
    sigmas = torch.rand(5, 8, generator=gen) * 10
    colors = torch.rand(5, 8, 3, generator=gen)
    ours = render_weight_from_density(ts, te, sigmas, backend=backend)
    theirs = nerfacc.render_weight_from_density(ts, te, sigmas)
    t = tol("volume_composite", torch.float32)
    for name, a, b in zip(["weights", "trans", "alphas"], ours, theirs):
        assert_close(a, b, **t, name=name)
    alphas = torch.rand(5, 8, generator=gen)
    for a, b in zip(
        render_weight_from_alpha(alphas, backend=backend), nerfacc.render_weight_from_alpha(alphas)
    ):
        assert_close(a, b, **t, name="from_alpha")
    assert_close(
        accumulate_along_rays(ours.weights, colors),
        nerfacc.accumulate_along_rays(theirs[0], colors),
        **t,
        name="acc",
    )
    out = composite(ts, te, colors, sigmas=sigmas, backend=backend)
    assert_close(out.rgb, nerfacc.accumulate_along_rays(theirs[0], colors), **t, name="rgb")


def test_nerfacc_parity_packed(device, backend, gen):
    if device != "cuda":
        pytest.skip("nerfacc's packed render_weight_from_density is CUDA-only (NotImplementedError on CPU)")
    ri, ts, te, sigmas, colors, _ = _inputs(LAYOUTS["ragged"], gen, device, "density")
    n = len(LAYOUTS["ragged"])
    ours = render_weight_from_density(ts, te, sigmas, ray_indices=ri, n_rays=n, backend=backend)
    theirs = nerfacc.render_weight_from_density(ts, te, sigmas, ray_indices=ri, n_rays=n)
    for a, b in zip(ours, theirs):
        assert_close(a, b, **tol("volume_composite", torch.float32), name="packed")


def test_accumulate_packed_matches_nerfacc(gen):
    ri = torch.tensor([0, 0, 2, 2, 2])
    w = torch.rand(5, generator=gen)
    v = torch.rand(5, 2, generator=gen)
    ours = accumulate_along_rays(w, v, ray_indices=ri, n_rays=3)
    assert_close(ours, nerfacc.accumulate_along_rays(w, v, ray_indices=ri, n_rays=3), rtol=1e-6, atol=1e-7)
    assert ours[1].abs().sum() == 0


def test_float32_scan_drift_bound(gen):
    # 2000 rays x 100 samples: the reference scans in float64, so float32 inputs stay within 1e-5 of float64.
    counts = [100] * 2000
    ri, ts, te = packed_samples(counts, gen, dtype=torch.float64)
    sigmas = torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 2
    ref64 = render_weight_from_density(ts, te, sigmas, ray_indices=ri, n_rays=2000, backend="torch")
    for backend in ("torch", "warp"):
        out32 = render_weight_from_density(
            ts.float(), te.float(), sigmas.float(), ray_indices=ri, n_rays=2000, backend=backend
        )
        assert_close(out32.transmittance, ref64.transmittance, rtol=0.0, atol=1e-5, name=backend)


def test_visibility_early_stop(backend):
    t = torch.arange(6.0)[None]
    vis = render_visibility_from_density(
        t, t + 1, torch.tensor([[1.0, 10.0, 1.0, 1.0, 0.0, 0.0]]), backend=backend
    )
    # T = exp(-(0, 1, 11, ...)) -> 1, 0.37, 1.7e-5 < 1e-4: the third sample on is dropped.
    assert vis.tolist() == [[True, True, False, False, False, False]]
    vis = render_visibility_from_density(
        t, t + 1, torch.tensor([[0.001, 1.0, 0.0, 1.0, 0.0, 0.0]]), alpha_thre=0.01, backend=backend
    )
    assert vis.tolist() == [[False, True, False, True, False, False]]


def test_ray_aabb_oracle_and_parity(device, backend, gen):
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.5, 0.2, -4.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    hits = ray_aabb_intersect(o.to(device), d.to(device), BOX.to(device), backend=backend)
    assert hits.hit.tolist() == [True, True, False, True]
    assert_close(hits.t_near[[0, 1, 3]], torch.tensor([2.0, -1.0, 3.0]), rtol=1e-6, atol=1e-6)
    assert_close(hits.t_far[[0, 1, 3]], torch.tensor([4.0, 1.0, 5.0]), rtol=1e-6, atol=1e-6)
    o = torch.randn(64, 3, generator=gen) * 2
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1)
    a = ray_aabb_intersect(o, d, BOX, backend="torch")
    b = ray_aabb_intersect(o.to(device), d.to(device), BOX.to(device), backend=backend)
    assert torch.equal(a.hit, b.hit.cpu())
    assert_close(b.t_near[a.hit], a.t_near[a.hit], rtol=1e-5, atol=1e-6)


def _random_rays(n, gen):
    o = torch.randn(n, 3, generator=gen) * 2.5
    target = torch.rand(n, 3, generator=gen) - 0.5
    return o, torch.nn.functional.normalize(target - o, dim=-1)


@pytest.mark.parametrize("levels,cone", [(1, 0.0), (2, 0.02)])
def test_march_warp_matches_ref_and_respects_grid(levels, cone, device, gen):
    o, d = _random_rays(48, gen)
    binaries = torch.rand(levels, 8, 8, 8, generator=gen) > 0.5
    offsets = torch.rand(48, generator=gen)
    kw = dict(step_size=0.05, near_plane=0.1, cone_angle=cone)
    ref_s = march_rays(o, d, binaries, BOX, t_offsets=offsets, backend="torch", **kw)
    fast = march_rays(o.to(device), d.to(device), binaries.to(device), BOX.to(device), t_offsets=offsets.to(device),
                      backend="warp", **kw)  # fmt: skip
    assert ref_s.n_samples > 50
    assert torch.equal(fast.ray_indices.cpu(), ref_s.ray_indices)
    assert torch.equal(fast.packed_info.cpu(), ref_s.packed_info)
    assert_close(fast.t_starts, ref_s.t_starts, rtol=0.0, atol=1e-6)
    assert_close(fast.t_ends, ref_s.t_ends, rtol=0.0, atol=1e-6)
    # Never a sample in an unoccupied cell; samples sorted front to back within a ray.
    mids = 0.5 * (ref_s.t_starts + ref_s.t_ends)
    cells = grid_cell_index(o[ref_s.ray_indices] + d[ref_s.ray_indices] * mids[:, None], BOX, 8, levels)
    assert (cells >= 0).all() and binaries.reshape(-1)[cells].all()
    same_ray = ref_s.ray_indices[1:] == ref_s.ray_indices[:-1]
    assert (ref_s.t_starts[1:][same_ray] >= ref_s.t_ends[:-1][same_ray] - 1e-6).all()
    assert (ref_s.t_starts >= 0.1 - 1e-6).all()
    if cone > 0:
        dt = ref_s.t_ends - ref_s.t_starts
        assert_close(
            dt, torch.clamp(ref_s.t_starts * cone, min=0.05), rtol=1e-5, atol=1e-6, name="cone steps"
        )


def test_march_full_grid_oracle(backend):
    grid = torch.ones(1, 4, 4, 4, dtype=torch.bool)
    o, d = torch.tensor([[-2.0, 0.1, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])
    s = march_rays(o, d, grid, BOX, step_size=0.5, backend=backend)
    # The box spans t in [1, 3]: intervals [1, 1.5], ..., [2.5, 3].
    assert s.t_starts.tolist() == [1.0, 1.5, 2.0, 2.5] and s.packed_info.tolist() == [[0, 4]]
    empty = march_rays(o, d, torch.zeros_like(grid), BOX, step_size=0.5, backend=backend)
    assert empty.n_samples == 0 and empty.packed_info.tolist() == [[0, 0]]


@pytest.mark.parametrize("stratified", [False, True])
def test_importance_sampling(stratified, device, gen):
    edges = (torch.rand(32, 9, generator=gen) * 4 + 2).sort(-1).values
    weights = torch.rand(32, 8, generator=gen)
    weights[0] = 0.0  # all-zero weights fall back to the uniform PDF
    outs = {}
    for backend in ("torch", "warp"):
        g = torch.Generator().manual_seed(7)
        outs[backend] = importance_sampling(
            edges.to(device),
            weights.to(device),
            num_samples=16,
            stratified=stratified,
            generator=g,
            backend=backend,
        ).cpu()
    new = outs["torch"]
    assert_close(outs["warp"], new, **tol("volume_importance", torch.float32))
    assert new.shape == (32, 17)
    assert (new.diff(dim=-1) >= 0).all()
    assert_close(new[:, 0], edges[:, 0], rtol=0, atol=1e-6) and assert_close(
        new[:, -1], edges[:, -1], rtol=0, atol=1e-5
    )
    # A one-hot PDF puts (nearly) all new edges inside that bin.
    one_hot = torch.zeros(1, 8)
    one_hot[0, 3] = 1.0
    e = torch.linspace(0, 8, 9)[None]
    inner = importance_sampling(e, one_hot, num_samples=10, backend="torch")[0, 1:-1]
    assert ((inner >= 3.0) & (inner <= 4.0)).all()


def test_uniform_intervals():
    lin = uniform_intervals(torch.tensor([2.0]), torch.tensor([6.0]), num_samples=4)
    assert lin.tolist() == [[2.0, 3.0, 4.0, 5.0, 6.0]]
    disp = uniform_intervals(torch.tensor([1.0]), torch.tensor([1e3]), num_samples=2, spacing="lindisp")
    # 1/t uniform between 1 and 1e-3: midpoint 1/t = 0.5005 -> t = 1.998.
    assert_close(disp, torch.tensor([[1.0, 1.0 / 0.5005, 1e3]]), rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    strat = uniform_intervals(torch.zeros(100), torch.ones(100), num_samples=8, stratified=True, generator=g)
    assert (strat.diff(dim=-1) > 0).all() and (strat[:, 0] == 0).all() and (strat[:, -1] == 1).all()


def test_validation_errors():
    with pytest.raises(ValueError, match="n_rays"):
        render_weight_from_density(
            torch.zeros(3), torch.ones(3), torch.ones(3), ray_indices=torch.zeros(3).long()
        )
    with pytest.raises(ValueError, match="exactly one"):
        composite(torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 2, 3))
    with pytest.raises(ReconError, match="float32"):
        render_weight_from_alpha(torch.zeros(1, 2, dtype=torch.float64), backend="warp")
