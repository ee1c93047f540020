"""Evaluation of both sides of a GRIT model on held-out real text, next to baselines.

    from gritkit.evaluate import evaluate
    results = evaluate("runs/model", tasks=["debian-search"], quick=True)
"""

from .suite import TASKS, evaluate

__all__ = ["evaluate", "TASKS"]
