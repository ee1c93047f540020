"""The compact format against GritLM's byte-exact one on a pretrained tokenizer (SmolLM2's).

    python benchmarks/compact_format.py [--data runs/data] [--texts 256] [--repeats 3] [--json]
    python benchmarks/compact_format.py --smoke --json   # a random tiny Llama on a small data build, 1 repeat

GritLM-7B writes ``<|user|>``, ``<|embed|>`` and ``<|assistant|>`` as plain text, which
SmolLM2's tokenizer (like Mistral's) splits into pieces. This measures, on the suite's data (the
``gritkit data build`` in ``--data``, built there when missing): tokens per sample in both formats
for embedding queries (with the recipe's instructions), documents and chats; then ``encode`` time
on ``--texts`` queries and one training step (the gritkit-smol recipe's batch: contrastive and
generative, forward and backward, padded as the trainer does) on the SmolLM2-135M-Instruct base in
each format, medians of ``--repeats`` after a warm-up. Ratios are byte-exact time over compact time
(> 1: compact faster).
``--smoke`` replaces the base with a random tiny Llama on a tokenizer that has never seen the
markers either.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import SMOKE_MODEL, SMOKE_VOCAB, data_dir, parse_args  # noqa: E402


def load(compact: bool, smoke: bool):
    """The base in GRIT's byte-exact format (not the base's ChatML one), its markers made single
    tokens when ``compact``."""
    from gritkit import GritLM
    from gritkit.weights.bases import base_model_dir
    from gritkit.model.compact_format import add_marker_tokens
    from gritkit.model.formats import GRIT_CHAT_TEMPLATE
    from gritkit.model.config import GritConfig
    from gritkit.model.tiny import build_tiny_model

    if smoke:
        grit = build_tiny_model("llama", plain_tokenizer(), config=GritConfig(), **SMOKE_MODEL)
    else:
        grit = GritLM.from_pretrained(base_model_dir("smollm2-135m-instruct"), dtype=torch.float32, device="cpu",
                                      config=GritConfig())
    grit.tokenizer.chat_template = GRIT_CHAT_TEMPLATE
    return add_marker_tokens(grit) if compact else grit


def plain_tokenizer():
    """Byte-level BPE on stdlib docstrings without GRIT's markers, as a pretrained tokenizer has them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from gritkit.model.tiny import sample_corpus

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=SMOKE_VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sample_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def samples(data: Path, count: int, seed: int = 0):
    """(query (instruction, text) pairs, documents, chats) drawn from every file of the build."""
    from gritkit.training.data import read_embedding_file, read_generative_file

    rng = random.Random(seed)
    queries, documents, chats = [], [], []
    for path in sorted((data / "contrastive").glob("*.jsonl")):
        examples = read_embedding_file(path)
        for example in rng.sample(examples, min(count, len(examples))):
            queries.append(example.query)
            documents.append(example.pos[0])
    for path in sorted((data / "generative").glob("*.jsonl")):
        examples = read_generative_file(path)
        chats += rng.sample(examples, min(count, len(examples)))
    return queries, documents, chats


def token_counts(grit, queries, documents, chats, max_length: int) -> dict:
    from gritkit.training.data import tokenize_embedding_texts, tokenize_generative

    q = tokenize_embedding_texts(grit, queries, 10_000)
    d = tokenize_embedding_texts(grit, documents, 10_000)
    c = [tokenize_generative(grit.tokenizer, chat, max_length * 100)[0] for chat in chats]
    return {"query": sum(len(x) for x, _ in q) / len(q), "document": sum(len(x) for x, _ in d) / len(d),
            "chat": sum(len(x) for x in c) / len(c)}


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(grit, queries, documents, chats, bf16: bool):
    from gritkit.training.data import tokenize_embedding_texts, tokenize_generative
    from gritkit.parallel.distributed import Processes
    from gritkit.training.backward import StepSettings, embedding_backward, generative_backward

    items = [x[:2] for x in (tokenize_generative(grit.tokenizer, chat, 192) for chat in chats) if x[0]]

    def step():
        q = tokenize_embedding_texts(grit, queries, 64)
        d = tokenize_embedding_texts(grit, documents, 128)
        settings = StepSettings(processes=Processes(), bf16=bf16, pad_id=grit.tokenizer.pad_token_id,
                                temperature=0.02, micro_batch_size=8, aggregation="mixed")
        embedding_backward(grit, q, d, settings)
        generative_backward(grit.model, items, settings)
        grit.model.zero_grad(set_to_none=True)
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/data",
                        help="a `gritkit data build` directory (built there when missing)")
    parser.add_argument("--texts", type=int, default=256, help="queries to encode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parse_args(parser, argv, smoke=dict(data=None, texts=16, repeats=1, threads=1))
    data = data_dir(args)
    torch.set_num_threads(args.threads)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    queries, documents, chats = samples(data, 200)
    exact, compact = load(False, args.smoke), load(True, args.smoke)
    print(f"markers made single tokens: {', '.join(compact.config.special_markers)}")
    counts = {name: token_counts(g, queries, documents, chats, 192) for name, g in (("byte-exact", exact),
                                                                                   ("compact", compact))}
    for kind in ("query", "document", "chat"):
        a, b = counts["byte-exact"][kind], counts["compact"][kind]
        print(f"{kind:<9} tokens per sample: byte-exact {a:6.1f}, compact {b:6.1f} ({a - b:.1f} fewer, {1 - b / a:.1%})")
    rng = random.Random(1)
    encode_queries = rng.sample(queries, min(args.texts, len(queries)))
    instructions = sorted({i for i, _ in encode_queries})

    def encoder(grit):
        def run():
            for instruction in instructions:
                grit.encode([t for i, t in encode_queries if i == instruction], instruction=instruction)
        return run

    times = {}
    for name, grit in (("byte-exact", exact), ("compact", compact)):
        times[f"encode {name}"] = median_seconds(encoder(grit), args.repeats)
    step_q = rng.sample(queries, 16)
    step_d = [documents[queries.index(q)] for q in step_q]
    step_c = rng.sample(chats, 8)
    for name, grit in (("byte-exact", exact), ("compact", compact)):
        grit.model.train()
        times[f"train step {name}"] = median_seconds(train_step(grit, step_q, step_d, step_c, bf16), args.repeats)
    encode_ratio = times["encode byte-exact"] / times["encode compact"]
    train_ratio = times["train step byte-exact"] / times["train step compact"]
    print(f"encode {len(encode_queries)} queries: byte-exact {times['encode byte-exact']:.2f} s, compact "
          f"{times['encode compact']:.2f} s ({encode_ratio:.2f}x)")
    print(f"train step (16 queries, 16 documents, 8 chats; bf16 {bf16}): byte-exact {times['train step byte-exact']:.2f} s, "
          f"compact {times['train step compact']:.2f} s ({train_ratio:.2f}x)")
    if args.json:
        print(json.dumps({"tokens_per_sample": counts, "seconds": times, "encode_speedup": encode_ratio,
                          "train_step_speedup": train_ratio, "markers": list(compact.config.special_markers)}))


if __name__ == "__main__":
    main()
