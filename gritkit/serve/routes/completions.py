"""POST /v1/completions: OpenAI's text completions, each prompt answered as one user message.

GRIT is a chat model, so a bare prompt is put in the chat format as the user's turn rather than
continued as raw text.
"""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..schemas import CompletionRequest
from .common import (ServerState, finish_generation, generation_job, include_usage, sse, start_generation,
                     stream_events, usage)


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add POST /v1/completions."""
    config = state.config

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, http: Request):
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) > config.max_batch_size:
            raise APIError(400, f"prompt has {len(prompts)} prompts, more than this server's limit of "
                                f"{config.max_batch_size}", param="prompt", code="batch_too_large")
        if request.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", param="prompt")
        state.checked_max_tokens(request, request.max_tokens)
        counts = []
        for index, prompt in enumerate(prompts):  # every prompt, before the first is queued
            param = "prompt" if isinstance(request.prompt, str) else f"prompt[{index}]"
            counts.append(await state.prompts.check_chat([{"role": "user", "content": prompt}], param=param))
        ident = f"cmpl-{uuid.uuid4().hex}"
        if request.stream:
            job, events = generation_job(state, request, [{"role": "user", "content": prompts[0]}], request.max_tokens)
            job.prompt_tokens = counts[0]
            await start_generation(state, job, events)
            return sse(_completion_chunks(ident, config.model_name, job, events, include_usage(request)))
        choices, results = [], []
        # Prompts run one after another so that one request holds one queue slot (and cannot be
        # half-refused with 503); concurrent requests are what the decoder batches.
        for index, prompt in enumerate(prompts):
            job, events = generation_job(state, request, [{"role": "user", "content": prompt}], request.max_tokens)
            job.prompt_tokens = counts[index]
            await start_generation(state, job, events)
            result = await finish_generation(job, events, http)
            results.append(result)
            choices.append({"index": index, "text": result.text, "finish_reason": result.finish_reason,
                            "logprobs": None})
        return JSONResponse({"id": ident, "object": "text_completion", "created": int(time.time()),
                             "model": config.model_name, "choices": choices, "usage": usage(*results)})


def _completion_chunks(ident, model_name, job, events, with_usage):
    """The streamed answer: one text_completion chunk per delta."""
    created = int(time.time())

    def chunk(text, finish_reason):
        return {"id": ident, "object": "text_completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}]}

    return stream_events(job, events, chunk, with_usage)
