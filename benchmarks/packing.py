"""Packing against padding in the training step: real tokens/s and the share of padding (medians).

    python benchmarks/packing.py [--models tiny,smol] [--distributions project,paper] [--repeats 5] [--json]
    python benchmarks/packing.py --smoke --json     # tiny only, 8-query batches, short paper lengths, 1 round

For each model and length distribution, the same unified step batches run five ways, each
measured in this run, forward and backward, gradients thrown away:

- embedding side alone and generative side alone, padded (today's steps) and packed;
- the unified step: padded two-pass, packed two-pass (``packing: true``), and single pass
  (``single_pass: true``: embedding and generative segments share rows, one forward and one
  backward for both losses).

Distributions: ``project`` draws the trainer's own batches from a ``gritkit data build``
directory (``--data``, built there when missing) with the model's recipe
(configs/gritkit-tiny.yaml, configs/gritkit-smol.yaml: batch sizes, length limits, the sampler's
per-dataset embedding batches); ``paper`` draws
synthetic token ids with lengths like the paper's (queries 16-256 tokens, passages and chats
64-2,048, log-uniform; answers 10-60% of a chat) in rows of 2,048. Models: ``tiny`` is the shipped
gritkit-tiny (2 layers, width 128), ``smol`` the imported SmolLM2-135M-Instruct base (30 layers,
width 576), both trained in full (no LoRA). Real tokens are the samples' own tokens, padding
excluded; padding share is the share of computed positions that are padding.

``--smoke``: the tiny model alone, on a small data build, the recipe's batches cut to 8 queries
and 8 chats, the paper's lengths to an eighth of theirs (2 queries and 2 chats, rows of 256), one
step batch and one round.

The last line with ``--json`` holds ``packed_speedup`` (packed two-pass over padded two-pass, the
project's data, tiny), ``single_pass_speedup`` (single pass over packed two-pass, same case) and
``single_pass_over_padded``, plus every case's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import REPO, data_dir, parse_args  # noqa: E402

RECIPES = {"tiny": "configs/gritkit-tiny.yaml", "smol": "configs/gritkit-smol.yaml"}
PAPER = {"query": (16, 256), "passage": (64, 2048), "chat": (64, 2048), "row": 2048}
SMOKE_PAPER = {"query": (2, 32), "passage": (8, 256), "chat": (8, 256), "row": 256}
SMOKE_BATCHES = ["embedding_batch_size=8", "generative_batch_size=8"]  # recipe overrides for --smoke


def load_model(name: str):
    from gritkit import GritLM

    if name == "tiny":
        grit = GritLM.from_pretrained("gritkit-tiny", dtype=torch.float32, device="cpu")
    else:
        from gritkit.weights.bases import base_model_dir

        grit = GritLM.from_pretrained(base_model_dir("smollm2-135m-instruct"), dtype=torch.float32, device="cpu")
    grit.model.train()
    return grit


def recipe(name: str, data: Path, overrides: list[str]):
    from gritkit.training.config import load_config

    files = {"embedding_data": sorted(str(p) for p in (data / "contrastive").glob("*.jsonl")),
             "generative_data": sorted(str(p) for p in (data / "generative").glob("*.jsonl"))}
    extra = [f"{k}=[{', '.join(v)}]" for k, v in files.items()]
    return load_config(REPO / RECIPES[name], extra + overrides + ["model=unused", "output_dir=unused"])


def project_batches(grit, config, steps: int) -> list[tuple[list, list, list]]:
    """(queries, documents, chats) of the trainer's first ``steps`` steps, tokenised as it does."""
    from gritkit.training.data import StepSampler, tokenize_generative_files
    from gritkit.parallel.distributed import Processes
    from gritkit.training.batches import embedding_items, load_data

    embedding, generative_files, _ = load_data(config)  # doc-cache data: the recipes have none
    generative = tokenize_generative_files(grit.tokenizer, generative_files, config.generative_max_length)
    emb_sampler = StepSampler([len(d) for d in embedding], config.embedding_batch_size, config.seed)
    gen_sampler = StepSampler([len(generative.items)], config.generative_batch_size, config.seed + 1)
    batches = []
    for step in range(steps):
        q, d = embedding_items(grit, config, emb_sampler, embedding, step, Processes())
        batches.append((q, d, [generative.items[i] for i in gen_sampler.batch(step)[1]]))
    return batches


def _length(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def paper_batches(grit, queries: int, chats: int, steps: int, limits: dict,
                  seed: int = 0) -> list[tuple[list, list, list]]:
    """Synthetic batches with the paper's length ``limits``: random ids, pool masks on the text part,
    loss masks on each chat's last 10-60% (its answer)."""
    rng = random.Random(seed)
    vocab = grit.model.config.get_text_config().vocab_size

    def ids(n):
        return [rng.randrange(4, vocab) for _ in range(n)]

    def embedding_item(low, high):
        n = _length(rng, low, high)
        return ids(n), [i >= min(8, n - 1) for i in range(n)]  # a short instruction is never pooled

    batches = []
    for _ in range(steps):
        q = [embedding_item(*limits["query"]) for _ in range(queries)]
        d = [embedding_item(*limits["passage"]) for _ in range(2 * queries)]
        c = []
        for _ in range(chats):
            n = _length(rng, *limits["chat"])
            answer = max(1, int(n * rng.uniform(0.1, 0.6)))
            c.append((ids(n), [False] * (n - answer) + [True] * answer))
        batches.append((q, d, c))
    return batches


def padding_shares(grit, batches, config, lengths: dict) -> dict:
    """Share of computed positions that are padding, per way of running the step."""
    from gritkit.training.packed_backward import row_groups
    from gritkit.model.packing import pack

    def padded(items, size):
        groups = [items[i: i + size] for i in range(0, len(items), size)] if size else [items]
        return sum(len(g) * max(len(x) for x, _ in g) for g in groups)

    def packed(items, capacity, rows):
        total = 0
        for group in row_groups(items, capacity, rows):
            batch = pack([items[i] for i in group], 0, capacity)
            total += batch.input_ids.numel()
        return total

    counts = {k: [0, 0] for k in ("embedding padded", "embedding packed", "generative padded", "generative packed",
                                   "two-pass padded", "two-pass packed", "single pass")}
    rows = config.generative_micro_batch_size
    for q, d, c in batches:
        real_e, real_g = sum(len(x) for x, _ in q + d), sum(len(x) for x, _ in c)
        e_pad, g_pad = padded(q, 0) + padded(d, 0), padded(c, rows)
        e_pack, g_pack = packed(q + d, lengths["embedding"], len(q + d)), packed(c, lengths["generative"], rows)
        both = packed(q + d + c, lengths["both"], rows if config.embedding_chunk_size else len(q + d + c))
        for key, real, computed in (("embedding padded", real_e, e_pad), ("embedding packed", real_e, e_pack),
                                    ("generative padded", real_g, g_pad), ("generative packed", real_g, g_pack),
                                    ("two-pass padded", real_e + real_g, e_pad + g_pad),
                                    ("two-pass packed", real_e + real_g, e_pack + g_pack),
                                    ("single pass", real_e + real_g, both)):
            counts[key][0] += real
            counts[key][1] += computed
    return {k: {"real_tokens": r, "padding_share": 1 - r / c} for k, (r, c) in counts.items()}


def step_functions(grit, batches, config, lengths: dict, bf16: bool) -> dict:
    from gritkit.parallel.distributed import Processes
    from gritkit.training.backward import StepSettings, embedding_backward, generative_backward
    from gritkit.training.packed_backward import generative_backward_packed, single_pass_backward

    settings = StepSettings.from_config(config, Processes(), bf16, grit.tokenizer.pad_token_id)

    def embedding(packed):
        for q, d, _ in batches:
            embedding_backward(grit, q, d, settings, pack_length=lengths["embedding"] if packed else 0)

    def generative(packed):
        for _, _, c in batches:
            if packed:
                generative_backward_packed(grit.model, c, settings, capacity=lengths["generative"])
            else:
                generative_backward(grit.model, c, settings)

    def single():
        for q, d, c in batches:
            single_pass_backward(grit, q, d, c, settings, capacity=lengths["both"])

    return {"embedding padded": lambda: embedding(False), "embedding packed": lambda: embedding(True),
            "generative padded": lambda: generative(False), "generative packed": lambda: generative(True),
            "two-pass padded": lambda: (embedding(False), generative(False)),
            "two-pass packed": lambda: (embedding(True), generative(True)),
            "single pass": single}


def median_seconds(grit, functions: dict, repeats: int) -> dict:
    """Median seconds of each function, run in rounds (each function once per round), so that a
    slow spell of the machine falls on all of them alike."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            grit.model.zero_grad(set_to_none=True)
    return {name: statistics.median(t) for name, t in times.items()}


def run_case(model_name: str, grit, distribution: str, args, bf16: bool) -> dict:
    steps = args.steps if model_name == "tiny" else args.smol_steps
    data = data_dir(args)
    if distribution == "project":
        # the padded steps ignore the packing flag
        config = recipe(model_name, data, ["packing=true"] + (SMOKE_BATCHES if args.smoke else []))
        batches = project_batches(grit, config, steps)
        lengths = {side: config.packed_row_length(side) for side in ("embedding", "generative", "both")}
    else:
        queries, chats = (2, 2) if args.smoke else (16, 8) if model_name == "tiny" else (4, 2)
        limits = SMOKE_PAPER if args.smoke else PAPER
        config = recipe(model_name, data, [f"embedding_batch_size={queries}", f"generative_batch_size={chats}",
                                           "generative_micro_batch_size=4", "embedding_chunk_size=0"])
        batches = paper_batches(grit, queries, chats, steps, limits)
        lengths = {side: limits["row"] for side in ("embedding", "generative", "both")}
    shares = padding_shares(grit, batches, config, lengths)
    functions = step_functions(grit, batches, config, lengths, bf16)
    repeats = args.repeats if model_name == "tiny" else args.smol_repeats
    functions["single pass"]()  # warm-up: first touch of memory, kernels' first calls
    grit.model.zero_grad(set_to_none=True)
    seconds = median_seconds(grit, functions, repeats)
    return {name: {**shares[name], "seconds": seconds[name], "tokens_per_s": shares[name]["real_tokens"] / seconds[name]}
            for name in functions}


def print_case(title: str, case: dict) -> None:
    print(f"\n{title}")
    print(f"{'step':<20}{'real tokens':>12}{'padding':>9}{'tokens/s':>10}  ratio")
    pairs = {"embedding packed": "embedding padded", "generative packed": "generative padded",
             "two-pass packed": "two-pass padded", "single pass": "two-pass packed"}
    for name, row in case.items():
        ratio = ""
        if name in pairs:
            ratio = f"{row['tokens_per_s'] / case[pairs[name]]['tokens_per_s']:.2f}x over {pairs[name]}"
        print(f"{name:<20}{row['real_tokens']:>12,}{row['padding_share']:>9.0%}{row['tokens_per_s']:>10,.0f}  {ratio}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smol")
    parser.add_argument("--distributions", default="project,paper")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--steps", type=int, default=2, help="step batches per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds for the tiny model")
    parser.add_argument("--smol-repeats", type=int, default=1, help="timed rounds for the SmolLM2-sized model")
    parser.add_argument("--smol-steps", type=int, default=1, help="step batches per measurement for it")
    parser.add_argument("--bf16", choices=("auto", "true", "false"), default="auto",
                        help="bf16 autocast as the trainer decides it (auto: where the CPU has bf16 kernels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(models="tiny", data=None, steps=1, repeats=1, threads=1))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = args.bf16 == "true" or (args.bf16 == "auto" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    print(f"packing benchmark: {args.threads} threads, bf16 autocast {bf16}, {args.steps} step batches per tiny "
          f"case ({args.repeats} rounds), {args.smol_steps} per smol case ({args.smol_repeats} rounds)")
    results = {}
    for model_name in args.models.split(","):
        grit = load_model(model_name)
        for distribution in args.distributions.split(","):
            key = f"{model_name}/{distribution}"
            results[key] = run_case(model_name, grit, distribution, args, bf16)
            print_case(key, results[key])
    summary = {"bf16": bf16, "cases": results}
    tiny = results.get("tiny/project")
    if tiny:
        speed = {k: v["tokens_per_s"] for k, v in tiny.items()}
        summary.update(packed_speedup=speed["two-pass packed"] / speed["two-pass padded"],
                       single_pass_speedup=speed["single pass"] / speed["two-pass packed"],
                       single_pass_over_padded=speed["single pass"] / speed["two-pass padded"])
        print(f"\npacked_speedup {summary['packed_speedup']:.2f}x, single_pass_speedup "
              f"{summary['single_pass_speedup']:.2f}x (over padded {summary['single_pass_over_padded']:.2f}x)")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
