"""Using both cores: one process with 2 threads against two processes with 1 thread each.

    python benchmarks/processes.py [--steps 40] [--data runs/data] [--json]
    python benchmarks/processes.py --smoke --json     # 3 steps of 8 queries and 8 chats, a small data build

Trains the quickstart's model and batches (gritkit.recipes.quickstart) on a ``gritkit data build``
(``--data``, built there when missing) for ``--steps`` optimiser steps in three set-ups, each in
its own process tree: 1 process x 1 thread, 1 process x 2 threads, and 2 processes x 1 thread
under torchrun (gloo; each process takes half of every global batch, gradients averaged,
cross-device negatives: the same step as one process, see tests/parallel/test_distributed.py).
Prints the median seconds per step after 5 warm-up steps (fewer when the run is shorter) and the
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, parse_args  # noqa: E402

WARMUP = 5
SMOKE_BATCHES = dict(embedding_batch_size=8, generative_batch_size=8, generative_micro_batch_size=8)
SETUPS = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}


def seconds_per_step(run_dir: Path) -> float:
    from gritkit.training.metrics import step_seconds

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(step_seconds(r) for r in records[min(WARMUP, len(records) - 1):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(steps=3, data=None))
    from gritkit.recipes.quickstart_steps import recipe_config

    data = data_dir(args)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (processes, threads) in SETUPS.items():
            run_dir = Path(tmp) / f"p{processes}t{threads}"
            config = recipe_config(data, run_dir, 0, max_steps=args.steps, progress_bar=False,
                                   **(SMOKE_BATCHES if args.smoke else {}))
            path = Path(tmp) / f"p{processes}t{threads}.yaml"
            path.write_text(json.dumps(config.to_dict()))
            launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                         str(processes)] if processes > 1 else [sys.executable])
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run([*launcher, "-m", "gritkit.cli", "train", str(path)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode:
                sys.exit(f"{name}: training ended with {done.returncode}:\n{done.stderr[-3000:]}")
            times[name] = seconds_per_step(run_dir)
            print(f"{name}: {times[name]:.3f} s/step")
    base = times["1 process x 2 threads"]
    threads_speedup, processes_speedup = times["1 process x 1 thread"] / base, base / times["2 processes x 1 thread"]
    print(f"2 threads vs 1: {threads_speedup:.2f}x; 2 processes vs 2 threads: {processes_speedup:.2f}x")
    if args.json:
        print(json.dumps({"steps": args.steps, "seconds_per_step": times, "two_threads_speedup": threads_speedup,
                          "two_processes_speedup": processes_speedup}))


if __name__ == "__main__":
    main()
