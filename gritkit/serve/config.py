"""``ServeConfig``: what the server is told at start-up.

A module of its own, importing nothing heavy, so that ``gritkit serve``'s flags can take their
defaults from it while ``gritkit --help`` stays fast (the app itself imports fastapi and torch).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    # None: the model's saved instructions, the query one being GritConfig.default_query_instruction
    # (the saved one, else gritkit's fallback; GRIT embeds documents without one).
    query_instruction: str | None = None
    document_instruction: str | None = None
