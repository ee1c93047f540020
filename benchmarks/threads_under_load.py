"""Why one competing process slows a 2-thread training step far more than 2x, and what helps.

    python benchmarks/threads_under_load.py [--steps 12] [--data runs/data]

Runs the quickstart's unified training step (2-layer Llama, width 128, vocabulary 8,192; 48
queries + 48 x 2 documents + 32 chats per step, their lengths capped at 32 / 64 / 96 tokens) in a
fresh process per setting, once on a quiet machine and once beside one CPU-bound competitor (a
single-threaded Python loop, the kind of "other job" a shared machine has):

- 2 threads (torch's default on 2 cores): OpenMP meets at a barrier after every parallel
  operator, so whenever the competitor holds a core, the step waits a scheduler time slice for
  the descheduled thread, thousands of times per step;
- 2 threads with ``OMP_WAIT_POLICY=PASSIVE``: threads sleep at the barrier instead of spinning,
  so they at least leave the CPU to the competitor;
- 1 thread: no barrier to wait at;
- ``gritkit.parallel.threads.choose_threads()``: what the trainer picks by itself (it counts busy cores).

Prints the median seconds per step of each setting and its slowdown under load against the
same setting quiet, and against the quiet 2-thread step. Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {  # name -> (threads, extra environment); threads 0 = what choose_threads() says
    "2 threads": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "1 thread": (1, {}),
    "choose_threads()": (0, {}),
}
COMPETITOR = "x = 0\nwhile True:\n    x += 1\n"


def worker(threads: int, steps: int, data: str) -> None:
    """Time ``steps`` unified steps after two warm-up steps; print one JSON line."""
    import random

    import torch

    from gritkit.parallel.threads import choose_threads

    chosen = choose_threads(threads)
    torch.set_num_threads(chosen)
    from gritkit.training.data import GenerativeExample, read_generative_file, tokenize_generative
    from gritkit.parallel.distributed import Processes
    from gritkit.model.config import GritConfig
    from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer
    from gritkit.training.steps import embedding_backward, generative_backward

    rng = random.Random(0)
    if os.path.isdir(os.path.join(data, "tokenizer")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.path.join(data, "tokenizer"))
        chats = [e for name in sorted(os.listdir(os.path.join(data, "generative")))
                 for e in read_generative_file(os.path.join(data, "generative", name))]
        texts = [m["content"] for c in rng.sample(chats, 400) for m in c.messages]
    else:  # no data build: stdlib docstrings stand in for the texts
        texts = sample_corpus()
        tokenizer = train_tokenizer(texts, vocab_size=8192)
        chats = [GenerativeExample(messages=({"role": "user", "content": t},
                                             {"role": "assistant", "content": u}))
                 for t, u in zip(texts[::2], texts[1::2])]
    grit = build_tiny_model("llama", tokenizer, config=GritConfig(), zero_residual=True, hidden_size=128,
                            num_layers=2, num_heads=4, num_kv_heads=4, tie_word_embeddings=False)
    grit.model.train()
    optimizer = torch.optim.AdamW(grit.model.parameters(), lr=1e-3)
    items = [item[:2] for item in (tokenize_generative(tokenizer, c, 96) for c in rng.sample(chats, 320))
             if item[2] != "dropped"]
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

    def step() -> None:
        queries = rng.sample(texts, 48)
        docs = rng.sample(texts, 96)
        q = grit.tokenize_for_embedding(queries, ["Retrieve the matching text"] * 48, 32)
        d = grit.tokenize_for_embedding(docs, [""] * 96, 64)
        embedding_backward(grit, q, d, temperature=0.05, group_size=2, chunk_size=0, weight=1.0,
                           processes=Processes(), bf16=bf16)
        generative_backward(grit.model, rng.sample(items, 32), pad_id=tokenizer.pad_token_id, micro_batch_size=32,
                            aggregation="mixed", weight=1.5, processes=Processes(), bf16=bf16)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    print(json.dumps({"threads": chosen, "seconds": seconds}))


def measure(name: str, steps: int, data: str) -> dict:
    threads, extra = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(extra)
    done = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--steps", str(steps), "--data", data],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--data", default="runs/data", help="a `gritkit data build` directory (optional)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.data)
        return
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} before the quiet runs")
    results = {}
    for loaded in (False, True):
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if loaded else None
        try:
            if competitor:
                time.sleep(2)  # let it take its core
            for name in SETTINGS:
                run = measure(name, args.steps, args.data)
                results[(name, loaded)] = run
                label = "beside a competitor" if loaded else "quiet"
                print(f"{name:<36} {label:<20} threads {run['threads']}: "
                      f"median {statistics.median(run['seconds']):.3f} s/step")
        finally:
            if competitor:
                competitor.kill()
                competitor.wait()
    base = statistics.median(results[("2 threads", False)]["seconds"])
    print("\nslowdown beside one competitor (median s/step loaded / the same setting quiet; / quiet 2 threads):")
    for name in SETTINGS:
        quiet = statistics.median(results[(name, False)]["seconds"])
        loaded = statistics.median(results[(name, True)]["seconds"])
        print(f"{name:<36} {loaded / quiet:5.2f}x   {loaded / base:5.2f}x")


if __name__ == "__main__":
    main()
