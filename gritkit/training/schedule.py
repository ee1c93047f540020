"""The run's length and learning rate: warm-up then linear decay, over a fixed total or a time budget."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up over ``ceil(warmup_ratio * total)`` steps, then linear decay to 0 at ``total``."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


BUDGET_CALIBRATION_STEPS = 10


class StepSchedule:
    """How many optimiser steps the run takes, and the learning-rate factor of each.

    Without a time budget the total is fixed. With ``max_minutes`` it is re-fitted after every
    step, once ``BUDGET_CALIBRATION_STEPS`` have run, from the mean step time so far (the
    machine's speed may change during a run): cut to the current step when the budget is spent,
    never above ``max_steps`` when that is set. Warm-up and decay follow the revised total.
    """

    def __init__(self, total: int, warmup_ratio: float, max_minutes: float = 0.0, max_steps: int = 0):
        self.total, self.warmup_ratio = total, warmup_ratio
        self.budget_s, self.max_steps = 60 * max_minutes, max_steps

    def factor(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup_ratio)

    def refit(self, step: int, start: int, elapsed_s: float) -> int:
        """Update and return the total after ``step`` steps, ``elapsed_s`` seconds after step ``start``."""
        if not self.budget_s:
            return self.total
        if elapsed_s >= self.budget_s:
            self.total = step
        elif step - start >= BUDGET_CALIBRATION_STEPS:
            fitted = step + int((self.budget_s - elapsed_s) / (elapsed_s / (step - start)))
            self.total = min(fitted, self.max_steps) if self.max_steps else fitted
        return self.total
