"""TriangleMCMC (spec §11): counts after split/clone/prune, opacity rule, row alignment of params and moments."""

import math

import pytest
import torch

from recon.core import Camera
from recon.scenes.base import StepContext
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene
from recon.train.param_optimizer import ParamOptimizer
from recon.train.strategy import StrategyContext
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig, subdivide


def _scene(n: int, gen: torch.Generator) -> TriangleSplatScene:
    pts = torch.randn(n, 3, generator=gen)
    scene = TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=1), pts, torch.rand(n, 3, generator=gen),
                                           generator=gen)  # fmt: skip
    with torch.no_grad():
        scene.sh_dc[:, 0, 0] = torch.arange(n, dtype=torch.float32)  # row id marker
    return scene


def _stepped_optimizer(scene: TriangleSplatScene, gen: torch.Generator) -> ParamOptimizer:
    opt = ParamOptimizer(scene.param_groups())
    for p in scene.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return opt


def _ctx(scene, opt, step: int) -> StrategyContext:
    cam = Camera(
        T_cam_world=torch.eye(4)[None], K=torch.eye(3)[None], width=1, height=1
    )  # not read by the strategy
    sctx = StepContext(
        step=step, max_steps=30_000, camera=cam, image=torch.zeros(1, 1, 1, 3), background=torch.zeros(3)
    )
    return StrategyContext(sctx, scene, opt)


def _strategy(n: int, importance: float = 1.0) -> TriangleMCMC:
    s = TriangleMCMC(TriangleMCMCConfig(), num_views=100, max_sh_degree=1)
    s.importance = torch.full((n,), importance)
    s.image_size = torch.full((n,), 10.0)
    s.visible_count = torch.full((n,), 5.0)
    return s


def test_densify_count_and_growth(gen):
    n = 100
    scene = _scene(n, gen)
    opt = _stepped_optimizer(scene, gen)
    strat = _strategy(n)
    strat.image_size[:50] = 30.0  # half big (split, cost 3), half small (clone, cost 1)
    strat.densify_and_prune(_ctx(scene, opt, 999), 1000 / 30_000)
    n_new = scene.num_primitives()
    # n_add = floor(1.3 N) - N = 30; draws stop once the accumulated cost reaches 30, the last adding at most 3
    assert 130 <= n_new <= 132
    for p in scene.parameters():
        assert p.shape[0] == n_new
    for g in opt.groups.values():
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt.adam.state[g.param][key].shape == g.param.shape
    assert strat.importance.shape == (n_new,) and strat.events == 1


def test_dead_rows_are_removed_and_replaced(gen):
    n = 100
    scene = _scene(n, gen)
    with torch.no_grad():
        scene.logit_opacities[:10] = math.log(0.01 / 0.99)  # o = 0.01 <= 0.014: dead
    opt = _stepped_optimizer(scene, gen)
    strat = _strategy(n)
    ids_dead = set(range(10))
    strat.densify_and_prune(_ctx(scene, opt, 999), 1000 / 30_000)
    # n_add = 30 + 10 dead; all small -> every draw costs 1 and adds exactly one net row
    assert scene.num_primitives() == n - 10 + 40
    survivors = set(scene.sh_dc[:, 0, 0].round().long().tolist())
    assert not survivors & ids_dead


def test_low_importance_is_dead(gen):
    n = 20
    scene = _scene(n, gen)
    strat = _strategy(n)
    strat.importance[:5] = 0.001  # below tau_imp = 0.022
    dead = strat.dead_mask(scene.opacities().detach(), 1000 / 30_000, size_rule=False)
    assert dead[:5].all() and not dead[5:].any()


def test_rows_and_moments_stay_aligned(gen):
    n = 60
    scene = _scene(n, gen)
    opt = _stepped_optimizer(scene, gen)
    before_params = {g.name: g.param.detach().clone() for g in opt.groups.values()}
    before_m = {g.name: opt.adam.state[g.param]["exp_avg"].clone() for g in opt.groups.values()}
    strat = _strategy(n)
    strat.image_size[::2] = 40.0
    strat.densify_and_prune(_ctx(scene, opt, 999), 1000 / 30_000)
    ids = scene.sh_dc[:, 0, 0].round().long()
    # kept rows come first: they are the unchanged rows of their ids, with their own moments
    kept = 0
    seen: set[int] = set()
    for r, i in enumerate(ids.tolist()):
        if i in seen:
            break
        if not torch.equal(scene.vertices[r].detach(), before_params["vertices"][i]):
            break
        seen.add(i)
        kept = r + 1
    assert kept > 0
    for g in opt.groups.values():
        rows = ids[:kept]
        assert torch.equal(g.param.detach()[:kept], before_params[g.name][rows])
        assert torch.equal(opt.adam.state[g.param]["exp_avg"][:kept], before_m[g.name][rows])
        assert torch.count_nonzero(opt.adam.state[g.param]["exp_avg"][kept:]) == 0
        assert torch.count_nonzero(opt.adam.state[g.param]["exp_avg_sq"][kept:]) == 0


def test_clone_keeps_plane_and_corrects_opacity(gen):
    n = 10
    scene = _scene(n, gen)
    opt = _stepped_optimizer(scene, gen)
    strat = _strategy(n)
    o_before = scene.opacities().detach().clone()
    v_before = scene.vertices.detach().clone()
    strat.densify_and_prune(_ctx(scene, opt, 999), 1000 / 30_000)  # n_add = 3 small clones
    assert scene.num_primitives() == 13
    new_v = scene.vertices.detach()[7:]
    new_ids = scene.sh_dc[7:, 0, 0].round().long()
    o_new = scene.opacities().detach()[7:]
    for r, i in enumerate(new_ids.tolist()):
        expected = 1 - math.sqrt(1 - float(o_before[i]))
        assert abs(float(o_new[r]) - expected) < 1e-5
        parent = v_before[i]
        delta = new_v[r] - parent
        assert torch.allclose(delta, delta[0].expand(3, 3), atol=1e-6) or torch.allclose(
            delta, torch.zeros(3, 3)
        )
        normal = torch.linalg.cross(parent[1] - parent[0], parent[2] - parent[0])
        assert abs(float((delta[0] * normal).sum())) / float(normal.norm()) < 1e-5


def test_subdivide_preserves_area_and_orientation():
    tri = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0.0, 2, 0]]])
    kids = subdivide(tri)[0]
    areas = 0.5 * torch.linalg.cross(kids[:, 1] - kids[:, 0], kids[:, 2] - kids[:, 0])
    assert torch.allclose(areas.sum(0), torch.tensor([0.0, 0.0, 2.0]))
    assert (areas[:, 2] > 0).all()


def _events(strategy: TriangleMCMC, fractions: dict[int, float]) -> dict[int, str | None]:
    return {it: strategy.next_event(it, f) for it, f in fractions.items()}


def test_event_schedule_of_the_published_step_budget():
    s = TriangleMCMC(TriangleMCMCConfig(), num_views=100, max_sh_degree=3)
    its = range(1, 30_001)
    kinds = {it: s.next_event(it, it / 30_000) for it in its}
    fired = {it: k for it, k in kinds.items() if k is not None}
    densify = [it for it, k in fired.items() if k == "densify"]
    prune = [it for it, k in fired.items() if k == "prune"]
    # the reference: densify every 500 steps strictly after 500 and before 25 000, then prune-only until the end
    assert densify == list(range(1000, 25_000, 500))
    assert prune == list(range(25_000, 30_000, 500))


def test_events_follow_the_time_fraction_whatever_the_step_rate():
    cfg = TriangleMCMCConfig(every_fraction=0.1, start_fraction=0.1, until_fraction=0.8, min_every_steps=1)
    fast = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)  # 1000 steps in the budget
    slow = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)  # 50 steps in the same budget
    fast_fired = [k for it in range(1, 1001) if (k := fast.next_event(it, it / 1000))]
    slow_fired = [k for it in range(1, 51) if (k := slow.next_event(it, it / 50))]
    # periods 2..7 densify (0.1 < f < 0.8), periods 8, 9 prune, none at the end of the budget
    assert fast_fired == slow_fired == ["densify"] * 6 + ["prune"] * 2


def test_min_every_steps_defers_events():
    cfg = TriangleMCMCConfig(every_fraction=0.02, start_fraction=0.02, min_every_steps=100)
    s = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)
    fired = [it for it in range(1, 1001) if s.next_event(it, it / 1000)]
    assert fired[0] >= 100 and all(b - a >= 100 for a, b in zip(fired, fired[1:]))


def test_event_state_survives_a_checkpoint():
    cfg = TriangleMCMCConfig(every_fraction=0.1, start_fraction=0.0, min_every_steps=1)
    s = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)
    assert s.next_event(10, 0.1) == "densify"
    restored = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)
    restored.load_state_tensors(s.state_tensors())
    assert restored.next_event(11, 0.11) is None and restored.next_event(20, 0.2) == "densify"


def _growth_strategy(min_steps: int, cap: int = 100_000, limit: bool = True, floor: int = 0) -> TriangleMCMC:
    """A strategy whose last two events were at iterations 100 and 200, fractions 0.1 and 0.2 (1000 steps per
    unit of fraction: the budget buys 1000 steps at the present soup size)."""
    cfg = TriangleMCMCConfig(
        every_fraction=0.1,
        start_fraction=0.0,
        min_every_steps=1,
        cap=cap,
        min_steps=min_steps,
        limit_growth=limit,
        growth_floor=floor,
    )
    s = TriangleMCMC(cfg, num_views=100, max_sh_degree=3)
    assert s.next_event(100, 0.1) == s.next_event(200, 0.2) == "densify"
    assert s.steps_per_fraction == pytest.approx(1000.0)
    s.steps_per_fraction = 1000.0  # exactly (0.2 - 0.1 is not 0.1 in floating point)
    return s


def test_in_run_growth_rule_limits_the_soup_to_what_the_rest_of_the_budget_affords():
    # without the rule: growth x n within the cap
    assert _growth_strategy(0).growth_target(1000, 200, 0.2) == 1300
    assert _growth_strategy(0, cap=1100).growth_target(1000, 200, 0.2) == 1100
    # the rest of the budget (0.8 of it) buys 800 more steps at 1000 triangles, 400 at 2000 (cost ~ size)
    assert (
        _growth_strategy(600).growth_target(1000, 200, 0.2) == 1300
    )  # 400 more needed: up to 2000 affordable
    limited = _growth_strategy(900)  # 700 more needed: 1000 x 800 / 700 = 1142 affordable
    assert limited.growth_target(1000, 200, 0.2) == 1142 and limited.growth_limited == 1
    assert (
        _growth_strategy(1000).growth_target(1000, 200, 0.2) == 1000
    )  # exactly what this size buys: no growth
    assert _growth_strategy(5000).growth_target(1000, 200, 0.2) == 1000  # never below the present size
    assert _growth_strategy(150).growth_target(1000, 200, 0.2) == 1300  # the steps are already done
    assert _growth_strategy(5000, limit=False).growth_target(1000, 200, 0.2) == 1300  # the rule is off
    # monotone: a faster step rate (or a longer budget: more steps per unit of fraction) never gives a smaller soup
    targets = []
    for rate in (200, 500, 1000, 2000, 5000):
        s = _growth_strategy(2000)
        s.steps_per_fraction = float(rate)
        targets.append(s.growth_target(1000, 200, 0.2))
    assert targets == sorted(targets) and targets[0] == 1000 and targets[-1] == 1300


def test_in_run_growth_rule_never_holds_the_soup_below_its_floor():
    # 5000 steps needed, only ~800 affordable: without a floor the soup would not grow at all
    starved = _growth_strategy(5000, floor=1200)
    assert starved.growth_target(1000, 200, 0.2) == 1200 and starved.growth_limited == 1
    # the floor never grows the soup faster than growth x n or past the cap
    assert _growth_strategy(5000, floor=9000).growth_target(1000, 200, 0.2) == 1300
    assert _growth_strategy(5000, cap=1100, floor=9000).growth_target(1000, 200, 0.2) == 1100
    # a floor below what the budget affords changes nothing (900 needed: 1142 affordable)
    assert _growth_strategy(900, floor=500).growth_target(1000, 200, 0.2) == 1142
    # a soup already above the floor is held at its size, as without one
    assert _growth_strategy(5000, floor=800).growth_target(1000, 200, 0.2) == 1000


def test_in_run_growth_rule_at_a_densification_event(gen):
    n = 100
    scene = _scene(n, gen)
    opt = _stepped_optimizer(scene, gen)
    strat = _strategy(n)
    strat.config = TriangleMCMCConfig(min_steps=30_000, limit_growth=True)
    strat.last_event_step, strat.last_event_fraction = 500, 0.1
    strat.importance[:7] = 0.0  # 7 dead rows
    ctx = _ctx(scene, opt, 999)
    assert strat.next_event(1000, 0.2) == "densify" and strat.steps_per_fraction == pytest.approx(5000.0)
    # 29 000 more steps needed, 0.8 x 5000 = 4000 affordable at 100 triangles: the event only replaces the dead
    strat.densify_and_prune(ctx, 0.2)
    assert scene.num_primitives() == n and strat.growth_limited == 1


def test_negative_min_steps_and_floor_are_refused():
    with pytest.raises(ValueError, match="strategy.min_steps must be >= 0"):
        TriangleMCMC(TriangleMCMCConfig(min_steps=-1), num_views=10, max_sh_degree=0)
    with pytest.raises(ValueError, match="strategy.growth_floor must be >= 0"):
        TriangleMCMC(TriangleMCMCConfig(growth_floor=-1), num_views=10, max_sh_degree=0)


def test_growth_rule_state_survives_a_checkpoint():
    s = _growth_strategy(900)
    s.growth_target(1000, 200, 0.2)
    restored = TriangleMCMC(s.config, num_views=100, max_sh_degree=3)
    restored.load_state_tensors(s.state_tensors())
    assert (restored.last_event_step, restored.last_event_fraction, restored.growth_limited) == (200, 0.2, 1)
    assert restored.next_event(300, 0.3) == "densify" and restored.steps_per_fraction == pytest.approx(1000.0)
    old = {k: v for k, v in s.state_tensors().items() if k not in ("last_event_fraction", "growth_limited")}
    restored.load_state_tensors(old)  # a checkpoint written before the rule: the run goes on


def test_prune_only_after_until(gen):
    n = 30
    scene = _scene(n, gen)
    opt = _stepped_optimizer(scene, gen)
    strat = _strategy(n)
    strat.importance[:4] = 0.0
    strat.prune(_ctx(scene, opt, 25_999))
    assert scene.num_primitives() == 26


def test_supersampled_statistics_size_rules_in_output_pixels(gen):
    # scene.supersample = 2: the renderer reports radii in raster pixels; the size rules (big_size_px, the image-size
    # pruning) compare output pixels, so the strategy halves them. Visibility keeps the raster's 1-px rule.
    from dataclasses import replace

    from recon.core import PrimitiveStats, RenderOutput

    scene = _scene(3, gen)
    scene.config = replace(scene.config, supersample=2)
    opt = _stepped_optimizer(scene, gen)
    strategy = TriangleMCMC(TriangleMCMCConfig(), num_views=100, max_sh_degree=1)
    ctx = _ctx(scene, opt, step=10)
    stats = PrimitiveStats(
        max_blending=torch.full((1, 3), 0.5), radius_px=torch.tensor([[30, 4, 0]], dtype=torch.int32),
        inradius_px=torch.tensor([[3.0, 1.5, 0.0]]), visible=torch.tensor([[True, True, False]]),
    )  # fmt: skip
    render = RenderOutput(rgb=torch.zeros(1, 1, 1, 3), alpha=torch.zeros(1, 1, 1, 1), stats=stats)
    ctx.step.render = render
    ctx.step.pass_start = True  # starts the counting pass
    strategy.after_backward(ctx)
    assert torch.equal(strategy.image_size, torch.tensor([15.0, 2.0, 0.0]))
    assert torch.equal(strategy.visible_count, torch.tensor([1.0, 1.0, 0.0]))
