"""Opacity rules, parsimony, TV and overlap (spec superquadrics.md 5 and 7)."""

import math
from dataclasses import replace

import pytest
import torch

from recon.scenes.superquadrics.losses import (
    PARSIMONY_MIN,
    alive_mask,
    effective_opacities,
    noisy_alpha_logits,
    overlap_loss,
    parsimony_loss,
    total_variation,
    tv_loss,
    weighted_regularizers,
)

F64 = torch.float64


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_effective_opacities_coarse_and_fine():
    logits = torch.tensor([_logit(0.005), _logit(0.3), _logit(0.7)], dtype=F64)
    coarse = effective_opacities(logits, coarse=True)
    torch.testing.assert_close(coarse, torch.tensor([0.0, 0.3, 0.7], dtype=F64))  # killed block: 0
    fine = effective_opacities(logits, coarse=False)
    assert torch.equal(fine, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    # noise changes α̂ of the alive blocks only; the kill decision uses the noise-free logits
    noisy = logits + torch.tensor([10.0, 1.0, -1.0], dtype=F64)
    with_noise = effective_opacities(logits, coarse=True, noisy_logits=noisy)
    assert float(with_noise[0]) == 0.0
    torch.testing.assert_close(with_noise[1:], torch.sigmoid(noisy[1:]))
    assert torch.equal(alive_mask(logits), torch.tensor([False, True, True]))


def test_noise_is_reproducible_and_unit_std():
    logits = torch.zeros(20_000)
    a = noisy_alpha_logits(logits, generator=torch.Generator().manual_seed(0))
    b = noisy_alpha_logits(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(1.0, abs=0.03)
    assert float(noisy_alpha_logits(logits, std=0.0).abs().max()) == 0.0


def test_parsimony_oracle():
    # α̂ = (0.25, 0): (sqrt(0.25) + sqrt(1.5e-8)) / 2
    value = parsimony_loss(torch.tensor([0.25, 0.0], dtype=F64))
    assert float(value) == pytest.approx((0.5 + math.sqrt(PARSIMONY_MIN)) / 2)


def test_parsimony_ignores_killed_blocks():
    def loss_of(killed_logit: float) -> tuple[float, torch.Tensor]:
        logits = torch.tensor([_logit(0.4), killed_logit, _logit(0.9)], dtype=F64, requires_grad=True)
        loss = parsimony_loss(effective_opacities(logits, coarse=True))
        (grad,) = torch.autograd.grad(loss, logits)
        return float(loss.detach()), grad

    value_a, grad_a = loss_of(_logit(0.001))
    value_b, grad_b = loss_of(_logit(0.009))
    assert value_a == value_b  # the killed block's α does not enter the value...
    assert float(grad_a[1]) == 0.0 and float(grad_b[1]) == 0.0  # ...nor receives a gradient
    assert float(grad_a[0]) > 0 and float(grad_a[2]) > 0  # alive blocks are pushed down
    alive_value, _ = loss_of(_logit(0.02))
    assert alive_value > value_a


def test_total_variation_oracle():
    # 2x2 single-channel-per-sum texture: u-diffs (columns): rows [0,1] and [2,4] -> 1, 4 ; v-diffs: 2, 3
    # channel-summed squares: u: (1 + 4)/2 = 2.5 ; v: (4 + 9)/2 = 6.5 ; TV = 9
    tex = torch.zeros(2, 2, 3, dtype=F64)
    tex[..., 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]], dtype=F64)
    assert float(total_variation(tex)) == pytest.approx(9.0)


def test_tv_block_terms_wrap_in_u_and_sum_over_blocks():
    zeros = torch.zeros(4, 4, 3, dtype=F64)
    block = torch.zeros(1, 4, 4, 3, dtype=F64)
    block[0, :, -1, 0] = 1.0  # last column differs: one interior u-step + one wrap-around step per row
    one = tv_loss(block, zeros, zeros)
    # per row: diffs (0, 0, 1) and the wrap (1 -> 0): 2 of 4 entries are 1 -> mean 0.5 ; no v differences
    assert float(one) == pytest.approx(0.5)
    two = tv_loss(block.expand(2, 4, 4, 3), zeros, zeros)
    assert float(two) == pytest.approx(2 * float(one))  # summed over blocks, not averaged
    ground = torch.zeros(4, 4, 3, dtype=F64)
    ground[:, 0, 1] = 1.0
    empty = torch.zeros(0, 4, 4, 3, dtype=F64)
    full_ground = float(tv_loss(empty, zeros, ground))
    assert full_ground > 0
    assert float(tv_loss(empty, zeros, ground, ground_factor=0.1)) == pytest.approx(0.1 * full_ground)
    assert float(tv_loss(empty, ground, zeros)) == pytest.approx(full_ground)  # background term, factor 1


def _pose(n: int, dtype=F64):
    return torch.eye(3, dtype=dtype).expand(n, 3, 3).clone()


@pytest.mark.parametrize("eps_value", [0.1, 1.0, 1.9])
def test_overlap_is_zero_for_disjoint_blocks(eps_value):
    eps = torch.full((2, 2), eps_value, dtype=F64)
    scales = torch.ones(2, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0]], dtype=F64)  # half sizes 0.25: a 0.1 gap
    loss = overlap_loss(
        eps, scales, _pose(2), t, torch.ones(2, dtype=F64), generator=torch.Generator().manual_seed(0)
    )
    assert float(loss) == 0.0


def test_overlap_is_positive_for_coincident_opaque_blocks_and_pushes_them_apart():
    eps = torch.full((2, 2), 0.5, dtype=F64)
    scales = torch.ones(2, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]], dtype=F64, requires_grad=True)
    alpha = torch.ones(2, dtype=F64, requires_grad=True)
    loss = overlap_loss(eps, scales, _pose(2), t, alpha, generator=torch.Generator().manual_seed(0))
    # inside both blocks the occupancy sum is ~2 > 1.95; the blocks fill most of their boxes
    assert float(loss.detach()) > 0.01
    g_t, g_alpha = torch.autograd.grad(loss, (t, alpha))
    assert float(g_t[0, 0]) > 0 and float(g_t[1, 0]) < 0  # descent separates block 0 (-x) and block 1 (+x)
    assert bool((g_alpha > 0).all())


def test_overlap_ignores_killed_and_transparent_blocks():
    eps = torch.ones(2, 2, dtype=F64)
    scales = torch.ones(2, 3, dtype=F64)
    t = torch.zeros(2, 3, dtype=F64)
    opaque = overlap_loss(eps, scales, _pose(2), t, torch.ones(2, dtype=F64), generator=torch.Generator())
    # exactly coincident unit-sphere blocks: inside (≈ π/6 of each box) the sum is ~2, i.e. ~0.05 above 1.95
    assert 0.5 * 0.05 * math.pi / 6 < float(opaque) < 1.5 * 0.05 * math.pi / 6
    for alpha in ([1.0, 0.0], [0.5, 0.5]):
        loss = overlap_loss(
            eps, scales, _pose(2), t, torch.tensor(alpha, dtype=F64), generator=torch.Generator()
        )
        assert float(loss) == 0.0


def test_overlap_gradients_reach_every_geometric_input():
    gen = torch.Generator().manual_seed(2)
    eps = torch.tensor([[0.6, 1.2], [1.1, 0.4], [0.9, 0.9]], dtype=F64, requires_grad=True)
    scales = torch.tensor([[1.0, 1.2, 0.8], [0.9, 1.0, 1.1], [1.3, 0.7, 1.0]], dtype=F64, requires_grad=True)
    R = _pose(3).requires_grad_()
    t = (0.05 * torch.randn(3, 3, generator=gen, dtype=F64)).requires_grad_()
    loss = overlap_loss(eps, scales, R, t, torch.ones(3, dtype=F64), n_points=200, generator=gen)
    assert float(loss.detach()) > 0
    for g in torch.autograd.grad(loss, (eps, scales, R, t)):
        assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0


def test_losses_on_device_match_cpu(device):
    from recon.scenes.superquadrics.blocks import init_block_set
    from recon.scenes.superquadrics.geometry import base_angles
    from recon.scenes.superquadrics.tessellation import icosphere

    # float64 so that CPU and CUDA agree to rounding; opaque blocks within 0.1 of each other so overlap is > 0
    blocks = init_block_set(
        3, generator=torch.Generator().manual_seed(0), texture_size=8, translation_range=(0.1,) * 3, dtype=F64
    )
    blocks = replace(blocks, alpha_logits=torch.full((3,), 6.0, dtype=F64))
    eta, omega = base_angles(icosphere(1))

    def run(dev):
        b = blocks.to(dev)
        raw, t = b.raw_exponents.clone().requires_grad_(), b.translations.clone().requires_grad_()
        b = replace(b, raw_exponents=raw, translations=t)
        alpha = effective_opacities(b.alpha_logits, coarse=True)
        overlap = overlap_loss(
            b.exponents(), b.scales(), b.rotations(), t, alpha, generator=torch.Generator().manual_seed(1)
        )
        loss = overlap + parsimony_loss(alpha) + b.vertices(eta, omega).square().mean()
        grads = torch.autograd.grad(loss, (raw, t))
        return overlap.detach().cpu(), loss.detach().cpu(), [g.cpu() for g in grads]

    overlap_cpu, loss_cpu, grads_cpu = run("cpu")
    overlap_dev, loss_dev, grads_dev = run(device)
    assert float(overlap_cpu) > 0
    torch.testing.assert_close(overlap_dev, overlap_cpu, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss_dev, loss_cpu, rtol=1e-9, atol=1e-12)
    for g_dev, g_cpu in zip(grads_dev, grads_cpu):
        torch.testing.assert_close(g_dev, g_cpu, rtol=1e-7, atol=1e-10)


def _small_blocks():
    from recon.scenes.superquadrics.blocks import init_block_set

    b = init_block_set(
        3, generator=torch.Generator().manual_seed(4), texture_size=8, translation_range=(0.1,) * 3
    )
    return replace(b, alpha_logits=torch.tensor([6.0, -6.0, 6.0]))  # α ≈ 0.9975, 0.0025 (killed), 0.9975


def test_weighted_regularizers_follow_the_stage_factors():
    from recon.scenes.superquadrics.config import SuperquadricsConfig
    from recon.scenes.superquadrics.curriculum import stage_at

    cfg = SuperquadricsConfig(texture_size=8)
    b = _small_blocks()
    textures = (torch.sigmoid(b.texture_logits), torch.sigmoid(b.background_texture_logits))
    ground = torch.sigmoid(b.ground_texture_logits)
    coarse = stage_at(0.5, cfg)
    alpha = effective_opacities(b.alpha_logits, coarse=True)
    terms = weighted_regularizers(b, alpha, stage=coarse, cfg=cfg, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"parsimony", "tv", "overlap"}
    torch.testing.assert_close(terms["parsimony"], 0.01 * parsimony_loss(alpha))
    torch.testing.assert_close(terms["tv"], 0.1 * tv_loss(*textures, ground))
    expected_overlap = overlap_loss(
        b.exponents(),
        b.scales(),
        b.rotations(),
        b.translations,
        alpha,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(expected_overlap) > 0  # the blocks start within 0.1 of each other
    torch.testing.assert_close(terms["overlap"], expected_overlap)
    fine = stage_at(0.9, cfg)
    fine_terms = weighted_regularizers(
        b, effective_opacities(b.alpha_logits, coarse=False), stage=fine, cfg=cfg
    )
    assert float(fine_terms["parsimony"]) == 0.0 and float(fine_terms["overlap"]) == 0.0
    # fine: 0.1 * f_t * (tv(bkg) + blocks + f_t * tv(ground)) with f_t = 0.1: the ground is scaled by 0.1 twice
    torch.testing.assert_close(fine_terms["tv"], 0.1 * 0.1 * tv_loss(*textures, ground, ground_factor=0.1))


def test_weighted_regularizers_gradients_reach_the_parameters():
    from recon.scenes.superquadrics.blocks import GEOMETRY_FIELDS, TEXTURE_FIELDS
    from recon.scenes.superquadrics.config import SuperquadricsConfig
    from recon.scenes.superquadrics.curriculum import stage_at

    cfg = SuperquadricsConfig(texture_size=8)
    b = _small_blocks()
    leaves = {name: getattr(b, name).clone().requires_grad_() for name in GEOMETRY_FIELDS + TEXTURE_FIELDS}
    b = replace(b, **leaves)
    alpha = effective_opacities(b.alpha_logits, coarse=True)
    terms = weighted_regularizers(b, alpha, stage=stage_at(0.5, cfg), cfg=cfg, generator=torch.Generator())
    grads = dict(
        zip(leaves, torch.autograd.grad(sum(terms.values()), list(leaves.values()), allow_unused=True))
    )
    for name in ("raw_exponents", "log_scales", "rot6d", "translations", "alpha_logits", *TEXTURE_FIELDS):
        assert grads[name] is not None and float(grads[name].abs().sum()) > 0, name
    assert float(grads["alpha_logits"][1]) == 0.0  # the killed block gets nothing
    assert (
        grads["ground_rot6d"] is None and grads["ground_translation"] is None
    )  # only rendering moves the ground
