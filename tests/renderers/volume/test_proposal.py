"""Proposal sampler: nerfacc parity (its CPU-capable pieces), a brute-force per-ray reference of the whole chain,
sample properties, the interlevel loss against nerfacc's ``_lossfun_outer`` and gradients to the proposal fields."""

import math

import pytest
import torch
from nerfacc.estimators.prop_net import _lossfun_outer, _transform_stot
from nerfacc.volrend import render_weight_from_density as nerfacc_weights

from recon.renderers.volume.proposal import (
    ProposalSamples,
    proposal_distortion_loss,
    proposal_loss,
    proposal_sampling,
    s_to_t,
    t_to_s,
)
from tests.renderers.volume.helpers import register  # noqa: F401  (registers the volume tolerances)
from tests.tolerances import assert_close, tol

PDF_PADDING = (
    1e-5  # the padding mass of importance_sampling (renderers/volume/ref.py), restated by the reference
)


def shell_density(center: float, width: float, peak: float):
    """sigma(t) = peak * exp(-((t - center) / width)^2) at interval midpoints: a surface at t = center."""

    def fn(t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        mid = 0.5 * (t0 + t1)
        return peak * torch.exp(-(((mid - center) / width) ** 2))

    return fn


def brute_force(density_fns, counts, num_samples, near, far, spacing):
    """Independent per-ray reference (python loops, float64): explicit transmittance products and a linear scan of
    the CDF for each quantile ``u_j = j / n``."""
    out = []
    for r in range(len(near)):
        n, f = float(near[r]), float(far[r])

        def to_t(s, n=n, f=f):
            return n + s * (f - n) if spacing == "uniform" else 1.0 / ((1.0 - s) / n + s / f)

        edges = [k / counts[0] for k in range(counts[0] + 1)]
        for fn, nxt in zip(density_fns, [*counts[1:], num_samples], strict=True):
            t = [to_t(s) for s in edges]
            t0 = torch.tensor(t[:-1], dtype=torch.float64)[None]
            t1 = torch.tensor(t[1:], dtype=torch.float64)[None]
            sig = fn(t0, t1)[0].tolist()
            trans, w = 1.0, []
            for k, sg in enumerate(sig):
                alpha = 1.0 - math.exp(-sg * (t[k + 1] - t[k]))
                w.append(trans * alpha)
                trans *= 1.0 - alpha
            mass = [x + PDF_PADDING for x in w]
            total = sum(mass)
            cdf = [0.0]
            for m in mass:
                cdf.append(min(1.0, cdf[-1] + m / total))
            new = []
            for j in range(nxt + 1):
                u = j / nxt
                k = 0
                while k < len(mass) - 1 and cdf[k + 1] <= u:
                    k += 1
                frac = min(1.0, max(0.0, (u - cdf[k]) / max(cdf[k + 1] - cdf[k], 1e-12)))
                new.append(edges[k] + frac * (edges[k + 1] - edges[k]))
            edges = new
        out.append([to_t(s) for s in edges])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("spacing", ["uniform", "lindisp"])
def test_spacing_matches_nerfacc_and_inverts(spacing, gen):
    near, far = torch.tensor([0.2, 1.0], dtype=torch.float64), torch.tensor([1e3, 6.0], dtype=torch.float64)
    s = torch.rand(2, 9, generator=gen, dtype=torch.float64).sort(-1).values
    t = s_to_t(s, near, far, spacing)
    theirs = torch.stack([_transform_stot(spacing, s[i], near[i], far[i]) for i in range(2)])
    assert_close(t, theirs, rtol=1e-12, atol=1e-12, name="t")
    assert_close(t_to_s(t, near, far, spacing), s, rtol=1e-9, atol=1e-12, name="s")


def test_edges_stay_sorted_in_float32():
    """Edges packed ~1 ulp apart (importance samples in front of a very dense surface, as on a real capture): in
    float32 lindisp rounding can reorder them, which gave a negative interval; s_to_t keeps them sorted."""
    near, far = torch.tensor([0.2]), torch.tensor([1000.0])
    s = torch.tensor([[0.4597902297973633, 0.45979025959968567]])  # increasing float32 values, 1 ulp apart
    raw = 1.0 / ((1.0 - s) / near[:, None] + s / far[:, None])
    assert float(raw[0, 1]) < float(raw[0, 0])  # the plain formula reorders them (the test can fail)
    t = s_to_t(s, near, far, "lindisp")
    assert float(t[0, 1]) >= float(t[0, 0])
    assert float((t - raw).abs().max()) < 1e-6  # only the reordered ulp changes


def test_proposal_weights_match_nerfacc(backend, gen):
    # nerfacc's batched render_weight_from_density is pure torch (runs on the CPU): the level weights must match it.
    seen = []

    def fn(t0, t1):
        sig = shell_density(3.0, 0.4, 8.0)(t0, t1)
        seen.append((t0, t1, sig))
        return sig

    near, far = torch.full((5,), 1.0), torch.full((5,), 6.0)
    out = proposal_sampling([fn], num_proposal_samples=[32], num_samples=8, near=near, far=far, spacing="uniform",
                            stratified=True, generator=gen, backend=backend)  # fmt: skip
    t0, t1, sig = seen[0]
    theirs = nerfacc_weights(t0, t1, sig)[0]
    assert_close(out.levels[0].weights, theirs, **tol("volume_composite", torch.float32), name="weights")


@pytest.mark.parametrize("spacing", ["uniform", "lindisp"])
def test_chain_matches_brute_force_reference(spacing, backend):
    fns = [shell_density(3.0, 0.8, 4.0), shell_density(3.0, 0.3, 20.0)]
    near = torch.tensor([1.0, 0.5, 2.0])
    far = torch.tensor([6.0, 20.0, 4.0])
    dtype = torch.float64 if backend == "torch" else torch.float32
    out = proposal_sampling(fns, num_proposal_samples=[24, 12], num_samples=10, near=near.to(dtype),
                            far=far.to(dtype), spacing=spacing, backend=backend)  # fmt: skip
    expected = brute_force(fns, [24, 12], 10, near.double(), far.double(), spacing)
    # float64: the reference and the vectorised chain agree to rounding; float32 (Warp): the inverse CDF divides by
    # bin increments >= 1e-5 / sum (see volume_importance) and t spans up to 20 units.
    rtol, atol = (1e-9, 1e-9) if dtype == torch.float64 else (1e-4, 2e-3)
    assert_close(out.t_edges, expected, rtol=rtol, atol=atol, name="final edges")


def test_samples_sorted_inside_bounds_and_concentrated(gen):
    fns = [shell_density(4.0, 1.0, 3.0), shell_density(4.0, 0.3, 30.0)]
    near, far = torch.full((64,), 0.5), torch.full((64,), 100.0)
    out = proposal_sampling(fns, num_proposal_samples=[64, 32], num_samples=16, near=near, far=far,
                            spacing="lindisp", stratified=True, generator=gen, backend="torch")  # fmt: skip
    e = out.t_edges
    assert e.shape == (64, 17) and not e.requires_grad
    assert bool((e.diff(dim=-1) >= 0).all())
    assert bool((e[:, 0] >= 0.5 - 1e-5).all()) and bool((e[:, -1] <= 100.0 * (1 + 1e-5)).all())
    mids = 0.5 * (e[:, 1:] + e[:, :-1])
    # the surface at t = 4 holds most final samples; uniform-in-disparity samples would put ~2 % there
    near_surface = ((mids - 4.0).abs() < 1.0).double().mean()
    assert float(near_surface) > 0.5, float(near_surface)
    packed = out.packed()
    assert packed.n_rays == 64 and packed.n_samples == 64 * 16
    assert bool((packed.packed_info[:, 1] == 16).all())
    assert_close(packed.t_starts.reshape(64, 16), e[:, :-1], rtol=0.0, atol=0.0)


def test_interlevel_loss_matches_nerfacc_and_trains_only_proposals(gen):
    net = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def proposal(t0, t1):  # a learnable density scale: the loss must reach it
        return net * shell_density(3.0, 1.0, 1.0)(t0, t1)

    near, far = torch.full((6,), 1.0, dtype=torch.float64), torch.full((6,), 6.0, dtype=torch.float64)
    out = proposal_sampling([proposal], num_proposal_samples=[16], num_samples=12, near=near, far=far,
                            spacing="uniform", stratified=True, generator=gen, requires_grad=True,
                            backend="torch")  # fmt: skip
    final = torch.rand(6, 12, generator=gen, dtype=torch.float64)
    final = (final / final.sum(-1, keepdim=True) * 0.9).requires_grad_(True)
    ours = proposal_loss(out, final)
    lvl = out.levels[0]
    theirs = _lossfun_outer(out.s_edges, final.detach(), lvl.s_edges, lvl.weights)
    # nerfacc's epsilon is finfo(float64).eps, ours 1e-7: relative difference <= 1e-7 / min(w) ~ 1e-4
    assert_close(ours, theirs.sum(-1), rtol=1e-4, atol=1e-9, name="interlevel")
    g_net, g_final = torch.autograd.grad(ours.sum(), [net, final], allow_unused=True)
    assert g_final is None and g_net is not None and float(g_net.abs()) > 0
    dist = proposal_distortion_loss(out, final)
    assert dist.shape == (6,) and bool((dist > 0).all())
    # without requires_grad the proposal levels carry no graph
    frozen = proposal_sampling([proposal], num_proposal_samples=[16], num_samples=12, near=near, far=far,
                               spacing="uniform", backend="torch")  # fmt: skip
    assert not frozen.levels[0].weights.requires_grad


def test_hand_computed_single_level():
    # One proposal level of 2 intervals on [0, 2] (uniform); sigma = (0, ln 2 / 1) -> alpha = (0, 1/2),
    # w = (0, 1/2). PDF mass (1e-5, 0.5 + 1e-5) -> the 2 final intervals split at u = 1/2, i.e. at
    # s = 1/2 + (1/2 - c) / (1 - c) * 1/2 with c = 1e-5 / (0.5 + 2e-5), giving t = 2 s.
    def fn(t0, t1):
        return torch.where(t0 < 0.5, torch.zeros_like(t0), torch.full_like(t0, math.log(2.0)))

    out = proposal_sampling([fn], num_proposal_samples=[2], num_samples=2, near=torch.tensor([0.0]),
                            far=torch.tensor([2.0]), spacing="uniform", backend="torch")  # fmt: skip
    c = 1e-5 / (0.5 + 2e-5)
    split = 2.0 * (0.5 + (0.5 - c) / (1.0 - c) * 0.5)
    assert_close(out.levels[0].weights, torch.tensor([[0.0, 0.5]]), rtol=1e-6, atol=1e-7)
    assert_close(out.t_edges, torch.tensor([[0.0, split, 2.0]]), rtol=1e-6, atol=1e-6)
    assert isinstance(out, ProposalSamples) and out.samples_per_ray == 2


def test_bad_inputs_raise():
    fn = shell_density(1.0, 1.0, 1.0)
    one = torch.ones(2)
    with pytest.raises(ValueError, match="same length"):
        proposal_sampling([fn], num_proposal_samples=[8, 4], num_samples=4, near=one, far=one * 2)
    with pytest.raises(ValueError, match="far must be > near"):
        proposal_sampling([fn], num_proposal_samples=[8], num_samples=4, near=one, far=one)
    with pytest.raises(ValueError, match="near must be > 0"):
        proposal_sampling([fn], num_proposal_samples=[8], num_samples=4, near=one * 0, far=one)
    with pytest.raises(ValueError, match="density_fn must return"):
        proposal_sampling([lambda a, b: a[:, :1]], num_proposal_samples=[8], num_samples=4, near=one,
                          far=one * 2, spacing="uniform")  # fmt: skip


def test_docstring_examples():
    import doctest

    from recon.renderers.volume import proposal

    result = doctest.testmod(proposal, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_anneal_zero_resamples_uniformly_and_one_follows_the_weights(backend):
    # nerfstudio's weight annealing: weights ** a before resampling; a = 0 ignores the proposal density entirely
    fns = [shell_density(4.0, 0.3, 30.0)]
    near, far = torch.full((3,), 1.0), torch.full((3,), 9.0)

    def sample(anneal: float):
        return proposal_sampling(fns, num_proposal_samples=[32], num_samples=8, near=near, far=far,
                                 spacing="uniform", anneal=anneal, backend=backend)  # fmt: skip

    uniform = torch.linspace(0.0, 1.0, 9).expand(3, 9)
    assert_close(sample(0.0).s_edges, uniform, rtol=0.0, atol=1e-5, name="anneal 0 edges")
    concentration = []
    for anneal in (0.0, 0.3, 1.0):
        mids = 0.5 * (sample(anneal).t_edges[:, 1:] + sample(anneal).t_edges[:, :-1])
        concentration.append(float(((mids - 4.0).abs() < 0.5).double().mean()))
    assert concentration[0] < concentration[1] < concentration[2], concentration
    assert_close(sample(1.0).t_edges, proposal_sampling(fns, num_proposal_samples=[32], num_samples=8, near=near,
                 far=far, spacing="uniform", backend=backend).t_edges, rtol=0.0, atol=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="anneal"):
        sample(1.5)
