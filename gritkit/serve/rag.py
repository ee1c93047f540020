"""POST /v1/rag: retrieval-augmented answers from the server's one model and a gritkit.rag index.

Not an OpenAI endpoint (OpenAI has none for this); the body is ``{"question", "mode", "top_k",
"max_tokens"}`` and the answer carries the retrieved documents with their scores. The modes are
those of ``gritkit.rag`` (``doc_cache`` reuses the documents' stored key/value caches from the
embedding pass); without ``mode`` the server uses ``doc_cache`` when the index stores doc caches
or the pipeline has a doc cache pool (``--doc-cache-memory``), else ``rag_doc_first``. The pipeline runs on the model worker thread like every other model call.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .batching import CallJob, ModelWorker
from .errors import APIError
from .schemas import RagRequest


def install_rag_route(app: FastAPI, worker: ModelWorker, pipeline, model_name: str, max_tokens_limit: int) -> None:
    """Add POST /v1/rag answering with ``pipeline`` (a ``gritkit.rag.RagPipeline`` on the served model)."""
    cached = pipeline.index.doc_caches is not None or pipeline.doc_cache_pool is not None
    default_mode = "doc_cache" if cached else "rag_doc_first"

    @app.post("/v1/rag")
    async def rag(request: RagRequest):
        max_tokens = request.max_tokens or max_tokens_limit
        if max_tokens > max_tokens_limit:
            raise APIError(400, f"max_tokens={max_tokens} is more than this server's limit of {max_tokens_limit}",
                           param="max_tokens", code="max_tokens_too_large")
        mode = request.mode or default_mode

        def ask():
            return pipeline.ask(request.question, mode=mode, top_k=request.top_k, max_new_tokens=max_tokens)

        try:
            result = await asyncio.wrap_future(worker.submit_call(CallJob(ask)))
        except ValueError as exc:  # unknown mode, an index without doc caches, an unsupported model
            raise APIError(400, str(exc), param="mode") from exc
        completion = len(result.answer_token_ids)
        return JSONResponse({
            "id": f"rag-{uuid.uuid4().hex}", "object": "rag.answer", "created": int(time.time()), "model": model_name,
            "mode": result.mode, "answer": result.answer,
            "documents": [{"id": d.id, "score": d.score, "text": d.text} for d in result.documents],
            "usage": {"prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                      "completion_tokens": completion, "total_tokens": result.prompt_tokens + completion}})
