"""Encode throughput: gritkit vs the same encode without length sorting vs the bare forward.

    python benchmarks/encode.py [--texts 256] [--repeats 3] [--model gritkit-smol] [--json]
    python benchmarks/encode.py --smoke --json     # 16 texts, a random Llama of width 64, 1 repeat

Corpus: texts of 10 to 500 tokens (uniformly mixed) cut from stdlib docstrings; model: a random
Llama (4 layers, hidden 256, vocabulary 8k, the size DESIGN.md measured), or ``--model`` (a
directory or a shipped name) with its own tokenizer. Prints tokens/s (text
tokens, no padding counted) of
  - gritkit:  ``GritLM.encode`` on the whole list (sorted by length into batches of at most
              ``--batch-size`` texts and, on a CPU, ``CPU_BATCH_TOKENS`` padded tokens);
  - uncapped: the same with ``max_batch_tokens=0`` (batches of ``--batch-size`` texts only);
  - unsorted: encode called batch by batch in input order, uncapped (each batch padded to its
              longest text, as an encoder that does not sort does);
  - floor:    the bare decoder forward (``is_causal=False``) over gritkit's own padded batches,
              with tokenisation, collation and pooling excluded;
and the ratios gritkit/uncapped, gritkit/unsorted (target >= 1.5) and gritkit/floor (target >=
0.9). Medians of ``--repeats`` rounds (each run once per round) after one warm-up run.

With the paper's reference package installed (``pip install --no-deps gritlm==1.0.2``; it needs
only torch and transformers), two more rows run the same model, saved to a temporary directory,
through ``gritlm.GritLM(mode="embedding", attn="bbcc", pooling_method="mean")``, given GRIT's
embedding prefix as its instruction so that it pools the same text tokens:
  - reference, batch N: its ``encode`` at gritkit's batch size;
  - reference, default: its ``encode`` at its own default batch size (256);
with the largest difference between its vectors and gritkit's (they must agree to float rounding).
Without the package these rows are skipped, with a note.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import SMOKE_MODEL, SMOKE_VOCAB, note, parse_args  # noqa: E402

MODEL = dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4)
VOCAB = 8192


def make_corpus(tokenizer, n: int, seed: int = 0) -> list[str]:
    from gritkit.model.tiny import sample_corpus

    words = " ".join(sample_corpus()).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target = rng.randint(10, 500)
        start = rng.randrange(len(words) - 600)
        text = " ".join(words[start: start + target])
        while len(tokenizer(text, add_special_tokens=False).input_ids) > target:
            text = text.rsplit(" ", 1)[0]
        texts.append(text)
    return texts


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a model directory or shipped name (default: a random Llama)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(texts=16, repeats=1))

    from gritkit.model.gritlm import CPU_BATCH_TOKENS, decoder_of, length_batches
    from gritkit.model.tiny import build_tiny_model, sample_corpus, train_tokenizer

    torch.manual_seed(0)
    if args.model:
        from gritkit import GritLM

        model = GritLM.from_pretrained(args.model, dtype=torch.float32, device="cpu")
        tokenizer = model.tokenizer
    else:
        tokenizer = train_tokenizer(sample_corpus(), vocab_size=SMOKE_VOCAB if args.smoke else VOCAB)
        model = build_tiny_model("llama", tokenizer, **(SMOKE_MODEL if args.smoke else MODEL))
    texts = make_corpus(tokenizer, args.texts)
    bs = args.batch_size
    items = model.tokenize_for_embedding(texts, [""] * len(texts), max_length=512)
    text_tokens = sum(sum(mask) for _, mask in items)
    floor_batches = [model.collate([items[i] for i in batch])
                     for batch in length_batches([len(ids) for ids, _ in items], bs, CPU_BATCH_TOKENS)]
    decoder = decoder_of(model.model)

    def gritkit_encode():
        model.encode(texts, batch_size=bs, show_progress_bar=False)

    def uncapped_encode():
        model.encode(texts, batch_size=bs, show_progress_bar=False, max_batch_tokens=0)

    def unsorted_encode():
        for s in range(0, len(texts), bs):
            model.encode(texts[s: s + bs], batch_size=bs, show_progress_bar=False, max_batch_tokens=0)

    def floor():
        with torch.inference_mode():
            for batch in floor_batches:
                decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, is_causal=False, use_cache=False)

    runs = {"gritkit": gritkit_encode, "uncapped": uncapped_encode, "unsorted": unsorted_encode, "floor": floor}
    reference = reference_model(model)
    prefix = model.format.embedding_prompt("")[0]  # the reference pools after its "instruction"
    if reference is not None:
        runs[f"reference, batch {bs}"] = lambda: reference.encode(texts, batch_size=bs, instruction=prefix)
        runs["reference, default"] = lambda: reference.encode(texts, instruction=prefix)
    for fn in runs.values():  # warm-up: first touch of memory is slow on a fresh machine
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved, so drift in machine load hits all of them alike
            times[name].append(timed(fn))
    medians = {name: statistics.median(t) for name, t in times.items()}
    params = sum(p.numel() for p in model.model.parameters()) / 1e6
    print(f"{len(texts)} texts, {text_tokens} text tokens, batch {bs}, {args.model or 'Llama'} {params:.1f}M params, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    for name, seconds in medians.items():
        print(f"  {name:9s} {text_tokens / seconds:9.0f} tokens/s  ({seconds:.2f} s)")
    over = {name: medians[name] / medians["gritkit"] for name in medians if name != "gritkit"}
    print(f"gritkit / uncapped = {over['uncapped']:.2f}x  (the CPU token cap)")
    print(f"gritkit / unsorted = {over['unsorted']:.2f}x  (target >= 1.5)")
    print(f"gritkit / floor    = {over['floor']:.2f}x  (target >= 0.9)")
    references = {name: ratio for name, ratio in over.items() if name.startswith("reference")}
    for name, ratio in references.items():
        print(f"gritkit / {name} = {ratio:.2f}x  (target >= 2)")
    largest = None
    if reference is not None:
        theirs = reference.encode(texts, batch_size=bs, instruction=prefix)
        gaps = abs(theirs - model.encode(texts, batch_size=bs, show_progress_bar=False)).max(axis=1)
        largest = float(gaps.max())
        print(f"largest |gritkit - reference| over all vectors: {largest:.2e} "
              f"({int((gaps > 1e-4).sum())} of {len(texts)} vectors differ by more than 1e-4)")
    if args.json:
        print(json.dumps({"model": args.model or "random Llama", "texts": len(texts), "text_tokens": text_tokens,
                          "batch_size": bs, "repeats": args.repeats,
                          "tokens_per_s": {name: text_tokens / seconds for name, seconds in medians.items()},
                          "uncapped_speedup": over["uncapped"], "unsorted_speedup": over["unsorted"],
                          "floor_ratio": over["floor"], "reference_speedup": references,
                          "reference_largest_difference": largest}))


def reference_model(model):
    """The same weights loaded by the reference ``gritlm`` package (None when it is not installed)."""
    try:
        from gritlm import GritLM as ReferenceGritLM
    except ImportError:
        note("reference package gritlm not installed: its rows are skipped (pip install --no-deps gritlm==1.0.2)")
        return None
    with tempfile.TemporaryDirectory() as directory:  # loaded into memory, so the files can go
        model.model.save_pretrained(directory)
        model.tokenizer.save_pretrained(directory)
        return ReferenceGritLM(directory, mode="embedding", pooling_method="mean", attn="bbcc",
                               torch_dtype=torch.float32, device="cpu")


if __name__ == "__main__":
    main()
