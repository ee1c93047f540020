"""What a run reports after each step: metrics.jsonl (and TensorBoard), hooks for the caller, and
the stop of a run whose loss is no longer a number."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class NonFiniteLoss(ValueError):
    """A step's loss is NaN or infinite: the weights are broken, so the run stops without saving them."""


def check_losses(step: int, losses: dict, learning_rate: float, checkpoint: str) -> None:
    """Raise NonFiniteLoss naming ``step`` (1-based), each non-finite loss and the likely cause.

    Every loss a step returns is already reduced over processes (``step.GritStep.backward``), so
    every process sees the same values and stops at the same step. ``checkpoint`` says what the
    run leaves to resume from.
    """
    bad = {key: value for key, value in losses.items() if value is not None and not math.isfinite(value)}
    if bad:
        raise NonFiniteLoss(f"step {step}: {', '.join(f'{key} is {value}' for key, value in bad.items())}; "
                            f"the learning rate ({_short(learning_rate)}) is likely too high, or the data hold an "
                            f"empty/degenerate batch; stopped without saving final/ ({checkpoint})")


def _short(number: float) -> str:
    """1e9 rather than 1e+09 or 1000000000.0: the number as a user writes it."""
    return f"{number:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def step_seconds(record: dict) -> float:
    """Wall time of the step a metrics.jsonl record describes: its tokens over its tokens/s."""
    return record["tokens"] / record["tokens_per_s"] if record.get("tokens_per_s") else 0.0


def read_records(path: Path, log=print) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (a run killed while writing it) is dropped
    and logged, a corrupt line before it is an error naming file and line."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no step")
            records.append(record)
        except ValueError:
            if number == len(lines):
                log(f"train: {path}:{number}: dropped a torn last line (a run killed while writing it)")
                break
            raise ValueError(f"{path}:{number}: not a JSON record ({line[:60]!r}); "
                             "fix or remove the line to resume") from None
    return records


class Metrics:
    """metrics.jsonl (kept up to the resumed step) and TensorBoard when it is installed."""

    def __init__(self, output_dir: Path, start_step: int, tensorboard: bool, log=print):
        self.path = output_dir / "metrics.jsonl"
        kept = []
        if start_step and self.path.is_file():
            kept = [json.dumps(r) for r in read_records(self.path, log) if r["step"] <= start_step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        self.handle = self.path.open("a")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


class Callback:
    """Hooks into the training loop; subclass and override what you need.

    ``on_step`` runs on every process after each optimiser step with that step's record (the
    line written to metrics.jsonl, the same on every process).
    """

    def on_step(self, record: dict) -> None:
        pass
