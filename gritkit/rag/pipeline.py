"""Retrieval-augmented generation with one GRIT model, reusing the embedding pass's cache.

    rag = RagPipeline.load("my-index")                 # the model recorded in the index
    result = rag.ask("What is GRIT?", mode="doc_cache", top_k=1, max_new_tokens=32)
    result.answer, [(d.id, d.score, d.text) for d in result.documents]

The question is embedded once (bidirectional, GRIT's embedding format, after the index's query
instruction); that pass both finds the documents and, in the query-caching modes, provides the
query's keys/values. Doc caches come from the index (made at index time) or a doc cache pool.
Both are the ``Retriever``'s work (``retriever.py``); this module builds each mode's prompt from
them and generates, greedy unless sampling arguments are given. The modes and their exact
strings are in ``modes.py``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from ..model.gritlm import GritLM
from .cache_pool import DocCachePool
from .index import RagIndex
from .kv import check_supported, concatenate_segments
from .modes import continuation_text, normalize_mode, plan
from .retriever import RetrievedDocument, Retriever
from .self_retrieval import SelfRetrievalResult, self_retrieving_chat


@dataclass
class RagResult:
    """An answer and what it was made from. ``cached_tokens`` came from embedding passes;
    ``prompt_tokens`` is the whole prompt (cached tokens included)."""

    question: str
    mode: str
    answer: str
    documents: list[RetrievedDocument]
    prompt_tokens: int
    cached_tokens: int
    answer_token_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreparedPrompt:
    """Everything generation needs: ``input_ids`` (cached tokens first) and the cache (or None)."""

    documents: list[RetrievedDocument]
    input_ids: list[int]
    cache: object | None
    cached_tokens: int


class RagPipeline:
    """A GRIT model and an index made with it (``retriever`` finds documents and gives their caches).

    ``doc_cache_pool`` (a ``DocCachePool``) keeps the doc caches of recently retrieved documents
    in memory and makes the doc-caching modes work on an index without stored caches: a document
    not in the pool is read from the index's store, or embedded again to make its cache.
    """

    def __init__(self, model: GritLM, index: RagIndex, doc_cache_pool: DocCachePool | None = None):
        self.retriever = Retriever(model, index, doc_cache_pool)

    @property
    def model(self) -> GritLM:
        return self.retriever.model

    @property
    def index(self) -> RagIndex:
        return self.retriever.index

    @property
    def doc_cache_pool(self) -> DocCachePool | None:
        return self.retriever.doc_cache_pool

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model: GritLM | str | os.PathLike | None = None,
             device=None, dtype=None, doc_cache_pool: DocCachePool | None = None) -> "RagPipeline":
        """Open ``index_dir`` with ``model`` (a GritLM, a model directory, or None for the model
        directory recorded in the index)."""
        index = RagIndex.load(index_dir)
        if not isinstance(model, GritLM):
            path = model or index.settings.get("model")
            if not path:
                raise ValueError(f"index {index_dir} records no model directory; pass model=")
            from ..weights.shipped import resolve_model_dir

            try:
                resolve_model_dir(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"model {path} (recorded in {index_dir}/index.json) not found; "
                                        "pass model=") from None
            model = GritLM.from_pretrained(path, device=device, dtype=dtype)
        return cls(model, index, doc_cache_pool)

    # ------------------------------------------------------------------ building the prompt
    def prepare(self, question: str, mode: str = "doc_cache", top_k: int = 1, answer_prefix: str = "") -> PreparedPrompt:
        """Retrieve, and build the token ids and key/value cache that ``mode`` generates from."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question must be a non-empty string")
        mode = normalize_mode(mode)
        documents: list[RetrievedDocument] = []
        query_segment = None
        steps = plan(mode, question, [])
        if steps.cached:
            check_supported(self.model.model)
        if mode != "no_rag":
            vector, query_segment = self.retriever.embed_query(question, with_cache="query" in steps.cached)
            documents = self.retriever.search(vector, top_k)
            steps = plan(mode, question, [d.text for d in documents])
        tokenizer = self.model.tokenizer
        if not steps.continues_cache:
            ids = self.model.chat_input_ids(steps.user) + tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
            return PreparedPrompt(documents, ids, None, 0)
        segments = []
        for part in steps.cached:
            if part == "query":
                segments.append(query_segment)
            else:
                segments.extend(self.retriever.doc_segment(d.id) for d in documents)
        cache, cached_ids = concatenate_segments(self.model.model, segments)
        tail = tokenizer(continuation_text(steps.user, answer_prefix, self.model.format), add_special_tokens=False)["input_ids"]
        return PreparedPrompt(documents, cached_ids + tail, cache, len(cached_ids))

    # ------------------------------------------------------------------ answering
    def generate(self, prepared: PreparedPrompt, max_new_tokens: int = 64, **generation_kwargs) -> list[int]:
        """New token ids generated causally after ``prepared`` (greedy unless told otherwise)."""
        input_ids = torch.tensor([prepared.input_ids], device=self.model.device)
        output = self.model.generate_ids(input_ids, torch.ones_like(input_ids), max_new_tokens, cache=prepared.cache,
                                         **generation_kwargs)
        return output[0, input_ids.shape[1]:].tolist()

    def ask(self, question: str, mode: str = "doc_cache", top_k: int = 1, max_new_tokens: int = 64,
            answer_prefix: str = "", **generation_kwargs) -> RagResult:
        """Answer ``question`` with ``mode`` (see ``modes.MODES``) from the ``top_k`` best documents.

        Returns a RagResult with the documents (id, cosine score, text; empty for ``no_rag``),
        the answer text and its token ids, and how many prompt tokens came from caches.
        """
        mode = normalize_mode(mode)
        prepared = self.prepare(question, mode, top_k, answer_prefix)
        new_ids = self.generate(prepared, max_new_tokens, **generation_kwargs)
        answer = self.model.tokenizer.decode(new_ids, skip_special_tokens=True)
        return RagResult(question, mode, answer, prepared.documents, len(prepared.input_ids),
                         prepared.cached_tokens, new_ids)

    def chat(self, messages: list[dict] | str, max_new_tokens: int = 64, max_retrievals: int = 1, top_k: int = 1,
             **kwargs) -> SelfRetrievalResult:
        """Answer a chat, retrieving from the index when the model writes the retrieval marker.

        For a model trained to decide when it needs a document (see ``self_retrieval.py``, which
        documents the other keyword arguments); returns a ``SelfRetrievalResult``.
        """
        return self_retrieving_chat(self, messages, max_new_tokens=max_new_tokens, max_retrievals=max_retrievals,
                                    top_k=top_k, **kwargs)
