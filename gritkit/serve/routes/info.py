"""GET /health and GET /v1/models: how busy the worker is, and the one model this server serves.

OpenAI clients list the models before they use one; a single entry is the truth here, since one
process serves one set of weights.
"""

from __future__ import annotations

from fastapi import FastAPI

from .common import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add GET /health, GET /v1/models and GET /v1/models/{model_id}."""
    worker = state.worker
    card = {"id": state.config.model_name, "object": "model", "created": state.created, "owned_by": "gritkit"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": worker.queued, "embedded_texts": worker.embedded_texts,
                "embedding_passes": worker.embedding_passes, "running_generations": worker.decoder.running,
                "decode_steps": worker.decoder.steps, "decoded_tokens": worker.decoder.tokens}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        state.check_model(model_id)
        return card

