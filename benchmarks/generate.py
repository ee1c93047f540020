"""Generation throughput: ``GritLM.generate`` against transformers' own ``generate`` on the same ids.

    python benchmarks/generate.py [--model gritkit-smol] [--new-tokens 64] [--repeats 3] [--json]
    python benchmarks/generate.py --smoke --json     # gritkit-tiny, 4 tokens, batch of 2, 1 repeat

Prompts are chat requests for a summary of 70 words of stdlib docstrings (~100 prompt tokens). Every run
decodes exactly ``--new-tokens`` tokens per prompt (greedy, EOS suppressed), one prompt at a time
and as one left-padded batch of ``--batch`` prompts. Prints generated tokens/s for
  - gritkit:       ``GritLM.generate`` (chat template, tokenisation, padding, decoding included);
  - transformers:  the bare ``model.generate`` on the pre-tokenised ids (the floor);
and the ratios gritkit/transformers (the wrapper's overhead; 1.0 is none) and batched/single.
Medians of ``--repeats`` runs after one warm-up, the cases interleaved so drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import parse_args  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gritkit-smol", help="a model directory or shipped name")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", new_tokens=4, batch=2, repeats=1))

    from gritkit import GritLM
    from gritkit.model.tiny import sample_corpus

    model = GritLM.from_pretrained(args.model, dtype=torch.float32, device="cpu")
    tokenizer = model.tokenizer
    words = " ".join(sample_corpus()).split()
    docs = [" ".join(words[i * 70: (i + 1) * 70]) for i in range(args.batch)]
    prompts = [f"Summarise this documentation in one sentence.\n\n{doc}" for doc in docs]
    fixed = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

    def bare(batch: list[str]):
        sequences = [model.chat_input_ids(p) for p in batch]
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])

        def run():
            with torch.inference_mode():
                model.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad, **fixed)
        return run

    cases = {
        "gritkit, 1 prompt": (lambda: model.generate(prompts[0], **fixed), 1),
        "transformers, 1 prompt": (bare(prompts[:1]), 1),
        f"gritkit, batch {len(prompts)}": (lambda: model.generate(prompts, **fixed), len(prompts)),
        f"transformers, batch {len(prompts)}": (bare(prompts), len(prompts)),
    }
    for fn, _ in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (fn, _) in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {name: count * args.new_tokens / statistics.median(times[name]) for name, (_, count) in cases.items()}
    params = sum(p.numel() for p in model.model.parameters()) / 1e6
    prompt_tokens = statistics.median(len(model.chat_input_ids(p)) for p in prompts)
    print(f"{args.model}: {params:.1f}M parameters, float32, {torch.get_num_threads()} threads, "
          f"{args.new_tokens} new tokens, median prompt {prompt_tokens:.0f} tokens, median of {args.repeats}")
    for name, value in rate.items():
        print(f"  {name:26s} {value:8.1f} generated tokens/s")
    names = list(cases)
    wrapper_single, wrapper_batch = rate[names[0]] / rate[names[1]], rate[names[2]] / rate[names[3]]
    batch_speedup = rate[names[2]] / rate[names[0]]
    print(f"gritkit / transformers = {wrapper_single:.2f}x (1 prompt), {wrapper_batch:.2f}x (batch)")
    print(f"batch / single (gritkit) = {batch_speedup:.2f}x")
    if args.json:
        print(json.dumps({"model": args.model, "new_tokens": args.new_tokens, "batch": len(prompts),
                          "repeats": args.repeats, "tokens_per_s": rate, "wrapper_ratio_single": wrapper_single,
                          "wrapper_ratio_batch": wrapper_batch, "batch_speedup": batch_speedup}))


if __name__ == "__main__":
    main()
