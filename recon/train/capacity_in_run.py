"""Capacity limits chosen during the run: the rays per step of the ray-marched fields (docs/budget.md).

The rule is the one of ``recon.train.capacity`` (the largest size with which the budget still buys the steps the
schedules need); only the step times come from elsewhere. A calibration before training would time the first
steps, which march the all-occupied initial occupancy grid: on the chair 2.0 s per step at 256 rays, against ~0.07 s
at 512 once the grid has pruned, a ratio that depends on how empty the scene is. So :class:`InRunCapacity`, a
trainer hook, waits until the grid has settled (``SETTLE_FACTOR`` x the grid's all-cell warm-up steps and
``SETTLE_FRACTION`` of the budget), trains
``WINDOW`` steps at each of the rule's two calibration sizes (real training steps: nothing is thrown away), fits
``t(s) = a + b s`` to the median step times and sets the chosen size for the rest of the run. The decision uses
the budget that is left and the steps still needed, so the choice stays non-decreasing in the budget.

Every rank sees the same training clock (rank 0's, broadcast each step), so every rank makes the same choice
without a collective. The choice is checkpointed (``trainer.rays_per_rank`` in ``Trainer.state_tensors``); a
resumed run goes on with it and does not decide again. Proposal-sampled nerf scenes (unbounded, forward-facing)
have no occupancy grid; they are timed after the same number of steps.

With a ``table`` (``recon.train.table_growth.TableTrial``) the hook first times ``WINDOW`` steps at the smaller
calibration batch on the run's small hash table, then grows the table and times both batches on it; the grown table
stays when the budget left buys the steps the rule needs at the low bound with it, else it folds back.
"""

import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from recon.train.capacity import (
    CapacityChoice,
    CapacityInputs,
    CapacityRule,
    StepCost,
    available_steps,
    choose,
    get_field,
    required_steps,
)

if TYPE_CHECKING:
    from recon.train.table_growth import TableChoice, TableTrial

__all__ = ["SETTLE_FACTOR", "SETTLE_FRACTION", "WINDOW", "InRunCapacity", "settle_steps"]

SETTLE_FACTOR = 4
"""The occupancy grid updates every cell for ``warmup_steps`` steps and then decays empty cells by an EMA (x0.95 per
update, every 16 steps): no timing before 4 x that many steps (256 with the CPU presets' 64)."""
SETTLE_FRACTION = 0.1
"""...and none before a tenth of the budget. On the cow (128 px, nerf CPU preset) the step time fell from 0.17 s
(steps 1-50) to ~0.065 s (steps 150-300) and ~0.05 s from step ~1 000 (~1 minute); at step 288 the rule measured
0.083 s at 1 024 rays on the cow and 0.092 / 0.111 s on the chair (two runs), against 0.043 s and 0.060 s at a
tenth of the budget, and the choice swung with the load (chair: 1 536 rays in one run, the low bound in the other;
docs/budget.md). NeuS's steps settle later
(0.2 s to step ~800, ~0.05 s from step ~3 000, 16 % of a 40-minute budget), as its SDF sharpens."""
WINDOW = 16
"""Steps timed at each calibration size (the median is used: the grid's updates every 16 steps and the load of
the machine make single steps noisy)."""


def settle_steps(rule: CapacityRule, cfg) -> int:
    """The step from which an in-run rule measures: ``SETTLE_FACTOR`` x the field ``rule.in_run_after``."""
    return SETTLE_FACTOR * int(get_field(cfg, rule.in_run_after))


class InRunCapacity:
    """Trainer hook (``Trainer.hooks``) that chooses the size of one in-run rule from the run's own step times.

    Args:
        rule: the rule (``rule.in_run_after`` set).
        inputs: the run's inputs (``recon.train.capacity.capacity_inputs``: the whole budget, pixels, device).
        start_step: the step from which step times are measured (:func:`settle_steps`); also not before the
            trainer's progress reaches ``start_fraction``.
        start_fraction: the budget fraction from which step times are measured (``SETTLE_FRACTION``).
        apply: ``apply(size, final)`` sets the size for the next steps (``Trainer.set_rays_per_batch``; the timing
            sizes are not final, the choice is).
        report: called with each choice (records and prints it): the table's (:class:`TableChoice`, with a
            ``table``), then the rays'.
        window: steps timed at each calibration size.
        table: a hash table to grow and time before the choice (``recon.train.table_growth``), or None.

    Example:
        >>> # hook = InRunCapacity(NERF_RAYS, capacity_inputs(cfg, dataset, device), start_step=256,
        >>> #                      apply=trainer.set_rays_per_batch, report=print)
        >>> # trainer.hooks.append(hook)
    """

    def __init__(
        self,
        rule: CapacityRule,
        inputs: CapacityInputs,
        *,
        start_step: int,
        apply: Callable[[int, bool], None],
        report: "Callable[[CapacityChoice | TableChoice], None]",
        window: int = WINDOW,
        start_fraction: float = SETTLE_FRACTION,
        table: "TableTrial | None" = None,
    ) -> None:
        if not rule.in_run_after or window < 1 or start_step < 0:
            raise ValueError(
                f"InRunCapacity needs an in-run rule, window >= 1 and start_step >= 0, got {rule.field}"
            )
        self.rule, self.inputs, self.start_step, self.window = rule, inputs, start_step, window
        self.start_fraction = start_fraction
        self.apply, self.report = apply, report
        self.sizes = rule.bounds(inputs.device).calibrate
        self.table = table
        # what is timed, in order: (name, size); "small": the small table before it grows
        self.plan = [("small", self.sizes[0])] if table is not None else []
        self.plan += [("low", self.sizes[0]), ("high", self.sizes[1])]
        self.times: dict[str, list[float]] = {name: [] for name, _ in self.plan}
        self.measuring: int | None = None  # index into plan while timing
        self.choice: CapacityChoice | None = None
        self._clock = 0.0

    def before_step(self, trainer) -> None:
        self._clock = trainer.train_seconds  # a paused viewer's wait is not in train_seconds

    def after_step(self, trainer, terms, logged: bool) -> None:
        if self.choice is not None or trainer.step < self.start_step:
            return
        if self.measuring is None and trainer.progress() < self.start_fraction:
            return
        seconds = trainer.train_seconds - self._clock
        if self.measuring is None:  # this step ran at the configured size: start timing the first size
            self._switch(0)
            return
        self.times[self.plan[self.measuring][0]].append(seconds)
        if len(self.times[self.plan[self.measuring][0]]) < self.window:
            return
        if self.measuring + 1 < len(self.plan):
            self._switch(self.measuring + 1)
            return
        self._decide(trainer)

    def _switch(self, index: int) -> None:
        self.measuring = index
        name, size = self.plan[index]
        if name == "low" and self.table is not None:
            self.table.grow()
        self.apply(size, False)

    def _decide(self, trainer) -> None:
        """Fit the cost line, choose with the budget left and the steps still needed, and set the size."""
        low, high = (statistics.median(self.times[name]) for name in ("low", "high"))
        cost = StepCost(sizes=self.sizes, seconds=(low, high))
        left = max(self.inputs.budget_seconds - trainer.train_seconds, 1e-3)
        steps = max(self.inputs.max_steps - trainer.step, 1) if self.inputs.max_steps else 0
        rule = replace(self.rule, min_steps=max(self.rule.min_steps - trainer.step, 1))
        inputs = replace(self.inputs, budget_seconds=left, max_steps=steps)
        if self.table is not None:
            cost = self._decide_table(trainer, rule, inputs, cost)
        choice = choose(rule, inputs, cost)
        self.choice = replace(choice, decided_at_step=trainer.step)
        self.measuring = None
        self.apply(self.choice.value, True)
        self.report(self.choice)

    def _decide_table(self, trainer, rule: CapacityRule, inputs: CapacityInputs, grown: StepCost) -> StepCost:
        """Keep the grown table if the budget left buys the steps the rule needs at its low bound with it, else
        fold it back; the step cost the rays are then chosen with (on the small table: its time at the smaller
        batch, the grown table's slope)."""
        from recon.train.table_growth import TableChoice

        assert self.table is not None
        batch = self.rule.bounds(self.inputs.device).low
        buys, needed = available_steps(batch, inputs, grown), required_steps(rule, batch, inputs)
        keep = buys >= needed
        small = statistics.median(self.times["small"])
        if keep:
            self.table.keep()
            cost = grown
        else:
            self.table.fold()
            s0, s1 = self.sizes
            cost = StepCost(sizes=self.sizes, seconds=(small, small + grown.per_unit * (s1 - s0)))
        self.report(TableChoice(
            field=self.table.rule.field, value=self.table.log2_size, grown=keep, batch=batch,
            expected_steps=round(buys), needed_steps=round(needed), seconds_small=small,
            seconds_grown=grown.seconds[0], budget_left_seconds=inputs.budget_seconds, decided_at_step=trainer.step,
        ))  # fmt: skip
        return cost
