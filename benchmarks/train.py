"""Trainer overhead and GradCache cost, as ratios measured in one run (medians).

    python benchmarks/train.py [--repeats 5] [--hidden 256] [--layers 4] [--length 128] [--data runs/data] [--json]
    python benchmarks/train.py --smoke --json     # width 64, 2 layers, 1 repeat, a small data build

1. Step throughput: tokens/s of a gritkit unified step (16 queries, 32 documents and 16 chats;
   tokenisation, collation, contrastive and LM losses, accumulation) against the floor of a bare
   forward+backward of the same model on the same, already collated tokens. Target >= 0.9x.
2. GradCache: an embedding batch of 16x the chunk size run in chunks, against one chunk (peak
   memory; target <= 1.2x) and against the same batch unchunked (time; target <= 1.5x). Each
   case runs in its own process so that peak memory (CUDA allocator, or the process's peak
   resident set on CPU) is its own.
3. LM loss on trained positions only: the generative backward of the quickstart's model and
   batches (8 batches of 32 real chats of at most 96 tokens from the ``gritkit data build`` in
   ``--data``, built there when missing; vocabulary 8192) with the LM head applied only where an
   answer token is trained, against full (batch x tokens x vocabulary) logits. Same loss and
   gradients (tests/training/test_losses.py); the ratio is the time saved.

``--smoke`` shrinks all three (4 queries, 8 documents and 4 chats; 4 chunks; 1 batch of 4 chats) and
runs the GradCache cases in this process: it measures nothing a process of its own would keep apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import data_dir, parse_args  # noqa: E402

STEP_BATCH, SMOKE_STEP_BATCH = 16, 4  # queries (each with 2 documents) and chats of the unified step
GRADCACHE_CHUNKS, SMOKE_GRADCACHE_CHUNKS = 16, 4  # chunks of queries in the GradCache batch
LM_BATCHES, SMOKE_LM_BATCHES = (8, 32), (1, 4)  # batches of chats, chats per batch


def build(args):
    from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer

    corpus = sample_corpus()
    tokenizer = train_tokenizer(corpus, vocab_size=args.vocab)
    grit = build_tiny_model("llama", tokenizer, hidden_size=args.hidden, num_layers=args.layers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grit.model.to(device).train()
    # texts long enough to fill args.length tokens
    texts = [" ".join(corpus[i: i + 12]) for i in range(0, 12 * 512, 12)]
    return grit, texts, device


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first touch of memory is slow
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(args) -> dict:
    from gritkit.training.data import GenerativeExample, collate_generative, tokenize_generative
    from gritkit.parallel.distributed import Processes
    from gritkit.model.gritlm import decoder_of
    from gritkit.training.backward import StepSettings, autocast, embedding_backward, generative_backward

    grit, texts, device = build(args)
    processes, bf16 = Processes(device=device), args.bf16
    n = SMOKE_STEP_BATCH if args.smoke else STEP_BATCH
    queries, docs = texts[:n], texts[n: 3 * n]
    chats = [GenerativeExample(messages=({"role": "user", "content": t[:200]}, {"role": "assistant", "content": t}))
             for t in texts[3 * n: 4 * n]]

    # The trainer tokenises chats once before its first step; embedding texts on every step.
    items = [(ids, mask) for ids, mask, status in (tokenize_generative(grit.tokenizer, c, args.length) for c in chats)
             if status != "dropped"]

    def gritkit_step():
        q = grit.tokenize_for_embedding(queries, ["Retrieve a passage"] * len(queries), args.length)
        d = grit.tokenize_for_embedding(docs, [""] * len(docs), args.length)
        settings = StepSettings(processes=processes, bf16=bf16, pad_id=grit.tokenizer.pad_token_id, temperature=0.02,
                                group_size=2, micro_batch_size=16, aggregation="mixed")
        embedding_backward(grit, q, d, settings)
        generative_backward(grit.model, items, settings)
        grit.model.zero_grad(set_to_none=True)

    q_batch = grit.collate(grit.tokenize_for_embedding(queries, ["Retrieve a passage"] * len(queries), args.length)).to(device)
    d_batch = grit.collate(grit.tokenize_for_embedding(docs, [""] * len(docs), args.length)).to(device)
    g_batch = collate_generative(items, grit.tokenizer.pad_token_id).to(device)
    tokens = int(q_batch.attention_mask.sum() + d_batch.attention_mask.sum() + g_batch.attention_mask.sum())

    def floor_step():
        with autocast(device, bf16):
            body = decoder_of(grit.model)
            loss = sum(body(input_ids=b.input_ids, attention_mask=b.attention_mask, is_causal=False,
                            use_cache=False).last_hidden_state.float().mean() for b in (q_batch, d_batch))
            loss = loss + grit.model(input_ids=g_batch.input_ids, attention_mask=g_batch.attention_mask,
                                     use_cache=False).logits.float().logsumexp(-1).mean()
        loss.backward()
        grit.model.zero_grad(set_to_none=True)

    floor, ours = median_time(floor_step, args.repeats), median_time(gritkit_step, args.repeats)
    print(f"step throughput ({tokens} tokens/step): floor {tokens / floor:,.0f} tokens/s, "
          f"gritkit {tokens / ours:,.0f} tokens/s, ratio {floor / ours:.2f}x (target >= 0.9)")
    return {"tokens_per_step": tokens, "floor_tokens_per_s": tokens / floor, "gritkit_tokens_per_s": tokens / ours,
            "ratio": floor / ours}


def gradcache_case(args) -> dict:
    """One GradCache case in this process: seconds and peak bytes of the step."""
    from gritkit.parallel.distributed import Processes
    from gritkit.training.backward import StepSettings, embedding_backward

    grit, texts, device = build(args)
    chunks = SMOKE_GRADCACHE_CHUNKS if args.smoke else GRADCACHE_CHUNKS
    n = args.chunk * (chunks if args.case != "one_chunk" else 1)
    q = grit.tokenize_for_embedding(texts[:n], ["Retrieve a passage"] * n, args.length)
    d = grit.tokenize_for_embedding(texts[n: 3 * n], [""] * 2 * n, args.length)
    chunk = args.chunk if args.case == "chunked" else 0

    def step():
        embedding_backward(grit, q, d, StepSettings(processes=Processes(device=device), bf16=args.bf16,
                                                    temperature=0.02, group_size=2, chunk_size=chunk))
        grit.model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/statm") as handle:
            base = int(handle.read().split()[1]) * resource.getpagesize()
    seconds = median_time(step, args.repeats)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": peak - base}


def gradcache(args) -> dict:
    results = {}
    for case in ("one_chunk", "chunked", "unchunked"):
        if args.smoke:
            results[case] = gradcache_case(argparse.Namespace(**{**vars(args), "case": case}))
            continue
        command = [sys.executable, __file__, "--case", case, "--repeats", str(args.repeats), "--hidden", str(args.hidden),
                   "--layers", str(args.layers), "--length", str(args.length), "--chunk", str(args.chunk),
                   "--vocab", str(args.vocab)] + (["--bf16"] if args.bf16 else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"GradCache case {case} ended with {done.returncode}:\n{done.stderr[-3000:]}")
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
    one, chunked, full = results["one_chunk"], results["chunked"], results["unchunked"]
    mib = 2 ** 20
    memory_ratio = chunked["peak"] / one["peak"] if one["peak"] > 0 else None  # None: no peak above the start
    time_ratio = chunked["seconds"] / full["seconds"]
    chunks = SMOKE_GRADCACHE_CHUNKS if args.smoke else GRADCACHE_CHUNKS
    print(f"GradCache, batch {chunks * args.chunk} queries x 3 texts, chunk {args.chunk}: peak memory chunked "
          f"{chunked['peak'] / mib:.0f} MiB vs one chunk {one['peak'] / mib:.0f} MiB (ratio "
          f"{memory_ratio if memory_ratio is None else round(memory_ratio, 2)}x, target <= 1.2) vs unchunked "
          f"{full['peak'] / mib:.0f} MiB; time chunked {chunked['seconds']:.2f} s vs unchunked {full['seconds']:.2f} s "
          f"(ratio {time_ratio:.2f}x, target <= 1.5)")
    return {"cases": results, "peak_ratio_vs_one_chunk": memory_ratio, "time_ratio_vs_unchunked": time_ratio}


def lm_head_on_targets(args) -> dict:
    import random

    from transformers import AutoTokenizer

    from gritkit.training.data import collate_generative, read_generative_file, tokenize_generative
    from gritkit.model.tiny import build_tiny_model
    from gritkit.training.backward import StepSettings, generative_backward

    data = data_dir(args)
    count, size = SMOKE_LM_BATCHES if args.smoke else LM_BATCHES
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    grit = build_tiny_model("llama", tokenizer, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                            tie_word_embeddings=False)
    grit.model.train()
    chats = [e for p in sorted((data / "generative").glob("*.jsonl")) for e in read_generative_file(p)]
    rng = random.Random(0)
    batches = [[tokenize_generative(tokenizer, c, 96)[:2] for c in rng.sample(chats, size)] for _ in range(count)]
    batches = [[item for item in batch if item[0]] for batch in batches]  # dropped examples have no tokens
    trained = sum(int(collate_generative(b, tokenizer.pad_token_id).loss_mask[:, 1:].sum()) for b in batches)
    positions = sum(int(collate_generative(b, tokenizer.pad_token_id).input_ids[:, 1:].numel()) for b in batches)

    def run(plain: bool):
        def step():
            settings = StepSettings(bf16=args.bf16, pad_id=tokenizer.pad_token_id, micro_batch_size=32,
                                    aggregation="mixed", head_at_targets=plain)
            for items in batches:
                generative_backward(grit.model, items, settings)
            grit.model.zero_grad(set_to_none=True)
        return step

    full, targets = median_time(run(False), args.repeats), median_time(run(True), args.repeats)
    print(f"LM loss, {count} batches of {size} real chats ({trained / positions:.0%} of padded positions trained): "
          f"full logits {full:.2f} s, trained positions only {targets:.2f} s, speed-up {full / targets:.2f}x")
    return {"trained_share": trained / positions, "full_logits_s": full, "trained_positions_s": targets,
            "speedup": full / targets}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default: float32)")
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory, for the LM-loss case (built there when missing)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--case", choices=("one_chunk", "chunked", "unchunked"), help=argparse.SUPPRESS)
    args = parse_args(parser, argv, smoke=dict(repeats=1, hidden=64, layers=2, chunk=2,
                                               data=None))
    if args.case:
        print(json.dumps(gradcache_case(args)))
        return
    result = {"step_throughput": throughput(args), "gradcache": gradcache(args),
              "lm_head_on_targets": lm_head_on_targets(args)}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
