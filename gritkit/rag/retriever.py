"""Finding the documents for a question, and giving each document's key/value cache.

    retriever = Retriever(model, index)                  # RagPipeline makes one: pipeline.retriever
    vector, _ = retriever.embed_query("What is GRIT?")
    documents = retriever.search(vector, top_k=3)
    segment = retriever.doc_segment(documents[0].id)

Both users of an index need exactly these pieces, done the same way: the RAG modes
(``pipeline.py``) and the loop in which the model decides itself when to retrieve
(``self_retrieval.py``). A question is embedded in one pass made as the index makes its passes
(its ``max_length`` and ``causal_cache`` settings), after the query instruction (see
``Retriever.query_instruction``); that pass can also keep the question's keys/values for the
query-caching modes. A document's cache comes from the doc cache pool, the index's store, or
one more embedding pass of the document (the pass that made it at index time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.gritlm import GritLM
from .cache_pool import DocCachePool
from .index import RagIndex
from .kv import KVSegment, embed_with_cache


@dataclass
class RetrievedDocument:
    id: int
    score: float
    text: str


class Retriever:
    """A GRIT model and an index made with it (``ValueError`` if the model is not the one that
    made it), with an optional ``DocCachePool`` (see ``doc_segment``)."""

    def __init__(self, model: GritLM, index: RagIndex, doc_cache_pool: DocCachePool | None = None):
        index.check_model(model)
        self.model = model
        self.index = index
        self.doc_cache_pool = doc_cache_pool

    @property
    def query_instruction(self) -> str:
        """What questions are embedded after: the index's recorded ``query_instruction`` when it
        records a string ("" embeds them bare, as every index saved before None was the default
        does), else (None, the default of ``RagIndex.build``) the model's
        ``config.default_query_instruction``, so questions are embedded as ``GritLM.encode_query``
        embeds them. The model's config is the one the index was built with (``check_model``)."""
        recorded = self.index.settings.get("query_instruction")
        return self.model.config.default_query_instruction if recorded is None else recorded

    @property
    def max_length(self) -> int:
        """Tokens per embedded question or document, format included (the index's setting)."""
        return self.index.settings.get("max_length", 512)

    @property
    def has_doc_caches(self) -> bool:
        """Whether ``doc_segment`` can give caches: the index stores them or there is a pool."""
        return self.index.doc_caches is not None or self.doc_cache_pool is not None

    def embed_query(self, question: str, with_cache: bool = False) -> tuple[torch.Tensor, KVSegment | None]:
        """The question's unit vector and, ``with_cache``, the keys/values of the same pass (else None)."""
        return self._embed(question, self.query_instruction, with_cache)

    def search(self, vector: torch.Tensor, top_k: int) -> list[RetrievedDocument]:
        """The ``top_k`` best documents for one query vector, best first (an approximate search may
        return fewer: its missing slots, id -1, are left out)."""
        scores, ids = self.index.search(vector, top_k)
        return [RetrievedDocument(int(i), float(s), self.index.documents[int(i)])
                for s, i in zip(scores[0].tolist(), ids[0].tolist()) if int(i) >= 0]

    def doc_segment(self, doc_id: int) -> KVSegment:
        """Document ``doc_id``'s cache: from the pool when there is one (which, on a miss, reads the
        index's store or embeds the document again), else from the index's store (ValueError
        when the index has none)."""
        if self.doc_cache_pool is not None:
            return self.doc_cache_pool.get(doc_id, lambda: self._read_or_embed_doc(doc_id))
        return self._stored_doc_segment(doc_id)

    def _embed(self, text: str, instruction: str, with_cache: bool) -> tuple[torch.Tensor, KVSegment | None]:
        """One embedding pass as the index makes them (its max_length and causal_cache settings)."""
        vectors, segments = embed_with_cache(self.model, [text], instruction, self.max_length,
                                             self.index.settings.get("causal_cache", False), with_cache=with_cache)
        return vectors[0], segments[0]

    def _read_or_embed_doc(self, doc_id: int) -> KVSegment:
        if self.index.doc_caches is not None:
            return self._stored_doc_segment(doc_id)
        return self._embed(self.index.documents[doc_id], "", with_cache=True)[1]

    def _stored_doc_segment(self, doc_id: int) -> KVSegment:
        if self.index.doc_caches is None:
            raise ValueError(f"index {self.index.path or ''} has no doc caches; rebuild it with cache_docs=True "
                             "(gritkit rag index --cache-docs) to use the doc-caching modes")
        # On the CPU the stored block is converted to the model's dtype while it is read (one pass);
        # elsewhere it travels in its stored dtype (fewer bytes) and is converted on the device.
        parameter = next(self.model.model.parameters())
        return self.index.doc_caches.segment(doc_id, parameter.dtype if parameter.device.type == "cpu" else None)
