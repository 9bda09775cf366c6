"""Capacity follows the budget, the data and the device (docs/budget.md).

A time budget (``--max-minutes``) is spent on the **largest model that still gets enough optimisation steps**.
Each method names its capacity limits as :class:`CapacityRule` records in ``Method.capacity`` (the triangle cap,
the fields' rays per step); for each one the step time on this device is measured at two sizes and fitted by the
linear cost model

.. math::

    t(s) = a + b\\,s \\qquad \\text{seconds per step at size } s .

A size is *feasible* when the steps the budget buys cover what the schedules need:

.. math::

    \\min\\Big(\\frac{B}{t(s)},\\ S_{\\max}\\Big) \\ \\ge\\ n(s) = \\max\\Big(S_{\\min},\\ P\\,\\frac{N_{\\text{px}}}
    {\\text{px}(s)}\\Big),

with ``B`` the budget in seconds, ``S_max`` an explicit ``--steps`` bound (else infinite), ``S_min`` the rule's
minimum step count, ``P`` its minimum number of passes over the ``N_px`` training pixels and ``px(s)`` the pixels a
step trains on (one view for image batches, ``s`` rays for ray batches). The rule picks the largest feasible size
on its grid (multiples of ``quantum``) inside the per-device bounds ``[low, high]`` (``low`` when none is
feasible). Because the feasible set only grows with ``B`` and only shrinks with ``N_px``, ``a`` and ``b``, the
choice is non-decreasing in the budget and non-increasing in the training pixels and the step time, by
construction. No constant depends on a dataset: ``P`` and ``S_min`` were set once so that a 20-minute budget on a
200x200, 100-view scene gives the preset sizes that are known to work on a 2-core CPU (the fields' ``S_min``,
``FIELD_MIN_STEPS``, from a 40-minute nerf comparison); the CUDA bounds end at the published sizes.

When: the triangle cap is chosen before training (:func:`calibrate`: a few steps of fresh trainers at each size);
the fields' ray batches during the run, once their occupancy grid has pruned (``CapacityRule.in_run_after``,
``recon.train.capacity_in_run``), because their first steps march the all-occupied initial grid and cost many
times a later step.

Example:
    >>> cost = StepCost(sizes=(2500, 10000), seconds=(0.038, 0.105))  # measured on the 2-core CPU
    >>> inputs = CapacityInputs(budget_seconds=1200.0, train_views=100, train_pixels=4_000_000, device="cpu")
    >>> choose(TRIANGLE_CAP, inputs, cost).value
    10000
"""

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Literal

__all__ = [
    "FIELD_MIN_STEPS",
    "NERF_RAYS",
    "NEUS_RAYS",
    "TRIANGLE_CAP",
    "Bounds",
    "CapacityChoice",
    "CapacityInputs",
    "CapacityRule",
    "StepCost",
    "apply_capacity",
    "calibrate",
    "capacity_inputs",
    "choose",
    "explicit_fields",
    "get_field",
    "set_field",
]

DeviceClass = Literal["cpu", "cuda"]
MIN_STEP_SECONDS = 1e-6  # floor of a fitted step time: a noisy calibration may fit a <= 0 intercept


@dataclass(frozen=True)
class Bounds:
    """Clamp and calibration sizes of a rule on one kind of device.

    Attributes:
        low: smallest size the rule gives (also when no size is feasible).
        high: largest size the rule gives (on CUDA: the published size).
        calibrate: the two sizes whose step times are measured (``low <= small < large``).
    """

    low: int
    high: int
    calibrate: tuple[int, int]

    def __post_init__(self) -> None:
        small, large = self.calibrate
        if not 0 < self.low <= self.high or not 0 < small < large:
            raise ValueError(f"Bounds needs 0 < low <= high and 0 < small < large, got {self}")


@dataclass(frozen=True)
class CapacityRule:
    """How one capacity limit of a method follows the budget (see the module docstring for the rule).

    Attributes:
        field: dotted config field the rule sets (``"strategy.cap"``).
        unit: what the size counts, for messages (``"triangles"``).
        per: ``"view"``: a step trains on one view whatever the size (a pass is one step per view);
            ``"ray"``: a step trains on ``size`` rays.
        min_passes: ``P``, the minimum number of passes over the training pixels.
        min_steps: ``S_min``, the minimum number of steps the schedules need.
        quantum: sizes are multiples of it.
        cpu: bounds on CPUs (and any device that is not CUDA).
        cuda: bounds on CUDA devices (``high`` is the published size).
        calibrate_fields: more dotted fields set to the size while calibrating (e.g. the initial triangle
            count, so a calibration scene holds ``size`` triangles from its first step).
        calibrate_overrides: ``(field, value)`` pairs set while calibrating only, to make the calibration cheap
            without changing what a step costs (a coarser visual hull for the seed points).
        linked: ``(field, ratio)`` pairs lowered with the chosen size: a positive value above ``ratio x size``
            becomes ``ratio x size`` (the initial triangle count stays below the cap so the soup can grow).
        steps_field: dotted field set to ``n(s)``, the steps the schedules need at the chosen size (at most the
            steps the budget buys at it), for an in-run rule that keeps the model from outgrowing the step rate
            the calibration assumed ("": none).
        floor_field: dotted field set to the device's low bound, the size below which that in-run rule never
            holds the model ("": none).
        in_run_after: "": the size is chosen before training, from calibration trainers. A dotted field of a
            step count (``"strategy.warmup_steps"``): the size is chosen *during* the run from the run's own step
            times, measured once ``SETTLE_FACTOR`` x that many steps are done (``recon.train.capacity_in_run``);
            for the ray-marched fields, whose first steps march the all-occupied initial occupancy grid.
    """

    field: str
    unit: str
    per: Literal["view", "ray"]
    min_passes: float
    min_steps: int
    quantum: int
    cpu: Bounds
    cuda: Bounds
    calibrate_fields: tuple[str, ...] = ()
    calibrate_overrides: tuple[tuple[str, object], ...] = ()
    linked: tuple[tuple[str, float], ...] = ()
    steps_field: str = ""
    floor_field: str = ""
    in_run_after: str = ""

    def bounds(self, device: str) -> Bounds:
        """The bounds for a device string (``"cuda:1"`` -> the CUDA bounds)."""
        return self.cuda if device_class(device) == "cuda" else self.cpu

    @property
    def sets(self) -> tuple[str, ...]:
        """The dotted fields the rule sets: its field, the linked fields, the steps field and the floor field."""
        return (
            self.field,
            *(name for name, _ in self.linked),
            *(name for name in (self.steps_field, self.floor_field) if name),
        )


TRIANGLE_CAP = CapacityRule(
    field="strategy.cap", unit="triangles", per="view", min_passes=110.0, min_steps=1000, quantum=500,
    cpu=Bounds(low=5000, high=40_000, calibrate=(2500, 10_000)),
    cuda=Bounds(low=100_000, high=4_000_000, calibrate=(100_000, 1_000_000)),
    calibrate_fields=("scene.random_init_points", "scene.max_init_points"),
    calibrate_overrides=(("scene.hull_resolution", 32),),  # 5 s -> 0.8 s per calibration scene on the chair
    linked=(("scene.random_init_points", 0.8), ("scene.max_init_points", 0.8)),
    steps_field="strategy.min_steps",
    floor_field="strategy.growth_floor",
)  # fmt: skip
"""Triangle splats: the triangle cap. 110 passes over the training views (one view per step): the budget-driven
chair runs of benchmarks/README.md trained ~107 passes in 20 CPU-minutes with the preset cap of 10 000, the size
known to work. At least 5000 on CPUs: a 2-minute chair run under load with cap 3000 and 1200 initial triangles
lost 0.9 dB against the preset (few steps leave few densification events, so the initial count matters most);
the initial count stays at most 0.8 x the cap (the preset's 4000 up to a cap of 5000). ``strategy.min_steps`` gets
the steps the schedules need: with ``strategy.limit_growth`` (on in the CPU preset) densification stops growing the
soup when the measured step rate would no longer buy them, but never below the low bound (``strategy.growth_floor``;
``TriangleMCMC.growth_target``)."""


FIELD_MIN_STEPS = 30_000
"""``S_min`` of the fields' ray rules: 1.5 x the published recipes' 20 000 steps. Measured on the anti-aliased cow
(nerf, 40 CPU-minutes, docs/budget.md): 44 449 steps at 512 rays scored 36.72 dB, 34 446 at 1 024 37.26 dB, and
23 026 at 2 560 (the batch that ``S_min = 20 000`` chose) 36.23 dB: below ~30 000 steps a larger batch no longer
pays for the steps it costs. A 20-minute budget on a 128-200 px scene buys ~17 000-22 000 steps at 512 rays on the
2-core CPU, so the CPU presets' batches are kept there."""


def _field_rays(cpu: Bounds, cuda: Bounds) -> CapacityRule:
    """The fields' rays-per-step rule: the largest batch with which the budget still buys ``FIELD_MIN_STEPS`` steps
    (no pass target), decided during the run once the occupancy grid has settled."""
    return CapacityRule(
        field="rays_per_batch", unit="rays", per="ray", min_passes=0.0, min_steps=FIELD_MIN_STEPS, quantum=128,
        cpu=cpu, cuda=cuda, in_run_after="strategy.warmup_steps",
    )  # fmt: skip


NERF_RAYS = _field_rays(Bounds(512, 4096, calibrate=(512, 2048)), Bounds(1024, 4096, calibrate=(1024, 4096)))
"""NeRF: rays per step, up to the published recipe's 4096 (nerfacc's occupancy-grid recipe; spec neural_fields.md
§4), at least the CPU preset's 512: 256 rays scored 0.6 dB below 512 at 2 and 5 minutes on the cow, a step at 256
costing nearly what one at 512 does (docs/budget.md). Timed at 512 and 2 048 rays: a line fitted at 512 / 1 024
under-estimated the step time at 4 096 by ~30 % on the cow."""

NEUS_RAYS = _field_rays(Bounds(256, 2048, calibrate=(256, 1024)), Bounds(512, 2048, calibrate=(512, 2048)))
"""NeuS: rays per step by the same rule, up to the published fast recipe's 2048 (spec neural_fields.md §5), at
least the CPU preset's 256."""


@dataclass(frozen=True)
class StepCost:
    """Measured seconds per step at two sizes and the line ``t(s) = a + b s`` through them."""

    sizes: tuple[int, int]
    seconds: tuple[float, float]

    @property
    def per_unit(self) -> float:
        """``b``: seconds per step per unit of size (>= 0: timing noise never makes larger models cheaper)."""
        (s0, s1), (t0, t1) = self.sizes, self.seconds
        return max(0.0, (t1 - t0) / (s1 - s0))

    @property
    def fixed(self) -> float:
        """``a``: seconds per step that do not depend on the size."""
        return max(0.0, self.seconds[1] - self.per_unit * self.sizes[1])

    def at(self, size: float) -> float:
        """Predicted seconds per step at ``size``."""
        return max(MIN_STEP_SECONDS, self.fixed + self.per_unit * size)


@dataclass(frozen=True)
class CapacityInputs:
    """What the rule reads besides the step cost.

    Attributes:
        budget_seconds: the training-time budget (``--max-minutes`` x 60).
        train_views: number of training views.
        train_pixels: pixels over all training views (``N_px``).
        device: the training device (``"cpu"``, ``"cuda:0"``).
        max_steps: an explicit step bound (0: none).
    """

    budget_seconds: float
    train_views: int
    train_pixels: int
    device: str
    max_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_seconds) and self.budget_seconds > 0):
            raise ValueError(f"budget_seconds must be finite and > 0, got {self.budget_seconds}")
        if self.train_views < 1 or self.train_pixels < self.train_views or self.max_steps < 0:
            raise ValueError(
                f"train_views >= 1, train_pixels >= train_views and max_steps >= 0 needed, got {self}"
            )


@dataclass(frozen=True)
class CapacityChoice:
    """The rule's output for one field, with everything it was computed from (recorded in the run).

    ``decided_at_step``: 0 for a choice made before training; for an in-run rule the step at which it was made
    (``inputs.budget_seconds`` is then the budget left at that step and ``cost`` the run's own step times).
    """

    field: str
    value: int
    unit: str
    limited_by: Literal["budget", "high", "low"]
    expected_steps: int
    inputs: CapacityInputs
    cost: StepCost
    calibration_seconds: float = 0.0
    decided_at_step: int = 0

    def line(self) -> str:
        """``capacity: strategy.cap 12,000 triangles (budget 20 min, 0.21 s/step at 10k, 4.0 Mpx, ...)``; an in-run
        choice says its step and the budget that was left then."""
        size, seconds = self.cost.sizes[1], self.cost.seconds[1]
        when = f"at step {self.decided_at_step:,}, budget left" if self.decided_at_step else "budget"
        return (
            f"capacity: {self.field} {self.value:,} {self.unit} ({when} {self.inputs.budget_seconds / 60:.3g} min, "
            f"{seconds:.3g} s/step at {_short(size)}, {self.inputs.train_pixels / 1e6:.1f} Mpx, "
            f"{self.inputs.device}; ~{self.expected_steps:,} steps; {self.limited_by}-limited)"
        )

    def record(self) -> dict:
        """Plain data for ``capacity.json``."""
        return asdict(self) | {"fixed_seconds": self.cost.fixed, "per_unit_seconds": self.cost.per_unit}


def device_class(device: str) -> DeviceClass:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def required_steps(rule: CapacityRule, size: int, inputs: CapacityInputs) -> float:
    """``n(s)``: steps the schedules need at ``size`` (minimum steps, minimum passes over the pixels)."""
    step_pixels = inputs.train_pixels / inputs.train_views if rule.per == "view" else size
    return max(rule.min_steps, rule.min_passes * inputs.train_pixels / step_pixels)


def available_steps(size: int, inputs: CapacityInputs, cost: StepCost) -> float:
    """Steps the budget buys at ``size`` (and at most the explicit step bound)."""
    steps = inputs.budget_seconds / cost.at(size)
    return min(steps, inputs.max_steps) if inputs.max_steps > 0 else steps


def choose(rule: CapacityRule, inputs: CapacityInputs, cost: StepCost) -> CapacityChoice:
    """The largest feasible size on the rule's grid within its device bounds (the low bound if none is).

    Example: see the module docstring.
    """
    bounds = rule.bounds(inputs.device)
    first = math.ceil(bounds.low / rule.quantum) * rule.quantum
    grid = [bounds.low, *range(first, bounds.high + 1, rule.quantum), bounds.high]
    feasible = [s for s in grid if available_steps(s, inputs, cost) >= required_steps(rule, s, inputs)]
    value = max(feasible, default=bounds.low)
    limited = "low" if not feasible or value == bounds.low else "high" if value == bounds.high else "budget"
    steps = round(available_steps(value, inputs, cost))
    return CapacityChoice(rule.field, value, rule.unit, limited, steps, inputs, cost)


def calibrate(
    rule: CapacityRule, device: str, seconds_per_step: Callable[[int], float]
) -> tuple[StepCost, float]:
    """Measure the step time at the rule's two calibration sizes; returns the cost model and the seconds spent.

    Args:
        rule: the capacity rule.
        device: the training device (picks the bounds).
        seconds_per_step: measures one size (e.g. :func:`trainer_step_seconds`).
    """
    start = time.perf_counter()
    sizes = rule.bounds(device).calibrate
    seconds = tuple(seconds_per_step(size) for size in sizes)
    return StepCost(sizes=sizes, seconds=seconds), time.perf_counter() - start  # type: ignore[arg-type]


def trainer_step_seconds(make_trainer: Callable[[], object], *, steps: int = 3) -> float:
    """Median time of ``steps`` real training steps of a fresh trainer after one warm-up step (kernel compiles,
    first allocations). ``make_trainer`` returns a ``recon.train.trainer.Trainer`` (its run is never written)."""
    import torch

    trainer = make_trainer()
    trainer.train_step()  # type: ignore[attr-defined]
    times = []
    for _ in range(steps):
        _sync(trainer.device)  # type: ignore[attr-defined]
        start = time.perf_counter()
        trainer.train_step()  # type: ignore[attr-defined]
        _sync(trainer.device)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return statistics.median(times)


def _sync(device) -> None:
    """Wait for queued kernels so a timing covers the whole step (calibration only, never in training)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def get_field(cfg, dotted: str):
    """The value of a dotted field (``"strategy.cap"``) of a nested config dataclass."""
    value = cfg
    for name in dotted.split("."):
        if not is_dataclass(value) or name not in {f.name for f in fields(value)}:
            raise ValueError(f"config field {dotted!r} does not exist in {type(cfg).__name__}")
        value = getattr(value, name)
    return value


def set_field(cfg, dotted: str, value):
    """A copy of the frozen config ``cfg`` with the dotted field set to ``value``."""
    head, _, rest = dotted.partition(".")
    get_field(cfg, dotted)  # raises for unknown fields
    if not rest:
        return replace(cfg, **{head: value})
    return replace(cfg, **{head: set_field(getattr(cfg, head), rest, value)})


def apply_capacity(
    cfg, method, dataset, device, *, explicit: frozenset[str] = frozenset(), measure=None
) -> tuple[object, list[CapacityChoice]]:
    """``cfg`` with each capacity limit of ``method`` chosen by its rule, and the choices.

    The rules apply only under a time budget (``cfg.max_minutes > 0``) and only to fields the user did not set
    (``explicit`` holds the dotted names given by a flag or a config file). Without a time budget (``--steps N``
    alone) ``cfg`` comes back unchanged: there is no budget to scale with.

    Args:
        cfg: the resolved run config.
        method: the registry entry (``method.capacity`` lists its rules).
        dataset: the loaded dataset (its training views are timed and counted).
        device: the training device.
        explicit: dotted fields the user set explicitly.
        measure: ``(cfg_at_size) -> seconds per step``; default: real trainer steps
            (:func:`trainer_step_seconds`). Tests pass a cost model.
    """
    rules = [rule for rule in method.capacity if rule.field not in explicit and not rule.in_run_after]
    if cfg.max_minutes <= 0 or not rules:
        return cfg, []
    if measure is None:
        from recon.train.trainer import Trainer

        def _trainer_seconds(sized):
            return trainer_step_seconds(lambda: Trainer(sized, method, dataset, None, device=device))

        measure = _trainer_seconds

    inputs = capacity_inputs(cfg, dataset, device)
    choices = []
    for rule in rules:
        cost, spent = calibrate(
            rule, inputs.device, lambda size, rule=rule, cfg=cfg: measure(_sized(cfg, rule, size))
        )
        choice = replace(choose(rule, inputs, cost), calibration_seconds=spent)
        cfg = set_field(cfg, rule.field, choice.value)
        for dotted, ratio in rule.linked:
            if dotted not in explicit and 0 < ratio * choice.value < get_field(cfg, dotted):
                cfg = set_field(cfg, dotted, math.ceil(ratio * choice.value))
        if rule.steps_field and rule.steps_field not in explicit:
            # the steps the schedules need, or what the budget buys at the low bound when no size gets them
            needed = min(required_steps(rule, choice.value, inputs), choice.expected_steps)
            cfg = set_field(cfg, rule.steps_field, math.ceil(needed))
        if rule.floor_field and rule.floor_field not in explicit:
            cfg = set_field(cfg, rule.floor_field, rule.bounds(inputs.device).low)
        choices.append(choice)
    return cfg, choices


def capacity_inputs(cfg, dataset, device) -> CapacityInputs:
    """The rule's inputs for a run: its budget and step bound, the training views and pixels, the device."""
    cameras = dataset.cameras("train")
    views = len(dataset.splits["train"])
    return CapacityInputs(
        budget_seconds=cfg.max_minutes * 60.0, train_views=views,
        train_pixels=views * int(cameras.width) * int(cameras.height), device=str(device), max_steps=cfg.steps,
    )  # fmt: skip


def explicit_fields(rules, args: list[str], files: list[dict]) -> frozenset[str]:
    """The dotted fields of ``rules`` (each rule's ``sets``: a ``CapacityRule`` or a
    ``recon.train.footprint.FootprintRule``) that the user set: by a flag in ``args`` (``--strategy.cap 9000``,
    ``--strategy.cap=9000``, underscores or hyphens) or as a key of one of the config ``files`` (the plain data of
    ``--load-config`` or of a ``--preset`` file)."""
    names = {dotted for rule in rules for dotted in rule.sets}
    given = set()
    for dotted in names:
        flags = {"--" + dotted, "--" + dotted.replace("_", "-")}
        if any(a.partition("=")[0] in flags for a in args) or any(_has_key(data, dotted) for data in files):
            given.add(dotted)
    return frozenset(given)


def _has_key(data, dotted: str) -> bool:
    for name in dotted.split("."):
        if not isinstance(data, dict) or name not in data:
            return False
        data = data[name]
    return True


def _sized(cfg, rule: CapacityRule, size: int):
    """The config of a calibration run at ``size`` (the rule's field and its calibration fields set)."""
    for dotted in (rule.field, *rule.calibrate_fields):
        cfg = set_field(cfg, dotted, size)
    for dotted, value in rule.calibrate_overrides:
        cfg = set_field(cfg, dotted, value)
    return cfg


def _short(size: int) -> str:
    return f"{size / 1000:g}k" if size >= 1000 and size % 100 == 0 else str(size)
