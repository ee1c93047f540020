"""What two levers of the compiled decode step give: gritkit's greedy loop and grouped attention.

    python benchmarks/decode_levers.py --model gritkit-smol [--tokens 32] [--context 800] [--json]
    python benchmarks/decode_levers.py --smoke --json     # gritkit-tiny, 4 tokens, 1 repeat

One greedy answer of ``--tokens`` tokens after a cached prefix of ``--context`` tokens (a RAG doc
cache: the keys/values of an embedding pass over text cut from the GPL, the question after it), on
a model loaded with ``compile=True``, three ways:

- ``loop``: gritkit's own greedy loop around the compiled step, grouped attention (the default);
- ``generate``: the same compiled step inside transformers' ``generate`` (its per-step logits
  processors, stopping criteria and growing ids/masks), reached by passing it a no-op argument;
- ``sdpa``: the own loop on a second copy of the model switched back to transformers' ``sdpa``
  attention, which copies every shared key/value head per query head at each compiled step.

Prints tokens/s of each (medians of ``--repeats`` after one untimed call that compiles) and the
ratios loop/generate and loop/sdpa, and whether all three chose the same tokens. The static cache
is the smallest of ``CACHE_SIZES`` holding context, question and answer (1,024 positions by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import parse_args  # noqa: E402
from gritkit import GritLM  # noqa: E402
from gritkit.rag.kv import concatenate_segments, embed_with_cache  # noqa: E402

QUESTION = "What does this license let me do?"


def context_text(grit: GritLM, tokens: int) -> str:
    license_file = Path("/usr/share/common-licenses/GPL-3")
    text = license_file.read_text() if license_file.is_file() else "Free software is a matter of liberty. " * 400
    ids = grit.tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    return grit.tokenizer.decode(ids)


def timed_answers(grit: GritLM, context: str, tokens: int, repeats: int, **extra) -> tuple[float, list[int]]:
    """Median seconds of one greedy answer after ``context``'s doc cache, and its tokens."""
    _, segments = embed_with_cache(grit, [context])
    tail = grit.tokenizer(f"\n<|user|>\n{QUESTION}\n<|assistant|>\n", add_special_tokens=False)["input_ids"]
    seconds = []
    for _ in range(repeats + 1):  # the first call compiles
        cache, cached_ids = concatenate_segments(grit.model, segments)
        input_ids = torch.tensor([cached_ids + tail])
        start = time.perf_counter()
        output = grit.generate_ids(input_ids, torch.ones_like(input_ids), tokens, cache=cache,
                                   min_new_tokens=tokens, **extra)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:]), output[0, input_ids.shape[1]:].tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gritkit-smol", help="a model directory or shipped name")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per answer")
    parser.add_argument("--context", type=int, default=800, help="tokens of the cached document")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parse_args(parser, argv, smoke=dict(model="gritkit-tiny", tokens=4, context=40, repeats=1, threads=1))
    torch.set_num_threads(args.threads)

    figures = {}
    grit = GritLM.from_pretrained(args.model, dtype=torch.float32, compile=True)
    context = context_text(grit, args.context)
    figures["loop"] = timed_answers(grit, context, args.tokens, args.repeats)
    # return_dict_in_generate=False changes nothing but is not plain greedy: transformers' generate decodes
    figures["generate"] = timed_answers(grit, context, args.tokens, args.repeats, return_dict_in_generate=False)
    copy = GritLM.from_pretrained(args.model, dtype=torch.float32, compile=True)
    copy.model.set_attn_implementation("sdpa")
    figures["sdpa"] = timed_answers(copy, context, args.tokens, args.repeats)

    rates = {name: args.tokens / seconds for name, (seconds, _) in figures.items()}
    result = {"model": args.model, "tokens": args.tokens, "context": args.context, "repeats": args.repeats,
              "tokens_per_s": rates, "same_tokens": len({tuple(t) for _, t in figures.values()}) == 1,
              "loop_over_generate": rates["loop"] / rates["generate"], "grouped_over_sdpa": rates["loop"] / rates["sdpa"]}
    for name, rate in rates.items():
        print(f"{name:>9}: {rate:6.1f} tok/s")
    print(f"own loop / generate {result['loop_over_generate']:.2f}x, grouped / sdpa attention "
          f"{result['grouped_over_sdpa']:.2f}x; same tokens: {result['same_tokens']}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
