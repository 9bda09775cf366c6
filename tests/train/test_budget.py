"""The training budget: time-driven, step-bounded or both; progress is what every schedule follows."""

import math

import pytest

from recon.train.budget import Budget


def test_time_budget_alone_drives_progress():
    b = Budget(steps=0, minutes=10.0)
    assert b.time_driven and b.seconds == 600.0
    assert b.fraction(step=10**6, train_seconds=150.0) == 0.25  # steps never count without a step bound
    assert not b.done(step=10**9, train_seconds=599.9) and b.done(step=1, train_seconds=600.0)
    assert b.describe() == "10 minutes"


def test_both_bounds_take_the_larger_fraction_and_either_ends_the_run():
    b = Budget(steps=1000, minutes=1.0)
    assert b.fraction(step=900, train_seconds=30.0) == 0.9
    assert b.fraction(step=100, train_seconds=45.0) == 0.75
    assert b.done(step=1000, train_seconds=1.0) and b.done(step=1, train_seconds=60.0)
    assert b.fraction(step=5000, train_seconds=0.0) == 1.0  # clamped


def test_step_budget_without_time():
    b = Budget(steps=400)
    assert b.seconds == math.inf and not b.time_driven
    assert b.fraction(step=100, train_seconds=1e9) == 0.25


@pytest.mark.parametrize("steps, minutes", [(0, 0.0), (-1, 1.0), (10, -1.0), (0, math.inf)])
def test_bad_budgets_are_rejected(steps, minutes):
    with pytest.raises(ValueError, match="budget"):
        Budget(steps=steps, minutes=minutes)
