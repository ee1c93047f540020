"""Training data for reading retrieved documents: the same examples as doc caches and as text.

    gritkit data rag-reading --data runs/data --out runs/data/rag_reading

Built from the training files of ``gritkit data build``, so the held-out split is inherited (the
FAQ answers that ``benchmarks/rag_quality.py`` indexes are never among them). Each example is a
request whose answer is in one document: an FAQ question with its answer as the document, or
"Tell me about the Debian package described as ..." with the package's full description. The
answer is the document's lead (its first sentences, ``self_retrieval.lead``).

Two files hold the same examples in the two doc-first RAG forms of ``rag/modes.py``, with the
strings ``modes.plan`` makes at inference, so training reads the document exactly as answering does:

- ``doc_cache.jsonl`` (``doc_cache_data``): the document, read as its doc cache, then the user turn
  ``{request}\\n\\n{DOC_FIRST_TASK}``;
- ``doc_first.jsonl`` (``generative_data``): one chat whose user turn holds the document as text,
  ``{document}\\n\\n{request}\\n\\n{DOC_FIRST_TASK}``.

Both files hold the same examples, so a recipe can train cached and uncached reading alike; how
often each is seen depends on the recipe: ``doc_cache_data`` is a stream of its own, while
``doc_first.jsonl`` is sampled in proportion to the other ``generative_data`` files it joins.

``doc_cache_multi.jsonl`` and ``doc_first_multi.jsonl`` hold the same examples again, each read
among distractors as retrieval returns it with ``--top-k`` above 1: ``MULTI_DOCUMENTS`` documents
in all, the right one at a random rank, the others the best BM25 matches of the request among the
same source's documents (hard negatives: what a retriever would also have returned).

``doc_cache_long.jsonl`` and ``doc_first_long.jsonl`` read long documents (``LONG_WORDS`` words or
more, every such training document of both sources) as ``--top-k 3`` returns them: three long
documents, the right one at a random rank, ``LONG_VARIANTS`` examples per request with different BM25
distractors among the same source's long documents. Caches of several long documents put the last
ones at positions that short documents never reach, which the multi files do not teach.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..rag.modes import plan
from .common import read_jsonl, write_jsonl
from .self_retrieval import DEBIAN_REQUEST, lead

SEED = 20261204
# Examples per source: every FAQ pair (the smaller source), a sample of the Debian descriptions.
SIZES = {"faq": 10_000, "debian": 600}
MULTI_DOCUMENTS = (2, 3)  # documents per multi-document example, chosen at random (right one included)
LONG_WORDS = 150  # a long document: ~200 SmolLM2 tokens or more (the FAQ answers' median is ~190 tokens)
LONG_DOCUMENTS = 3  # documents per long example, as `--top-k 3` retrieves them
LONG_VARIANTS = 3  # examples per long request, each with other distractors


def reading_pairs(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Every (request, document) pair per source, from the contrastive training files."""
    faq = [(r["query"][1], r["pos"][0]) for r in read_jsonl(data_dir / "contrastive/faq_question_answer.jsonl")]
    debian = [(DEBIAN_REQUEST.format(summary=r["query"][1]), r["pos"][0])
              for r in read_jsonl(data_dir / "contrastive/debian_short_long.jsonl")]
    return {"faq": faq, "debian": debian}


def reading_examples(all_pairs: dict[str, list[tuple[str, str]]], rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """At most ``SIZES[source]`` pairs per source."""
    return {name: pairs if len(pairs) <= SIZES[name] else rng.sample(pairs, SIZES[name]) for name, pairs in all_pairs.items()}


def build_rag_reading(data_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write doc_cache.jsonl, doc_first.jsonl and their ``_multi`` and ``_long`` forms to ``out_dir``;
    returns the examples per source of the one-document files."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "MANIFEST.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not the output of `gritkit data build` (no MANIFEST.json)")
    rng = random.Random(SEED)
    all_pairs = reading_pairs(data_dir)
    sources = reading_examples(all_pairs, rng)
    pairs = [pair for name in sorted(sources) for pair in sources[name]]
    rng.shuffle(pairs)
    cached, uncached = [], []
    for request, document in pairs:
        answer = lead(document)
        cached.append({"document": document, "messages": [
            {"role": "user", "content": plan("doc_cache", request, [document]).user},
            {"role": "assistant", "content": answer}]})
        uncached.append({"messages": [
            {"role": "user", "content": plan("rag_doc_first", request, [document]).user},
            {"role": "assistant", "content": answer}]})
    write_jsonl(out_dir / "doc_cache.jsonl", cached)
    write_jsonl(out_dir / "doc_first.jsonl", uncached)
    multi = [example for name in sorted(sources) for example in at_random_ranks(among_distractors(sources[name], rng), rng)]
    _write_ranked(out_dir, "multi", multi, rng)
    long_rng = random.Random(f"{SEED}:long")  # its own draws: the other files stay as they were built before
    long = [example for name in sorted(all_pairs) for example in at_random_ranks(among_long(all_pairs[name]), long_rng)]
    _write_ranked(out_dir, "long", long, long_rng)
    return {name: len(items) for name, items in sources.items()}


def _write_ranked(out_dir: Path, suffix: str, examples: list[tuple[str, list[str], str]], rng: random.Random) -> None:
    """doc_cache_{suffix}.jsonl and doc_first_{suffix}.jsonl: the (request, documents, answer)
    examples in a shuffled order shared by both files."""
    cached, uncached = [], []
    for request, documents, answer in examples:
        cached.append({"documents": documents, "messages": [
            {"role": "user", "content": plan("doc_cache", request, documents).user},
            {"role": "assistant", "content": answer}]})
        uncached.append({"messages": [
            {"role": "user", "content": plan("rag_doc_first", request, documents).user},
            {"role": "assistant", "content": answer}]})
    order = list(range(len(cached)))
    rng.shuffle(order)
    write_jsonl(out_dir / f"doc_cache_{suffix}.jsonl", [cached[i] for i in order])
    write_jsonl(out_dir / f"doc_first_{suffix}.jsonl", [uncached[i] for i in order])


def among_distractors(pairs: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, list[str]]]:
    """(request, documents) for each (request, document) pair: ``len(documents)`` drawn from
    ``MULTI_DOCUMENTS``, the distractors first (BM25's best other documents of ``pairs``, best
    first) and the right document last."""
    examples = []
    for (request, document), others in zip(pairs, bm25_others(pairs, max(MULTI_DOCUMENTS) - 1)):
        count = rng.choice(MULTI_DOCUMENTS)
        if len(others) >= count - 1:  # a source too small for distractors gives no example
            examples.append((request, [*others[: count - 1], document]))
    return examples


def among_long(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``LONG_VARIANTS`` (request, documents) examples for each pair whose document has
    ``LONG_WORDS`` words or more: ``LONG_DOCUMENTS`` long documents, each variant with the next of
    BM25's best other long documents as distractors (first), the right document last."""
    long = [(request, document) for request, document in pairs if len(document.split()) >= LONG_WORDS]
    per_example = LONG_DOCUMENTS - 1
    examples = []
    for (request, document), others in zip(long, bm25_others(long, per_example * LONG_VARIANTS)):
        for variant in range(min(LONG_VARIANTS, len(others) // per_example)):
            examples.append((request, [*others[variant * per_example: (variant + 1) * per_example], document]))
    return examples


def at_random_ranks(examples: list[tuple[str, list[str]]], rng: random.Random) -> list[tuple[str, list[str], str]]:
    """(request, documents, answer) for each (request, documents) example: the right document (last)
    moved to a random rank; the answer is its lead."""
    ranked = []
    for request, documents in examples:
        documents = list(documents)
        right = documents.pop()
        documents.insert(rng.randrange(len(documents) + 1), right)
        ranked.append((request, documents, lead(right)))
    return ranked


def bm25_others(pairs: list[tuple[str, str]], count: int) -> list[list[str]]:
    """For each (request, document) pair, BM25's best ``count`` documents of ``pairs`` for the
    request other than its own, best first (fewer where the pairs hold fewer documents)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s puts its own logger at DEBUG

    corpus = sorted({document for _, document in pairs})
    if not corpus:
        return []
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([request for request, _ in pairs], stopwords="en", show_progress=False)
    hits, _ = retriever.retrieve(tokens, k=min(count + 1, len(corpus)), show_progress=False)
    return [[corpus[int(i)] for i in row if corpus[int(i)] != document][:count] for (_, document), row in zip(pairs, hits)]
