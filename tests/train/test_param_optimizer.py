"""ParamOptimizer: row surgery keeps parameters and Adam moments aligned; state round-trips without pickle."""

import torch
from torch import nn

from recon.scenes.base import ParamGroup
from recon.train.param_optimizer import ParamOptimizer
from tests.typecheck import assert_rejected


def _setup(n: int = 6):
    a = nn.Parameter(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3))
    b = nn.Parameter(torch.arange(n, dtype=torch.float32))
    opt = ParamOptimizer([ParamGroup("a", a, 0.1), ParamGroup("b", b, 0.1)])
    # one step with row-dependent gradients so each row's moments are distinct
    a.grad = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + 1
    b.grad = torch.arange(n, dtype=torch.float32) + 1
    opt.step()
    return a, b, opt


def _moment(opt, p, key="exp_avg"):
    return opt.adam.state[p][key]


def test_select_rows_keeps_params_and_moments_aligned():
    a, b, opt = _setup()
    before_a, before_m = a.detach().clone(), _moment(opt, a).clone()
    before_v = _moment(opt, b, "exp_avg_sq").clone()
    keep = torch.tensor([True, False, True, True, False, True])
    opt.select_rows(keep)
    assert a.shape == (4, 3) and b.shape == (4,) and opt.num_rows() == 4
    assert torch.equal(a.detach(), before_a[keep])
    assert torch.equal(_moment(opt, a), before_m[keep])
    assert torch.equal(_moment(opt, b, "exp_avg_sq"), before_v[keep])
    # parameters stay the same objects the optimiser steps
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    assert a.shape == (4, 3)


def test_select_rows_with_indices_reorders():
    a, b, opt = _setup()
    before, m = a.detach().clone(), _moment(opt, a).clone()
    idx = torch.tensor([5, 0, 0])
    opt.select_rows(idx)
    assert torch.equal(a.detach(), before[idx]) and torch.equal(_moment(opt, a), m[idx])


def test_extend_rows_appends_with_zero_moments():
    a, b, opt = _setup()
    m_before = _moment(opt, a).clone()
    opt.extend_rows({"a": torch.full((2, 3), 7.0), "b": torch.full((2,), 9.0)})
    assert a.shape == (8, 3) and b.shape == (8,)
    assert torch.equal(a.detach()[-2:], torch.full((2, 3), 7.0))
    assert torch.equal(_moment(opt, a)[:6], m_before)
    assert torch.count_nonzero(_moment(opt, a)[6:]) == 0
    assert torch.count_nonzero(_moment(opt, b, "exp_avg_sq")[6:]) == 0
    # a step on new rows with zero moments moves them by lr (Adam's first step is lr * sign(grad))
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    assert a.shape == (8, 3)


def test_extend_rows_requires_every_group():
    _, _, opt = _setup()
    try:
        opt.extend_rows({"a": torch.zeros(1, 3)})
    except ValueError as exc:
        assert "groups" in str(exc)
    else:
        raise AssertionError("extend_rows with a missing group must raise")


def test_reset_moments_rows_only():
    a, _, opt = _setup()
    opt.reset_moments(torch.tensor([1, 2]))
    m = _moment(opt, a)
    assert torch.count_nonzero(m[1:3]) == 0 and torch.count_nonzero(m[0]) == 3


def test_state_round_trip():
    a, b, opt = _setup()
    state = opt.state_tensors()
    a2 = nn.Parameter(a.detach().clone())
    b2 = nn.Parameter(b.detach().clone())
    opt2 = ParamOptimizer([ParamGroup("a", a2, 0.1), ParamGroup("b", b2, 0.1)])
    opt2.load_state_tensors(state)
    for p, q in ((a, a2), (b, b2)):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.adam.state[p][key], opt2.adam.state[q][key])
    g = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    a.grad, a2.grad = g.clone(), g.clone()
    b.grad, b2.grad = torch.ones(6), torch.ones(6)
    opt.step()
    opt2.step()
    assert torch.equal(a.detach(), a2.detach())


def test_learning_rate_schedule_decays_log_linearly():
    from recon.scenes.base import ExponentialDecayLr

    p = nn.Parameter(torch.zeros(2, 3))
    opt = ParamOptimizer([ParamGroup("v", p, 0.0018, ExponentialDecayLr(0.01))])
    opt.set_learning_rates(0, 100)
    assert abs(opt.learning_rates()["v"] - 0.0018) < 1e-12
    opt.set_learning_rates(50, 100)
    assert abs(opt.learning_rates()["v"] - 0.00018) < 1e-9  # geometric mean of 0.0018 and 0.000018
    opt.set_learning_rates(100, 100)
    assert abs(opt.learning_rates()["v"] - 0.000018) < 1e-12


def _two_spaces():
    """Groups ``c`` (5 corner rows) and ``v`` (3 voxel rows) in one optimizer, after one distinct-moment step."""
    c = nn.Parameter(torch.arange(10, dtype=torch.float32).reshape(5, 2))
    v = nn.Parameter(torch.arange(3, dtype=torch.float32))
    opt = ParamOptimizer([ParamGroup("c", c, 0.1), ParamGroup("v", v, 0.1)])
    c.grad, v.grad = torch.arange(10, dtype=torch.float32).reshape(5, 2) + 1, torch.arange(3.0) + 1
    opt.step()
    return c, v, opt


def test_names_edit_one_row_space_and_leave_the_other():
    c, v, opt = _two_spaces()
    c0, mc0 = c.detach().clone(), _moment(opt, c).clone()
    v0, mv0 = v.detach().clone(), _moment(opt, v, "exp_avg_sq").clone()
    opt.extend_rows({"c": torch.full((2, 2), 4.0)}, names=["c"])
    opt.select_rows(torch.tensor([6, 0, 3, 5]), names=("c",))
    assert c.shape == (4, 2) and opt.num_rows(names=["c"]) == 4 and opt.num_rows(names=["v"]) == 3
    assert torch.equal(c.detach()[[1, 2]], c0[[0, 3]]) and torch.equal(
        c.detach()[[0, 3]], torch.full((2, 2), 4.0)
    )
    assert torch.equal(_moment(opt, c)[[1, 2]], mc0[[0, 3]])
    assert torch.count_nonzero(_moment(opt, c)[[0, 3]]) == 0  # new rows: zero moments
    # the other space is untouched, parameter and moments
    assert torch.equal(v.detach(), v0) and torch.equal(_moment(opt, v, "exp_avg_sq"), mv0)
    opt.select_rows(torch.tensor([True, False, True]), names=["v"])
    assert torch.equal(v.detach(), v0[[0, 2]]) and torch.equal(_moment(opt, v, "exp_avg_sq"), mv0[[0, 2]])
    assert c.shape == (4, 2)
    c.grad, v.grad = torch.ones_like(c), torch.ones_like(v)
    opt.step()  # the optimiser still steps both (shapes of params and moments agree)


def test_names_are_validated():
    c, v, opt = _two_spaces()
    for bad in (["nope"], [], "c"):
        try:
            opt.select_rows(torch.tensor([0]), names=bad)
        except (ValueError, TypeError) as exc:
            assert "names" in str(exc)
        else:
            raise AssertionError(f"names={bad!r} must raise")
    try:  # groups of different row counts are two row spaces: one edit cannot cover both
        opt.select_rows(torch.tensor([0]), names=["c", "v"])
    except ValueError as exc:
        assert "row counts" in str(exc)
    else:
        raise AssertionError("names spanning two row spaces must raise")
    try:
        opt.extend_rows({"c": torch.zeros(1, 2), "v": torch.zeros(1)}, names=["c"])
    except ValueError as exc:
        assert "groups" in str(exc)
    else:
        raise AssertionError("extend_rows with rows for a group outside names must raise")
    assert c.shape == (5, 2) and v.shape == (3,)


def test_hold_rows_keeps_values_and_moments_through_one_step():
    c, v, opt = _two_spaces()  # one step done: every row has non-zero moments
    held = torch.tensor([False, True, False, True, False])
    c0, m0, s0 = c.detach().clone(), _moment(opt, c).clone(), _moment(opt, c, "exp_avg_sq").clone()
    opt.hold_rows({"c": held})
    c.grad, v.grad = (
        torch.zeros_like(c),
        torch.ones_like(v),
    )  # zero gradient: Adam's momentum alone moves rows
    opt.step()
    assert torch.equal(c.detach()[held], c0[held]) and torch.equal(_moment(opt, c)[held], m0[held])
    assert torch.equal(_moment(opt, c, "exp_avg_sq")[held], s0[held])
    assert not torch.equal(c.detach()[~held], c0[~held])  # the other rows moved (momentum of the first step)
    c1 = c.detach().clone()
    c.grad, v.grad = torch.zeros_like(c), torch.ones_like(v)
    opt.step()  # the hold lasted one step
    assert not torch.equal(c.detach()[held], c1[held])
    for bad in ({"nope": held}, {"c": torch.ones(4, dtype=torch.bool)}, {"c": torch.ones(5)}):
        assert_rejected(lambda bad=bad: opt.hold_rows(bad), match="hold_rows", argument="rows")


def test_fused_adam_follows_the_per_op_adam():
    """Groups of at least ``FUSED_MIN_NUMEL`` entries (the hash tables) use torch's fused Adam kernel (one pass per
    tensor), smaller ones the per-op kernel; over steps with a state round trip in between (as a checkpoint does)
    both follow the per-op ``torch.optim.Adam`` with the same eps and betas."""
    from recon.train.param_optimizer import ADAM_BETAS, ADAM_EPS, FUSED_MIN_NUMEL

    gen = torch.Generator().manual_seed(0)
    shapes = {"table": (FUSED_MIN_NUMEL // 2, 2), "rows": (8, 3)}
    params = {k: nn.Parameter(torch.randn(*shape, generator=gen)) for k, shape in shapes.items()}
    refs = {k: nn.Parameter(p.detach().clone()) for k, p in params.items()}

    def make(ps):
        return ParamOptimizer([ParamGroup(k, p, 0.05) for k, p in ps.items()])

    opt = make(params)
    assert opt.fused_groups == {"table"}
    assert [pg["fused"] for pg in opt.adam.param_groups] == [True, False]
    plain = torch.optim.Adam(list(refs.values()), lr=0.05, eps=ADAM_EPS, betas=ADAM_BETAS, foreach=False)
    for step in range(6):
        for k in params:
            g = torch.randn(*shapes[k], generator=gen)
            params[k].grad, refs[k].grad = g.clone(), g.clone()
        opt.step()
        plain.step()
        if step == 2:  # resume from flat tensors into a fresh optimiser
            state = opt.state_tensors()
            params = {k: nn.Parameter(p.detach().clone()) for k, p in params.items()}
            opt = make(params)
            opt.load_state_tensors(state)
            assert opt.adam.state[params["table"]]["step"].device == params["table"].device
    for k in params:
        torch.testing.assert_close(params[k].detach(), refs[k].detach(), rtol=1e-5, atol=1e-6)


def test_a_device_without_a_fused_kernel_falls_back_to_the_per_op_adam():
    """Parameters on a device torch has no fused Adam kernel for (here the meta device) keep the per-op
    implementation instead of failing at construction."""
    from recon.train.param_optimizer import FUSED_MIN_NUMEL

    p = nn.Parameter(torch.zeros(FUSED_MIN_NUMEL, device="meta"))
    opt = ParamOptimizer([ParamGroup("p", p, 0.1)])
    assert not opt.fused_groups and not opt.adam.param_groups[0]["fused"]


def test_a_resumed_fused_group_continues_bit_exactly():
    """A fused (table-sized) group restored from ``state_tensors`` continues exactly as the uninterrupted optimiser:
    the same parameters and moments, bit for bit, after the same gradients (what a resumed run relies on)."""
    from recon.train.param_optimizer import FUSED_MIN_NUMEL

    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(FUSED_MIN_NUMEL, generator=gen) for _ in range(6)]
    start = torch.randn(FUSED_MIN_NUMEL, generator=gen)

    def run(resume_at: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = nn.Parameter(start.clone())
        opt = ParamOptimizer([ParamGroup("table", p, 0.01)])
        assert opt.fused_groups == {"table"}
        for i, g in enumerate(grads):
            if i == resume_at:  # as a checkpoint does: flat tensors into a fresh parameter and optimiser
                state = opt.state_tensors()
                p = nn.Parameter(p.detach().clone())
                opt = ParamOptimizer([ParamGroup("table", p, 0.01)])
                opt.load_state_tensors(state)
            p.grad = g.clone()
            opt.step()
        return p.detach(), opt.state_tensors()

    p_continuous, s_continuous = run(None)
    p_resumed, s_resumed = run(3)
    assert torch.equal(p_continuous, p_resumed)
    assert s_continuous.keys() == s_resumed.keys()
    for key in s_continuous:
        assert torch.equal(s_continuous[key], s_resumed[key]), key
