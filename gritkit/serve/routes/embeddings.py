"""POST /v1/embeddings: OpenAI's embeddings endpoint, with GRIT's instructions and binary vectors.

The texts go to the worker's micro-batched embedding queue; what follows (OpenAI's
``dimensions``, ``precision``, base64) only reshapes the vectors that come back.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ...model.quantize import quantize
from ..batching import EmbeddingJob
from ..errors import APIError
from ..schemas import EmbeddingRequest
from .common import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/embeddings."""
    config, worker, dim = state.config, state.worker, state.embedding_dim

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest):
        state.check_model(request.model)
        texts = [request.input] if isinstance(request.input, str) else request.input
        for index, text in enumerate(texts):
            if not text:
                raise APIError(400, f"input[{index}] is an empty string", param="input", code="empty_input")
        if len(texts) > config.max_batch_size:
            raise APIError(400, f"input has {len(texts)} texts, more than this server's limit of "
                                f"{config.max_batch_size} per request", param="input", code="batch_too_large")
        if request.instruction is not None and request.input_type is not None:
            raise APIError(400, "give either instruction or input_type, not both", param="instruction")
        if request.dimensions is not None and request.dimensions > dim:
            raise APIError(400, f"dimensions={request.dimensions} is more than this model's {dim}",
                           param="dimensions")
        instruction = request.instruction
        if instruction is None:
            instruction = {"query": config.query_instruction}.get(request.input_type, config.document_instruction)
        future = worker.submit_embedding(EmbeddingJob(texts, instruction))
        vectors, tokens = await asyncio.wrap_future(future)
        if request.dimensions is not None:  # OpenAI's meaning: the first dimensions, unit length again
            vectors = vectors[:, : request.dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        if request.precision != "float32":
            vectors = quantize(vectors, request.precision)
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, request.encoding_format)}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": config.model_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode_vector(vector: np.ndarray, encoding_format: str):
    """A JSON list, or base64 of the raw bytes: OpenAI's little-endian float32, or the packed
    bytes of a binary vector (int8 or uint8, one byte per 8 dimensions)."""
    if encoding_format == "base64":
        raw = vector if vector.dtype in (np.int8, np.uint8) else np.asarray(vector, dtype="<f4")
        return base64.b64encode(raw.tobytes()).decode("ascii")
    return vector.tolist()
