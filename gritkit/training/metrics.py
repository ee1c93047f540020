"""What a run reports after each step: metrics.jsonl (and TensorBoard), and hooks for the caller."""

from __future__ import annotations

import json
import os
from pathlib import Path


def step_seconds(record: dict) -> float:
    """Wall time of the step a metrics.jsonl record describes: its tokens over its tokens/s."""
    return record["tokens"] / record["tokens_per_s"] if record.get("tokens_per_s") else 0.0


class Metrics:
    """metrics.jsonl (kept up to the resumed step) and TensorBoard when it is installed."""

    def __init__(self, output_dir: Path, start_step: int, tensorboard: bool):
        self.path = output_dir / "metrics.jsonl"
        kept = []
        if start_step and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
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
