"""SparseFlex band maintenance and subdivision through the ParamOptimizer: rows and Adam moments stay aligned."""

import pytest
import torch

from recon.core import Camera, Mesh
from recon.metrics.geometry import surface_distance
from recon.renderers.encoding import HashGridConfig
from recon.renderers.isosurface import sparse_voxel_grid
from recon.scenes.base import StepContext
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.grid_ops import linear_key, surface_corner_s, surface_voxel_mask
from recon.train.param_optimizer import ParamOptimizer
from recon.train.sparseflex_strategy import (
    SUBDIVISION_COST,
    SparseFlexStrategy,
    SparseFlexStrategyConfig,
    maintain_band,
    subdivide_band,
)
from recon.train.strategy import StrategyContext

CONFIG = SparseFlexSceneConfig(
    resolution=10,
    color_grid=HashGridConfig(levels=2, log2_hashmap_size=8, max_resolution=16),
    color_hidden_dim=8,
)


def _scene(radius: float = 0.3) -> SparseFlexScene:
    r = CONFIG.resolution
    axis = torch.arange(r + 1, dtype=torch.float32) / r - 0.5
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    sdf = ((pts.norm(dim=-1) - radius) * r).clamp(-2, 2)
    return SparseFlexScene.from_corner_sdf(CONFIG, sdf, torch.zeros(3), 1.0)


def _tag_moments(scene: SparseFlexScene, opt: ParamOptimizer) -> None:
    """One Adam step, then moments that name their row: corner/voxel key in exp_avg (all columns)."""
    (scene.s.sum() + scene.deform.sum() + scene.weights.sum()).backward()
    opt.step()
    opt.zero_grad()
    grid = scene.grid()
    r = grid.resolution
    for name, keys in (("s", linear_key(grid.corners, r)), ("deform", linear_key(grid.corners, r)),
                       ("weights", linear_key(grid.voxels, r))):  # fmt: skip
        p = opt.groups[name].param
        state = opt.adam.state[p]
        state["exp_avg"] = keys.to(p.dtype).reshape(-1, *[1] * (p.ndim - 1)).expand_as(p).clone()
        state["exp_avg_sq"] = state["exp_avg"].clone()
        p.data = keys.to(p.dtype).reshape(-1, *[1] * (p.ndim - 1)).expand_as(p).clone()


def _check_aligned(scene: SparseFlexScene, opt: ParamOptimizer, old_keys: dict[str, set]) -> None:
    grid = scene.grid()
    r = grid.resolution
    assert scene.s.shape == (grid.num_corners,) and scene.deform.shape == (grid.num_corners, 3)
    assert scene.weights.shape == (grid.num_voxels, 21)
    for name, keys in (("s", linear_key(grid.corners, r)), ("deform", linear_key(grid.corners, r)),
                       ("weights", linear_key(grid.voxels, r))):  # fmt: skip
        p = opt.groups[name].param
        state = opt.adam.state[p]
        kept = torch.tensor([int(k) in old_keys[name] for k in keys])
        flat_m = state["exp_avg"].reshape(len(keys), -1)
        flat_p = p.data.reshape(len(keys), -1)
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
        # kept rows carry the moments (and values) of the same corner/voxel; new rows have zero moments
        assert torch.equal(flat_m[kept], keys[kept, None].to(p.dtype).expand(-1, flat_m.shape[1]))
        assert torch.equal(flat_p[kept], keys[kept, None].to(p.dtype).expand(-1, flat_p.shape[1]))
        assert bool((flat_m[~kept] == 0).all()) and bool(
            (state["exp_avg_sq"].reshape(len(keys), -1)[~kept] == 0).all()
        )


def test_band_maintenance_keeps_params_and_moments_row_aligned():
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    # move the surface by 2 voxels along x so the band must prune behind and grow ahead of it
    grid = scene.grid()
    shift = torch.tensor([0.5 + 2 / grid.resolution, 0.5, 0.5])
    with torch.no_grad():
        scene.s.copy_(((grid.corners.float() / grid.resolution - shift).norm(dim=-1) - 0.3) * grid.resolution)
    s_by_key = dict(zip(linear_key(grid.corners, grid.resolution).tolist(), scene.s.tolist(), strict=True))
    _tag_moments(scene, opt)
    with torch.no_grad():  # restore the shrunken sphere's s (the tagging overwrote values with keys)
        scene.s.copy_(torch.tensor([s_by_key[k] for k in linear_key(grid.corners, grid.resolution).tolist()]))
    old = {"s": set(s_by_key), "deform": set(s_by_key),
           "weights": set(linear_key(grid.voxels, grid.resolution).tolist())}  # fmt: skip
    before = grid.num_voxels
    new = maintain_band(scene, opt)
    assert new.num_voxels != before
    assert len(old["weights"] - set(linear_key(new.voxels, new.resolution).tolist())) > 0  # some were pruned
    assert len(set(linear_key(new.voxels, new.resolution).tolist()) - old["weights"]) > 0  # some were added
    # s keeps its values on kept corners; check alignment of everything else on a re-tagged copy
    keys = linear_key(new.corners, new.resolution)
    kept = torch.tensor([int(k) in s_by_key for k in keys])
    torch.testing.assert_close(scene.s[kept], torch.tensor([s_by_key[int(k)] for k in keys[kept]]))
    with torch.no_grad():
        scene.s[kept] = keys[kept].float()
    _check_aligned(scene, opt, old)
    # every surface voxel of the new s lies in the band with a ring of 2 around it
    with torch.no_grad():
        scene.s[kept] = torch.tensor([s_by_key[int(k)] for k in keys[kept]])
    assert int(surface_voxel_mask(new, scene.s).sum()) > 0


def test_subdivision_resets_rows_and_keeps_the_optimizer_consistent():
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    _tag_moments(scene, opt)
    grid = scene.grid()
    with torch.no_grad():
        scene.s.copy_(((grid.corners.float() / grid.resolution - 0.5).norm(dim=-1) - 0.3) * grid.resolution)
    fine = subdivide_band(scene, opt)
    assert fine.resolution == 20 and scene.num_primitives() == 8 * grid.num_voxels
    assert int(scene.resolution) == 20
    for name in ("s", "deform", "weights"):
        p = opt.groups[name].param
        assert opt.adam.state[p]["exp_avg"].shape == p.shape and bool(
            (opt.adam.state[p]["exp_avg"] == 0).all()
        )
    assert bool((scene.deform == 0).all())
    # the optimiser still steps every group after the edit
    (scene.s.sum() + scene.weights.sum()).backward()
    opt.step()
    assert bool((opt.adam.state[scene.s]["exp_avg"] != 0).all())


def test_strategy_schedule_is_a_function_of_the_budget_fraction():
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    strategy = SparseFlexStrategy(
        SparseFlexStrategyConfig(band_every_fraction=0.25, subdivide_fractions=(0.5,), max_resolution=20),
        base_resolution=10,
    )
    strategy.check_scene(scene)
    cam = Camera(
        T_cam_world=torch.eye(4)[None], K=torch.eye(3)[None], width=1, height=1
    )  # not read by the strategy

    def run(step: int, steps: int = 8) -> None:
        ctx = StepContext(step, steps, cam, torch.zeros(1, 1, 1, 3), torch.zeros(3))
        strategy.after_backward(StrategyContext(ctx, scene, opt))

    run(1)
    assert strategy.band_events == 0 and scene.grid().resolution == 10
    run(2)  # 25%: band maintenance
    assert strategy.band_events == 1 and scene.grid().resolution == 10
    run(4)  # 50%: subdivision to 20
    assert scene.grid().resolution == 20 and strategy.band_events == 2
    run(7)  # 87.5%: no further subdivision (max_resolution 20)
    assert scene.grid().resolution == 20 and strategy.band_events == 3
    restored = SparseFlexStrategy(strategy.config, base_resolution=10)
    restored.load_state_tensors(strategy.state_tensors())
    assert restored.band_events == 3


def _time_budget_run(min_steps: int) -> tuple[SparseFlexStrategy, list[int]]:
    """A strategy under a time budget alone (max_steps 0, progress given): 100 steps per quarter of the budget, so
    at the subdivision (50%) the rest buys 0.5 x 400 / SUBDIVISION_COST = 50 steps on the finer grid. Returns the
    strategy and the grid resolution after each of the calls at 0, 25, 50 and 75 %."""
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    config = SparseFlexStrategyConfig(
        band_every_fraction=0.25, subdivide_fractions=(0.5,), max_resolution=40, stage_min_steps=min_steps
    )
    strategy = SparseFlexStrategy(config, base_resolution=10)
    cam = Camera(T_cam_world=torch.eye(4)[None], K=torch.eye(3)[None], width=1, height=1)
    resolutions = []
    for step, fraction in ((0, 0.0), (100, 0.25), (200, 0.5), (300, 0.75)):
        ctx = StepContext(step, 0, cam, torch.zeros(1, 1, 1, 3), torch.zeros(3), progress=fraction)
        strategy.after_backward(StrategyContext(ctx, scene, opt))
        resolutions.append(scene.grid().resolution)
    return strategy, resolutions


def test_stage_rule_subdivides_only_when_the_rest_of_the_budget_buys_the_stage(capsys):
    assert SUBDIVISION_COST == 4.0
    strategy, resolutions = _time_budget_run(min_steps=50)  # predicted 50: enough
    assert resolutions == [10, 10, 20, 20] and strategy.level_cap is None
    strategy, resolutions = _time_budget_run(min_steps=51)  # one short: the grid stays, for good
    assert resolutions == [10, 10, 10, 10] and strategy.level_cap == 0
    assert "stays at 10^3 from 50% of the budget" in capsys.readouterr().err
    assert strategy.band_events == 3  # band maintenance goes on at the coarse resolution
    restored = SparseFlexStrategy(strategy.config, base_resolution=10)
    restored.load_state_tensors(strategy.state_tensors())
    assert restored.level_cap == 0 and restored.target_level(0.9) == 0  # a resumed run keeps the refusal
    assert SparseFlexStrategy(strategy.config, base_resolution=10).target_level(0.9) == 1


def test_stage_rule_predicts_from_the_rate_since_the_last_band_update():
    strategy = SparseFlexStrategy(SparseFlexStrategyConfig(stage_min_steps=10), base_resolution=10)
    assert strategy.stage_steps(50, 0.5) == float("inf")  # nothing measured yet: the schedule decides
    strategy._mark = (100, 0.2)
    # 200 steps over 0.2 of the budget: 1000 per unit; 0.6 left at 4x the cost: 150
    assert abs(strategy.stage_steps(300, 0.4) - 150.0) < 1e-9
    assert strategy.stage_steps(100, 0.2) == float("inf")


def test_stage_rule_is_off_under_a_step_bound():
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    config = SparseFlexStrategyConfig(
        band_every_fraction=0.25, subdivide_fractions=(0.5,), max_resolution=20, stage_min_steps=10**9
    )
    strategy = SparseFlexStrategy(config, base_resolution=10)
    cam = Camera(T_cam_world=torch.eye(4)[None], K=torch.eye(3)[None], width=1, height=1)
    for step in (0, 2, 4):  # a step budget of 8: the stages' steps are fixed whatever a step costs
        ctx = StepContext(step, 8, cam, torch.zeros(1, 1, 1, 3), torch.zeros(3))
        strategy.after_backward(StrategyContext(ctx, scene, opt))
    assert scene.grid().resolution == 20 and strategy.level_cap is None


def test_negative_stage_min_steps_is_refused():
    with pytest.raises(ValueError, match="stage_min_steps"):
        SparseFlexStrategy(SparseFlexStrategyConfig(stage_min_steps=-1), base_resolution=10)


def test_open_surfaces_prunes_voxels_no_camera_sees():
    import trimesh

    from recon.core import Camera
    from recon.core.transforms import look_at
    from recon.scenes.base import ExportOptions

    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    # one narrow camera looking at the +x side of the sphere: only part of the band is in its frustum
    T = look_at(torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.3, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[120.0, 0, 8], [0, 120.0, 8], [0, 0, 1]])
    cam = Camera(T[None], K[None], 16, 16)
    before = scene.grid().num_voxels
    grid = maintain_band(scene, opt, cameras=cam)
    assert 0 < grid.num_voxels < before
    h = 1.0 / grid.resolution
    centres = (grid.voxels.float() + 0.5) * h - 0.5
    uv, z = cam.project(centres[None])
    margin = 120.0 * (0.5 * 3**0.5 * h) / z[0]  # every kept voxel's bounding sphere reaches the image
    assert bool(((uv[0] > -margin[:, None]) & (uv[0] < 16 + margin[:, None])).all())
    mesh = scene.export_mesh(ExportOptions())
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=True)
    assert len(tm.faces) > 0 and not tm.is_watertight  # the unseen sides of the sphere are left open
    # the strategy collects the cameras of its training steps and checkpoints them
    strategy = SparseFlexStrategy(SparseFlexStrategyConfig(open_surfaces=True), base_resolution=10)
    ctx = StepContext(0, 100, cam, torch.zeros(1, 16, 16, 3), torch.zeros(3), view_indices=torch.tensor([3]))
    strategy.after_backward(StrategyContext(ctx, scene, opt))
    restored = SparseFlexStrategy(strategy.config, base_resolution=10)
    restored.load_state_tensors(strategy.state_tensors())
    assert list(restored.cameras) == [3]
    torch.testing.assert_close(restored.cameras[3].T_cam_world, cam.T_cam_world)


def test_open_surfaces_ranks_pool_their_cameras_before_a_band_update(monkeypatch):
    """Under data parallelism each rank records only its own views; share_cameras pools them (here rank 0 saw
    view 3 and the other rank view 5), so every rank prunes against the same cameras."""
    from recon.core import Camera
    from recon.train import distributed

    K = torch.tensor([[[120.0, 0, 8], [0, 120.0, 8], [0, 0, 1]]])
    mine = Camera(torch.eye(4)[None], K, 16, 16)
    theirs = Camera(torch.eye(4)[None] * 2.0, K, 16, 16)
    other = {5: (theirs.T_cam_world, theirs.K, 16, 16)}
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: [obj, other])
    strategy = SparseFlexStrategy(SparseFlexStrategyConfig(open_surfaces=True), base_resolution=10)
    strategy.cameras = {3: mine}
    strategy.share_cameras()
    assert sorted(strategy.cameras) == [3, 5]
    torch.testing.assert_close(strategy.cameras[5].T_cam_world, theirs.T_cam_world)
    torch.testing.assert_close(strategy.cameras[3].T_cam_world, mine.T_cam_world)  # its own views unchanged


def _sphere_views(elevations_deg: tuple[float, ...], per_ring: int = 6) -> Camera:
    """128-pixel cameras at distance 2 looking at the origin, ``per_ring`` azimuths per elevation."""
    import math

    from recon.core.transforms import look_at

    poses = []
    for ring, elevation in enumerate(elevations_deg):
        e = math.radians(elevation)
        for k in range(per_ring):
            a = 2 * math.pi * (k + 0.5 * ring) / per_ring
            centre = 2.0 * torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
            poses.append(look_at(centre, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
    K = torch.tensor([[160.0, 0, 64], [0, 160.0, 64], [0, 0, 1]])
    return Camera(torch.stack(poses), K[None].expand(len(poses), 3, 3).clone(), 128, 128)


def _sphere_24() -> SparseFlexScene:
    config = SparseFlexSceneConfig(
        resolution=24,
        color_grid=HashGridConfig(levels=2, log2_hashmap_size=8, max_resolution=16),
        color_hidden_dim=8,
    )
    axis = torch.arange(25, dtype=torch.float32) / 24 - 0.5
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    return SparseFlexScene.from_corner_sdf(
        config, ((pts.norm(dim=-1) - 0.35) * 24).clamp(-2, 2), torch.zeros(3), 1.0
    )


def test_open_surfaces_prunes_what_is_only_seen_from_behind():
    """Views from 50 degrees above a sphere (radius 0.35, 24^3 band) cover the whole band with their frusta, so the
    frustum test keeps it closed; the occlusion test (``observed_voxels``) prunes the hidden underside: the mesh
    opens there and keeps its top. Views from below as well observe every voxel: nothing is pruned.
    Measured: 188 vertices below z = -0.25 with frusta only, 20 with occlusion; 6856 of 6856 voxels kept all around."""
    import trimesh

    from recon.scenes.base import ExportOptions

    above = _sphere_views((50.0,))
    meshes = {}
    for side in (0, 128):
        scene = _sphere_24()
        maintain_band(scene, ParamOptimizer(scene.param_groups()), cameras=above, occlusion_depth_side=side)
        mesh = scene.export_mesh(ExportOptions())
        meshes[side] = (
            mesh.vertices,
            trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=True),
        )
    frustum_v, frustum = meshes[0]
    occluded_v, occluded = meshes[128]
    assert frustum.is_watertight and not occluded.is_watertight
    assert int((occluded_v[:, 2] < -0.25).sum()) < 0.5 * int((frustum_v[:, 2] < -0.25).sum())
    assert int((occluded_v[:, 2] > 0.2).sum()) >= 0.98 * int(
        (frustum_v[:, 2] > 0.2).sum()
    )  # the seen top stays
    scene = _sphere_24()
    before = scene.grid().num_voxels
    grid = maintain_band(scene, ParamOptimizer(scene.param_groups()), cameras=_sphere_views((50.0, -50.0)),
                         occlusion_depth_side=128)  # fmt: skip
    assert grid.num_voxels >= 0.98 * before  # measured: all kept


def _split_distance(init: str) -> float:
    """Mean distance from the fine inference surface after ``subdivide_band(init=...)`` to the coarse one, on a
    sphere band whose corners were moved by a smooth displacement (what training learns) and given random
    FlexiCubes weights."""
    scene = _scene()
    opt = ParamOptimizer(scene.param_groups())
    u = scene.grid().corners.float() / scene.grid().resolution
    shift = torch.stack(
        [torch.full_like(u[:, 0], 0.45), 0.4 * torch.sin(2 * torch.pi * u[:, 2]), 0.3 * u[:, 0]], -1
    )
    with torch.no_grad():
        scene.deform.copy_(torch.atanh(shift))
        scene.weights.copy_(
            0.5 * torch.randn(scene.weights.shape, generator=torch.Generator().manual_seed(0))
        )
        coarse = scene.extract(training=False)
    fine = subdivide_band(scene, opt, init=init)  # type: ignore[arg-type]
    assert fine.resolution == 20 and bool(
        torch.isfinite(scene.s).all() and torch.isfinite(scene.deform).all()
    )
    with torch.no_grad():
        refined = scene.extract(training=False)
    (scene.s.sum() + scene.deform.sum() + scene.weights.sum()).backward()
    opt.step()  # rows and moments still match after the edit
    found = surface_distance(refined.vertices.double(), Mesh(coarse.vertices.double(), coarse.faces))
    return float(found.distances.mean())


def test_surface_subdivision_starts_the_fine_grid_on_the_coarse_surface():
    h = 1.0 / CONFIG.resolution
    spec, deform, surface = (_split_distance(init) for init in ("spec", "deform", "surface"))
    print(f"mean distance to the coarse surface after the split: spec {spec:.4f}, deform {deform:.4f}, "
          f"surface {surface:.4f} (coarse h = {h})")  # fmt: skip
    assert surface < 0.5 * spec and surface < 0.06 * h
    assert deform < spec


def test_surface_corner_s_is_the_signed_distance_to_the_mesh():
    # an octahedron |x| + |y| + |z| = 0.3 (outward faces) and the corners of a 12^3 grid near it
    v = torch.tensor(
        [[0.3, 0, 0], [-0.3, 0, 0], [0, 0.3, 0], [0, -0.3, 0], [0, 0, 0.3], [0, 0, -0.3]]
    ).double()
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    r = 12
    axes = torch.arange(r)
    voxels = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    grid = sparse_voxel_grid(voxels, r)
    p = grid.corners.double() / r - 0.5
    exact = (p.abs().sum(-1) - 0.3) / 3**0.5 * r  # signed distance to the faces' planes, in voxels
    fallback = (p.abs().sum(-1) - 0.3) * r  # right sign, wrong magnitude
    s = surface_corner_s(grid, v, f, fallback, clip=3.0)
    near = exact.abs() < 1.0  # closest points on the face interiors there (away from the octahedron's edges)
    near &= (p.abs() > 0.05).all(-1)
    torch.testing.assert_close(s[near], exact[near], rtol=0, atol=1e-4)
    assert bool((torch.sign(s) == torch.sign(fallback))[fallback.abs() > 1.0].all())
    assert float(s.abs().max()) <= 3.0
