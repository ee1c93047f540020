"""The FastAPI application: OpenAI-compatible embeddings, chat and text completions from one GritLM.

    from gritkit.serve import ServeConfig, create_app
    app = create_app(GritLM.from_pretrained("model"), ServeConfig(model_name="grit"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Handlers only validate and translate; every model call goes through the single ``ModelWorker``
thread (see batching.py), so one copy of the weights serves both jobs safely.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from contextlib import asynccontextmanager
import dataclasses
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .batching import EmbeddingJob, ModelWorker
from .errors import APIError, error_body, install_error_handlers
from .generation import GenerationJob, GenerationResult
from ..model.quantize import quantize
from .middleware import Guard
from .rerank import install_rerank_route
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest, _Sampling


FALLBACK_QUERY_INSTRUCTION = "Given a question, retrieve passages that answer it"
DISCONNECT_POLL_S = 0.25  # how often a non-streamed generation checks that its client is still there


@dataclass
class ServeConfig:
    """Everything the server is told at start-up; the limits answer 400/413/503 when exceeded."""

    model_name: str = "gritkit"
    api_key: str | None = None
    max_input_tokens: int = 512  # per embedded text or per prompt, format and instruction included
    max_batch_size: int = 64  # texts per embedding request, and per batched forward pass
    max_tokens_limit: int = 512  # largest max_tokens a request may ask for (also the chat default)
    max_body_bytes: int = 1 << 20
    max_queue: int = 64  # requests waiting for the model before 503
    batch_wait_s: float = 0.002  # how long an embedding batch waits for stragglers (on an idle worker only)
    max_running: int = 16  # chat requests decoded together in one batch; 1 decodes one at a time
    # None: the model's saved instructions (GritConfig), the query one falling back to
    # FALLBACK_QUERY_INSTRUCTION when the model has none (GRIT embeds documents without one).
    query_instruction: str | None = None
    document_instruction: str | None = None


def create_app(model, config: ServeConfig, rag=None) -> FastAPI:
    """An ASGI app serving ``model`` (a GritLM); its worker thread runs while the app is up.

    ``rag``, a ``gritkit.rag.RagPipeline`` built on the same ``model``, adds POST /v1/rag.
    """
    if rag is not None and rag.model is not model:
        raise ValueError("the RAG pipeline must use the served model, not a second copy of the weights")
    saved = model.config
    config = dataclasses.replace(
        config, query_instruction=config.query_instruction if config.query_instruction is not None
        else saved.query_instruction or FALLBACK_QUERY_INSTRUCTION,
        document_instruction=config.document_instruction if config.document_instruction is not None
        else saved.document_instruction)
    worker = ModelWorker(model, max_queue=config.max_queue, max_batch_size=config.max_batch_size,
                         max_input_tokens=config.max_input_tokens, batch_wait_s=config.batch_wait_s,
                         max_running=config.max_running)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.to_thread(worker.stop)

    app = FastAPI(title="gritkit", summary="GRIT model: OpenAI-compatible embeddings and generation",
                  lifespan=lifespan)
    app.state.worker, app.state.config = worker, config
    install_error_handlers(app)
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    created = int(time.time())
    dim = model.embedding_dim

    def check_model(name: str) -> None:
        if name != config.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": worker.queued, "embedded_texts": worker.embedded_texts,
                "embedding_passes": worker.embedding_passes, "running_generations": worker.decoder.running,
                "decode_steps": worker.decoder.steps}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(config.model_name, created)]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        check_model(model_id)
        return _model_card(config.model_name, created)

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest):
        check_model(request.model)
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

    def checked_max_tokens(request: _Sampling, max_tokens: int | None) -> int:
        """The request's token budget (the server's limit when not given); refuses what cannot be honoured."""
        check_model(request.model)
        if request.n != 1:
            raise APIError(400, "n must be 1: this server returns one choice per prompt", param="n")
        max_tokens = max_tokens or config.max_tokens_limit
        if max_tokens > config.max_tokens_limit:
            raise APIError(400, f"max_tokens={max_tokens} is more than this server's limit of "
                                f"{config.max_tokens_limit}", param="max_tokens", code="max_tokens_too_large")
        return max_tokens

    def generation_job(request: _Sampling, messages: list[dict], max_tokens: int | None) -> tuple[GenerationJob, asyncio.Queue]:
        max_tokens = checked_max_tokens(request, max_tokens)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event: tuple) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is closed: the server is shutting down
                pass

        job = GenerationJob(messages, max_tokens, request.temperature, request.top_p, request.seed,
                            request.stop_strings(), emit, stream=request.stream, ignore_eos=request.ignore_eos)
        return job, events

    async def start(job: GenerationJob, events: asyncio.Queue) -> int:
        """Queue ``job`` and wait until it starts; returns its prompt token count."""
        worker.submit_generation(job)
        try:
            kind, value = await events.get()
        except asyncio.CancelledError:
            job.cancelled.set()
            raise
        if kind == "error":
            raise _as_api_error(value)
        return value

    async def finish(job: GenerationJob, events: asyncio.Queue, http: Request) -> GenerationResult:
        """The job's result; a client that disconnects first cancels its generation (checked every
        DISCONNECT_POLL_S, since a non-streamed response has no write that would fail)."""
        checked = time.monotonic()
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    kind = value = None
                if time.monotonic() - checked >= DISCONNECT_POLL_S:
                    checked = time.monotonic()
                    if await http.is_disconnected():
                        raise APIError(499, "the client closed the connection", code="client_closed")
                if kind == "done":
                    return value
                if kind == "error":
                    raise _as_api_error(value)
        finally:
            job.cancelled.set()  # a no-op when done; stops generation when the client left

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        if request.retrieval is not None:
            from .rag import self_retrieving_completion

            max_tokens = checked_max_tokens(request, request.max_completion_tokens or request.max_tokens)
            return await self_retrieving_completion(worker, rag, request, _grit_messages(request.messages),
                                                    max_tokens, config.model_name)
        job, events = generation_job(request, _grit_messages(request.messages),
                                     request.max_completion_tokens or request.max_tokens)
        await start(job, events)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            return _sse(_chat_chunks(ident, config.model_name, job, events, _include_usage(request)))
        result = await finish(job, events, http)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": config.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": _usage(result)})

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, http: Request):
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) > config.max_batch_size:
            raise APIError(400, f"prompt has {len(prompts)} prompts, more than this server's limit of "
                                f"{config.max_batch_size}", param="prompt", code="batch_too_large")
        if request.stream and len(prompts) > 1:
            raise APIError(400, "stream=true takes a single prompt", param="prompt")
        ident = f"cmpl-{uuid.uuid4().hex}"
        if request.stream:
            job, events = generation_job(request, [{"role": "user", "content": prompts[0]}], request.max_tokens)
            await start(job, events)
            return _sse(_completion_chunks(ident, config.model_name, job, events, _include_usage(request)))
        choices, results = [], []
        # Prompts run one after another so that one request holds one queue slot (and cannot be
        # half-refused with 503); concurrent requests are what the decoder batches.
        for index, prompt in enumerate(prompts):
            job, events = generation_job(request, [{"role": "user", "content": prompt}], request.max_tokens)
            await start(job, events)
            result = await finish(job, events, http)
            results.append(result)
            choices.append({"index": index, "text": result.text, "finish_reason": result.finish_reason,
                            "logprobs": None})
        return JSONResponse({"id": ident, "object": "text_completion", "created": int(time.time()),
                             "model": config.model_name, "choices": choices, "usage": _usage(*results)})

    install_rerank_route(app, worker, check_model, config)
    if rag is not None:
        from .rag import install_rag_route

        install_rag_route(app, worker, rag, config.model_name, config.max_tokens_limit)
    return app


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "gritkit"}


def _encode_vector(vector: np.ndarray, encoding_format: str):
    """A JSON list, or base64 of the raw bytes: OpenAI's little-endian float32, or the packed
    bytes of a binary vector (int8 or uint8, one byte per 8 dimensions)."""
    if encoding_format == "base64":
        raw = vector if vector.dtype in (np.int8, np.uint8) else np.asarray(vector, dtype="<f4")
        return base64.b64encode(raw.tobytes()).decode("ascii")
    return vector.tolist()


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


def _usage(*results: GenerationResult) -> dict:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _as_api_error(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="internal_error")


def _sse(chunks) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _include_usage(request: _Sampling) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


async def _stream(job: GenerationJob, events: asyncio.Queue, make_chunk, include_usage: bool):
    """Server-sent events: one chunk per text delta, a final chunk with finish_reason, [DONE]."""
    try:
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield _event(make_chunk(value, None))
            elif kind == "done":
                yield _event(make_chunk(None, value.finish_reason))
                if include_usage:
                    yield _event({**make_chunk(None, None), "choices": [], "usage": _usage(value)})
                break
            else:
                error = _as_api_error(value)
                yield _event(error_body(error.status, error.message, error.param, error.code))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # the client went away (or we are done): stop generating


def _chat_chunks(ident, model_name, job, events, include_usage):
    created = int(time.time())

    def chunk(text, finish_reason):
        delta = {} if text is None else {"content": text}
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    async def chunks():
        first = chunk("", None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield _event(first)
        async for event in _stream(job, events, chunk, include_usage):
            yield event

    return chunks()


def _completion_chunks(ident, model_name, job, events, include_usage):
    created = int(time.time())

    def chunk(text, finish_reason):
        return {"id": ident, "object": "text_completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}]}

    return _stream(job, events, chunk, include_usage)
