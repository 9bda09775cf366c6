"""Worker of the data-parallel tests (tests/train/test_distributed.py), not a test module itself.

``python tests/train/test_distributed_worker.py METHOD OUT STEPS VIEWS_PER_RANK`` trains a tiny procedural scene
with the generic trainer: one process, or one rank of a torchrun job (``recon.train.distributed.init_from_env``).
Each rank writes its final scene state and strategy facts to ``OUT/rank{R}.pt``.
"""

import importlib.util
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

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


def nerf_config(steps: int, per_rank: int):
    method = get_method("nerf")
    cfg = method.config_cls(method="nerf")
    scene = replace(cfg.scene, grid_levels=4, grid_log2_size=12, grid_max_resolution=64, occupancy_resolution=16,
                    render_step_size=0.05)  # fmt: skip
    strategy = replace(cfg.strategy, update_every=2, warmup_steps=2)
    return replace(cfg, data="fake", steps=steps, backend="torch", log_every=4, final_eval=False,
                   checkpoint_every=5, eval_every=0, eval_images=0, rays_per_batch=64 * per_rank, scene=scene,
                   strategy=strategy)  # fmt: skip


class FailAt:
    """A step hook that crashes this rank before step ``step`` (the failed-rank test)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def before_step(self, trainer: Trainer) -> None:
        if trainer.step == self.step:
            raise RuntimeError(f"injected failure of rank {distributed.rank()} at step {self.step}")

    def after_step(self, trainer: Trainer, terms: dict, logged: bool) -> None:
        pass


def main(method_name: str, out: Path, steps: int, views_per_rank: int) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"))
    dataset = fake_data.FakeDataset(size=24, views=12, test_views=2)
    cfg = triangles_config(steps) if method_name == "triangles" else nerf_config(steps, views_per_rank)
    run = RunDir(out / "run")
    trainer = Trainer(cfg, get_method(method_name), dataset, run, device=torch.device("cpu"),
                      views_per_rank=views_per_rank)  # fmt: skip
    fail_at = int(os.environ.get("RECON_TEST_FAIL_AT_STEP", "0"))
    if fail_at and distributed.rank() == 1:
        trainer.hooks.append(FailAt(fail_at))
    initial = trainer.scene.num_primitives()
    result = trainer.train()
    state = {f"scene.{k}": v.detach().clone() for k, v in trainer.scene.state_dict().items()}
    facts = {"initial": initial, "step": result.step, "world": distributed.world_size(),
             "events": getattr(trainer.strategy, "events", 0)}  # fmt: skip
    torch.save({"state": state, "facts": facts}, out / f"rank{distributed.rank()}.pt")
    distributed.shutdown()
    distributed.exit_worker(0)  # its file is written: skip interpreter teardown (see exit_worker)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
