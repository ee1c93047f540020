"""RAG with the embedding pass's key/value cache vs. the same RAG without it (GritLM Table, CPU).

    python benchmarks/rag_cache.py            # 4,000, 1,000 and 250 tokens (~20 minutes on 2 busy cores)
    python benchmarks/rag_cache.py --quick    # 1,000 and 250 tokens, fewer repeats (~5 minutes)
    python benchmarks/rag_cache.py --json     # one JSON object: {"A": {mode: {...}}, "B": {...}, ...}
    python benchmarks/rag_cache.py --lengths 4000   # only the given lengths
    python benchmarks/rag_cache.py --model gritkit-smol --lengths 2000   # a trained model instead
    python benchmarks/rag_cache.py --smoke --json   # 64 tokens, a random Llama of width 64, 1 repeat

Sample A is a 1-token query with an N-token document, sample B the reverse; every mode answers
with exactly 16 new tokens (greedy, EOS suppressed). Each mode is timed end to end through
``RagPipeline.ask`` (query embedding for retrieval, search, cache load from the on-disk float16
doc store, generation), median of several runs after one warm-up. A cache mode's speed-up is
over its uncached twin (query caching and query-doc caching over RAG query-first, doc caching and
doc-query caching over RAG doc-first). Its ideal speed-up is the twin's time over the time of the
16 decode steps alone over a cache of the same length: what caching could reach if the query
embedding, the short continuation and the cache load were free.

The model is a random Llama (hidden 512, 4 layers, 8 heads / 4 KV heads, vocabulary 8,192:
~20M parameters, 80 MB in float32), large enough that a 4,000-token prefill dominates the
16 decode steps. Random weights do not change the cost of a forward pass. ``--model`` times a
trained model (a directory or a shipped name) instead, with its own tokenizer and prompt format.
Questions are embedded for retrieval without an instruction.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import SMOKE_MODEL, SMOKE_VOCAB, parse_args  # noqa: E402
from gritkit.rag import CACHE_MODES, MODES, UNCACHED_TWIN, RagIndex, RagPipeline  # noqa: E402
from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer  # noqa: E402

NEW_TOKENS = 16
# The paper's CPU seconds (GritLM-7B, Intel Xeon 8481C), samples A and B at 4,000 tokens.
PAPER_CPU = {"no_rag": (4.30, 13.69), "rag_query_first": (11.64, 14.88), "query_cache": (18.30, 6.87),
             "query_doc_cache": (5.12, 6.62), "rag_doc_first": (14.18, 15.33), "doc_cache": (5.25, 23.23),
             "doc_query_cache": (5.23, 6.41)}
MODEL = dict(hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=4, max_positions=9000)
VOCAB = 8192


def text_of_tokens(tokenizer, source: str, n: int) -> str:
    """A prefix of ``source`` that tokenises (alone, no BOS) to at most ``n`` tokens, as close as possible."""
    ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        raise ValueError(f"source text has only {len(ids)} tokens, need {n}")
    text = tokenizer.decode(ids[:n])
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > n:
        text = text[:-1]
    return text


def one_token_word(tokenizer) -> str:
    for word in ("json", "socket", "file", "time", "data", "the"):
        if len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1:
            return word
    raise RuntimeError("no one-token word found in the tokenizer")


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_only_seconds(pipeline: RagPipeline, prepared, repeats: int) -> float:
    """Time of the 16 one-token forward steps over the mode's cache, nothing else."""
    model = pipeline.model.model
    length = prepared.cached_tokens
    ids = torch.tensor([prepared.input_ids[: length + 1]])
    caches = [copy.deepcopy(prepared.cache) for _ in range(repeats + 1)]

    def run():
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=caches.pop(),
                           max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                           pad_token_id=pipeline.model.tokenizer.pad_token_id)
    return median_seconds(run, repeats)


def measure(grit, tokenizer, long_text: str, short_text: str, n: int, repeats: int, workdir: Path) -> dict:
    """Seconds, speed-ups and ideal speed-ups of every mode for samples A and B at length ``n``."""
    results = {}
    doc_long = text_of_tokens(tokenizer, long_text, n)
    for sample, (query, doc) in {"A": (short_text, doc_long), "B": (doc_long, short_text)}.items():
        index = RagIndex.build(grit, [doc], cache_docs=True, cache_dir=workdir / f"cache-{sample}-{n}",
                               cache_dtype="float16", max_length=n + 16, query_instruction="")
        index.save(workdir / f"index-{sample}-{n}")
        pipeline = RagPipeline(grit, RagIndex.load(workdir / f"index-{sample}-{n}"))
        rows = {}
        for mode in MODES:
            def run(mode=mode):
                result = pipeline.ask(query, mode=mode, top_k=1, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
                assert len(result.answer_token_ids) == NEW_TOKENS
            rows[mode] = {"seconds": median_seconds(run, repeats)}
        for mode in CACHE_MODES:
            twin = rows[UNCACHED_TWIN[mode]]["seconds"]
            prepared = pipeline.prepare(query, mode, top_k=1)
            ideal = decode_only_seconds(pipeline, prepared, repeats)
            rows[mode].update(speedup=twin / rows[mode]["seconds"], ideal_speedup=twin / ideal,
                              cached_tokens=prepared.cached_tokens)
        rows["_bytes_per_token_float16"] = pipeline.index.doc_caches.bytes_per_token
        results[sample] = rows
    return results


def print_table(results: dict, n: int) -> None:
    print(f"\n{n:,} tokens: seconds per mode (median), speed-up over the uncached twin, ideal speed-up")
    print(f"{'mode':<17}{'A s':>8}{'A x':>7}{'A ideal':>9}{'B s':>8}{'B x':>7}{'B ideal':>9}"
          f"   {'paper CPU A s':>13}{'B s':>7}")
    for mode in MODES:
        cells = []
        for sample in "AB":
            row = results[sample][mode]
            x = f"{row['speedup']:.2f}" if "speedup" in row else ""
            ideal = f"{row['ideal_speedup']:.2f}" if "ideal_speedup" in row else ""
            cells.append(f"{row['seconds']:>8.3f}{x:>7}{ideal:>9}")
        paper = PAPER_CPU[mode]
        print(f"{mode:<17}{''.join(cells)}   {paper[0]:>13.2f}{paper[1]:>7.2f}")
    print("paper (4,000 tokens): doc caching 14.18 -> 5.25 s = 2.70x (A); query caching 14.88 -> 6.87 s = 2.17x (B)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 250 tokens only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per mode after the warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default=None, help="comma-separated document/query lengths in tokens (overrides --quick)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of tables")
    parser.add_argument("--model", default=None, help="a model directory or shipped name (default: the random Llama)")
    args = parse_args(parser, argv, smoke=dict(lengths="64", repeats=1, threads=1))
    torch.set_num_threads(args.threads)
    lengths = (1000, 250) if args.quick else (4000, 1000, 250)
    if args.lengths:
        lengths = tuple(int(n) for n in args.lengths.split(","))
    repeats = args.repeats or (2 if args.quick else 3)

    corpus = sample_corpus()
    if args.model:
        from gritkit import GritLM

        grit = GritLM.from_pretrained(args.model, dtype=torch.float32, device="cpu")
        tokenizer = grit.tokenizer
    else:
        tokenizer = train_tokenizer(corpus, vocab_size=SMOKE_VOCAB if args.smoke else VOCAB)
        grit = build_tiny_model("llama", tokenizer, **(SMOKE_MODEL if args.smoke else MODEL))
    params = sum(p.numel() for p in grit.model.parameters())
    long_text = " ".join(corpus)
    short_text = one_token_word(tokenizer)
    by_length = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            by_length[n] = measure(grit, tokenizer, long_text, short_text, n, repeats, Path(tmp))
            if not args.json:
                print_table(by_length[n], n)
                print(f"doc cache storage: {by_length[n]['A']['_bytes_per_token_float16']:,} bytes/token in float16 "
                      f"({2 * by_length[n]['A']['_bytes_per_token_float16']:,} in float32)", flush=True)
    sizes = SMOKE_MODEL if args.smoke else MODEL
    described = args.model or f"random Llama, hidden {sizes['hidden_size']}, {sizes['num_layers']} layers"
    setup = {"model": f"{described}, {params / 1e6:.1f}M parameters, float32", "threads": args.threads, "repeats": repeats,
             "new_tokens": NEW_TOKENS, "doc_cache_dtype": "float16"}
    bytes_per_token = by_length[lengths[0]]["A"].pop("_bytes_per_token_float16")
    for rows in by_length.values():
        for sample in "AB":
            rows[sample].pop("_bytes_per_token_float16", None)
    if args.json:
        main_length = by_length[lengths[0]]
        print(json.dumps({"A": main_length["A"], "B": main_length["B"], "tokens": lengths[0],
                          "by_length": {str(n): r for n, r in by_length.items()},
                          "bytes_per_token": {"float16": bytes_per_token, "float32": 2 * bytes_per_token},
                          "setup": setup}))
    else:
        print(f"\nsetup: {setup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
