"""The hash-table size of a field follows the budget: start small, grow during the run (docs/budget.md).

A field's step has a part proportional to its hash table (the optimiser updates every entry; the lookups miss the
cache more), so a smaller table buys more steps: on the chair (nerf, 2-core CPU) 2^15 entries per level beat the
CPU preset's 2^17 by 0.46 / 0.27 / 0.13 / 0.07 dB at 2 / 5 / 10 / 20 minutes, and lost 0.13 dB at 40 minutes,
where 2^17 fitted the training batches 0.84 dB better (benchmarks/README.md). Like the rays per step, the table's
cost can only be measured on the run's settled steps (the first steps march the all-occupied occupancy grid), and a
table cannot be chosen before training. So:

1. Under ``--max-minutes`` a new run starts with the device's small table (``TableRule`` ``low``; the field is set
   in ``config.yaml``): :func:`apply_table_start`.
2. When the in-run rays rule (``recon.train.capacity_in_run``) times its steps, it first times ``WINDOW`` steps at
   its smaller batch on the small table, then grows the table to ``high`` (:class:`TableTrial`: exactly, the
   encoding keeps its values, ``recon.renderers.encoding.table_growth_index``) and times both batches on it.
3. The grown table stays if the budget left still buys the steps the rays rule needs (``FIELD_MIN_STEPS`` in all)
   at the smallest batch with it; the rays are then chosen on the grown table's step times. Otherwise the table
   folds back to the small size (each entry the mean of the entries that copied it, the Adam moments likewise:
   the 32 timing steps' updates are kept) and the rays are chosen on the small table's time (the grown table's
   slope per ray).

So a budget spends its surplus over the steps the schedules need on the table first, then on the rays (the chair
at 40 minutes: 2^17 with 2 176 rays scored 35.83 dB, 2^15 with the 3 712 rays the rays rule gave it 35.70). The
choice is non-decreasing in the budget (a larger budget leaves more time at the decision). It is printed and added to
``capacity.json``; the checkpoints hold the table at its size (``FieldScene.load_state_dict_resizing`` adopts it).
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torch import Tensor

from recon.renderers.encoding import HashGrid, table_growth_index
from recon.train.capacity import device_class, set_field
from recon.train.footprint import scene_kind

if TYPE_CHECKING:
    from recon.train.trainer import Trainer

__all__ = ["NERF_TABLE", "TableChoice", "TableRule", "TableStart", "TableTrial", "apply_table_start"]


@dataclass(frozen=True)
class TableRule:
    """A hash table that starts at ``low`` under a time budget and may grow to ``high`` during the run.

    Attributes:
        field: dotted config field of ``log2`` of the entries per level (``"scene.grid_log2_size"``).
        module: the scene's ``HashGrid`` module (``"field.encoding"``; its table is the group ``module.table``).
        cpu: ``(low, high)`` ``log2`` sizes on CPUs.
        cuda: ``(low, high)`` on CUDA devices (``low == high``: no rule there).
        bounded_only: apply only when the scene is bounded (nerf's ``scene.scene_type`` resolves to ``bounded``).
    """

    field: str
    module: str
    cpu: tuple[int, int]
    cuda: tuple[int, int]
    bounded_only: bool = False

    def __post_init__(self) -> None:
        for low, high in (self.cpu, self.cuda):
            if not 0 <= low <= high:
                raise ValueError(f"TableRule needs 0 <= low <= high, got {self}")

    def bounds(self, device: str) -> tuple[int, int]:
        return self.cuda if device_class(device) == "cuda" else self.cpu

    @property
    def sets(self) -> tuple[str, ...]:
        """The dotted fields the rule sets (``recon.train.capacity.explicit_fields``): its field."""
        return (self.field,)


NERF_TABLE = TableRule(field="scene.grid_log2_size", module="field.encoding", cpu=(15, 17), cuda=(19, 19),
                       bounded_only=True)  # fmt: skip
"""nerf (bounded scenes): 2^15 entries per level to start, 2^17 (the CPU preset's) when the budget buys it. On CUDA
the published 2^19 is kept (not measured there). Measured on bounded scenes only: unbounded and forward-facing
captures keep their preset."""


@dataclass(frozen=True)
class TableStart:
    """The table a run starts with (recorded in ``capacity.json``; printed at start)."""

    field: str
    value: int
    high: int

    def line(self) -> str:
        return (
            f"capacity: {self.field} {self.value} to start (2^{self.value} entries per level; grown to 2^{self.high} "
            "during the run if the budget left buys the steps the rays rule needs with it)"
        )

    def record(self) -> dict:
        return {"field": self.field, "value": self.value, "high": self.high, "rule": "table_start"}


@dataclass(frozen=True)
class TableChoice:
    """The in-run decision: keep the grown table or fold it back (recorded in ``capacity.json``; printed)."""

    field: str
    value: int
    grown: bool
    batch: int
    expected_steps: int
    needed_steps: int
    seconds_small: float
    seconds_grown: float
    budget_left_seconds: float
    decided_at_step: int

    def line(self) -> str:
        how = "kept the grown table" if self.grown else "folded the table back"
        return (
            f"capacity: {self.field} {self.value} (2^{self.value} entries per level; {how} at step "
            f"{self.decided_at_step:,}: the {self.budget_left_seconds / 60:.3g} min left buy ~{self.expected_steps:,} "
            f"steps at {self.batch} rays with the grown table, {self.needed_steps:,} needed; "
            f"{self.seconds_small:.3g} s/step small, {self.seconds_grown:.3g} s/step grown)"
        )

    def record(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"rule": "table_growth"}


class TableTrial:
    """Grows one table of a training run to the rule's high size, then keeps it or folds it back.

    Args:
        rule: the table rule.
        trainer: the run's trainer (its scene, optimiser, device and lock).
    """

    def __init__(self, rule: TableRule, trainer: "Trainer") -> None:
        self.rule, self.trainer = rule, trainer
        self._index: Tensor | None = None
        self._before: dict[str, Tensor] | None = None
        self._low = self.log2_size

    @property
    def grid(self) -> HashGrid:
        grid = self.trainer.scene.get_submodule(self.rule.module)
        if not isinstance(grid, HashGrid):
            raise TypeError(f"{self.rule.module} is not a HashGrid of the {self.trainer.method.name} scene")
        return grid

    @property
    def name(self) -> str:
        """The table's parameter group."""
        return f"{self.rule.module}.table"

    @property
    def log2_size(self) -> int:
        return self.grid.cfg.log2_hashmap_size

    def grow(self) -> None:
        """The table at the high size, the encoding unchanged (entries and Adam moments copied)."""
        grid, high = self.grid, self.rule.bounds(str(self.trainer.device))[1]
        self._low = grid.cfg.log2_hashmap_size
        with self.trainer.lock:  # a viewer renders under it
            self._index = table_growth_index(grid.layout, replace(grid.cfg, log2_hashmap_size=high).layout)
            self._before = self.trainer.optimizer.gather_group(self.name, self._index)
            grid.set_log2_size(high)

    def keep(self) -> None:
        """Keep the grown table (frees the state :meth:`fold` would need)."""
        self._index = self._before = None

    def fold(self) -> None:
        """Back to the size before :meth:`grow`, keeping what the steps since have learnt (means of the copies)."""
        if self._index is None or self._before is None:
            raise RuntimeError("TableTrial.fold: the table was not grown")
        with self.trainer.lock:
            self.trainer.optimizer.fold_group(self.name, self._index, self._before)
            self.grid.set_log2_size(self._low)
        self.keep()


def apply_table_start(
    cfg, rules: Iterable[TableRule], dataset, device, *, explicit: frozenset[str] = frozenset()
):
    """``cfg`` with each table rule's field at its low size, the start records, and the rules that apply.

    Only under a time budget (``cfg.max_minutes > 0``), for fields the user did not set (``explicit``), where the
    device's ``low < high``, and for ``bounded_only`` rules on bounded scenes. The caller applies them only with the
    in-run rays rule, which times the grown table.
    """
    if cfg.max_minutes <= 0:
        return cfg, [], []
    starts, active = [], []
    for rule in rules:
        low, high = rule.bounds(str(device))
        if rule.field in explicit or low >= high:
            continue
        if rule.bounded_only and scene_kind(cfg, dataset, dataset.cameras("train")) != "bounded":
            continue
        cfg = set_field(cfg, rule.field, low)
        starts.append(TableStart(rule.field, low, high))
        active.append(rule)
    return cfg, starts, active
