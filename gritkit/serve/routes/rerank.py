"""POST /v1/rerank: documents ordered by the cosine of their embedding with the query's.

The body and answer have the shape that Cohere's, Jina's, vLLM's and TEI's rerank endpoints share
(``{"model", "query", "documents", "top_n", "return_documents"}`` -> ``{"results": [{"index",
"relevance_score", "document"}]}``). GRIT has no cross-encoder: the score is the same model's
bi-encoder similarity, the query embedded after the query instruction and the documents after the
document instruction (GRIT: none), each through the worker's micro-batched embedding queue.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..batching import EmbeddingJob
from ..errors import APIError
from ..schemas import RerankRequest
from .common import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/rerank."""
    config, worker = state.config, state.worker

    @app.post("/v1/rerank")
    async def rerank(request: RerankRequest):
        state.check_model(request.model)
        documents = request.texts()
        if len(documents) > config.max_batch_size:
            raise APIError(400, f"documents has {len(documents)} texts, more than this server's limit of "
                                f"{config.max_batch_size} per request", param="documents", code="batch_too_large")
        for index, text in enumerate(documents):
            if not text:
                raise APIError(400, f"documents[{index}] is an empty string", param="documents", code="empty_input")
        instruction = config.query_instruction if request.instruction is None else request.instruction
        query = worker.submit_embedding(EmbeddingJob([request.query], instruction, param="query"))
        docs = worker.submit_embedding(EmbeddingJob(documents, config.document_instruction, param="documents[{}]"))
        (query_vector, query_tokens), (doc_vectors, doc_tokens) = await asyncio.gather(
            asyncio.wrap_future(query), asyncio.wrap_future(docs))
        scores = doc_vectors @ query_vector[0]  # both unit length: cosine similarities
        order = np.argsort(-scores, kind="stable")[: request.top_n]
        results = []
        for index in order.tolist():
            result = {"index": index, "relevance_score": float(scores[index])}
            if request.return_documents:
                result["document"] = {"text": documents[index]}
            results.append(result)
        tokens = query_tokens + doc_tokens
        return JSONResponse({"id": f"rerank-{uuid.uuid4().hex}", "model": config.model_name, "results": results,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
