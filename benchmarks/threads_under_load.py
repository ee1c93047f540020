"""Why one competing process slows a 2-thread training step far more than 2x, and what helps.

    python benchmarks/threads_under_load.py [--steps 12] [--data runs/data] [--json]
    python benchmarks/threads_under_load.py --smoke --json   # 1 small step, two settings, a small data build

Runs the quickstart's unified training step (2-layer Llama, width 128, vocabulary 8,192; 48
queries + 48 x 2 documents + 32 chats per step, their lengths capped at 32 / 64 / 96 tokens; texts,
chats and tokenizer of a ``gritkit data build``, ``--data``, built there when missing) in a fresh
process per setting, once on a quiet machine and once beside one CPU-bound competitor (a
single-threaded Python loop, the kind of "other job" a shared machine has):

- 2 threads (torch's default on 2 cores): OpenMP meets at a barrier after every parallel
  operator, so whenever the competitor holds a core, the step waits a scheduler time slice for
  the descheduled thread, thousands of times per step;
- 2 threads with ``OMP_WAIT_POLICY=PASSIVE``: threads sleep at the barrier instead of spinning,
  so they at least leave the CPU to the competitor;
- 1 thread: no barrier to wait at;
- ``gritkit.parallel.threads.choose_threads()``: what the trainer picks by itself (it counts busy cores).

Prints the median seconds per step of each setting and its slowdown under load against the
same setting quiet, and against the first setting quiet (the baseline: 2 threads). Nothing else
should run meanwhile. ``--smoke`` runs two of the settings, 1 thread (its baseline) and
``choose_threads()``, in this process, on steps of 4 queries and 4 chats without warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, parse_args  # noqa: E402

SETTINGS = {  # name -> (threads, extra environment); threads 0 = what choose_threads() says
    "2 threads": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "1 thread": (1, {}),
    "choose_threads()": (0, {}),
}
SMOKE_SETTINGS = ("1 thread", "choose_threads()")  # 2 threads beside the competitor crawl: no smoke
BATCH, SMOKE_BATCH = (48, 32), (4, 4)  # queries (each with 2 documents) and chats per step
WARMUP, SMOKE_WARMUP = 2, 0  # untimed steps first
COMPETITOR = "x = 0\nwhile True:\n    x += 1\n"


def worker(threads: int, steps: int, data: str, smoke: bool) -> dict:
    """Seconds of ``steps`` unified steps after the warm-up steps, and the threads they ran on."""
    import random

    import torch

    from gritkit.parallel.threads import choose_threads

    chosen = choose_threads(threads)
    torch.set_num_threads(chosen)
    from transformers import AutoTokenizer

    from gritkit.training.data import read_generative_file, tokenize_generative
    from gritkit.parallel.distributed import Processes
    from gritkit.model.config import GritConfig
    from gritkit.model.tiny import build_tiny_model
    from gritkit.training.backward import StepSettings, embedding_backward, generative_backward

    batch = SMOKE_BATCH if smoke else BATCH
    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(data, "tokenizer"))
    chats = [e for name in sorted(os.listdir(os.path.join(data, "generative")))
             for e in read_generative_file(os.path.join(data, "generative", name))]
    texts = [m["content"] for c in rng.sample(chats, 400) for m in c.messages]
    grit = build_tiny_model("llama", tokenizer, config=GritConfig(), zero_residual=True, hidden_size=128,
                            num_layers=2, num_heads=4, num_kv_heads=4, tie_word_embeddings=False)
    grit.model.train()
    optimizer = torch.optim.AdamW(grit.model.parameters(), lr=1e-3)
    items = [item[:2] for item in (tokenize_generative(tokenizer, c, 96) for c in rng.sample(chats, 10 * batch[1]))
             if item[2] != "dropped"]
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

    def step() -> None:
        queries = rng.sample(texts, batch[0])
        docs = rng.sample(texts, 2 * batch[0])
        q = grit.tokenize_for_embedding(queries, ["Retrieve the matching text"] * len(queries), 32)
        d = grit.tokenize_for_embedding(docs, [""] * len(docs), 64)
        settings = StepSettings(processes=Processes(), bf16=bf16, pad_id=tokenizer.pad_token_id, temperature=0.05,
                                group_size=2, micro_batch_size=32, aggregation="mixed")
        embedding_backward(grit, q, d, settings)
        generative_backward(grit.model, rng.sample(items, batch[1]), settings, weight=1.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(SMOKE_WARMUP if smoke else WARMUP):
        step()
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    return {"threads": chosen, "seconds": seconds}


def measure(name: str, steps: int, data: str, smoke: bool) -> dict:
    """One setting's run, in a fresh process so that its threads and OpenMP environment are its own;
    a smoke run, which measures nothing, runs it in this one."""
    threads, extra = SETTINGS[name]
    if smoke:
        import torch

        before = torch.get_num_threads()
        try:
            return worker(threads, steps, data, smoke)
        finally:
            torch.set_num_threads(before)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(extra)
    done = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--steps", str(steps), "--data", data],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{name}: the worker ended with {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, smoke=dict(steps=1, data=None))
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.data, smoke=False)))
        return
    data = str(data_dir(args))
    settings = SMOKE_SETTINGS if args.smoke else tuple(SETTINGS)
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} before the quiet runs")
    results = {name: {} for name in settings}
    for loaded in (False, True):
        label = "beside a competitor" if loaded else "quiet"
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if loaded else None
        try:
            if competitor:
                time.sleep(2)  # let it take its core
            for name in settings:
                run = measure(name, args.steps, data, args.smoke)
                results[name][label] = {"threads": run["threads"], "seconds": statistics.median(run["seconds"])}
                print(f"{name:<36} {label:<20} threads {run['threads']}: "
                      f"median {results[name][label]['seconds']:.3f} s/step")
        finally:
            if competitor:
                competitor.kill()
                competitor.wait()
    baseline = settings[0]
    base = results[baseline]["quiet"]["seconds"]
    slowdown, against_base = {}, {}
    print(f"\nslowdown beside one competitor (median s/step loaded / the same setting quiet; / quiet {baseline}):")
    for name in settings:
        loaded = results[name]["beside a competitor"]["seconds"]
        slowdown[name], against_base[name] = loaded / results[name]["quiet"]["seconds"], loaded / base
        print(f"{name:<36} {slowdown[name]:5.2f}x   {against_base[name]:5.2f}x")
    if args.json:
        print(json.dumps({"steps": args.steps, "cores": os.cpu_count(), "seconds_per_step": results,
                          "slowdown": slowdown, "baseline": baseline, "slowdown_against_quiet_baseline": against_base}))


if __name__ == "__main__":
    main()
