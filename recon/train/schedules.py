"""Learning-rate schedules (the records live in recon.scenes.base; this module evaluates them)."""

import math

from recon.scenes.base import ConstantLr, ExponentialDecayLr, LrSchedule, StepLr


def lr_at(
    base_lr: float, schedule: LrSchedule, step: int, max_steps: int, *, progress: float | None = None
) -> float:
    """Learning rate of a group at ``step`` of ``max_steps`` (or at ``progress`` in [0, 1] when given).

    ``ExponentialDecayLr`` is the log-linear decay of the triangle-splatting reference (spec §10):
    ``lr(t) = exp((1 - t/T) ln lr_0 + (t/T) ln lr_T)`` with ``lr_T = lr_0 * final_ratio`` and no delay.
    ``StepLr`` is ``lr_0 * factor`` once ``t/T >= at_fraction``, else ``lr_0``.
    """
    if isinstance(schedule, ConstantLr) or base_lr <= 0.0:
        return base_lr
    if isinstance(schedule, ExponentialDecayLr):
        t = step / max(1, max_steps) if progress is None else progress
        t = min(max(t, 0.0), 1.0)
        final = base_lr * schedule.final_ratio
        return math.exp((1.0 - t) * math.log(base_lr) + t * math.log(final))
    if isinstance(schedule, StepLr):
        t = step / max(1, max_steps) if progress is None else progress
        return base_lr * schedule.factor if t >= schedule.at_fraction else base_lr
    raise TypeError(f"unknown learning-rate schedule {schedule!r}")


def active_sh_degree(progress: float, *, interval: float, max_degree: int) -> int:
    """SH degree schedule of spec §10 in budget fractions: ``min(max_degree, floor(progress / interval))``
    (the reference: +1 every 1000 of 30 000 steps)."""
    if interval <= 0:
        return max_degree
    return min(max_degree, int(progress / interval + 1e-9))
