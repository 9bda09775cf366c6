"""Distortion and proposal losses against brute-force definitions."""

import torch

from recon.renderers.volume import distortion_loss, interlevel_loss
from tests.renderers.volume.helpers import LAYOUTS, packed_samples
from tests.tolerances import assert_close


def _brute_distortion(w, t0, t1):
    m = 0.5 * (t0 + t1)
    return (w[:, None] * w[None, :] * (m[:, None] - m[None, :]).abs()).sum() + (w * w * (t1 - t0)).sum() / 3.0


def test_distortion_matches_quadratic_form(gen):
    counts = LAYOUTS["ragged"]
    ri, t0, t1 = packed_samples(counts, gen, dtype=torch.float64)
    w = torch.rand(t0.shape, generator=gen, dtype=torch.float64)
    packed = distortion_loss(w, t0, t1, ray_indices=ri, n_rays=len(counts))
    expected = torch.stack(
        [_brute_distortion(w[ri == r], t0[ri == r], t1[ri == r]) for r in range(len(counts))]
    )
    assert_close(packed, expected, rtol=1e-10, atol=1e-12, name="packed")
    # Batched layout on the equal-length rays of another layout.
    ri, t0, t1 = packed_samples([5, 5, 5], gen, dtype=torch.float64)
    w = torch.rand(15, generator=gen, dtype=torch.float64)
    batched = distortion_loss(w.reshape(3, 5), t0.reshape(3, 5), t1.reshape(3, 5))
    expected = torch.stack([_brute_distortion(w[ri == r], t0[ri == r], t1[ri == r]) for r in range(3)])
    assert_close(batched, expected, rtol=1e-10, atol=1e-12, name="batched")


def test_distortion_gradcheck(gen):
    ri, t0, t1 = packed_samples([4, 0, 3], gen, dtype=torch.float64)
    w = torch.rand(t0.shape, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: distortion_loss(x, t0, t1, ray_indices=ri, n_rays=3), (w,))


def test_interlevel_matches_overlap_definition(gen):
    n_rays, s, p = 4, 6, 5
    edges = (torch.rand(n_rays, s + 1, generator=gen, dtype=torch.float64) * 4).sort(-1).values
    env = (torch.rand(n_rays, p + 1, generator=gen, dtype=torch.float64) * 4).sort(-1).values
    env[:, 0], env[:, -1] = 0.0, 4.0  # the proposal spans the samples (as in proposal sampling)
    w = torch.rand(n_rays, s, generator=gen, dtype=torch.float64)
    pw = torch.rand(n_rays, p, generator=gen, dtype=torch.float64).requires_grad_()
    loss = interlevel_loss(w, edges, pw, env)
    expected = []
    for r in range(n_rays):
        total = 0.0
        for i in range(s):
            overlap = (env[r, :-1] < edges[r, i + 1]) & (env[r, 1:] > edges[r, i])
            outer = pw[r][overlap].sum()
            total = total + (w[r, i] - outer).clamp_min(0) ** 2 / (w[r, i] + 1e-7)
        expected.append(total)
    assert_close(loss, torch.stack(expected), rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(loss.sum(), pw)
    assert (g <= 1e-12).all() and (
        g < 0
    ).any()  # more proposal mass can only lower the loss (cumsum rounding)
