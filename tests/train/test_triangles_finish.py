"""The opaque finish of triangle splats: schedule as a function of the budget fraction, the threshold, relocation
of the rows that leave (soup size kept), error scores, checkpointed state, configuration errors, and the size and
splat-vs-mesh gap of a finished run."""

import json
import math

import pytest
import torch

from recon.core import Camera
from recon.core.transforms import look_at
from recon.scenes.base import RenderOptions, StepContext
from recon.scenes.triangles import SIGMA_OFFSET, TriangleSceneConfig, TriangleSplatScene
from recon.train.param_optimizer import ParamOptimizer
from recon.train.triangles_finish import (
    OPAQUE_LOGIT,
    SIGMA_START,
    OpaqueFinish,
    OpaqueFinishConfig,
)
from recon.train.triangles_mcmc import TriangleMCMC, TriangleMCMCConfig


def _scene(n: int, gen: torch.Generator) -> TriangleSplatScene:
    pts = torch.randn(n, 3, generator=gen)
    scene = TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=1), pts, torch.rand(n, 3, generator=gen),
                                           generator=gen)  # fmt: skip
    with torch.no_grad():
        scene.logit_opacities.copy_(torch.linspace(-3.0, 3.0, n))  # opacities 0.047 .. 0.953, half below 0.5
        scene.sh_rest.normal_(generator=gen)
    return scene


def test_nothing_changes_before_the_phase(gen):
    scene = _scene(20, gen)
    before = {k: v.clone() for k, v in scene.state_dict().items()}
    finish = OpaqueFinish(OpaqueFinishConfig(fraction=0.2))
    finish.after_step(scene, ParamOptimizer(scene.param_groups()), 0.79)
    assert all(torch.equal(before[k], v) for k, v in scene.state_dict().items())
    assert finish.progress(0.8) == pytest.approx(0.0) and finish.progress(1.0) == pytest.approx(1.0)


def test_sigma_and_opacity_are_annealed_then_thresholded(gen):
    n = 20
    scene = _scene(n, gen)
    opt = ParamOptimizer(scene.param_groups())
    cfg = OpaqueFinishConfig(fraction=0.2, sigma_end=0.02, threshold_at=0.5, push="binary")
    finish = OpaqueFinish(cfg)
    assert finish.sigma_cap(0.0) == pytest.approx(SIGMA_START) and finish.sigma_cap(0.5) == pytest.approx(
        0.02
    )
    # a quarter through the phase: half-way to the threshold
    finish.after_step(scene, opt, 0.8 + 0.25 * 0.2)
    cap = math.exp(0.5 * math.log(SIGMA_START) + 0.5 * math.log(0.02))
    assert float(scene.sigmas().detach().max()) <= cap * (1 + 1e-5)
    o = (
        scene.opacities().detach()
    )  # s = 0.5: pushed out of the band (0.5 (1 - s), 0.5 + 0.5 s) = (0.25, 0.75)
    assert bool(((o <= 0.25 + 1e-5) | (o >= 0.75 - 1e-5)).all()) and bool((o[o >= 0.5] >= 0.75 - 1e-5).all())
    assert scene.num_primitives() == n and not finish.done
    signs = scene.logit_opacities > 0
    # at the threshold: the transparent half is pruned, the rest is opaque, sharp, and view-independent
    finish.after_step(scene, opt, 0.8 + 0.5 * 0.2)
    assert finish.done and scene.num_primitives() == int(signs.sum()) == n // 2
    assert torch.allclose(scene.opacities(), torch.full((n // 2,), torch.sigmoid(torch.tensor(OPAQUE_LOGIT))))
    assert (
        float(scene.sigmas().detach().max()) <= 0.02 * (1 + 1e-5)
        and float(scene.sigmas().detach().min()) > SIGMA_OFFSET
    )
    assert scene.sh_rest.abs().max() == 0
    assert all(g.param.shape[0] == n // 2 for g in opt.groups.values() if g.per_row)
    # later steps keep the opacities frozen even after an optimiser moved them
    with torch.no_grad():
        scene.logit_opacities.sub_(5.0)
    finish.after_step(scene, opt, 0.95)
    assert torch.all(scene.logit_opacities == OPAQUE_LOGIT) and scene.num_primitives() == n // 2


def test_push_up_raises_an_opacity_floor_and_keeps_every_triangle(gen):
    n = 20
    scene = _scene(n, gen)
    opt = ParamOptimizer(scene.param_groups())
    finish = OpaqueFinish(OpaqueFinishConfig(fraction=0.2, threshold_at=0.5, push="up"))
    before = scene.opacities().detach().clone()
    finish.after_step(scene, opt, 0.8 + 0.25 * 0.2)  # half-way to the threshold: floor ~0.5
    floor = 0.5 * float(torch.sigmoid(torch.tensor(OPAQUE_LOGIT)))
    o = scene.opacities().detach()
    assert float(o.min()) >= floor - 1e-5
    assert torch.allclose(o[before >= floor], before[before >= floor])  # already above: untouched
    finish.after_step(scene, opt, 0.9)
    assert finish.done and scene.num_primitives() == n and float(scene.opacities().detach().min()) > 0.999


def test_never_prunes_everything(gen):
    scene = _scene(6, gen)
    with torch.no_grad():
        scene.logit_opacities.fill_(-4.0)
    finish = OpaqueFinish(OpaqueFinishConfig(fraction=0.1, push="binary"))
    finish.after_step(scene, ParamOptimizer(scene.param_groups()), 0.99)
    assert finish.done and scene.num_primitives() == 1


def test_strategy_wires_the_finish_and_checkpoints_it(gen):
    plain = TriangleMCMC(TriangleMCMCConfig(), num_views=10, max_sh_degree=0)
    assert plain.finish is None and not any(k.startswith("finish.") for k in plain.state_tensors())
    cfg = TriangleMCMCConfig(finish="opaque", finish_fraction=0.1, finish_sigma=0.05)
    strat = TriangleMCMC(cfg, num_views=10, max_sh_degree=0)
    assert strat.finish is not None and strat.finish.config.sigma_end == 0.05
    strat.finish.done = True
    strat.finish.error = torch.tensor([0.0, 0.25, 0.5])
    restored = TriangleMCMC(cfg, num_views=10, max_sh_degree=0)
    restored.load_state_tensors(strat.state_tensors())
    assert restored.finish.done and torch.equal(restored.finish.error, strat.finish.error)


def _strategy(n: int, **finish) -> TriangleMCMC:
    cfg = TriangleMCMCConfig(finish="opaque", finish_fraction=0.2, **finish)
    strat = TriangleMCMC(cfg, num_views=10, max_sh_degree=1)
    strat._ensure_size(n, torch.device("cpu"))
    return strat


def test_threshold_relocates_the_transparent_half_and_keeps_the_size(gen):
    n = 20
    scene = _scene(n, gen)
    opt = ParamOptimizer(scene.param_groups())
    strat = _strategy(n)
    opaque = scene.opacities().detach() >= 0.5  # rows 10..19
    strat.finish.error = torch.where(opaque, torch.rand(n, generator=gen) + 0.1, torch.zeros(n))
    edited = strat.finish.after_step(scene, opt, 0.8 + 0.5 * 0.2, strategy=strat)
    assert edited and strat.finish.done
    # 10 rows leave; ceil(10 / 3) = 4 opaque parents are split into 4 (3 rows more each): 20 - 10 + 12 = 22
    assert n <= scene.num_primitives() == n + 2
    assert all(g.param.shape[0] == scene.num_primitives() for g in opt.groups.values() if g.per_row)
    assert float(scene.opacities().detach().min()) >= 0.5 and scene.sh_rest.abs().max() == 0
    assert strat.finish.error.shape == (scene.num_primitives(),)  # scores stay aligned with the rows
    assert int((strat.finish.error > 0).sum()) == 10 - 4 + 16  # parents left; children inherit a share


def test_relocation_splits_the_parent_with_error_into_its_four_midpoint_children(gen):
    n = 6
    scene = _scene(n, gen)
    with torch.no_grad():
        scene.logit_opacities.fill_(2.0)
    opt = ParamOptimizer(scene.param_groups())
    strat = _strategy(n)
    strat.finish.error = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # only row 5 has error
    parent = scene.vertices.detach()[5].clone()
    area = float(scene.areas().detach()[5])
    leave = torch.tensor([True, True, True, False, False, False])
    strat.finish.relocate(scene, opt, leave, strat)
    # 3 rows leave, the parent is replaced by its 4 children: 6 - 3 - 1 + 4 = 6 rows
    assert scene.num_primitives() == n
    children = scene.vertices.detach()[-4:]
    assert torch.allclose(scene.areas().detach()[-4:], torch.full((4,), area / 4), rtol=1e-4)
    assert torch.allclose(children.reshape(-1, 3).mean(0), parent.mean(0), atol=1e-5)
    assert not bool((scene.vertices.detach() == parent).flatten(1).all(1).any())  # the parent itself left
    assert torch.allclose(scene.logit_opacities.detach()[-4:], torch.full((4,), 2.0))


def test_relocation_prunes_when_no_row_has_error(gen):
    n = 8
    scene = _scene(n, gen)
    opt = ParamOptimizer(scene.param_groups())
    strat = _strategy(n)
    strat.finish.error = torch.zeros(n)
    strat.finish.relocate(scene, opt, torch.arange(n) < 3, strat)
    assert scene.num_primitives() == n - 3


def test_relocation_never_removes_every_row(gen):
    n = 5
    scene = _scene(n, gen)
    with torch.no_grad():
        scene.logit_opacities.copy_(torch.linspace(-3.0, -1.0, n))
    opt = ParamOptimizer(scene.param_groups())
    strat = _strategy(n)
    strat.finish.error = torch.zeros(n)
    strat.finish.relocate(scene, opt, torch.ones(n, dtype=torch.bool), strat)  # every row dead at an event
    assert scene.num_primitives() == 1 and float(scene.logit_opacities.detach().max()) == pytest.approx(-1.0)


def _camera(size: int = 32) -> Camera:
    T = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[[1.2 * size, 0.0, size / 2], [0.0, 1.2 * size, size / 2], [0.0, 0.0, 1.0]]])
    return Camera(T[None], K, size, size)


def test_error_scores_follow_the_visible_triangles_where_the_render_is_wrong():
    # image x follows world +x; row 0 left (x = -0.5), row 1 right (x = +0.5), row 2 hidden behind row 0
    tri = torch.tensor([[-0.8, 0.0, -0.3], [-0.2, 0.0, -0.3], [-0.5, 0.0, 0.3]])
    vertices = torch.stack(
        [tri, tri + torch.tensor([1.0, 0.0, 0.0]), 0.5 * tri + torch.tensor([-0.25, 1.0, 0.0])]
    )
    scene = TriangleSplatScene(TriangleSceneConfig(sh_degree=0, init_opacity=0.995, init_sigma=0.05), vertices,
                               torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]]))  # fmt: skip
    camera = _camera()
    background = torch.zeros(3)
    render = scene.render(camera, RenderOptions(background=background, depth=False, stats=True))
    target = render.rgb.detach().clone()
    target[:, :, :16] = 0.5  # the left half of the image is wrong
    finish = OpaqueFinish(OpaqueFinishConfig(fraction=0.5))
    step = StepContext(0, 10, camera, target, background, render, torch.tensor([0]), 1, False, 0.9)
    finish.observe(scene, step)
    e = finish.error
    assert e.shape == (3,) and float(e[0]) > 0.05
    assert float(e[1]) == 0.0  # right of the wrong half by more than the box filter
    assert float(e[2]) < 0.05 * float(e[0])  # hidden: no blending weight, no blame
    before = OpaqueFinish(
        OpaqueFinishConfig(fraction=0.05)
    )  # the phase has not begun at 0.9: nothing recorded
    before.observe(scene, step)
    assert before.error.numel() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"finish": "glass"}, "strategy.finish"), ({"finish": "opaque", "finish_fraction": 1.5}, "finish_fraction"),
     ({"finish": "opaque", "finish_sigma": 0.01}, "finish_sigma"),
     ({"finish": "opaque", "finish_threshold": 0.0}, "finish_threshold"),
     ({"finish": "opaque", "finish_push": "down"}, "finish_push")],
)  # fmt: skip
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TriangleMCMC(TriangleMCMCConfig(**kwargs), num_views=10, max_sh_degree=0)


# A finished soup is opaque and sharp: its hard-rasterized mesh render (recon eval --mesh) stays within 2 dB of its
# splat render, while the unfinished soup of the same recipe is further from it. Budget: two 80-step trainings of
# 150 triangles at 32 px (~25 s on a loaded 2-core machine).
FINISHED_MAX_GAP_DB = 2.0
SIZE_KEPT = 0.9  # share of the soup at the phase start left at the end (measured: all of it)


def _gap(data, run_dir, finish: str) -> tuple[float, dict]:
    from recon.cli import eval as eval_cli
    from recon.cli import train as train_cli

    tiny = ["--scene.random-init-points", "150", "--scene.max-init-points", "150", "--scene.hull-resolution", "24",
            "--strategy.min-every-steps", "10", "--no-progress", "--threads", "1", "--no-final-eval",
            "--scene.sh-degree", "0", "--strategy.finish", finish, "--strategy.finish-fraction", "0.3",
            "--strategy.finish-threshold-at", "0.3",
            # the constant 4x rates these margins were measured with: with the preset's decaying rates no
            # opacity of this 80-step run reaches the threshold (0.5) from its initial 0.28
            "--scene.no-lr-scale-decay"]  # fmt: skip
    assert (
        train_cli.main(["triangles", "--data", str(data), "--steps", "80", "--run-dir", str(run_dir), *tiny])
        == 0
    )
    assert eval_cli.main([str(run_dir), "--mesh", "--no-geometry"]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    return ev["psnr"] - ev["mesh"]["psnr"], ev


def test_finished_soup_renders_like_its_splats(tmp_path):
    from recon.datasets.synthetic import write_scene

    data = write_scene("object", tmp_path / "data", views=8, test_views=2, resolution=32)
    gap, ev = _gap(data, tmp_path / "opaque", "opaque")
    assert abs(gap) <= FINISHED_MAX_GAP_DB, ev
    # every remaining triangle is exported, i.e. has opacity >= the export's min_opacity 0.5 (the finish sets 0.99988)
    assert ev["mesh"]["num_faces"] == ev["num_primitives"]
    # the soup keeps its size through the phase (steps 57-80): the transparent rows are relocated, not pruned
    # (events at steps 60 and 70 and the threshold add at most 2 rows each; too few parents could shrink it)
    logged = [json.loads(line) for line in (tmp_path / "opaque" / "metrics.jsonl").read_text().splitlines()]
    before = next(m["num_primitives"] for m in logged if m["step"] == 50)
    print(f"soup size at the phase start {before}, at the end {ev['num_primitives']}")
    assert SIZE_KEPT * before <= ev["num_primitives"] <= before + 6, (before, ev)
    plain_gap, plain = _gap(data, tmp_path / "plain", "none")
    # measured: finished 10.8 dB splat / 11.4 dB mesh (gap -0.6), unfinished 14.7 / 10.9 (gap 3.8)
    assert plain_gap > abs(gap) + 1.0, (plain, ev)
