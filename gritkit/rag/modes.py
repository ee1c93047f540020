"""What each RAG mode puts where: the exact strings, following the GritLM paper's reference code.

``{query}`` is the question, ``{docs}`` the retrieved documents joined by a blank line ("\\n\\n"),
``<s>`` the tokenizer's BOS token, ``{prefix}`` the optional answer prefix (empty by default; the
paper's NQ evaluation used "The answer is"). Generation always continues after ``<|assistant|>\\n``.

Uncached modes (one causal prompt, nothing reused):

- ``no_rag``:          ``<s><|user|>\\n{query}\\n<|assistant|>\\n{prefix}`` (no retrieval)
- ``rag_query_first``: ``<s><|user|>\\n{query}\\n\\n{docs}\\n\\n`` + QUERY_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``
- ``rag_doc_first``:   ``<s><|user|>\\n{docs}\\n\\n{query}\\n\\n`` + DOC_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``

Cached modes: first the key/value cache of one or more *embedding passes* (bidirectional), each
segment in GRIT's embedding format exactly as it was embedded, ``<s><|embed|>\\n{text}`` (with a
query instruction: ``<s><|user|>\\n{instruction}\\n<|embed|>\\n{query}``); then a causal
continuation, tokenised without BOS:

- ``query_cache``:     cache [query]        + ``\\n<|user|>\\n{docs}\\n\\n`` + QUERY_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``
- ``doc_cache``:       cache [doc_1..doc_k] + ``\\n<|user|>\\n{query}\\n\\n`` + DOC_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``
- ``query_doc_cache``: cache [query, doc_1..doc_k] + ``\\n<|user|>\\n`` + QUERY_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``
- ``doc_query_cache``: cache [doc_1..doc_k, query] + ``\\n<|user|>\\n`` + DOC_FIRST_TASK + ``\\n<|assistant|>\\n{prefix}``

A model with other chat markers sets the continuation in its ``GritFormat.after_cache`` (SmolLM2's
ChatML: ``<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n``); the uncached
modes use the tokenizer's own chat template. Every cached segment keeps its own ``<s><|embed|>\\n`` (the doc caches are made once at index
time, in one format, so a query never pays for a document's prefill; the reference also kept the
BOS of a second query segment, and re-encoded the document without BOS for query-doc caching
only, which would defeat the stored cache). Segments after the first are moved to their true
positions (see ``kv.py``). With several documents the doc segments are concatenated in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.formats import GritFormat

MODES = ("no_rag", "rag_query_first", "rag_doc_first", "query_cache", "doc_cache", "query_doc_cache", "doc_query_cache")
CACHE_MODES = ("query_cache", "doc_cache", "query_doc_cache", "doc_query_cache")
# Each cache mode's uncached twin: the same text in the same order, all encoded causally in one prompt.
UNCACHED_TWIN = {"query_cache": "rag_query_first", "doc_cache": "rag_doc_first",
                 "query_doc_cache": "rag_query_first", "doc_query_cache": "rag_doc_first"}

QUERY_FIRST_TASK = "Optionally using the prior context answer the query prior to it"
DOC_FIRST_TASK = "Answer the prior query while optionally using the context prior to it"
DOC_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ModePlan:
    """``cached``: the embedded segments in cache order ("query", "doc"); ``user``: the user
    turn's content; ``continues_cache``: whether the chat prompt follows a cache."""

    cached: tuple[str, ...]
    user: str
    continues_cache: bool


def normalize_mode(mode: str) -> str:
    """``doc-cache`` and ``doc_cache`` name the same mode; raise a ValueError for unknown names."""
    name = str(mode).strip().lower().replace("-", "_")
    if name not in MODES:
        raise ValueError(f"unknown RAG mode {mode!r}; choose one of {', '.join(MODES)}")
    return name


def plan(mode: str, query: str, docs: list[str]) -> ModePlan:
    """The cache order and user-turn content of ``mode`` for ``query`` and retrieved ``docs``."""
    mode = normalize_mode(mode)
    joined = DOC_SEPARATOR.join(docs)
    if mode == "no_rag":
        return ModePlan((), query, False)
    if mode == "rag_query_first":
        return ModePlan((), f"{query}\n\n{joined}\n\n{QUERY_FIRST_TASK}", False)
    if mode == "rag_doc_first":
        return ModePlan((), f"{joined}\n\n{query}\n\n{DOC_FIRST_TASK}", False)
    if mode == "query_cache":
        return ModePlan(("query",), f"{joined}\n\n{QUERY_FIRST_TASK}", True)
    if mode == "doc_cache":
        return ModePlan(("doc",), f"{query}\n\n{DOC_FIRST_TASK}", True)
    if mode == "query_doc_cache":
        return ModePlan(("query", "doc"), QUERY_FIRST_TASK, True)
    return ModePlan(("doc", "query"), DOC_FIRST_TASK, True)


def continuation_text(user: str, answer_prefix: str = "", fmt: GritFormat | None = None) -> str:
    """The chat turn that follows a cache: ``fmt.after_cache`` (GRIT's: a new line, then the user
    and assistant markers) with the user content, then the answer prefix."""
    return (fmt or GritFormat()).continuation(user) + answer_prefix
