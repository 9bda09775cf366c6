"""The training budget: a wall-clock budget, a step bound, or both, and the progress fraction schedules follow.

With ``--max-minutes M`` and no explicit ``--steps`` a run trains until M minutes of training time are spent
(``steps = 0``: no step bound), and every schedule (learning rates, densification windows, SH degree, curriculum
stages, annealing) is a function of the *time* fraction, so the schedules complete exactly when the budget does,
on any machine. An explicit ``--steps N`` bounds the run as well; then progress is the larger of the two
fractions. Without a time budget progress is ``step / steps``. Training time counts only optimisation steps:
periodic evaluation, checkpoint writes and time paused in the viewer are excluded (and reported separately).
"""

import math
from dataclasses import dataclass

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """A step bound and/or a training-time budget.

    Attributes:
        steps: step bound; 0 means none (then ``minutes`` must be positive).
        minutes: training-time budget in minutes; 0 means none (then ``steps`` must be positive).

    Example:
        >>> b = Budget(steps=0, minutes=2.0)
        >>> b.fraction(step=10, train_seconds=60.0), b.done(step=10**9, train_seconds=119.0)
        (0.5, False)
    """

    steps: int = 0
    minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.minutes < 0 or not math.isfinite(self.minutes):
            raise ValueError(
                f"a budget needs steps >= 0 and finite minutes >= 0, got {self.steps}, {self.minutes}"
            )
        if self.steps == 0 and self.minutes == 0:
            raise ValueError("a budget needs a step bound (--steps N) or a time budget (--max-minutes M)")

    @property
    def seconds(self) -> float:
        """The time budget in seconds (inf without one)."""
        return self.minutes * 60.0 if self.minutes > 0 else math.inf

    @property
    def time_driven(self) -> bool:
        """True when only the clock ends the run (no step bound)."""
        return self.steps == 0

    def fraction(self, *, step: int, train_seconds: float) -> float:
        """Progress in [0, 1]: the larger of the step and time fractions of the bounds that are set."""
        parts = []
        if self.steps > 0:
            parts.append(step / self.steps)
        if self.minutes > 0:
            parts.append(train_seconds / self.seconds)
        return min(1.0, max(parts))

    def done(self, *, step: int, train_seconds: float) -> bool:
        """Whether the run has reached its step bound or spent its time budget."""
        return (self.steps > 0 and step >= self.steps) or train_seconds >= self.seconds

    def describe(self) -> str:
        """``"20 minutes"``, ``"5000 steps"`` or ``"5000 steps or 20 minutes"``."""
        parts = [f"{self.steps} steps"] if self.steps > 0 else []
        parts += [f"{self.minutes:g} minutes"] if self.minutes > 0 else []
        return " or ".join(parts)
