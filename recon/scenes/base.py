"""The Scene protocol every representation implements, and the typed records the trainer hands it.

A Scene is an ``nn.Module`` with one render entry point, a list of optimiser groups with their learning-rate
schedules, named regularisers, a mesh export, and a state dict whose row counts may change during training (so
it can be restored into a freshly constructed scene of any size).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from recon.core import Camera, Mesh, RenderCapabilities, RenderOutput
from recon.core.shapes import Backend

# --- learning-rate schedules (data only; recon.train.schedules evaluates them) --------------------------------


@dataclass(frozen=True)
class ConstantLr:
    """The base learning rate at every step."""

    kind: Literal["constant"] = "constant"


@dataclass(frozen=True)
class ExponentialDecayLr:
    """Log-linear decay from ``lr`` to ``lr * final_ratio`` over the whole step budget.

    .. math:: lr(t) = \\exp((1 - t/T) \\ln lr_0 + (t/T) \\ln (lr_0 \\cdot final\\_ratio))
    """

    final_ratio: float = 0.01
    kind: Literal["exp_decay"] = "exp_decay"


@dataclass(frozen=True)
class StepLr:
    """The base learning rate times ``factor`` from ``at_fraction`` of the budget on (a one-milestone MultiStep,
    e.g. the ×0.1 of the blocks world at DTU epoch 1700 of 1800)."""

    at_fraction: float = 1.0
    factor: float = 0.1
    kind: Literal["step"] = "step"


LrSchedule = ConstantLr | ExponentialDecayLr | StepLr


@dataclass
class ParamGroup:
    """One optimiser group: a single parameter tensor, its base learning rate and schedule.

    Attributes:
        name: unique name (also the key of its optimiser state in checkpoints).
        param: the parameter. With ``per_row=True`` its first axis indexes primitives (rows), which the
            ParamOptimizer may select, extend or reset together with their Adam moments.
        lr: base learning rate.
        schedule: how the learning rate evolves over the step budget.
        per_row: whether the first axis is a primitive axis (row edits apply to it).
    """

    name: str
    param: nn.Parameter
    lr: float
    schedule: LrSchedule = field(default_factory=ConstantLr)
    per_row: bool = True


@dataclass(frozen=True)
class RenderOptions:
    """How to render.

    Attributes:
        background: (3,) colour composited behind the scene, or None for black.
        backend: kernel backend of the renderer ("auto" picks warp where it runs).
        depth: also return expected depth (camera z) in ``RenderOutput.depth``.
        normals: also return world-space normals (alpha-weighted, unnormalised) in ``RenderOutput.normals``.
        distortion: also return the distortion map in ``RenderOutput.distortion``.
        median_depth: also return the median depth (camera z) in ``RenderOutput.depth_median``.
        stats: also return per-primitive statistics (``RenderOutput.stats``) for densification strategies.
        first_ray: index of this render's first ray in the training step's whole ray batch (data parallel: the
            start of the rank's shard; 0 otherwise). Ray-marched fields draw ray ``k``'s stratified jitter as a
            function of ``(step, first_ray + k)``, so W shards draw what one process draws for the whole batch.
        depth_targets: (C, R, 1) camera-z depth targets of a pixel-subset render (0 = none), or None; a scene with
            the ``depth_deviation`` capability then returns ``RenderOutput.depth_deviation``.

    Asking for an output the scene cannot produce (see ``Scene.capabilities``) is an error of the consumer, which
    checks its needs once with ``recon.core.require_capabilities`` before training.
    """

    background: Float[Tensor, "3"] | None = None
    backend: Backend = "auto"
    depth: bool = True
    normals: bool = False
    distortion: bool = False
    median_depth: bool = False
    stats: bool = False
    first_ray: int = 0
    depth_targets: Float[Tensor, "C R 1"] | None = None


@dataclass
class StepContext:
    """What a training step knows; passed to regularisers, losses and strategies.

    Attributes:
        step: index of the current step (0-based).
        max_steps: step budget of the run (schedules are fractions of it).
        camera: the training camera(s) of this step.
        image: (C, H, W, 3) target images or, for ray batches, (C, R, 3) target colours, composited over
            ``background``.
        background: (3,) background used for the target and the render.
        render: the render of this step (None before rendering).
        view_indices: (C,) indices of the training views of this step.
        num_train_views: number of training views.
        pass_start: whether this step starts a new pass over the training views.
        target_alpha: (C, H, W, 1) or, for ray batches, (C, R, 1) target alpha / mask of the step, or None
            when the dataset has none (mask losses).
        progress: progress through the budget in [0, 1] when it is not ``step / max_steps`` (a wall-clock
            budget: the larger of the step and time fractions); None means ``step / max_steps``.
        num_ranks: data parallel: the number of processes sharing the step (1 in one process).
        sum_over_ranks: data parallel: sums a tensor over those processes (an all-reduce every rank calls at the
            same point of the step); None in one process. See ``step_mean``.
    """

    step: int
    max_steps: int
    camera: Camera
    image: Float[Tensor, "C H W 3"] | Float[Tensor, "C R 3"]
    background: Float[Tensor, "3"]
    render: RenderOutput | None = None
    view_indices: Tensor | None = None
    num_train_views: int = 1
    pass_start: bool = False
    progress: float | None = None
    target_alpha: Tensor | None = None
    num_ranks: int = 1
    sum_over_ranks: Callable[[Tensor], Tensor] | None = None

    def step_mean(self, total: Tensor, count: Tensor) -> Tensor:
        """``total / count`` as a mean over the whole step's items when ``count`` varies between ranks.

        .. math:: \\frac{W \\, S_r}{\\max(1, \\sum_q n_q)}

        with ``S_r = total`` and ``n_r = count`` this rank's sum and item count over W ranks: the trainer averages
        the W ranks' gradients, so their average is the gradient of ``sum_q S_q / sum_q n_q``, the mean one
        process computes over all items (a mean of the per-rank means would weight the ranks' items unequally).
        In one process: ``total / max(1, count)``. Differentiable w.r.t. ``total`` (``count`` is detached).
        """
        if self.sum_over_ranks is not None:
            count = self.sum_over_ranks(count.detach().clone())
        return total * self.num_ranks / count.clamp_min(1.0)

    @property
    def fraction(self) -> float:
        """Progress through the budget in [0, 1]; schedules are functions of it."""
        if self.progress is not None:
            return self.progress
        return self.step / max(1, self.max_steps)


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``Scene.export_mesh``.

    The native mesh of a representation (the triangle soup of triangle splats); fused surfaces from rendered
    depth are built generically by ``recon.export.fuse_surface`` through ``Scene.render``.

    Attributes:
        min_opacity: primitives below this opacity are dropped (0 keeps all).
        objects_only: drop the parts of the scene that model its environment rather than its objects (the
            superquadrics ground square); no effect on representations without such parts. Geometry metrics
            against an object's ground-truth mesh use it.
    """

    min_opacity: float = 0.5
    objects_only: bool = False


class Scene(nn.Module):
    """Base class of every scene representation (see DESIGN.md, Scenes and training).

    Subclasses implement ``render``, ``param_groups``, ``regularizers`` and ``export_mesh``, and declare what they
    can render besides rgb/alpha in ``capabilities``; the trainer, strategies, the viewer and the exporters only use
    this interface (adding a representation: docs/adding-a-method.md).
    """

    capabilities: ClassVar[RenderCapabilities] = RenderCapabilities()
    """What ``render`` can produce besides rgb and alpha (checked by consumers before training)."""

    def render(
        self, camera: Camera, options: RenderOptions, *, pixels: Tensor | None = None
    ) -> RenderOutput:  # pragma: no cover - interface
        """Render ``camera`` (all pixels, or the (C, R, 2) integer ``pixels``)."""
        raise NotImplementedError

    def param_groups(self) -> list[ParamGroup]:  # pragma: no cover - interface
        """Optimiser groups (one parameter each) with base learning rates and schedules."""
        raise NotImplementedError

    def regularizers(self, ctx: StepContext) -> dict[str, Tensor]:
        """Named, already weighted scalar loss terms added to the photometric loss (none by default)."""
        return {}

    def export_mesh(self, options: ExportOptions) -> Mesh:  # pragma: no cover - interface
        """The scene as a mesh in the scene's (normalised) frame."""
        raise NotImplementedError

    @classmethod
    def from_dataset(cls, config, dataset, *, generator: torch.Generator) -> "Scene":  # pragma: no cover
        """A new scene initialised from a ``recon.datasets.SceneDataset`` (duck-typed: scenes do not import
        datasets)."""
        raise NotImplementedError

    @classmethod
    def empty(cls, config) -> "Scene":  # pragma: no cover - interface
        """A scene with zero rows, to be filled by ``load_state_dict_resizing`` (checkpoint loading)."""
        raise NotImplementedError

    def num_primitives(self) -> int:
        """Number of primitives (rows) of the representation; 0 for fields."""
        return 0

    def load_state_dict_resizing(self, state: dict[str, Tensor]) -> None:
        """Load a state dict whose tensors may have a different number of rows than this scene's.

        Parameters and buffers are re-allocated to the stored shapes first (keeping the ``nn.Parameter``
        objects), then loaded strictly: a missing or unexpected key raises ``KeyError``.
        """
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"scene state mismatch: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for name, tensor in own.items():
                stored = state[name]
                if tensor.shape != stored.shape:
                    tensor.data = torch.empty(stored.shape, dtype=tensor.dtype, device=tensor.device)
                tensor.data.copy_(stored.to(device=tensor.device, dtype=tensor.dtype))
