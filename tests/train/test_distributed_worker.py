"""Worker of the data-parallel tests (tests/train/test_distributed.py), not a test module itself.

``python tests/train/test_distributed_worker.py METHODS OUT STEPS VIEWS_PER_RANK`` trains a tiny procedural scene
with the generic trainer for each method of the comma-separated ``METHODS``, one after the other: one process, or
one rank of a torchrun job (``recon.train.distributed.init_from_env``). ``VIEWS_PER_RANK`` is the per-process
batch: views for image-batch methods, ``RAYS_PER_VIEW`` x it rays for the fields. Each rank writes the final scene
state and strategy facts of a method to ``OUT/rank{R}.pt`` (one method) or ``OUT/METHOD/rank{R}.pt`` (several).
"""

import importlib.util
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from recon.renderers.encoding import HashGridConfig
from recon.runs import RunDir
from recon.scenes.triangles import TriangleSceneConfig
from recon.train import distributed
from recon.train.config import TrianglesTrainConfig
from recon.train.losses import LossConfig
from recon.train.methods import get_method
from recon.train.trainer import Trainer
from recon.train.triangles_mcmc import TriangleMCMCConfig

_spec = importlib.util.spec_from_file_location("fake_data", Path(__file__).with_name("fake_data.py"))
fake_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_data)


def triangles_config(steps: int) -> TrianglesTrainConfig:
    """Events every quarter of the budget: densify at 1/4 and 1/2, prune-only at 3/4 (3 row-changing events)."""
    return TrianglesTrainConfig(
        data="fake", method="triangles", steps=steps, backend="torch", log_every=4, final_eval=False,
        checkpoint_every=5, eval_every=0, eval_images=0,
        scene=TriangleSceneConfig(sh_degree=1, dome=False, init_scale=2.0, lr_scale=10.0),
        strategy=TriangleMCMCConfig(min_every_steps=3, every_fraction=0.25, start_fraction=0.1,
                                    until_fraction=0.6, cap=400),
        loss=LossConfig(normal_from_fraction=1.0),
    )  # fmt: skip


RAYS_PER_VIEW = 64  # field ray batches: 64 x VIEWS_PER_RANK rays per process and step
FIELD_SCENE = dict(grid_levels=4, grid_log2_size=12, grid_max_resolution=64, occupancy_resolution=16,
                   render_step_size=0.05)  # fmt: skip


def field_config(name: str, steps: int, per_rank: int):
    """nerf/neus: a 4-level 2^12 hash grid, a 16^3 occupancy grid updated every 2 steps after 2 warm-up steps."""
    method = get_method(name)
    cfg = method.config_cls(method=name)
    scene = replace(cfg.scene, **FIELD_SCENE)
    strategy = replace(cfg.strategy, update_every=2, warmup_steps=2)
    return replace(cfg, data="fake", steps=steps, backend="torch", log_every=4, final_eval=False,
                   checkpoint_every=5, eval_every=0, eval_images=0, rays_per_batch=RAYS_PER_VIEW * per_rank,
                   scene=scene, strategy=strategy, background="random")  # fmt: skip


def superquadrics_config(steps: int, per_rank: int):
    """4 blocks, 8^2 textures; the curriculum's stage switches (coarse decimated -> coarse -> fine) fall inside
    the run (stage milestones are budget fractions)."""
    method = get_method("superquadrics")
    cfg = method.config_cls(method="superquadrics")
    scene = replace(cfg.scene, n_blocks=4, texture_size=8, overlap_points=32, ground_subdivisions=1,
                    background_level=1, perceptual_weight=0.0, decimate_until=0.25, coarse_until=0.5,
                    lr_decay_at=0.75)  # fmt: skip
    return replace(cfg, data="fake", steps=steps, backend="torch", log_every=4, final_eval=False,
                   checkpoint_every=5, eval_every=0, eval_images=0, views_per_rank=per_rank,
                   scene=scene)  # fmt: skip


def sparseflex_config(steps: int, per_rank: int):
    """R = 8 -> 16: band maintenance every 1/4 of the budget and one subdivision at 1/2 (rows change 4 times)."""
    method = get_method("sparseflex")
    cfg = method.config_cls(method="sparseflex")
    scene = replace(cfg.scene, resolution=8, hull_tolerance=4, color_hidden_dim=16, lr_s=0.1, lr_deform=0.1,
                    color_grid=HashGridConfig(levels=4, log2_hashmap_size=10, base_resolution=4,
                                              max_resolution=32))  # fmt: skip
    # the spec's split (deform reset) leaves a band that the next maintenance still changes, so the rows change
    # after the subdivision too; the default surface split starts on the surface and this tiny band then stays put
    strategy = replace(cfg.strategy, band_every_fraction=0.25, subdivide_fractions=(0.5,), max_resolution=16,
                       subdivide_init="spec")  # fmt: skip
    return replace(cfg, data="fake", steps=steps, backend="torch", log_every=4, final_eval=False,
                   checkpoint_every=5, eval_every=0, eval_images=0, views_per_rank=per_rank, scene=scene,
                   strategy=strategy)  # fmt: skip


def config(name: str, steps: int, per_rank: int):
    if name == "triangles":
        return replace(triangles_config(steps), views_per_rank=per_rank)
    if name in ("nerf", "neus"):
        return field_config(name, steps, per_rank)
    return {"superquadrics": superquadrics_config, "sparseflex": sparseflex_config}[name](steps, per_rank)


class Facts:
    """Counts of the strategies' row-changing events, recorded after every step (a step hook)."""

    def __init__(self) -> None:
        self.row_counts: list[int] = []

    def before_step(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer, terms: dict, logged: bool) -> None:
        self.row_counts.append(trainer.scene.num_primitives())


class FailAt:
    """A step hook that crashes this rank before step ``step`` (the failed-rank test)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def before_step(self, trainer: Trainer) -> None:
        if trainer.step == self.step:
            raise RuntimeError(f"injected failure of rank {distributed.rank()} at step {self.step}")

    def after_step(self, trainer: Trainer, terms: dict, logged: bool) -> None:
        pass


def train_one(method_name: str, out: Path, steps: int, views_per_rank: int, dataset) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out / "run")
    # sparseflex's colour MLP and superquadrics' overlap samples draw from torch's global RNG (not the trainer's
    # generator): seed it alike in every process, so that rank 0 (whose initial state every rank receives) and
    # the single process start from the same parameters and draw the same samples
    torch.manual_seed(0)
    trainer = Trainer(config(method_name, steps, views_per_rank), get_method(method_name), dataset, run,
                      device=torch.device("cpu"))  # fmt: skip
    fail_at = int(os.environ.get("RECON_TEST_FAIL_AT_STEP", "0"))
    if fail_at and distributed.rank() == 1:
        trainer.hooks.append(FailAt(fail_at))
    facts_hook = Facts()
    trainer.hooks.append(facts_hook)
    initial = trainer.scene.num_primitives()
    result = trainer.train()
    state = {f"scene.{k}": v.detach().clone() for k, v in trainer.scene.state_dict().items()}
    strategy = trainer.strategy
    facts = {"initial": initial, "step": result.step, "world": distributed.world_size(),
             "events": getattr(strategy, "events", 0), "row_counts": facts_hook.row_counts,
             "switch_steps": list(getattr(strategy, "switch_steps", [])),
             "band_events": getattr(strategy, "band_events", 0)}  # fmt: skip
    torch.save({"state": state, "facts": facts}, out / f"rank{distributed.rank()}.pt")


def main(methods: str, out: Path, steps: int, views_per_rank: int) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"))
    dataset = fake_data.FakeDataset(size=24, views=12, test_views=2)
    names = methods.split(",")
    for name in names:
        train_one(name, out / name if len(names) > 1 else out, steps, views_per_rank, dataset)
    distributed.shutdown()
    distributed.exit_worker(0)  # its files are written: skip interpreter teardown (see exit_worker)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
