"""Peak memory of training data at the paper's scale: held in lists against read from the file on access.

    python benchmarks/data_memory.py [--pairs 1000000] [--steps 300] [--chats 10000] [--data DIR] [--json]
    python benchmarks/data_memory.py --smoke --json     # 4,096 pairs, 1 step, 300 chats, in this process

Writes ``--pairs`` synthetic embedding pairs (E5-like: an instructed query, one positive, one hard
negative; ~1 KB a line) and ``--chats`` synthetic chats to ``--data`` (a temporary directory by
default; files already there are reused), then runs each loader in a process of its own and
reports its peak resident set size (``ru_maxrss``) and that peak above the resident set size
after the imports (``above imports``: what the data and sampling took):

- ``lists``: the trainer's loader until the line index replaced it, every line parsed into one list;
- ``index``: the trainer's loader, ``gritkit.training.data.read_embedding_file`` (one checking pass that
  keeps the byte offset of each line; examples parsed from the file when drawn);
- ``arrow``: Hugging Face ``datasets`` (JSON to a memory-mapped Arrow cache), for comparison;
  skipped, with a note, when ``datasets`` is not installed.

Each process then draws ``--steps`` embedding batches as the trainer draws them (``StepSampler``,
paper sizes: 2,048 queries of 1 positive + 1 hard negative) and hashes the texts drawn: the
digests must agree. For chats, ``lists`` holds the parsed chats and their tokens as lists, as the
trainer did, and ``index`` reads them through the index and keeps their tokens in a ``TokenStore``;
the tokenizer is the tests' (byte-level BPE, 1,000 tokens, on stdlib docstrings), chats are fitted
to 2,048 tokens and every generative batch of 256 of one epoch is drawn. ``--smoke`` runs every
loader in this process (so its memory figures are not its own).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import note, parse_args  # noqa: E402

SEED, BATCH, GROUP, CHAT_BATCH, CHAT_LENGTH = 0, 2048, 2, 256, 2048
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def above_imports_ratio(lists: dict, index: dict) -> float | None:
    """None when the index's peak did not rise above its imports (data too small to show)."""
    above = index["peak_mb"] - index["imports_mb"]
    return (lists["peak_mb"] - lists["imports_mb"]) / above if above > 0 else None


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def current_mb() -> float:
    """Resident set size now: the baseline after imports (their peak can lie above it)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


# ---------------------------------------------------------------------------------- synthetic data
def _pool(rng: random.Random, count: int, words: tuple[int, int]) -> list[str]:
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    return [" ".join(rng.choices(vocabulary, k=rng.randint(*words))) for _ in range(count)]


def write_pairs(path: Path, pairs: int) -> None:
    """Distinct lines from pools of texts (a number makes each text unique), fast to write."""
    rng = random.Random(SEED)
    queries, passages = _pool(rng, 4096, (6, 14)), _pool(rng, 4096, (40, 80))
    with path.open("w") as handle:
        for i in range(pairs):
            handle.write(json.dumps({"query": [INSTRUCTION, f"{i} {queries[i % 4096]}"],
                                     "pos": [f"{i} {passages[(i * 7) % 4096]}"],
                                     "neg": [f"{i} {passages[(i * 13 + 5) % 4096]}"]}) + "\n")


def write_chats(path: Path, chats: int) -> None:
    rng = random.Random(SEED + 1)
    questions, answers = _pool(rng, 1024, (20, 80)), _pool(rng, 1024, (60, 250))
    with path.open("w") as handle:
        for i in range(chats):
            handle.write(json.dumps({"messages": [{"role": "user", "content": f"{i} {questions[i % 1024]}"},
                                                  {"role": "assistant", "content": answers[(i * 7) % 1024]}]}) + "\n")


# ---------------------------------------------------------------------------------- loaders
def lists_of(path: Path, parse) -> list:
    """The trainer's loader until the line index replaced it: every line parsed into one list."""
    from gritkit.training.data import DataError
    from gritkit.textio import iter_json_lines

    return [parse(record, f"{path}:{number}") for number, record in iter_json_lines(path, DataError)]


class ArrowExamples(Sequence):
    """Rows of a ``datasets`` table as EmbeddingExamples (checked when drawn: Arrow has no file:line)."""

    def __init__(self, path: Path, cache_dir: str):
        import datasets

        datasets.disable_progress_bars()
        self.table = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int):
        from gritkit.training.data import embedding_example

        return embedding_example(self.table[int(index)], f"row {index}", GROUP - 1)


def load_pairs(loader: str, path: Path, cache_dir: str):
    from gritkit.training.data import embedding_example, read_embedding_file

    if loader == "lists":
        return lists_of(path, lambda record, where: embedding_example(record, where, GROUP - 1))
    if loader == "index":
        return read_embedding_file(path, GROUP - 1)
    return ArrowExamples(path, cache_dir)


# ---------------------------------------------------------------------------------- one process each
def measure_pairs(loader: str, path: Path, steps: int, cache_dir: str) -> dict:
    from gritkit.training.data import StepSampler, embedding_group

    if loader == "arrow":
        import datasets  # noqa: F401  (its imports are not the data's memory)
    imports = current_mb()
    began = time.perf_counter()
    examples = load_pairs(loader, path, cache_dir)
    load_s = time.perf_counter() - began
    loaded = current_mb()
    sampler = StepSampler([len(examples)], BATCH, SEED)
    digest = hashlib.sha1()
    began = time.perf_counter()
    for step in range(steps):
        _, indices = sampler.batch(step)
        for index in indices:  # as train.embedding_items draws each query's group
            example = examples[index]
            for _, text in [example.query, *embedding_group(example, GROUP, random.Random(f"{SEED}:{step}:0:{index}"))]:
                digest.update(text.encode())
    return {"imports_mb": imports, "after_load_mb": loaded, "peak_mb": peak_mb(), "load_s": load_s,
            "sample_s": time.perf_counter() - began, "examples": len(examples), "digest": digest.hexdigest()}


def measure_chats(loader: str, path: Path) -> dict:
    from gritkit.training.data import GenerativeSet, StepSampler, generative_example, read_generative_file, tokenize_generative
    from gritkit.training.data import tokenize_generative_files
    from gritkit.model.tiny import sample_corpus, train_tokenizer

    tokenizer = train_tokenizer(sample_corpus(), vocab_size=1000)
    imports = current_mb()
    began = time.perf_counter()
    if loader == "lists":  # the trainer before: parsed chats and tokens as lists
        chats = lists_of(path, generative_example)
        results = [tokenize_generative(tokenizer, chat, CHAT_LENGTH) for chat in chats]
        prepared = GenerativeSet([(ids, mask) for ids, mask, status in results if status != "dropped"], {})
    else:
        chats = read_generative_file(path)
        prepared = tokenize_generative_files(tokenizer, [(path.name, chats)], CHAT_LENGTH)
    load_s = time.perf_counter() - began
    sampler = StepSampler([len(prepared.items)], CHAT_BATCH, SEED + 1)
    digest, tokens = hashlib.sha1(), 0
    for step in range(sampler.steps_per_epoch):
        for index in sampler.batch(step)[1]:
            ids, mask = prepared.items[index]
            digest.update(repr((ids, mask)).encode())
            tokens += len(ids)
    return {"imports_mb": imports, "peak_mb": peak_mb(), "load_s": load_s, "examples": len(prepared.items),
            "tokens_drawn": tokens, "digest": digest.hexdigest()}


def child(kind: str, loader: str, path: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as cache_dir:  # the Arrow cache
        return measure_pairs(loader, path, steps, cache_dir) if kind == "pairs" else measure_chats(loader, path)


def run_child(kind: str, loader: str, path: Path, steps: int, smoke: bool) -> dict:
    """One loader's figures, from a process of its own so that its peak memory is its own; a smoke
    run, which measures nothing, runs it in this one."""
    if smoke:
        return child(kind, loader, path, steps)
    args = ["--steps", str(steps), "--child", kind, loader, str(path)]
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help=f"at least {BATCH}")
    parser.add_argument("--steps", type=int, default=300, help="embedding batches of 2,048 queries to draw")
    parser.add_argument("--chats", type=int, default=10_000, help=f"0 skips the chats; else at least {CHAT_BATCH}")
    parser.add_argument("--loaders", default="lists,index,arrow")
    parser.add_argument("--data", type=Path, help="directory for the synthetic files (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "LOADER", "FILE"), help=argparse.SUPPRESS)
    args = parse_args(parser, argv, smoke=dict(pairs=2 * BATCH, steps=1, chats=300))
    if args.child:
        kind, loader, path = args.child
        print(json.dumps(child(kind, loader, Path(path), args.steps)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch)
        data.mkdir(parents=True, exist_ok=True)
        pairs, chats = data / f"pairs-{args.pairs}.jsonl", data / f"chats-{args.chats}.jsonl"
        began = time.perf_counter()
        if not pairs.exists():
            write_pairs(pairs, args.pairs)
        if args.chats and not chats.exists():
            write_chats(chats, args.chats)
        print(f"data: {args.pairs:,} pairs ({pairs.stat().st_size / 2**20:,.0f} MiB) in {data}, "
              f"written in {time.perf_counter() - began:.0f} s")
        results = {"pairs": {}, "chats": {}}
        loaders = args.loaders.split(",")
        if "arrow" in loaders and importlib.util.find_spec("datasets") is None:
            note("datasets is not installed: the arrow loader is skipped (pip install datasets)")
            loaders.remove("arrow")
        for loader in loaders:
            results["pairs"][loader] = run_child("pairs", loader, pairs, args.steps, args.smoke)
        if args.chats:
            for loader in ("lists", "index"):
                results["chats"][loader] = run_child("chats", loader, chats, args.steps, args.smoke)
    report(results, args)


def report(results: dict, args) -> None:
    pairs = results["pairs"]
    print(f"\nembedding pairs: load (index/convert) then {args.steps} steps of {BATCH} queries x {GROUP} documents")
    print(f"{'loader':<7} {'load s':>7} {'sample s':>9} {'imports MiB':>12} {'peak MiB':>9} {'above imports':>14}")
    for name, r in pairs.items():
        print(f"{name:<7} {r['load_s']:>7.1f} {r['sample_s']:>9.1f} {r['imports_mb']:>12.0f} {r['peak_mb']:>9.0f} "
              f"{r['peak_mb'] - r['imports_mb']:>14.0f}")
    summary = {"pairs": pairs, "chats": results["chats"]}
    if {"lists", "index"} <= pairs.keys():
        lists, index = pairs["lists"], pairs["index"]
        summary["peak_ratio"] = lists["peak_mb"] / index["peak_mb"]
        summary["above_imports_ratio"] = above_imports_ratio(lists, index)
        print(f"lists/index: peak {summary['peak_ratio']:.1f}x, above imports "
              f"{ratio_text(summary['above_imports_ratio'])}; index of {index['examples']:,} lines: "
              f"{8 * index['examples'] / 2**20:.1f} MiB")
    summary["same_examples_drawn"] = len({r["digest"] for r in pairs.values()}) == 1
    print("same examples drawn by every loader:", summary["same_examples_drawn"])
    if results["chats"]:
        lists, index = results["chats"]["lists"], results["chats"]["index"]
        print(f"\nchats: {args.chats:,} read, tokenised at {CHAT_LENGTH} tokens, one epoch of batches of {CHAT_BATCH} "
              f"({index['tokens_drawn']:,} tokens)")
        for name, r in results["chats"].items():
            print(f"{name:<7} load+tokenise {r['load_s']:.1f} s, peak {r['peak_mb']:.0f} MiB, "
                  f"above imports {r['peak_mb'] - r['imports_mb']:.0f} MiB")
        summary["chats_above_imports_ratio"] = above_imports_ratio(lists, index)
        summary["same_tokens_drawn"] = lists["digest"] == index["digest"]
        print(f"lists/index above imports: {ratio_text(summary['chats_above_imports_ratio'])}; same tokens drawn: "
              f"{summary['same_tokens_drawn']}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
