"""Retrieval-augmented generation with one GRIT model, reusing the embedding pass's key/value cache.

    from gritkit.rag import RagIndex, RagPipeline
    RagIndex.build(model, documents, model_path="model-dir", cache_docs=True, cache_dir="tmp-cache").save("idx")
    RagPipeline.load("idx").ask("question", mode="doc_cache", top_k=1)

``modes.py`` states what text each mode puts where; ``kv.py`` how caches are made and moved to
their true positions; ``storage.py`` the on-disk doc caches; ``index.py`` the index (``search.py``
its exact or approximate search); ``retriever.py`` how a question finds documents and a document
gives its cache, for both ``pipeline.py`` (the modes) and ``self_retrieval.py`` (the loop in which
the model itself decides when to retrieve, ``RagPipeline.chat``); ``cache_pool.py`` the doc caches
kept in memory.
"""

from .index import RagIndex
from .kv import SUPPORTED_MODEL_TYPES, KVSegment, UnsupportedModelError, concatenate_segments, embed_with_cache
from .modes import CACHE_MODES, MODES, UNCACHED_TWIN
from .pipeline import PreparedPrompt, RagPipeline, RagResult
from .retriever import RetrievedDocument, Retriever
from .self_retrieval import Retrieval, SelfRetrievalResult, self_retrieving_chat

__all__ = ["RagIndex", "RagPipeline", "RagResult", "Retriever", "RetrievedDocument", "PreparedPrompt", "MODES",
           "CACHE_MODES", "UNCACHED_TWIN", "SUPPORTED_MODEL_TYPES", "KVSegment", "UnsupportedModelError", "concatenate_segments",
           "embed_with_cache", "Retrieval", "SelfRetrievalResult", "self_retrieving_chat"]
