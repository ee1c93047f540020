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


def reading_examples(data_dir: Path, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """(request, document) pairs per source, from the contrastive training files."""
    faq = [(r["query"][1], r["pos"][0]) for r in read_jsonl(data_dir / "contrastive/faq_question_answer.jsonl")]
    debian = [(DEBIAN_REQUEST.format(summary=r["query"][1]), r["pos"][0])
              for r in read_jsonl(data_dir / "contrastive/debian_short_long.jsonl")]
    pick = {"faq": faq, "debian": debian}
    return {name: pairs if len(pairs) <= SIZES[name] else rng.sample(pairs, SIZES[name]) for name, pairs in pick.items()}


def build_rag_reading(data_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write doc_cache.jsonl, doc_first.jsonl and their ``_multi`` forms to ``out_dir``; returns the
    examples per source."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "MANIFEST.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not the output of `gritkit data build` (no MANIFEST.json)")
    rng = random.Random(SEED)
    sources = reading_examples(data_dir, rng)
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
    cached, uncached = [], []
    for name in sorted(sources):
        for request, documents in among_distractors(sources[name], rng):
            answer = lead(documents[-1])  # the right document, moved to its rank below
            rank = rng.randrange(len(documents))
            documents.insert(rank, documents.pop())
            cached.append({"documents": documents, "messages": [
                {"role": "user", "content": plan("doc_cache", request, documents).user},
                {"role": "assistant", "content": answer}]})
            uncached.append({"messages": [
                {"role": "user", "content": plan("rag_doc_first", request, documents).user},
                {"role": "assistant", "content": answer}]})
    order = list(range(len(cached)))
    rng.shuffle(order)
    write_jsonl(out_dir / "doc_cache_multi.jsonl", [cached[i] for i in order])
    write_jsonl(out_dir / "doc_first_multi.jsonl", [uncached[i] for i in order])
    return {name: len(items) for name, items in sources.items()}


def among_distractors(pairs: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, list[str]]]:
    """(request, documents) for each (request, document) pair: ``len(documents)`` drawn from
    ``MULTI_DOCUMENTS``, the distractors first (BM25's best other documents of ``pairs``, best
    first) and the right document last."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s puts its own logger at DEBUG

    corpus = sorted({document for _, document in pairs})
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    wanted = max(MULTI_DOCUMENTS)
    tokens = bm25s.tokenize([request for request, _ in pairs], stopwords="en", show_progress=False)
    hits, _ = retriever.retrieve(tokens, k=min(wanted, len(corpus)), show_progress=False)
    examples = []
    for (request, document), row in zip(pairs, hits):
        others = [corpus[int(i)] for i in row if corpus[int(i)] != document]
        count = rng.choice(MULTI_DOCUMENTS)
        if len(others) >= count - 1:  # a source too small for distractors gives no example
            examples.append((request, [*others[: count - 1], document]))
    return examples
