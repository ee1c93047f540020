"""OpenAI-compatible HTTP server: embeddings and generation from one GritLM in memory."""

from .app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
