"""POST /v1/rag: retrieval-augmented answers from the server's one model and a gritkit.rag index.

Not an OpenAI endpoint (OpenAI has none for this); the body is ``{"question", "mode", "top_k",
"max_tokens"}`` and the answer carries the retrieved documents with their scores. The modes are
those of ``gritkit.rag`` (``doc_cache`` reuses the documents' stored key/value caches from the
embedding pass); without ``mode`` the server uses ``doc_cache`` when the index stores doc caches
or the pipeline has a doc cache pool (``--doc-cache-memory``), else ``rag_doc_first``. The pipeline runs on the model worker thread like every other model call.

A chat request with GRIT's ``retrieval`` extra (``self_retrieving_completion``) is answered by the
self-retrieval loop: the model retrieves from the same index when it writes the retrieval marker;
the worker advances it one token at a time, between the decode steps of the running chats and
the embedding batches, so it holds none of them up for its whole length.
The answer is an ordinary chat completion plus ``retrieval`` (the documents used, after which
generated token, and whether each came from the doc cache or was read as text); usage counts the
documents and turn markers placed in the context as prompt tokens, those taken from doc caches
in ``prompt_tokens_details.cached_tokens`` as OpenAI names cached prompt tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ...rag.modes import continuation_text, normalize_mode, plan
from ...rag.self_retrieval import self_retrieval_steps
from ..batching import CallJob
from ..errors import APIError
from ..prompts import check_prompt_length
from ..schemas import ChatCompletionRequest, RagRequest
from .common import ServerState, check_max_tokens


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/rag answering with ``state.rag`` (a ``gritkit.rag.RagPipeline`` on the served model)."""
    pipeline, worker, model_name = state.rag, state.worker, state.config.model_name
    cached = pipeline.index.doc_caches is not None or pipeline.doc_cache_pool is not None
    default_mode = "doc_cache" if cached else "rag_doc_first"

    @app.post("/v1/rag")
    async def rag(request: RagRequest):
        max_tokens = check_max_tokens(request.max_tokens, state.config.max_tokens_limit)
        try:
            mode = normalize_mode(request.mode or default_mode)
        except ValueError as exc:
            raise APIError(400, str(exc), param="mode") from exc
        tokens = await _question_tokens(state, request.question, mode)
        check_prompt_length(tokens, state.config.max_input_tokens, "question",
                            "the question's prompt (documents not counted)")

        def ask():
            return pipeline.ask(request.question, mode=mode, top_k=request.top_k, max_new_tokens=max_tokens)

        try:
            result = await asyncio.wrap_future(worker.submit_call(CallJob(ask)))
        except ValueError as exc:  # a doc-caching mode on an index without doc caches, an unsupported model
            raise APIError(400, str(exc), param="mode") from exc
        completion = len(result.answer_token_ids)
        return JSONResponse({
            "id": f"rag-{uuid.uuid4().hex}", "object": "rag.answer", "created": int(time.time()), "model": model_name,
            "mode": result.mode, "answer": result.answer,
            "documents": [{"id": d.id, "score": d.score, "text": d.text} for d in result.documents],
            "usage": {"prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                      "completion_tokens": completion, "total_tokens": result.prompt_tokens + completion}})


async def _question_tokens(state: ServerState, question: str, mode: str) -> int:
    """The tokens of ``mode``'s prompt for ``question`` that are known before retrieval.

    ``RagPipeline.prepare`` builds the prompt around the retrieved documents, which are known only
    after the search (model work), so the documents are not counted: this is the question with
    the fixed parts of its prompt (chat template and task sentence; in the cached modes the
    continuation after the caches, and the question's own cache in the query-caching modes), or
    the question's query-embedding input (format and query instruction), whichever is longer.
    """
    prompts, steps = state.prompts, plan(mode, question, [])
    query = 0
    if mode != "no_rag":
        query = await prompts.embedding(question, state.rag.retriever.query_instruction)
    if not steps.continues_cache:
        return max(query, await prompts.chat([{"role": "user", "content": steps.user}]))
    tail = await prompts.text(continuation_text(steps.user, "", state.rag.model.format))
    return max(query, tail + (query if "query" in steps.cached else 0))


async def self_retrieving_completion(state: ServerState, request: ChatCompletionRequest, messages: list[dict],
                                     max_tokens: int) -> JSONResponse:
    """POST /v1/chat/completions with ``retrieval``: one answer of ``state.rag.chat`` on the worker."""
    pipeline = state.rag
    if pipeline is None:
        raise APIError(400, "retrieval needs an index: start the server with --index", param="retrieval")
    if request.stream:
        raise APIError(400, "retrieval answers are not streamed; send stream=false", param="stream")
    if request.stop_strings():
        raise APIError(400, "stop strings are not supported with retrieval", param="stop")
    # What the model sees before it retrieves: the chat prompt, and the last user message as the
    # query it embeds to search; the documents it places later are not counted.
    prompt = await state.prompts.chat(messages)
    query = await state.prompts.embedding(messages[-1]["content"], pipeline.retriever.query_instruction)
    check_prompt_length(max(prompt, query), state.config.max_input_tokens, "messages",
                        "the prompt (documents not counted)")
    options = request.retrieval

    def answer():  # a generator: the worker advances it one token at a time between other requests
        return self_retrieval_steps(pipeline, messages, max_new_tokens=max_tokens,
                                    max_retrievals=options.max_retrievals, top_k=options.top_k,
                                    retrieve=options.retrieve, doc_cache=options.doc_cache,
                                    temperature=request.temperature, top_p=request.top_p, seed=request.seed)

    try:
        result = await asyncio.wrap_future(state.worker.submit_call(CallJob(answer)))
    except ValueError as exc:  # doc_cache=true on an index without caches, an unsupported model
        raise APIError(400, str(exc), param="retrieval") from exc
    prompt = result.prompt_tokens + result.inserted_tokens
    completion = len(result.answer_token_ids)
    return JSONResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": state.config.model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": result.finish_reason, "logprobs": None}],
        "retrieval": {"documents": [{"id": r.document.id, "score": r.document.score, "text": r.document.text,
                                     "at_token": r.at_token, "source": r.source} for r in result.retrievals],
                      "notes": result.notes},
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}})
