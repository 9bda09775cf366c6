"""Data-parallel training with 2 gloo ranks on the CPU (torchrun subprocesses; docs/distributed.md).

- every method: K steps of 2 ranks x B views (rays for the fields) equal K steps of 1 process x 2B views (same
  seed), and both ranks hold bit-identical parameters, through the method's row-changing events (triangles:
  densify/prune; superquadrics: stage switches and the kill rule; sparseflex: band maintenance and subdivision;
  nerf/neus: occupancy-grid updates);
- a crashed rank stops the job with a non-zero status and leaves the last checkpoint loadable;
- the helpers: --nproc parsing, shards, gradient buckets.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recon.core import ReconError
from recon.runs import RunDir
from recon.scenes.sparseflex import SparseFlexSceneConfig
from recon.train import distributed

WORKER = Path(__file__).with_name("test_distributed_worker.py")
TIMEOUT_S = 240  # generous: 2 loaded cores; a hang fails the test instead of the CI job
PARAM_ATOL = 1e-3
"""2 ranks vs 1 process: the same sums in another order (measured max difference 1.1e-5 over 16 steps with Adam and
3 densify/prune events); parameters move by far more than this in those steps (lr_scale 10)."""


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        *args,
    ]
    return subprocess.Popen(
        cmd, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _single(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S} s:\n{out[-3000:]}")
    return proc.returncode, out


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_same_ranks(out: Path) -> dict:
    r0, r1 = _load(out / "rank0.pt"), _load(out / "rank1.pt")
    assert r0["facts"] == r1["facts"] and r0["facts"]["world"] == 2
    assert r0["state"].keys() == r1["state"].keys()
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), f"{name} differs between the ranks"
    return r0


def test_two_ranks_equal_one_process_with_twice_the_views(tmp_path):
    steps, per_rank = 16, 2
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    two = _torchrun("triangles", str(tmp_path / "two"), str(steps), str(per_rank))
    one = _single("triangles", str(tmp_path / "one"), str(steps), str(2 * per_rank))
    (code2, out2), (code1, out1) = _finish(two), _finish(one)
    assert code2 == 0, out2[-3000:]
    assert code1 == 0, out1[-3000:]
    ranks, single = _assert_same_ranks(tmp_path / "two"), _load(tmp_path / "one" / "rank0.pt")
    assert ranks["facts"]["step"] == single["facts"]["step"] == steps
    assert ranks["facts"]["events"] == single["facts"]["events"] == 3  # densify, densify, prune
    assert ranks["state"]["scene.vertices"].shape[0] != ranks["facts"]["initial"]  # rows really changed
    for name, value in single["state"].items():
        assert ranks["state"][name].shape == value.shape, name
        torch.testing.assert_close(ranks["state"][name], value, atol=PARAM_ATOL, rtol=0, msg=name)
    # rank 0 alone wrote: one metrics record per logging step, checkpoints every 5 steps and at the end
    run = RunDir(tmp_path / "two" / "run")
    steps_logged = [rec["step"] for rec in run.read_metrics()]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps
    tensors, meta = run.load_checkpoint()
    assert meta["step"] == steps
    visible = tensors["strategy.visible_count"]
    assert visible.shape[0] == ranks["state"]["scene.vertices"].shape[0]


# --- nerf, neus, superquadrics, sparseflex: one torchrun job and one single process train all four in turn ------
METHODS = ("nerf", "neus", "superquadrics", "sparseflex")
STEPS = 8
FIELD_ATOL = 1e-4
"""nerf/neus, 8 steps of 2 ranks x 64 rays vs 1 process x 128 rays: measured max difference 3.1e-7 (nerf) and
1.6e-6 (neus, hash table) with Adam at lr 1e-2. Both fixes are needed: with every rank jittering its rays like
the first shard (offsets not a function of the global ray index) the runs part by 4.9e-2 (nerf) and 4.0e-2
(neus); with per-rank means of NeuS's eikonal term (not ``StepContext.step_mean``) by 2.6e-2."""
MASK_FLIPS = 0.01
"""Share of occupancy-mask cells that may differ between the runs (measured: none of 4096)."""
SUPERQUADRICS_ATOL = 1e-4
"""Measured max difference 2.3e-6 (rotations) over 8 steps through both stage switches."""
SPARSEFLEX_ATOL = 1e-3
"""s, deform and the colour field: measured max difference 7e-5 over 8 steps with a band update and a
subdivision. The FlexiCubes weights are compared below with Adam's own bound instead."""
SPARSEFLEX_OUTLIERS = 0.005
"""Adam divides each entry's gradient by its own magnitude, so an entry whose gradient is float noise (a sum of
contributions that cancel to ~1e-10, computed in another order by 2 ranks) moves by up to its learning rate per
step in either direction: measured 62 of 71 484 weights (0.09 %) beyond 1e-4, max 7.4e-3 (lr 0.01, 8 steps)."""


@pytest.fixture(scope="module")
def four_methods(tmp_path_factory) -> Path:
    """OUT/two/METHOD/rank{0,1}.pt (2 ranks x 1 view or 64 rays) and OUT/one/METHOD/rank0.pt (1 x 2 or 128)."""
    out = tmp_path_factory.mktemp("four_methods")
    (out / "two").mkdir()
    (out / "one").mkdir()
    names = ",".join(METHODS)
    two = _torchrun(names, str(out / "two"), str(STEPS), "1")
    one = _single(names, str(out / "one"), str(STEPS), "2")
    (code2, out2), (code1, out1) = _finish(two), _finish(one)
    assert code2 == 0, out2[-3000:]
    assert code1 == 0, out1[-3000:]
    return out


def _ranks_and_single(out: Path, method: str) -> tuple[dict, dict]:
    ranks, single = _assert_same_ranks(out / "two" / method), _load(out / "one" / method / "rank0.pt")
    assert ranks["facts"]["step"] == single["facts"]["step"] == STEPS
    # the same row-changing events at the same steps: the rows per step agree with one process's
    assert ranks["facts"]["row_counts"] == single["facts"]["row_counts"]
    assert ranks["state"].keys() == single["state"].keys()
    for name, value in single["state"].items():
        assert ranks["state"][name].shape == value.shape, name
    return ranks, single


def _assert_close_states(ranks: dict, single: dict, atol: float, skip: tuple[str, ...] = ()) -> None:
    for name, value in single["state"].items():
        if name in skip:
            continue
        if value.is_floating_point():
            torch.testing.assert_close(ranks["state"][name], value, atol=atol, rtol=0, msg=name)
        else:
            assert torch.equal(ranks["state"][name], value), name


@pytest.mark.parametrize("method", ["nerf", "neus"])
def test_fields_two_ranks_equal_one_process_with_twice_the_rays(four_methods, method):
    ranks, single = _ranks_and_single(four_methods, method)
    mask = "scene.occupancy_grid.binaries"
    _assert_close_states(ranks, single, FIELD_ATOL, skip=(mask,))
    occs = ranks["state"]["scene.occupancy_grid.occs"]
    assert float(occs.max()) > 0  # the occupancy grid was updated (and broadcast) during the run
    # the masks threshold occupancies that agree within 1e-5: a cell flips only where one lies that close to the
    # threshold
    assert float((ranks["state"][mask] != single["state"][mask]).float().mean()) < MASK_FLIPS


def test_superquadrics_two_ranks_equal_one_process_through_stage_switches(four_methods):
    ranks, single = _ranks_and_single(four_methods, "superquadrics")
    switches = ranks["facts"]["switch_steps"]
    assert switches == single["facts"]["switch_steps"]
    assert all(s > 0 for s in switches[1:]), switches  # both switches happened (coarse -> coarse -> fine)
    assert torch.equal(ranks["state"]["scene.alive"], single["state"]["scene.alive"])
    _assert_close_states(ranks, single, SUPERQUADRICS_ATOL)


def test_sparseflex_two_ranks_equal_one_process_through_band_updates_and_subdivision(four_methods):
    ranks, single = _ranks_and_single(four_methods, "sparseflex")
    counts = ranks["facts"]["row_counts"]
    assert len(set(counts)) >= 3, counts  # subdivided, then the band changed again
    assert ranks["facts"]["band_events"] == single["facts"]["band_events"] >= 3
    assert int(ranks["state"]["scene.resolution"]) == 16
    assert torch.equal(ranks["state"]["scene.voxels"], single["state"]["scene.voxels"])
    _assert_close_states(ranks, single, SPARSEFLEX_ATOL, skip=("scene.weights",))
    diff = (ranks["state"]["scene.weights"] - single["state"]["scene.weights"]).abs()
    assert float((diff > 1e-4).float().mean()) < SPARSEFLEX_OUTLIERS
    # Adam moves an entry by about lr per step at most, so two runs part by at most 2 lr per step
    assert float(diff.max()) <= 2 * SparseFlexSceneConfig().lr_weights * STEPS


def test_a_failed_rank_stops_the_job_and_keeps_the_last_checkpoint(tmp_path):
    env = _env() | {"RECON_TEST_FAIL_AT_STEP": "7"}
    code, out = _finish(_torchrun("triangles", str(tmp_path), "16", "1", env=env))
    assert code != 0
    assert "injected failure of rank 1 at step 7" in out
    _, meta = RunDir(tmp_path / "run").load_checkpoint()  # verified load: intact
    assert 5 <= meta["step"] < 16
    assert not (tmp_path / "rank0.pt").exists() and not (tmp_path / "rank1.pt").exists()


# --- helpers ---------------------------------------------------------------------------------------------------
def test_pop_nproc():
    assert distributed.pop_nproc(["triangles", "--nproc", "2", "--steps", "3"]) == (
        ["triangles", "--steps", "3"],
        2,
    )
    assert distributed.pop_nproc(["triangles", "--nproc=3"]) == (["triangles"], 3)
    assert distributed.pop_nproc(["triangles"]) == (["triangles"], 1)
    for bad in (["--nproc"], ["--nproc", "0"], ["--nproc=x"]):
        with pytest.raises(ReconError, match="--nproc"):
            distributed.pop_nproc(bad)


def test_shard_splits_evenly_and_rejects_uneven_counts():
    assert [distributed.shard(6, r, 3) for r in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert distributed.shard(5) == slice(0, 5)  # one process: everything
    with pytest.raises(ValueError, match="count"):
        distributed.shard(5, 0, 2)


def test_gradient_buckets_group_by_dtype_and_respect_the_size():
    params = [torch.zeros(10), torch.zeros(10, dtype=torch.float64), torch.zeros(30), torch.zeros(5)]
    for p in params:
        p.grad = torch.ones_like(p)
    buckets = distributed._buckets(params, bucket_bytes=160)  # 40 float32 values
    shapes = [[tuple(p.shape) + (p.dtype,) for p in b] for b in buckets]
    assert shapes == [[(10, torch.float32), (30, torch.float32)], [(5, torch.float32)], [(10, torch.float64)]]


def test_gradient_all_reduce_stops_when_the_ranks_rows_differ(monkeypatch):
    """A strategy that edits rows differently on some rank (e.g. from rank-local statistics) fails with a clear
    error at the next step instead of gloo's size mismatch; the check rides on the gradient-flag all-reduce (here
    a stand-in for the peer rank, which holds 8 values where this one holds 7)."""
    params = [torch.zeros(4, requires_grad=True), torch.zeros(3, requires_grad=True)]
    params[0].grad = torch.ones(4)

    def all_reduce_with_peer(tensor, op=None, async_op=False):
        tensor.copy_(torch.maximum(tensor, torch.tensor([1, 1, 8, -8])))

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce_with_peer)
    with pytest.raises(ReconError, match=r"differ in size \(7 values here, 7 to 8 over the ranks\)"):
        distributed.allreduce_gradients(params)


def test_single_process_helpers_are_no_ops():
    t = torch.tensor([1.0, 2.0])
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_rank0()
    assert distributed.all_reduce_(t, "mean") is t and t.tolist() == [1.0, 2.0]
    assert distributed.broadcast_object("x") == "x" and distributed.mean_floats({"a": 1.5}) == {"a": 1.5}
    distributed.check_same(3.0, "anything")
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")  # WORLD_SIZE unset


def test_exit_worker_flushes_output_and_keeps_the_code():
    """A rank ended by exit_worker (no interpreter teardown, where gloo's threads aborted about one job in ten)
    still delivers what it printed and its exit code."""
    code = "import sys; from recon.train import distributed; print('out', end=''); " \
           "print('err', file=sys.stderr, end=''); distributed.exit_worker(3)"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out", "err")
