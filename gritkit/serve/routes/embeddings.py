"""POST /v1/embeddings: OpenAI's embeddings endpoint, with GRIT's instructions and binary vectors.

The input is a text, texts, or (as OpenAI, vLLM and LangChain's default send) token ids of the
model's tokenizer, decoded to texts here. The texts go to the worker's micro-batched embedding
queue; what follows (OpenAI's ``dimensions``, ``precision``, base64) only reshapes the vectors
that come back.
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
from ..prompts import PromptTokens
from ..schemas import EmbeddingRequest
from .common import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/embeddings."""
    config, worker, dim = state.config, state.worker, state.embedding_dim

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest):
        state.check_model(request.model)
        inputs = _inputs(request.input)
        if len(inputs) > config.max_embedding_inputs:
            raise APIError(400, f"input has {len(inputs)} texts, more than this server's limit of "
                                f"{config.max_embedding_inputs} per request", param="input", code="batch_too_large")
        if request.instruction is not None and request.input_type is not None:
            raise APIError(400, "give either instruction or input_type, not both", param="instruction")
        if request.dimensions is not None and request.dimensions > dim:
            raise APIError(400, f"dimensions={request.dimensions} is more than this model's {dim}",
                           param="dimensions")
        texts = await _texts(inputs, state.prompts)
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


def _inputs(given) -> list:
    """The request's inputs, one per text: a str, or a list of token ids."""
    if isinstance(given, str) or isinstance(given[0], int):
        return [given]
    return list(given)


async def _texts(inputs: list, prompts: PromptTokens) -> list[str]:
    """The texts to embed: token-id inputs decoded with the model's own tokenizer.

    Token ids become the text they spell, and the text is embedded: the worker embeds texts in
    GRIT's format (markers and instruction before the text) in batches with other requests, and
    a tokenizer's decoding gives back the text its ids were made from. The model may split that
    text into other ids than those sent (its own split of the text), which is what it embeds when
    the same text is sent as a string, so ids and text get the same vector.
    """
    given = [index for index, item in enumerate(inputs) if not isinstance(item, str)]
    for index in given:
        _check_ids(inputs[index], index, prompts.vocabulary)
    decoded = dict(zip(given, await prompts.decode([inputs[i] for i in given]))) if given else {}
    texts = [decoded.get(index, item) for index, item in enumerate(inputs)]
    for index, text in enumerate(texts):
        if not text:
            message = (f"the token ids of input[{index}] spell no text" if index in decoded
                       else f"input[{index}] is an empty string")
            raise APIError(400, message, param=f"input[{index}]", code="empty_input")
    return texts


def _check_ids(ids: list[int], index: int, vocabulary: int) -> None:
    """400 naming the first id of ``input[index]`` outside the model's vocabulary."""
    bad = next((i for i in ids if not 0 <= i < vocabulary), None)
    if bad is not None:
        raise APIError(400, f"input[{index}] has token id {bad}, outside this model's vocabulary of {vocabulary} "
                            f"tokens (ids 0 to {vocabulary - 1})", param=f"input[{index}]", code="invalid_token_id")


def _encode_vector(vector: np.ndarray, encoding_format: str):
    """A JSON list, or base64 of the raw bytes: OpenAI's little-endian float32, or the packed
    bytes of a binary vector (int8 or uint8, one byte per 8 dimensions)."""
    if encoding_format == "base64":
        raw = vector if vector.dtype in (np.int8, np.uint8) else np.asarray(vector, dtype="<f4")
        return base64.b64encode(raw.tobytes()).decode("ascii")
    return vector.tolist()
