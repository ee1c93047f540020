"""FSDP2 on one device: the trainer's sharded path against its plain path, and a resume in between.

    python benchmarks/fsdp_one_device.py [--bf16]

A machine with one GPU cannot run two NCCL ranks, so this runs the sharded path (fully_shard,
DTensor gradients, the full-state save, per-rank optimiser state) in a one-rank process group:
NCCL on a GPU, gloo on the CPU. Three trainings of configs/tiny.yaml, 16 steps each, in fresh
processes: plain; sharded; sharded, killed at step 11 and resumed from its step-8 checkpoint. It
prints the largest relative loss difference of each sharded run against the plain one and the
largest difference of the final weights. Measured on the CPU in float32: exactly 0 for both.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILL_AT = 11  # three steps after the step-8 checkpoint, so the resume has work to redo


def worker(how: str, out: str, extra: list[str]) -> None:
    import torch
    import torch.distributed as dist

    import gritkit.parallel.distributed
    import gritkit.training.loop
    from gritkit.training.config import load_config

    args = ["max_steps=16", "save_every=8", "progress_bar=false", f"output_dir={out}", *extra]
    if how != "plain":
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)
        # one rank would normally skip sharding; count an initialised group as distributed instead
        gritkit.parallel.distributed.Processes.distributed = property(lambda self: dist.is_initialized())
        args.append("parallel=fsdp")
    callbacks = []
    if how == "killed":
        class DieAtKillStep(gritkit.training.loop.Callback):
            def on_step(self, record):
                if record["step"] == KILL_AT:
                    os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(DieAtKillStep())
    if how == "resumed":
        args.append("resume=true")
    gritkit.training.loop.train(load_config(REPO / "configs/tiny.yaml", args), callbacks=callbacks)


def losses(run: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_rep"], r["loss_gen"]) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default: float32, for exact comparison)")
    parser.add_argument("--worker", nargs=2, metavar=("HOW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    extra = [f"bf16={'true' if args.bf16 else 'false'}"]
    if args.worker:
        return worker(*args.worker, extra)

    from safetensors.torch import load_file

    root = Path(tempfile.mkdtemp(prefix="fsdp-one-device-"))
    for how, out in [("plain", "plain"), ("sharded", "sharded"), ("killed", "resumed"), ("resumed", "resumed")]:
        result = subprocess.run([sys.executable, __file__, "--worker", how, str(root / out), *sys.argv[1:]],
                                cwd=REPO, capture_output=True, text=True)
        expected = -signal.SIGKILL if how == "killed" else 0
        if result.returncode != expected:
            sys.exit(f"{how} run ended with {result.returncode}, expected {expected}:\n{result.stderr[-3000:]}")
    plain = losses(root / "plain")
    weights = load_file(root / "plain" / "final" / "model.safetensors")
    for name in ("sharded", "resumed"):
        got = losses(root / name)
        assert [s for s, *_ in got] == [s for s, *_ in plain], f"{name}: steps differ"
        loss_diff = max(abs(b - a) / abs(a) for p, g in zip(plain, got) for a, b in zip(p[1:], g[1:]))
        other = load_file(root / name / "final" / "model.safetensors")
        weight_diff = max(float((other[k].float() - w.float()).abs().max()) for k, w in weights.items())
        print(f"{name:8s} vs plain over {len(got)} steps: max relative loss difference {loss_diff:.2e}, "
              f"max final-weight difference {weight_diff:.2e}")
    print(f"runs in {root}")


if __name__ == "__main__":
    main()
