"""ProposalStrategy: nerfacc's gradient gating and nerfstudio's weight annealing as functions of the budget fraction,
handed to a proposal NerfScene, and their state through checkpoints."""

import pytest
import torch

from recon.scenes.base import StepContext
from recon.scenes.nerf import NerfScene, NerfSceneConfig
from recon.train.param_optimizer import ParamOptimizer
from recon.train.proposal import NerfStrategyConfig, ProposalStrategy, anneal_exponent, update_interval
from recon.train.strategy import StrategyContext
from tests.typecheck import typecheck_disabled

TINY = NerfSceneConfig(
    grid_levels=2, grid_log2_size=8, grid_max_resolution=32, hidden_dim=8, proposal_samples=(8,), num_samples=4,
    proposal_max_resolutions=(16,), proposal_grid_levels=2, proposal_grid_log2_size=8, proposal_hidden_dim=8,
)  # fmt: skip
BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _scene(kind: str = "unbounded") -> NerfScene:
    return NerfScene(TINY, BOX, kind=kind, generator=torch.Generator().manual_seed(0))


def _run(strategy: ProposalStrategy, scene: NerfScene, fractions: list[float]) -> list[tuple[float, bool]]:
    """Call after_backward for steps 0.. at the given fractions; the (anneal, update) each step handed on."""
    optimizer = ParamOptimizer(scene.param_groups())
    out = []
    for step, fraction in enumerate(fractions):
        with typecheck_disabled():  # a schedule-only context: no camera or images
            ctx = StepContext(step, len(fractions), None, None, None, progress=fraction)
        strategy.after_backward(StrategyContext(ctx, scene, optimizer))
        out.append(scene.proposal_schedule())
    return out


def test_anneal_is_nerfstudios_bias_curve_of_the_fraction():
    cfg = NerfStrategyConfig(proposal_anneal_fraction=0.1, proposal_anneal_slope=10.0)
    assert (
        anneal_exponent(0.0, cfg) == 0.0
        and anneal_exponent(0.1, cfg) == 1.0
        and anneal_exponent(0.7, cfg) == 1.0
    )
    # x = 0.05 / 0.1 = 0.5: a = 10 * 0.5 / (9 * 0.5 + 1) = 5 / 5.5
    assert anneal_exponent(0.05, cfg) == pytest.approx(5 / 5.5, rel=1e-12)
    values = [anneal_exponent(f, cfg) for f in torch.linspace(0, 0.1, 11).tolist()]
    assert values == sorted(values) and len(set(values)) == 11


def test_gating_matches_nerfaccs_requires_grad_fn_on_a_step_budget():
    # nerfacc get_proposal_requires_grad_fn(target=5, num_steps=1000) over 20 000 steps, re-stated, with its target
    # taken one step behind: step s's schedule is decided at the end of step s - 1, from that step's fraction
    # (num_steps=100 here: a 100-step warm-up, 100 / 20 000 of the budget, keeps the test short)
    steps, cfg = 400, NerfStrategyConfig(proposal_warmup_fraction=100 / 20_000)
    since, expected = 0, []
    for s in range(steps):
        requires_grad = since > min(max(s - 1, 0) / 100, 1.0) * 5.0
        since = 0 if requires_grad else since
        since += 1
        expected.append(requires_grad)
    scene = _scene()
    assert scene.proposal_schedule() == (0.0, False)  # a new scene has step 0's schedule
    handed = _run(ProposalStrategy(cfg), scene, [s / 20_000 for s in range(steps - 1)])
    assert [False] + [u for _, u in handed] == expected
    assert update_interval(1.0, cfg) == 5.0 and sum(expected[-120:]) == 20  # every 6th step after the warm-up


def test_strategy_hands_the_scene_the_anneal_of_the_fraction_and_the_step():
    cfg = NerfStrategyConfig(proposal_anneal_fraction=0.2)
    scene = _scene()
    fractions = [0.0, 0.01, 0.05, 0.1, 0.2, 0.5]
    handed = _run(ProposalStrategy(cfg), scene, fractions)
    expected = [anneal_exponent(f, cfg) for f in fractions]
    assert [a for a, _ in handed] == pytest.approx(expected, rel=1e-7)  # stored as float32
    assert int(scene.step) == len(fractions)
    assert float(scene.proposal_anneal) == pytest.approx(1.0)  # the buffer a checkpoint carries


def test_schedule_survives_a_checkpoint_and_old_checkpoints_load_as_trained():
    strategy, scene = ProposalStrategy(), _scene()
    _run(strategy, scene, [0.0, 0.01, 0.02])
    restored = NerfScene.empty(TINY)
    restored.load_state_dict_resizing(scene.state_dict())
    assert restored.proposal_schedule() == scene.proposal_schedule() and not hasattr(
        restored, "occupancy_grid"
    )
    resumed = ProposalStrategy()
    resumed.load_state_tensors(strategy.state_tensors())
    assert resumed.steps_since_update == strategy.steps_since_update
    legacy = {k: v for k, v in scene.state_dict().items() if not k.startswith("proposal_")}
    legacy |= {"occupancy_grid.occs": torch.zeros(1), "occupancy_grid.binaries": torch.zeros(1, 1, 1, 1)}
    old = NerfScene.empty(TINY)
    old.load_state_dict_resizing(legacy)  # written with the one-cell placeholder grid, before the schedule
    assert old.proposal_schedule() == (1.0, True)


def test_gated_steps_leave_the_proposal_fields_without_gradient():
    scene = _scene()
    cams = _camera()
    pixels = torch.zeros(1, 8, 2, dtype=torch.long)
    for update in (False, True):
        scene.set_proposal_schedule(anneal=1.0, update=update)
        out = scene.render(cams, _options(), pixels=pixels)
        with typecheck_disabled():  # the regularizers read no images
            ctx = StepContext(0, 1, cams, None, None)
        terms = scene.regularizers(ctx)
        loss = out.rgb.sum() + sum(terms.values())
        loss.backward()
        grads = [p.grad for p in scene.proposal.parameters()]
        assert all(g is None for g in grads) != update
        scene.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="anneal"):
        scene.set_proposal_schedule(anneal=-0.1, update=True)


def _camera():
    from recon.core import Camera
    from recon.core.transforms import look_at

    T = look_at(torch.tensor([0.0, -0.5, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]])
    return Camera(T[None], K[None], 8, 8)


def _options():
    from recon.scenes.base import RenderOptions

    return RenderOptions(backend="torch", depth=False)
