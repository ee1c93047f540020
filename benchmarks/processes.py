"""Using both cores: one process with 2 threads against two processes with 1 thread each.

    python benchmarks/processes.py [--steps 40] [--data runs/data]

Trains the quickstart's model and batches (gritkit.quickstart.QuickstartRecipe) for ``--steps``
optimiser steps in three set-ups, each in its own process tree: 1 process x 1 thread, 1 process x
2 threads, and 2 processes x 1 thread under torchrun (gloo; each process takes half of every global
batch, gradients averaged, cross-device negatives: the same step as one process, see
tests/parallel/test_distributed.py). Prints the median seconds per step after 5 warm-up steps and the
ratios. Run it on a quiet machine: the set-ups are timed one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gritkit.training.loop import step_seconds


def seconds_per_step(run_dir: Path, warmup: int = 5) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(step_seconds(r) for r in records[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default="runs/data", help="a `gritkit data build` directory")
    args = parser.parse_args()
    from gritkit.recipes.quickstart import recipe_config

    setups = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (processes, threads) in setups.items():
            run_dir = Path(tmp) / f"p{processes}t{threads}"
            config = recipe_config(args.data, run_dir, 0, max_steps=args.steps, progress_bar=False)
            path = Path(tmp) / f"p{processes}t{threads}.yaml"
            path.write_text(json.dumps(config.to_dict()))
            launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                         str(processes)] if processes > 1 else [sys.executable])
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            subprocess.run([*launcher, "-m", "gritkit.cli", "train", str(path)], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name] = seconds_per_step(run_dir)
            print(f"{name}: {times[name]:.3f} s/step")
    base = times["1 process x 2 threads"]
    print(f"2 threads vs 1: {times['1 process x 1 thread'] / base:.2f}x; "
          f"2 processes vs 2 threads: {base / times['2 processes x 1 thread']:.2f}x")


if __name__ == "__main__":
    main()
