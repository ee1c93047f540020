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

from importlib import import_module

# public name -> its module; imported on first use, so that reading the RAG modes (the CLI's
# parser does) does not import torch
_PUBLIC = {
    "RagIndex": "index", "RagPipeline": "pipeline", "RagResult": "pipeline", "PreparedPrompt": "pipeline",
    "Retriever": "retriever", "RetrievedDocument": "retriever",
    "MODES": "modes", "CACHE_MODES": "modes", "UNCACHED_TWIN": "modes",
    "SUPPORTED_MODEL_TYPES": "kv", "KVSegment": "kv", "UnsupportedModelError": "kv", "concatenate_segments": "kv",
    "embed_with_cache": "kv",
    "Retrieval": "self_retrieval", "SelfRetrievalResult": "self_retrieval", "self_retrieving_chat": "self_retrieval",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
