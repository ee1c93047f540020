"""OpenAI-compatible HTTP server: embeddings and generation from one GritLM in memory."""

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name):
    # Imported lazily so that `gritkit --help`, which reads ServeConfig's defaults for its flags,
    # need not import fastapi and torch.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'gritkit.serve' has no attribute {name!r}")
