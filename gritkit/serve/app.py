"""The FastAPI application: OpenAI-compatible embeddings, chat and text completions from one GritLM.

    from gritkit.serve import ServeConfig, create_app
    app = create_app(GritLM.from_pretrained("model"), ServeConfig(model_name="grit"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

This module assembles the app (config, worker, guard, error handlers, lifespan); the routes are in
``routes/``. Handlers only validate and translate; every model call goes through the single
``ModelWorker`` thread (see batching.py), so one copy of the weights serves both jobs safely.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .batching import ModelWorker
from .config import ServeConfig
from .errors import install_error_handlers
from .middleware import Guard
from .prompts import PromptTokens
from .routes import chat, completions, embeddings, info, rerank
from .routes.common import ServerState


def create_app(model, config: ServeConfig, rag=None) -> FastAPI:
    """An ASGI app serving ``model`` (a GritLM); its worker thread runs while the app is up.

    ``rag``, a ``gritkit.rag.RagPipeline`` built on the same ``model``, adds POST /v1/rag.
    """
    if rag is not None and rag.model is not model:
        raise ValueError("the RAG pipeline must use the served model, not a second copy of the weights")
    config = _with_model_instructions(config, model.config)
    worker = ModelWorker(model, max_queue=config.max_queue, max_batch_size=config.max_batch_size,
                         prefill_pass_tokens=config.prefill_pass_tokens,
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
    state = ServerState(config, worker, model.embedding_dim, int(time.time()),
                        PromptTokens(model, config.max_input_tokens), rag)
    for routes in (info, embeddings, chat, completions, rerank):
        routes.add_routes(app, state)
    if rag is not None:  # imported only here: a server without an index never imports gritkit.rag
        from .routes import rag as rag_routes

        rag_routes.add_routes(app, state)
    return app


def _with_model_instructions(config: ServeConfig, saved) -> ServeConfig:
    """``config`` with the instructions it leaves None taken from the model's GritConfig ``saved``."""
    query = saved.default_query_instruction if config.query_instruction is None else config.query_instruction
    document = saved.document_instruction if config.document_instruction is None else config.document_instruction
    return dataclasses.replace(config, query_instruction=query, document_instruction=document)
