"""The generic training loop: one view per step, photometric + scene losses, Adam, a Strategy at fixed hooks.

Nothing here depends on the representation: the method registry supplies the scene and strategy classes, the
scene supplies its parameter groups and regularisers, the strategy edits rows through the ParamOptimizer.
"""

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from recon.core import require_capabilities
from recon.metrics import psnr_tensor
from recon.renderers._backend import backend_report, reset_backend_report
from recon.scenes.base import RenderOptions, Scene, StepContext
from recon.train.budget import Budget
from recon.train.config import TrainConfig
from recon.train.data import TrainViews, ViewSampler
from recon.train.evaluate import quick_metrics
from recon.train.losses import loss_needs, needs_distortion, needs_normals, total_loss
from recon.train.methods import Method
from recon.train.param_optimizer import ParamOptimizer
from recon.train.ray_batches import RayBatchSampler
from recon.train.strategy import StrategyContext


@dataclass
class TrainResult:
    """How a training run ended: ``stopped`` is "steps", "max_minutes" or "interrupted"; ``eval_seconds`` is the
    time spent in periodic evaluations (not counted in ``train_seconds``, the budget's clock)."""

    step: int
    stopped: str
    train_seconds: float
    eval_seconds: float = 0.0


class Trainer:
    """Trains ``method`` on ``dataset`` into ``run`` (a ``recon.runs.RunDir``).

    Args:
        cfg: the resolved run config (``method.config_cls``).
        method: registry entry of the representation.
        dataset: a ``recon.datasets.SceneDataset``.
        run: the run directory (checkpoints, metrics).
        device: training device.
        scene: an existing scene (resume); None initialises one from the dataset.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        method: Method,
        dataset,
        run,
        *,
        device: torch.device,
        scene: Scene | None = None,
    ):
        self.cfg, self.method, self.dataset, self.run, self.device = cfg, method, dataset, run, device
        self.generator = torch.Generator().manual_seed(
            cfg.seed
        )  # the one seed of init, view order, backgrounds
        self.views = TrainViews(dataset, device=device)
        if scene is None:
            scene = method.scene_cls.from_dataset(cfg.scene, dataset, generator=self.generator)
        self.scene = scene.to(device)
        self.optimizer = ParamOptimizer(self.scene.param_groups())
        self.strategy = method.make_strategy(cfg, len(self.views))
        # Capabilities are checked once, here: a loss or strategy needing an output the scene cannot render fails
        # before any work, naming both (instead of skipping a term silently at every step).
        scene_name = type(self.scene).__name__
        require_capabilities(scene_name, self.scene.capabilities, loss_needs(cfg.loss), by="the loss config")
        self.strategy.check_scene(self.scene)
        reset_backend_report()  # backend_report() then says what this run's renders really ran on
        if cfg.batch == "rays":
            self.sampler = RayBatchSampler.from_views(
                self.views, rays_per_batch=cfg.rays_per_batch, images_per_batch=cfg.images_per_batch,
                background=cfg.background, generator=self.generator,
            )  # fmt: skip
        else:
            self.sampler = ViewSampler(len(self.views), self.generator)
        self.step = 0
        self.train_seconds = 0.0  # the budget's clock: optimisation steps only
        self.eval_seconds = 0.0  # periodic evaluations (excluded from the budget, reported)
        self.budget = Budget(steps=cfg.steps, minutes=cfg.max_minutes)
        self.eval_indices = _spread(len(dataset.splits.get("test", [])), cfg.eval_images)
        self.test_views: TrainViews | None = None

    # --- one step -------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Tensor]:
        """One optimisation step; returns the detached loss terms plus ``loss`` and ``psnr``."""
        cfg, step = self.cfg, self.step
        fraction = self.progress()
        if cfg.batch == "rays":  # rays across the views, each over its own background (composited below)
            rays = self.sampler.next()
            camera, pixels, target, target_alpha = rays.camera, rays.pixels, rays.target, rays.alpha
            background, render_background = self.views.background, None
            view_indices, pass_start = rays.view_indices, False
        else:
            index, pass_start = self.sampler.next()
            background = render_background = self._background()
            camera, target = self.views.view(index, background)
            pixels, view_indices = None, torch.tensor([index])
            target_alpha = None if self.views.alphas is None else self.views.alphas[index : index + 1]
        self.optimizer.set_learning_rates(step, cfg.steps, progress=fraction)
        options = RenderOptions(
            background=render_background, backend=cfg.backend, depth=True,
            normals=needs_normals(cfg.loss, fraction),
            median_depth=needs_normals(cfg.loss, fraction), distortion=needs_distortion(cfg.loss, fraction),
            stats=self.strategy.needs_stats,
        )  # fmt: skip
        render = self.scene.render(camera, options, pixels=pixels)
        if pixels is not None:
            render = rays.over_background(render)
        ctx = StepContext(step, cfg.steps, camera, target, background, render, view_indices,
                          len(self.views), pass_start, fraction, target_alpha=target_alpha)  # fmt: skip
        terms = total_loss(render, target, camera, cfg.loss, fraction=fraction) | self.scene.regularizers(ctx)
        sctx = StrategyContext(ctx, self.scene, self.optimizer)
        self.strategy.before_backward(sctx)
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.strategy.after_backward(sctx)
        return {k: v.detach() for k, v in terms.items()} | {
            "loss": loss.detach(),
            "psnr": psnr_tensor(render.rgb.detach(), target),
        }

    def progress(self) -> float:
        """Progress in [0, 1] through the run's budget (``recon.train.budget.Budget``): the time fraction for a
        time budget (``steps = 0``), the larger of the step and time fractions when both are set, else
        ``step / steps``. Every schedule is a function of it, so schedules complete when the budget does."""
        return self.budget.fraction(step=self.step, train_seconds=self.train_seconds)

    def _background(self) -> Tensor:
        mode = self.cfg.background
        if mode == "random":
            return torch.rand(3, generator=self.generator).to(self.device)
        if mode == "white":
            return torch.ones(3, device=self.device)
        if mode == "black":
            return torch.zeros(3, device=self.device)
        return self.views.background

    # --- the loop -------------------------------------------------------------------------------------------
    def train(self, progress=None) -> TrainResult:
        """Run until ``cfg.steps``, the ``max_minutes`` budget or Ctrl-C; always ends with a checkpoint.

        Args:
            progress: optional callback ``(trainer, terms) -> None`` called on logging steps.
        """
        cfg, budget = self.cfg, self.budget
        next_eval = cfg.eval_every_minutes * 60.0 if cfg.eval_every_minutes > 0 else math.inf
        try:
            while not budget.done(step=self.step, train_seconds=self.train_seconds):
                start = time.perf_counter()
                terms = self.train_step()
                self.step += 1
                self.train_seconds += time.perf_counter() - start
                if self.step % cfg.log_every == 0 or budget.done(
                    step=self.step, train_seconds=self.train_seconds
                ):
                    self._log(terms, progress)
                if cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.train_seconds >= next_eval or (
                    cfg.eval_every > 0 and self.step % cfg.eval_every == 0
                ):
                    self.periodic_eval()
                    next_eval = (
                        self.train_seconds + cfg.eval_every_minutes * 60.0
                        if cfg.eval_every_minutes > 0
                        else math.inf
                    )
        except KeyboardInterrupt:
            self.save_checkpoint()
            return TrainResult(self.step, "interrupted", self.train_seconds, self.eval_seconds)
        self.save_checkpoint()
        stopped = "steps" if budget.steps > 0 and self.step >= budget.steps else "max_minutes"
        return TrainResult(self.step, stopped, self.train_seconds, self.eval_seconds)

    def _log(self, terms: dict[str, Tensor], progress) -> None:
        values = {k: float(v) for k, v in terms.items()}  # host sync: logging steps only
        values |= {
            "num_primitives": self.scene.num_primitives(),
            "train_seconds": round(self.train_seconds, 3),
        }
        self.run.log_metrics(self.step, values)
        if progress is not None:
            progress(self, values)

    def periodic_eval(self) -> dict[str, float]:
        """PSNR/SSIM on a fixed, evenly spread subset of the test split, logged with the training time."""
        if not self.eval_indices:
            return {}
        if self.test_views is None:
            self.test_views = TrainViews(self.dataset, "test", device=self.device)
        start = time.perf_counter()
        self.scene.eval()  # deterministic sampling (ray-marched fields jitter their samples in training)
        result = quick_metrics(
            self.scene, self.test_views, indices=self.eval_indices, backend=self.cfg.backend
        )
        self.scene.train()
        self.eval_seconds += time.perf_counter() - start
        self.run.log_metrics(self.step, {
            "eval_psnr": result["psnr"], "eval_ssim": result["ssim"], "eval_images": len(self.eval_indices),
            "train_seconds": round(self.train_seconds, 3), "num_primitives": self.scene.num_primitives(),
            "eval_seconds": round(self.eval_seconds, 3),
        })  # fmt: skip
        return result

    # --- checkpoints ----------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        out = {f"scene.{k}": v for k, v in self.scene.state_dict().items()}
        out |= {f"optim.{k}": v for k, v in self.optimizer.state_tensors().items()}
        out |= {f"strategy.{k}": v for k, v in self.strategy.state_tensors().items()}
        out |= {f"sampler.{k}": v for k, v in self.sampler.state_tensors().items()}
        out["trainer.generator"] = self.generator.get_state()
        return out

    def save_checkpoint(self):
        meta = {"method": self.method.name, "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "num_primitives": self.scene.num_primitives(), "backends": backend_report()}  # fmt: skip
        return self.run.save_checkpoint(
            self.step, self.state_tensors(), meta, keep_last=self.cfg.keep_checkpoints
        )

    @classmethod
    def from_checkpoint(
        cls, cfg: TrainConfig, method: Method, dataset, run, *, device: torch.device
    ) -> "Trainer":
        """Rebuild a trainer exactly as it was at the run's newest checkpoint (same step, rows, optimiser state)."""
        tensors, meta = run.load_checkpoint()
        scene = method.scene_cls.empty(cfg.scene)
        scene.load_state_dict_resizing(_section(tensors, "scene"))
        trainer = cls(cfg, method, dataset, run, device=device, scene=scene)
        trainer.optimizer.load_state_tensors(_section(tensors, "optim"))
        trainer.strategy.load_state_tensors(_section(tensors, "strategy"))
        trainer.sampler.load_state_tensors(_section(tensors, "sampler"))
        trainer.generator.set_state(tensors["trainer.generator"])
        trainer.step = int(meta["step"])
        trainer.train_seconds = float(meta.get("train_seconds", 0.0))
        trainer.eval_seconds = float(meta.get("eval_seconds", 0.0))
        return trainer


def load_scene(
    method: Method, cfg: TrainConfig, run, *, device: torch.device | str = "cpu"
) -> tuple[Scene, int]:
    """The scene of a run's newest checkpoint and its step (for eval, export, render)."""
    tensors, meta = run.load_checkpoint()
    scene = method.scene_cls.empty(cfg.scene)
    scene.load_state_dict_resizing(_section(tensors, "scene"))
    return scene.to(device).eval(), int(meta["step"])


def _section(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _spread(count: int, wanted: int) -> list[int]:
    if count == 0:
        return []
    if wanted <= 0 or wanted >= count:
        return list(range(count))
    return torch.linspace(0, count - 1, wanted).round().long().unique().tolist()
