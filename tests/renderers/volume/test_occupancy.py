"""OccupancyGrid: EMA update rule and threshold, warm-up vs subset updates, sampling with early stop."""

import torch

from recon.renderers.volume import OccupancyGrid, render_weight_from_density
from recon.renderers.volume.ref import grid_cell_index

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_constant_field_threshold_and_ema():
    grid = OccupancyGrid(BOX, resolution=8)
    # occ = 0.5 > 0.01 everywhere: threshold = min(mean, 0.01) = 0.01, so every cell is occupied.
    grid.update(step=0, occ_eval_fn=lambda x: torch.full((x.shape[0],), 0.5))
    assert torch.allclose(grid.occs, torch.full_like(grid.occs, 0.5)) and grid.binaries.all()
    # A zero field during warm-up decays every cell: occ = max(0.95 * 0.5, 0) = 0.475.
    grid.update(step=1, occ_eval_fn=lambda x: torch.zeros(x.shape[0]))
    assert torch.allclose(grid.occs, torch.full_like(grid.occs, 0.475))
    # A constant occ = 2^-8 < 0.01 (exact in float32): threshold = mean = 2^-8 and occ > threshold is false everywhere.
    low = OccupancyGrid(BOX, resolution=8)
    low.update(step=0, occ_eval_fn=lambda x: torch.full((x.shape[0],), 2.0**-8))
    assert not low.binaries.any()


def test_after_warmup_updates_a_subset():
    grid = OccupancyGrid(BOX, resolution=8)
    grid.update(step=0, occ_eval_fn=lambda x: torch.ones(x.shape[0]))
    g = torch.Generator().manual_seed(0)
    grid.update(step=1000, occ_eval_fn=lambda x: torch.zeros(x.shape[0]), generator=g)
    decayed = torch.isclose(grid.occs, torch.tensor(0.95)).sum()
    # n/4 uniform + n/4 occupied cells (with repeats) of 512: at most 256 cells change, at least ~100.
    assert 100 < int(decayed) <= 256
    assert int(torch.isclose(grid.occs, torch.tensor(1.0)).sum()) == 512 - int(decayed)


def test_update_points_lie_in_their_cells_multilevel():
    grid = OccupancyGrid(BOX, resolution=4, levels=2)
    seen = []

    def occ(x):
        seen.append(x)
        return (x.abs().max(-1).values <= 0.5).float()  # the central 2^3 cells of level 0

    grid.update(step=0, occ_eval_fn=occ)
    pts = seen[0]
    assert pts.shape == (2 * 64, 3)
    # Level 1 spans [-2, 2]^3: its points cover the bigger box, and the central cube is occupied at level 0.
    assert pts[64:].abs().max() > 1.0 and pts[:64].abs().max() <= 1.0
    assert grid.binaries[0, 1:3, 1:3, 1:3].all() and not grid.binaries[0, 0, 0, 0]
    assert grid.update_every_n_steps(step=32, occ_eval_fn=occ) and not grid.update_every_n_steps(
        step=33, occ_eval_fn=occ
    )


def test_sampling_only_occupied_and_early_stop(backend):
    grid = OccupancyGrid(BOX, resolution=8)
    grid.update(step=0, occ_eval_fn=lambda x: (x.norm(dim=-1) < 0.5).float())
    o = torch.tensor([[-3.0, 0.01, 0.02], [-3.0, 0.9, 0.9], [0.02, -3.0, 0.01]])
    d = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1
    )
    plain = grid.sampling(o, d, render_step_size=0.02, backend=backend)
    mids = 0.5 * (plain.t_starts + plain.t_ends)
    cells = grid_cell_index(o[plain.ray_indices] + d[plain.ray_indices] * mids[:, None], BOX, 8, 1)
    assert grid.binaries.reshape(-1)[cells].all()
    assert plain.packed_info[1, 1] == 0 and plain.packed_info[0, 1] > 10  # ray 1 misses the occupied ball

    def sigma_fn(t0, t1, ri):
        return torch.full_like(t0, 100.0)  # opaque: T drops below 1e-4 after ~5 samples (tau = 2 each)

    culled = grid.sampling(o, d, render_step_size=0.02, sigma_fn=sigma_fn, backend=backend)
    assert 0 < culled.packed_info[0, 1] < plain.packed_info[0, 1]
    w = render_weight_from_density(
        plain.t_starts, plain.t_ends, torch.full_like(plain.t_starts, 100.0), ray_indices=plain.ray_indices,
        n_rays=3, backend="torch",
    )  # fmt: skip
    assert culled.n_samples == int((w.transmittance >= 1e-4).sum())
    assert torch.equal(culled.t_starts, plain.t_starts[w.transmittance >= 1e-4])


def test_sampling_with_given_offsets_shifts_each_ray_by_its_own_offset():
    """``t_offsets`` (e.g. a function of each ray's index in a data-parallel batch) replace the generator's draw:
    every sample of ray ``r`` moves by ``t_offsets[r] * step`` (uniform steps, a fully occupied grid)."""
    grid = OccupancyGrid(BOX, resolution=8)
    grid.update(step=0, occ_eval_fn=lambda x: torch.ones_like(x[:, 0]))
    o = torch.tensor([[-3.0, 0.1, 0.2], [0.3, -3.0, 0.1]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    step = 0.1
    plain = grid.sampling(o, d, render_step_size=step, backend="torch")
    offsets = torch.tensor([0.25, 0.75])
    shifted = grid.sampling(o, d, render_step_size=step, t_offsets=offsets, stratified=True, backend="torch")
    for r in range(2):
        a, b = plain.t_starts[plain.ray_indices == r], shifted.t_starts[shifted.ray_indices == r]
        n = min(len(a), len(b)) - 1  # the shifted ray may lose its last step at the far end of the box
        torch.testing.assert_close(
            b[:n] - a[:n], torch.full((n,), float(offsets[r]) * step), atol=1e-5, rtol=0
        )
