"""float64 gradcheck of the volume reference ops (the oracle the Warp kernels are tested against)."""

import torch

from recon.renderers.volume import ref
from tests.renderers.volume.helpers import LAYOUTS, packed_samples


def _layout(gen):
    counts = LAYOUTS["ragged"]
    ri, ts, te = packed_samples(counts, gen, dtype=torch.float64)
    return counts, ri, ts, te


def test_gradcheck_weights_from_density(gen):
    counts, ri, ts, te = _layout(gen)
    sigmas = (torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: ref.render_weight_from_density(ts, te, s, ri, len(counts)), (sigmas,)
    )


def test_gradcheck_weights_from_alpha(gen):
    counts, ri, _, _ = _layout(gen)
    alphas = (torch.rand(ri.shape, generator=gen, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ref.render_weight_from_alpha(a, ri, len(counts)), (alphas,))


def test_gradcheck_composite(gen):
    counts, ri, ts, te = _layout(gen)
    sigmas = (torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    colors = torch.rand((ts.shape[0], 3), generator=gen, dtype=torch.float64).requires_grad_()
    background = torch.rand(3, generator=gen, dtype=torch.float64).requires_grad_()

    def fn(s, c, b):
        out = ref.composite(ts, te, c, s, None, b, ri, len(counts))
        return out["rgb"], out["opacity"], out["depth"], out["weights"], out["trans"]

    assert torch.autograd.gradcheck(fn, (sigmas, colors, background))


def test_closed_form_backward_matches_autograd(gen):
    # Spec section 1: dC/dtau_i = T_{i+1} c_i - C_{>i}, C_{>i} = sum_{j>i} w_j c_j + T_final c_bg.
    counts, ri, ts, te = _layout(gen)
    sigmas = (torch.rand(ts.shape, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    colors = torch.rand((ts.shape[0], 1), generator=gen, dtype=torch.float64)
    bg = torch.tensor([0.7], dtype=torch.float64)
    out = ref.composite(ts, te, colors, sigmas, None, bg, ri, len(counts))
    (grad,) = torch.autograd.grad(out["rgb"].sum(), sigmas)
    w, trans = out["weights"].detach(), out["trans"].detach()
    dt = te - ts
    expected = torch.zeros_like(grad)
    first = 0
    for c in counts:
        for i in range(first, first + c):
            t_next = trans[i] * torch.exp(-sigmas[i].detach() * dt[i])
            t_final = trans[first + c - 1] * torch.exp(-sigmas[first + c - 1].detach() * dt[first + c - 1])
            c_after = (w[i + 1 : first + c] * colors[i + 1 : first + c, 0]).sum() + t_final * bg[0]
            expected[i] = dt[i] * (t_next * colors[i, 0] - c_after)
        first += c
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
