"""What several routes share: the server's state, the checks every request passes, and running a
generation from a handler (queue it, wait for its start, then its result or its stream of events).

Handlers only validate and translate; every model call goes through ``ServerState.worker``, and
every prompt is counted (``ServerState.prompts``) before it is queued.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..batching import ModelWorker
from ..config import ServeConfig
from ..errors import APIError, error_body
from ..generation import GenerationJob, GenerationResult
from ..prompts import PromptTokens
from ..schemas import SamplingRequest

if TYPE_CHECKING:
    from ...rag import RagPipeline

DISCONNECT_POLL_S = 0.25  # how often a non-streamed generation checks that its client is still there


@dataclass
class ServerState:
    """What the routes of one app share: its resolved config, its worker, and what it serves."""

    config: ServeConfig  # instructions resolved: never None here
    worker: ModelWorker
    embedding_dim: int
    created: int  # when the app was made (Unix time): the model's "created"
    prompts: PromptTokens  # counts prompts against max_input_tokens before they are queued
    rag: RagPipeline | None = None  # on the served model's weights; adds /v1/rag and chat retrieval

    def check_model(self, name: str) -> None:
        """404 unless ``name`` is the model this server serves."""
        if name != self.config.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {self.config.model_name!r}",
                           param="model", code="model_not_found")

    def checked_max_tokens(self, request: SamplingRequest, max_tokens: int | None) -> int:
        """The request's token budget (the server's limit when not given); refuses what cannot be honoured."""
        self.check_model(request.model)
        if request.n != 1:
            raise APIError(400, "n must be 1: this server returns one choice per prompt", param="n")
        check_supported(request)
        return check_max_tokens(max_tokens, self.config.max_tokens_limit)


def check_supported(request: SamplingRequest) -> None:
    """400 naming every parameter the request sends that this server would otherwise ignore."""
    refused = request.refused()
    if refused:
        raise APIError(400, f"{', '.join(refused)}: not supported by this server, which generates plain text "
                            "(no tools, structured output or log probabilities); leave them out or send null",
                       param=refused[0], code="unsupported_parameter")


def check_max_tokens(max_tokens: int | None, limit: int) -> int:
    """``max_tokens``, or ``limit`` when not given; 400 when over ``limit``."""
    max_tokens = max_tokens or limit
    if max_tokens > limit:
        raise APIError(400, f"max_tokens={max_tokens} is more than this server's limit of {limit}",
                       param="max_tokens", code="max_tokens_too_large")
    return max_tokens


def generation_job(state: ServerState, request: SamplingRequest, messages: list[dict],
                   max_tokens: int | None) -> tuple[GenerationJob, asyncio.Queue]:
    """A job for ``messages`` with ``request``'s sampling, and the queue its events arrive on."""
    max_tokens = state.checked_max_tokens(request, max_tokens)
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def emit(event: tuple) -> None:  # called on the worker thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    job = GenerationJob(messages, max_tokens, request.temperature, request.top_p, request.seed,
                        request.stop_strings(), emit, stream=request.stream, ignore_eos=request.ignore_eos)
    return job, events


async def start_generation(state: ServerState, job: GenerationJob, events: asyncio.Queue) -> int:
    """Queue ``job`` and wait until it starts; returns its prompt token count."""
    state.worker.submit_generation(job)
    try:
        kind, value = await events.get()
    except asyncio.CancelledError:
        job.cancelled.set()
        raise
    if kind == "error":
        raise as_api_error(value)
    return value


async def finish_generation(job: GenerationJob, events: asyncio.Queue, http: Request) -> GenerationResult:
    """The job's result; a client that disconnects first cancels its generation (checked every
    DISCONNECT_POLL_S, since a non-streamed response has no write that would fail)."""
    checked = time.monotonic()
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:  # the builtin's alias from 3.11, another class on 3.10
                kind = value = None
            if time.monotonic() - checked >= DISCONNECT_POLL_S:
                checked = time.monotonic()
                if await http.is_disconnected():
                    raise APIError(499, "the client closed the connection", code="client_closed")
            if kind == "done":
                return value
            if kind == "error":
                raise as_api_error(value)
    finally:
        job.cancelled.set()  # a no-op when done; stops generation when the client left


def usage(*results: GenerationResult) -> dict:
    """OpenAI's ``usage`` object summed over ``results``."""
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def as_api_error(exc: Exception) -> APIError:
    """``exc`` as the error the client gets: itself when already an APIError, else a 500 that does
    not show the exception (the worker has logged it)."""
    if isinstance(exc, APIError):
        return exc
    return APIError(500, "generation failed: internal error (the server log has the details)", code="internal_error")


def include_usage(request: SamplingRequest) -> bool:
    """Whether a streamed answer ends with a chunk carrying ``usage`` (OpenAI's stream_options)."""
    return bool(request.stream_options and request.stream_options.include_usage)


def sse(chunks) -> StreamingResponse:
    """A server-sent events response sending ``chunks`` (already ``data: ...`` lines)."""
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def sse_event(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def stream_events(job: GenerationJob, events: asyncio.Queue, make_chunk, with_usage: bool):
    """Server-sent events: one chunk per text delta, a final chunk with finish_reason, [DONE].

    ``make_chunk(text, finish_reason)`` is the endpoint's chunk object around one delta."""
    try:
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield sse_event(make_chunk(value, None))
            elif kind == "done":
                yield sse_event(make_chunk(None, value.finish_reason))
                if with_usage:
                    yield sse_event({**make_chunk(None, None), "choices": [], "usage": usage(value)})
                break
            else:
                error = as_api_error(value)
                yield sse_event(error_body(error.status, error.message, error.param, error.code))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # the client went away (or we are done): stop generating
