"""The generic training loop: one view per step, photometric + scene losses, Adam, a Strategy at fixed hooks.

Nothing here depends on the representation: the method registry supplies the scene and strategy classes, the
scene supplies its parameter groups and regularisers, the strategy edits rows through the ParamOptimizer.

Guarantees of :meth:`Trainer.train` (docs/reliability.md):

- Checkpoints every ``checkpoint_minutes`` of training time and every ``checkpoint_every`` steps, and at the end;
  SIGINT, SIGTERM and SIGHUP stop training with a checkpoint (a signal that arrives during a checkpoint write is
  handled right after it); the previous handlers are restored afterwards.
- Non-finite values: on every logging step the loss terms and every parameter group, and before every checkpoint
  write every parameter group, are checked; a non-finite value raises :class:`NonFiniteError` naming the step and
  the group, and no checkpoint holding it is written. A NaN that appears at step ``s`` is therefore reported at the
  first logging or checkpoint step ``>= s`` (no host syncs on the other steps, STYLE.md §7).
- Step hooks (:class:`TrainHook`) run around every step; time spent in them (a paused viewer) is not training
  time. Parameters change only while ``trainer.lock`` is held.
- Data parallel (``recon.train.distributed``, docs/distributed.md): under torchrun each of the W ranks renders its
  shard of the step's views (``cfg.views_per_rank`` each) or rays (``rays_per_batch`` each), and
  :meth:`Trainer.sync_gradients` averages the gradients between ``backward`` and the optimiser step, so a step
  equals one process's step over all W shards. Every rank keeps the same parameters, generator and sampler
  state; rank 0's training clock drives every rank's budget; rank 0 alone writes checkpoints, metrics and
  evaluations; logged loss terms are means over the ranks.
"""

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from recon.core import ReconError, require_capabilities
from recon.metrics import psnr_tensor
from recon.renderers._backend import backend_report, reset_backend_report
from recon.scenes.base import RenderOptions, Scene, StepContext
from recon.train import distributed
from recon.train.appearance import ExposureCompensation, uses_compensation
from recon.train.budget import Budget
from recon.train.config import TrainConfig, model_config_hash
from recon.train.data import TrainViews, ViewSampler
from recon.train.evaluate import quick_metrics
from recon.train.losses import loss_needs, needs_distortion, needs_normals, sfm_depth_loss, total_loss
from recon.train.memory import peak_memory
from recon.train.methods import Method
from recon.train.param_optimizer import ParamOptimizer
from recon.train.ray_batches import RayBatchSampler
from recon.train.strategy import StrategyContext

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals handled like Ctrl-C during :meth:`Trainer.train`: checkpoint, then stop ("interrupted")."""


class NonFiniteError(ReconError):
    """Training produced a NaN or infinite loss or parameter (the message names the step and the group)."""


@dataclass
class TrainResult:
    """How a training run ended: ``stopped`` is "steps", "max_minutes" or "interrupted".

    ``signal`` is the number of the signal that interrupted training (SIGINT for Ctrl-C), else None;
    ``eval_seconds`` the time spent in periodic evaluations (not counted in ``train_seconds``, the budget's clock).
    """

    step: int
    stopped: str
    train_seconds: float
    signal: int | None = None
    eval_seconds: float = 0.0


class TrainHook(Protocol):
    """Called by :meth:`Trainer.train` around every step (e.g. the live viewer: pause, statistics).

    ``before_step`` may block (a paused viewer); that time is not counted as training time. ``after_step`` gets
    the step's detached loss terms; ``logged`` says whether this is a logging step (the only steps on which a
    hook may read values back from the device).
    """

    def before_step(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer", terms: dict[str, Tensor], logged: bool) -> None: ...


@dataclass
class _Interrupts:
    """Signal bookkeeping of one ``train`` call: a signal that arrives inside a step or a checkpoint write
    (``critical``) is acted on once that is complete, so a checkpoint never holds a half-applied step."""

    critical: bool = False
    signal: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)  # what signal.signal returned, per signal


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
        if cfg.views_per_rank < 1:
            raise ValueError(f"cfg.views_per_rank must be >= 1, got {cfg.views_per_rank}")
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.cfg, self.method, self.dataset, self.run, self.device = cfg, method, dataset, run, device
        self.generator = torch.Generator().manual_seed(
            cfg.seed
        )  # the one seed of init, view order, backgrounds
        self.views = TrainViews(dataset, device=device)
        if scene is None and method.init_scene is not None:
            scene = method.init_scene(cfg, dataset, self.generator)
        elif scene is None:
            scene = method.scene_cls.from_dataset(cfg.scene, dataset, generator=self.generator)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it
        self.scene = scene.to(device)
        self.appearance = (
            ExposureCompensation(len(self.views)).to(device)
            if uses_compensation(cfg.appearance, has_alpha=self.views.alphas is not None)
            else None
        )
        extra_groups = [] if self.appearance is None else self.appearance.param_groups()
        self.optimizer = ParamOptimizer(self.scene.param_groups() + extra_groups)
        self.strategy = method.make_strategy(cfg, len(self.views))
        # Capabilities are checked once, here: a loss or strategy needing an output the scene cannot render fails
        # before any work, naming both (instead of skipping a term silently at every step).
        scene_name = type(self.scene).__name__
        require_capabilities(scene_name, self.scene.capabilities, loss_needs(cfg.loss), by="the loss config")
        self.strategy.check_scene(self.scene)
        reset_backend_report()  # backend_report() then says what this run's renders really ran on
        if cfg.batch == "rays":
            self.sampler = RayBatchSampler.from_views(
                self.views, rays_per_batch=cfg.rays_per_batch * self.world,
                images_per_batch=cfg.images_per_batch * self.world,
                background=cfg.background, generator=self.generator,
                sfm_depth_fraction=cfg.loss.sfm_depth_fraction if cfg.loss.sfm_depth_weight > 0 else 0.0,
            )  # fmt: skip
        else:
            self.sampler = ViewSampler(len(self.views), self.generator)
        self.rays_per_rank = cfg.rays_per_batch  # ray batches: the size checkpoints keep (set_rays_per_batch)
        self.step = 0
        self.train_seconds = 0.0  # the budget's clock: optimisation steps only
        self.eval_seconds = 0.0  # periodic evaluations (excluded from the budget, reported)
        self.budget = Budget(steps=cfg.steps, minutes=cfg.max_minutes)
        self.hooks: list[TrainHook] = []
        self.lock = threading.Lock()  # held while parameters change (train_step); viewers render under it
        self._interrupts = _Interrupts()
        self._next_checkpoint = self._next_eval = math.inf  # training times; set by train()
        self._saved_step: int | None = None  # step of the last checkpoint this trainer wrote
        self.eval_indices = _spread(len(dataset.splits.get("test", [])), cfg.eval_images)
        self.test_views: TrainViews | None = None

    # --- one step -------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Tensor]:
        """One optimisation step; returns the detached loss terms plus ``loss`` and ``psnr``."""
        cfg, step = self.cfg, self.step
        fraction = self.progress()
        first_ray = 0  # index of this rank's first ray in the step's whole ray batch
        if cfg.batch == "rays":  # rays across the views, each over its own background (composited below)
            assert isinstance(self.sampler, RayBatchSampler)  # chosen by cfg.batch in __init__
            rays = self.sampler.next()  # the whole step's rays (same on every rank) ...
            part = distributed.shard(len(rays.camera), self.rank, self.world)
            rays, first_ray = rays.shard(part), part.start * rays.pixels.shape[1]  # ... this rank's part
            camera, pixels, target, target_alpha = rays.camera, rays.pixels, rays.target, rays.alpha
            background, render_background = self.views.background, None
            view_indices, pass_start = rays.view_indices, False
            depth_targets = rays.depth  # camera z at SfM points (0 elsewhere), or None
        else:
            assert isinstance(self.sampler, ViewSampler)  # chosen by cfg.batch in __init__
            indices, pass_start = self.sampler.next_views(cfg.views_per_rank * self.world)
            indices = indices[distributed.shard(len(indices), self.rank, self.world)]
            background = render_background = self._background()
            camera, target = self.views.views(indices, background)
            pixels, view_indices, depth_targets = None, torch.tensor(indices), None
            target_alpha = (
                None if self.views.alphas is None else self.views.alphas[view_indices.to(self.device)]
            )
            crop = self.strategy.view_crop(self.scene, camera, self.generator)
            if crop is not None:  # render and supervise a window of the views only
                camera, target = crop.camera(camera), crop.image(target)
                target_alpha = None if target_alpha is None else crop.image(target_alpha)
        self.optimizer.set_learning_rates(step, cfg.steps, progress=fraction)
        options = RenderOptions(
            background=render_background, backend=cfg.backend, depth=True,
            normals=needs_normals(cfg.loss, fraction),
            median_depth=needs_normals(cfg.loss, fraction), distortion=needs_distortion(cfg.loss, fraction),
            stats=self.strategy.needs_stats, first_ray=first_ray, depth_targets=depth_targets,
        )  # fmt: skip
        render = self.scene.render(camera, options, pixels=pixels)
        if self.appearance is not None:  # per-image exposure (training only)
            rgb = self.appearance(render.rgb, render.alpha, view_indices, background=render_background)
            render = replace(render, rgb=rgb)
        if pixels is not None:
            render = rays.over_background(render)
        ctx = StepContext(step, cfg.steps, camera, target, background, render, view_indices, len(self.views),
                          pass_start, fraction, target_alpha=target_alpha, num_ranks=self.world,
                          sum_over_ranks=distributed.all_reduce_ if self.world > 1 else None)  # fmt: skip
        terms = total_loss(render, target, camera, cfg.loss, fraction=fraction) | self.scene.regularizers(ctx)
        if depth_targets is not None:
            terms["sfm_depth"] = cfg.loss.sfm_depth_weight * sfm_depth_loss(
                render.require("depth_deviation", by="the SfM depth loss"), depth_targets
            )
        sctx = StrategyContext(ctx, self.scene, self.optimizer)
        self.strategy.before_backward(sctx)
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        self.sync_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.strategy.after_backward(sctx)
        return {k: v.detach() for k, v in terms.items()} | {
            "loss": loss.detach(),
            "psnr": psnr_tensor(render.rgb.detach(), target),
        }

    def set_rays_per_batch(self, rays: int, final: bool = True) -> None:
        """Each rank trains on ``rays`` rays per step from the next step on (ray batches only; the in-run capacity
        rule, ``recon.train.capacity_in_run``). A ``final`` size is what checkpoints keep (``trainer.rays_per_rank``),
        so a resumed run goes on with it; the rule's timing sizes are not final (a run stopped while they are timed
        resumes with the size it had before)."""
        if not isinstance(self.sampler, RayBatchSampler):
            raise ReconError(f"{self.method.name} trains on views, not ray batches: it has no rays per step")
        self.sampler.set_rays_per_batch(rays * self.world)
        if final:
            self.rays_per_rank = rays

    def sync_gradients(self) -> None:
        """The hook point between ``backward`` and the optimiser step: averages the gradients over the ranks.

        A no-op in one process. With W ranks each rank's loss is the mean over its shard, so the average of the
        W gradients is the gradient of the mean over the whole step (equal shards), as one process computes it.
        """
        if self.world > 1:
            distributed.allreduce_gradients([pg["params"][0] for pg in self.optimizer.adam.param_groups])

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
        """Run until ``cfg.steps``, the ``max_minutes`` budget, Ctrl-C, SIGTERM or SIGHUP; ends with a checkpoint.

        Args:
            progress: optional callback ``(trainer, terms) -> None`` called on logging steps.

        Raises:
            NonFiniteError: a loss term or parameter became NaN/inf (the newest checkpoint stays the last good one).
        """
        cfg, budget = self.cfg, self.budget
        self._next_eval = self._after(cfg.eval_every_minutes)
        self._next_checkpoint = self._after(cfg.checkpoint_minutes)
        self._sync_start()
        with self._stop_signals():
            try:
                while not budget.done(step=self.step, train_seconds=self.train_seconds):
                    self._one_step(progress)
                    self._checkpoint_and_eval()
            except KeyboardInterrupt:
                self._save_unless_saved()
                signum = self._interrupts.signal or signal.SIGINT
                return TrainResult(
                    self.step, "interrupted", self.train_seconds, int(signum), self.eval_seconds
                )
            self._save_unless_saved()
        stopped = "steps" if budget.steps > 0 and self.step >= budget.steps else "max_minutes"
        return TrainResult(self.step, stopped, self.train_seconds, None, self.eval_seconds)

    def _sync_start(self) -> None:
        """Data parallel: every rank must start from the same rows; rank 0's parameters and buffers win."""
        if self.world == 1:
            return
        distributed.check_same(self.scene.num_primitives(), "the number of primitives", self.device)
        distributed.check_same(self.step, "the step", self.device)
        distributed.broadcast_tensors_(list(self.scene.state_dict().values()))

    def _one_step(self, progress) -> None:
        for hook in self.hooks:
            hook.before_step(self)  # may block (paused viewer): not training time
        start = time.perf_counter()
        with self._critical(), self.lock:
            terms = self.train_step()
            self.step += 1
        self.train_seconds += time.perf_counter() - start
        # one clock for every rank: budgets, schedules, checkpoint and logging times agree
        self.train_seconds = distributed.broadcast_float(self.train_seconds, self.device)
        logged = self.step % self.cfg.log_every == 0 or self.budget.done(
            step=self.step, train_seconds=self.train_seconds
        )
        if logged:
            self._log(terms, progress)
        for hook in self.hooks:
            hook.after_step(self, terms, logged)

    def _checkpoint_and_eval(self) -> None:
        cfg = self.cfg
        if (
            self._interrupts.signal is not None
        ):  # arrived during the step: stop (the handler writes a checkpoint)
            raise KeyboardInterrupt
        if self.train_seconds >= self._next_checkpoint or (
            cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0
        ):
            self.save_checkpoint()
            if self._interrupts.signal is not None:  # arrived during the write: stop without a second one
                raise KeyboardInterrupt
        if self.train_seconds >= self._next_eval or (cfg.eval_every > 0 and self.step % cfg.eval_every == 0):
            self.periodic_eval()
            self._next_eval = self._after(cfg.eval_every_minutes)

    def _after(self, minutes: float) -> float:
        """The training time ``minutes`` from now (inf when ``minutes`` is 0: never)."""
        return self.train_seconds + minutes * 60.0 if minutes > 0 else math.inf

    @contextmanager
    def _critical(self) -> Iterator[None]:
        """Defer stop signals until the block is done (nested use keeps the outer state).

        Only the main thread's blocks count: signals are handled there, and a checkpoint written from another
        thread (the viewer's export) must not change the main thread's state.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        state = self._interrupts
        outer, state.critical = state.critical, True
        try:
            yield
        finally:
            state.critical = outer

    @contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM/SIGHUP like Ctrl-C while training (main thread only); restore them afterwards."""
        state = self._interrupts = _Interrupts()

        def handler(signum, frame):
            state.signal = signum
            if not state.critical:
                raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                state.previous[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, previous in state.previous.items():
                signal.signal(signum, previous)

    def check_finite(self, terms: dict[str, float] | None = None) -> None:
        """Raise :class:`NonFiniteError` naming the step and group if a parameter or loss term is NaN/inf.

        One host sync for all parameter groups; call it on logging steps and before checkpoint writes only.
        """
        groups = [(pg["name"], pg["params"][0]) for pg in self.optimizer.adam.param_groups]
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in groups]).tolist()  # host sync
        bad = [name for (name, _), ok in zip(groups, finite, strict=True) if not ok]
        if bad:
            raise NonFiniteError(
                f"step {self.step}: non-finite values in parameter group(s) {', '.join(bad)}; training stopped "
                f"before writing them (the newest checkpoint, if any, is the last good one; lower the learning "
                f"rates or check the data)"
            )
        # PSNR is a metric, not a loss term: it is +inf for a perfect fit.
        bad = [k for k, v in (terms or {}).items() if k != "psnr" and not math.isfinite(v)]
        if bad:
            raise NonFiniteError(
                f"step {self.step}: non-finite loss term(s) {', '.join(bad)}; training stopped (the newest "
                f"checkpoint, if any, is the last good one)"
            )

    def _log(self, terms: dict[str, Tensor], progress) -> None:
        values = {k: float(v) for k, v in terms.items()}  # host sync: logging steps only
        values = distributed.mean_floats(values, self.device)  # the step's loss over all ranks
        self.check_finite(values)
        if self.rank != 0:
            return
        values |= {
            "num_primitives": self.scene.num_primitives(),
            "train_seconds": round(self.train_seconds, 3),
        }
        self.run.log_metrics(self.step, values)
        if progress is not None:
            progress(self, values)

    def periodic_eval(self) -> dict[str, float]:
        """PSNR/SSIM on a fixed, evenly spread subset of the test split, logged with the training time.

        With W ranks (every rank calls it at the same step: the clock is rank 0's) each rank renders every W-th
        view of the subset and the per-view sums are all-reduced, so the logged means are those of one process.
        """
        if not self.eval_indices:
            return {}
        if self.test_views is None:
            self.test_views = TrainViews(self.dataset, "test", device=self.device)
        start = time.perf_counter()
        self.scene.eval()  # deterministic sampling (ray-marched fields jitter their samples in training)
        mine = self.eval_indices[self.rank :: self.world]
        sums = [0.0, 0.0, float(len(mine))]
        if mine:
            part = quick_metrics(self.scene, self.test_views, indices=mine, backend=self.cfg.backend)
            sums[:2] = [part["psnr"] * len(mine), part["ssim"] * len(mine)]
        if self.world > 1:
            total = torch.tensor(sums, dtype=torch.float64, device=self.device)
            sums = distributed.all_reduce_(total, "sum").tolist()
        result = {"psnr": sums[0] / sums[2], "ssim": sums[1] / sums[2]}
        self.scene.train()
        self.eval_seconds += time.perf_counter() - start
        if self.rank != 0:
            return result
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
        if self.appearance is not None:
            out |= {f"appearance.{k}": v for k, v in self.appearance.state_dict().items()}
        out["trainer.generator"] = self.generator.get_state()
        if isinstance(self.sampler, RayBatchSampler):  # per rank: a resume may change the number of processes
            out["trainer.rays_per_rank"] = torch.tensor(self.rays_per_rank)
        return out

    def save_checkpoint(self):
        """Write a checkpoint of the current state (refused with :class:`NonFiniteError` if it holds NaN/inf).

        Signals that arrive meanwhile are handled after the write (see :meth:`train`).
        """
        self.check_finite()
        if self.world > 1 and not self._interrupts.signal:
            # collective: every rank is here at the same step (not after a signal)
            self.strategy.reduce_statistics(for_checkpoint=True)
        if self.rank != 0:
            self._next_checkpoint = self._after(self.cfg.checkpoint_minutes)
            self._saved_step = self.step
            return None
        meta = {"method": self.method.name, "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "num_primitives": self.scene.num_primitives(), "model_config_hash": model_config_hash(self.cfg),
                "backends": backend_report(), "peak_memory": peak_memory(self.device),
                "exposure_compensation": self.appearance is not None}  # fmt: skip
        with self._critical():
            path = self.run.save_checkpoint(
                self.step, self.state_tensors(), meta, keep_last=self.cfg.keep_checkpoints
            )
        self._next_checkpoint = self._after(self.cfg.checkpoint_minutes)
        self._saved_step = self.step
        return path

    def _save_unless_saved(self) -> None:
        if self._saved_step != self.step:
            self.save_checkpoint()

    @classmethod
    def from_checkpoint(
        cls, cfg: TrainConfig, method: Method, dataset, run, *, device: torch.device
    ) -> "Trainer":
        """Rebuild a trainer exactly as it was at the run's newest good checkpoint (same step, rows, optimiser
        state); metrics.jsonl loses the records logged after that step."""
        tensors, meta = run.load_checkpoint()
        stored = meta.get("model_config_hash")
        if stored is not None and stored != model_config_hash(cfg):
            raise ReconError(
                f"{run.path}: the checkpoint of step {meta['step']} was trained with other model or data settings "
                f"than {run.config_path.name} now holds (was it edited?); resume with the settings it was trained with"
            )
        scene = method.scene_cls.empty(cfg.scene)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it
        scene.load_state_dict_resizing(_section(tensors, "scene"))
        trainer = cls(cfg, method, dataset, run, device=device, scene=scene)
        if trainer.appearance is not None:
            trainer.appearance.load_state_dict(_section(tensors, "appearance"))
        trainer.optimizer.load_state_tensors(_section(tensors, "optim"))
        trainer.strategy.load_state_tensors(_section(tensors, "strategy"))
        trainer.sampler.load_state_tensors(_section(tensors, "sampler"))
        trainer.generator.set_state(tensors["trainer.generator"])
        if "trainer.rays_per_rank" in tensors:  # an in-run capacity choice (older checkpoints: the config's)
            trainer.set_rays_per_batch(int(tensors["trainer.rays_per_rank"]))
        trainer.step = int(meta["step"])
        trainer.train_seconds = float(meta.get("train_seconds", 0.0))
        trainer.eval_seconds = float(meta.get("eval_seconds", 0.0))
        if distributed.is_rank0():
            run.truncate_metrics(trainer.step)  # the log continues after the checkpoint: no repeated steps
        return trainer


def load_scene(
    method: Method, cfg: TrainConfig, run, *, device: torch.device | str = "cpu"
) -> tuple[Scene, int]:
    """The scene of a run's newest checkpoint and its step (for eval, export, render)."""
    tensors, meta = run.load_checkpoint()
    scene = method.scene_cls.empty(cfg.scene)  # pyright: ignore[reportAttributeAccessIssue]  # every method's TrainConfig subclass has it
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
