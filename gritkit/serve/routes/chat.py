"""POST /v1/chat/completions: OpenAI's chat endpoint, whole or streamed, on GRIT's chat format.

OpenAI messages become GRIT chat turns (GRIT has no system role); the turns are decoded in the
worker's running batch. A request with GRIT's ``retrieval`` extra is answered by the
self-retrieval loop instead (``routes/rag.py``).
"""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..schemas import ChatCompletionRequest, ChatMessage
from .common import (ServerState, finish_generation, generation_job, include_usage, sse, sse_event, start_generation,
                     stream_events, usage)


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/chat/completions."""
    model_name = state.config.model_name

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        max_tokens = request.max_completion_tokens or request.max_tokens
        messages = _grit_messages(request.messages)
        if request.retrieval is not None:
            from .rag import self_retrieving_completion  # here: gritkit.rag is imported only when used

            max_tokens = state.checked_max_tokens(request, max_tokens)
            return await self_retrieving_completion(state, request, messages, max_tokens)
        job, events = generation_job(state, request, messages, max_tokens)
        job.prompt_tokens = await state.prompts.check_chat(messages, param="messages")
        await start_generation(state, job, events)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            return sse(_chat_chunks(ident, model_name, job, events, include_usage(request)))
        result = await finish_generation(job, events, http)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": usage(result)})


def _grit_messages(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages -> GRIT chat turns (user/assistant only).

    GRIT's format has no system prompt: system (and developer) text is put before the next user
    message, separated by a blank line. The conversation must end with a user message.
    """
    turns, pending = [], []
    for message in messages:
        if message.role in ("system", "developer"):
            pending.append(message.text())
        elif message.role == "user":
            turns.append({"role": "user", "content": "\n\n".join([*pending, message.text()])})
            pending = []
        else:
            turns.append({"role": "assistant", "content": message.text()})
    if pending or turns[-1]["role"] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    return turns


def _chat_chunks(ident, model_name, job, events, with_usage):
    """The streamed answer: a first chunk with the assistant role, then one chunk per delta."""
    created = int(time.time())

    def chunk(text, finish_reason):
        delta = {} if text is None else {"content": text}
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    async def chunks():
        first = chunk("", None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield sse_event(first)
        async for event in stream_events(job, events, chunk, with_usage):
            yield event

    return chunks()
