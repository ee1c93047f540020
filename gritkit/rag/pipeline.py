"""Retrieval-augmented generation with one GRIT model, reusing the embedding pass's cache.

    rag = RagPipeline.load("my-index")                 # the model recorded in the index
    result = rag.ask("What is GRIT?", mode="doc_cache", top_k=1, max_new_tokens=32)
    result.answer, [(d.id, d.score, d.text) for d in result.documents]

The question is embedded once (bidirectional, GRIT's embedding format); that pass both finds
the documents and, in the query-caching modes, provides the query's keys/values. Doc caches come
from the index (made at index time). Generation is greedy unless sampling arguments are given.
The modes and their exact strings are in ``modes.py``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from ..model.gritlm import GritLM
from .index import RagIndex
from .cache_pool import DocCachePool
from .kv import KVSegment, check_supported, concatenate_segments, embed_with_cache
from .modes import continuation_text, normalize_mode, plan


@dataclass
class RetrievedDocument:
    id: int
    score: float
    text: str


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
    """A GRIT model and an index made with it.

    ``doc_cache_pool`` (a ``DocCachePool``) keeps the doc caches of recently retrieved documents
    in memory and makes the doc-caching modes work on an index without stored caches: a document
    not in the pool is read from the index's store, or embedded again to make its cache.
    """

    def __init__(self, model: GritLM, index: RagIndex, doc_cache_pool: DocCachePool | None = None):
        index.check_model(model)
        self.model = model
        self.index = index
        self.doc_cache_pool = doc_cache_pool

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
    def _embed_query(self, question: str, with_cache: bool) -> tuple[torch.Tensor, KVSegment | None]:
        return self._embed_one(question, self.index.settings.get("query_instruction", ""), with_cache)

    def _embed_one(self, text: str, instruction: str, with_cache: bool) -> tuple[torch.Tensor, KVSegment | None]:
        """One embedding pass as the index makes them (its max_length and causal_cache settings)."""
        settings = self.index.settings
        vectors, segments = embed_with_cache(self.model, [text], instruction, settings.get("max_length", 512),
                                             settings.get("causal_cache", False), with_cache=with_cache)
        return vectors[0], segments[0]

    def _search(self, vector: torch.Tensor, top_k: int) -> list[RetrievedDocument]:
        """The ``top_k`` best documents for one query vector, best first (an approximate search may
        return fewer: its missing slots, id -1, are left out)."""
        scores, ids = self.index.search(vector, top_k)
        return [RetrievedDocument(int(i), float(s), self.index.documents[int(i)])
                for s, i in zip(scores[0].tolist(), ids[0].tolist()) if int(i) >= 0]

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
            vector, query_segment = self._embed_query(question, with_cache="query" in steps.cached)
            documents = self._search(vector, top_k)
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
                segments.extend(self._doc_segment(d.id) for d in documents)
        cache, cached_ids = concatenate_segments(self.model.model, segments)
        tail = tokenizer(continuation_text(steps.user, answer_prefix, self.model.format), add_special_tokens=False)["input_ids"]
        return PreparedPrompt(documents, cached_ids + tail, cache, len(cached_ids))

    def _doc_segment(self, doc_id: int) -> KVSegment:
        if self.doc_cache_pool is not None:
            return self.doc_cache_pool.get(doc_id, lambda: self._read_or_embed_doc(doc_id))
        return self._stored_doc_segment(doc_id)

    def _read_or_embed_doc(self, doc_id: int) -> KVSegment:
        if self.index.doc_caches is not None:
            return self._stored_doc_segment(doc_id)
        return self._embed_one(self.index.documents[doc_id], "", with_cache=True)[1]

    def _stored_doc_segment(self, doc_id: int) -> KVSegment:
        if self.index.doc_caches is None:
            raise ValueError(f"index {self.index.path or ''} has no doc caches; rebuild it with cache_docs=True "
                             "(gritkit rag index --cache-docs) to use the doc-caching modes")
        # On the CPU the stored block is converted to the model's dtype while it is read (one pass);
        # elsewhere it travels in its stored dtype (fewer bytes) and is converted on the device.
        parameter = next(self.model.model.parameters())
        return self.index.doc_caches.segment(doc_id, parameter.dtype if parameter.device.type == "cpu" else None)

    # ------------------------------------------------------------------ answering
    def generate(self, prepared: PreparedPrompt, max_new_tokens: int = 64, **generation_kwargs) -> list[int]:
        """New token ids generated causally after ``prepared`` (greedy unless told otherwise)."""
        model, tokenizer = self.model.model, self.model.tokenizer
        input_ids = torch.tensor([prepared.input_ids], device=self.model.device)
        generation_kwargs.setdefault("do_sample", False)
        if prepared.cache is not None:
            generation_kwargs["cache"] = prepared.cache
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id, **generation_kwargs)
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
             **kwargs):
        """Answer a chat, retrieving from the index when the model writes the retrieval marker.

        For a model trained to decide when it needs a document (see ``self_retrieval.py``, which
        documents the other keyword arguments); returns a ``SelfRetrievalResult``.
        """
        from .self_retrieval import self_retrieving_chat

        return self_retrieving_chat(self, messages, max_new_tokens=max_new_tokens, max_retrievals=max_retrievals,
                                    top_k=top_k, **kwargs)
