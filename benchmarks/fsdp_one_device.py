"""FSDP2 on one device: the trainer's sharded path against its plain path, and a resume in between.

    python benchmarks/fsdp_one_device.py [--bf16] [--json]
    python benchmarks/fsdp_one_device.py --smoke --json     # 8 steps, on the CPU even beside a GPU

A machine with one GPU cannot run two NCCL ranks, so this runs the sharded path (fully_shard,
DTensor gradients, the full-state save, per-rank optimiser state) in a one-rank process group:
NCCL on a GPU, gloo on the CPU. Three trainings of configs/tiny.yaml, ``--steps`` steps each
(16), in fresh processes of one thread each: plain; sharded; sharded, killed three steps after its
mid-run checkpoint and resumed from it. The first three run side by side, then the resume. It
prints the largest relative loss difference of each sharded run against the plain one and the
largest difference of the final weights. Measured on the CPU in float32: exactly 0 for both.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import REPO, parse_args, scratch_dir  # noqa: E402

KILL_AFTER_CHECKPOINT = 3  # steps after the mid-run checkpoint, so the resume has work to redo


def worker(how: str, out: str, steps: int, bf16: bool) -> None:
    import torch
    import torch.distributed as dist

    import gritkit.parallel.distributed
    import gritkit.training.loop
    from gritkit.training.config import load_config

    every = steps // 2
    args = [f"max_steps={steps}", f"save_every={every}", "progress_bar=false", f"output_dir={out}",
            f"bf16={'true' if bf16 else 'false'}"]
    if how != "plain":
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)
        # one rank would normally skip sharding; count an initialised group as distributed instead
        gritkit.parallel.distributed.Processes.distributed = property(lambda self: dist.is_initialized())
        args.append("parallel=fsdp")
    callbacks = []
    if how == "killed":
        class DieAfterCheckpoint(gritkit.training.loop.Callback):
            def on_step(self, record):
                if record["step"] == every + KILL_AFTER_CHECKPOINT:
                    os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(DieAfterCheckpoint())
    if how == "resumed":
        args.append("resume=true")
    gritkit.training.loop.train(load_config(REPO / "configs/tiny.yaml", args), callbacks=callbacks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_workers(runs: list[tuple[str, str]], root: Path, args) -> None:
    """Each (how, output directory) in a fresh process, all at once; each must end as it should."""
    started = []
    for how, out in runs:
        # one thread each, so that the runs side by side compute alike; a port per process group
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        if args.smoke:
            env["CUDA_VISIBLE_DEVICES"] = ""
        command = [sys.executable, __file__, "--worker", how, str(root / out), "--steps", str(args.steps)]
        log = open(root / f"{how}.log", "w")
        started.append((how, log, subprocess.Popen(command + (["--bf16"] if args.bf16 else []), cwd=REPO, env=env,
                                                   stdout=log, stderr=subprocess.STDOUT)))
    for how, log, process in started:
        code = process.wait()
        log.close()
        expected = -signal.SIGKILL if how == "killed" else 0
        if code != expected:
            sys.exit(f"{how} run ended with {code}, expected {expected}:\n{(root / f'{how}.log').read_text()[-3000:]}")


def losses(run: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_rep"], r["loss_gen"]) for r in records]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="training steps of each run (at least 8)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default: float32, for exact comparison)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--worker", nargs=2, metavar=("HOW", "OUT"), help=argparse.SUPPRESS)
    args = parse_args(parser, argv, smoke=dict(steps=8))
    if args.worker:
        return worker(*args.worker, args.steps, args.bf16)
    if args.steps // 2 + KILL_AFTER_CHECKPOINT >= args.steps:
        parser.error("--steps must be at least 8: the killed run dies 3 steps after its mid-run checkpoint")

    import torch
    from safetensors.torch import load_file

    root = scratch_dir("fsdp-one-device-")
    run_workers([("plain", "plain"), ("sharded", "sharded"), ("killed", "resumed")], root, args)
    run_workers([("resumed", "resumed")], root, args)
    plain = losses(root / "plain")
    weights = load_file(root / "plain" / "final" / "model.safetensors")
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    result = {"steps": args.steps, "bf16": args.bf16, "device": device}
    for name in ("sharded", "resumed"):
        got = losses(root / name)
        assert [s for s, *_ in got] == [s for s, *_ in plain], f"{name}: steps differ"
        loss_diff = max(abs(b - a) / abs(a) for p, g in zip(plain, got) for a, b in zip(p[1:], g[1:]))
        other = load_file(root / name / "final" / "model.safetensors")
        weight_diff = max(float((other[k].float() - w.float()).abs().max()) for k, w in weights.items())
        result[name] = {"max_relative_loss_difference": loss_diff, "max_final_weight_difference": weight_diff}
        print(f"{name:8s} vs plain over {len(got)} steps: max relative loss difference {loss_diff:.2e}, "
              f"max final-weight difference {weight_diff:.2e}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
