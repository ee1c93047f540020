"""``ServeConfig``: what the server is told at start-up.

A module of its own, importing nothing heavy, so that ``gritkit serve``'s flags can take their
defaults from it while ``gritkit --help`` stays fast (the app itself imports fastapi and torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """Everything the server is told at start-up; the limits answer 400/413/503 when exceeded.

    An ``api_key`` that could not protect the server is refused here, at start-up (ValueError):
    see ``api_key_problem``.
    """

    model_name: str = "gritkit"
    api_key: str | None = None
    max_input_tokens: int = 512  # per embedded text or per prompt, format and instruction included
    max_embedding_inputs: int = 2048  # texts per embedding request (OpenAI's limit)
    max_batch_size: int = 64  # texts per forward pass, and per rerank or completions request
    max_tokens_limit: int = 512  # largest max_tokens a request may ask for (also the chat default)
    max_body_bytes: int = 1 << 20
    max_queue: int = 64  # requests waiting for the model before 503
    batch_wait_s: float = 0.002  # how long an embedding batch waits for stragglers (on an idle worker only)
    max_running: int = 16  # chat requests decoded together in one batch; 1 decodes one at a time
    # Padded prompt tokens per prefill pass while embedding requests keep arriving: smaller keeps
    # embeddings waiting less, larger gives chats more tokens/s (each pass reads all the weights).
    prefill_pass_tokens: int = 32
    # None: the model's saved instructions, the query one being GritConfig.default_query_instruction
    # (the saved one, else gritkit's fallback; GRIT embeds documents without one).
    query_instruction: str | None = None
    document_instruction: str | None = None

    def __post_init__(self):
        problem = None if self.api_key is None else api_key_problem(self.api_key)
        if problem:
            raise ValueError(f"the API key (--api-key) {problem}")


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot protect the server, or None when it can.

    An empty or blank key would let in whoever sends an empty bearer token while the server looks
    protected. Clients send the key in an HTTP header, which carries ASCII reliably and cannot
    carry spaces around a token, so a key with other characters could never be matched.
    """
    if not key.strip():
        return "is empty: give a key, or leave the option out to serve without one"
    if not (key.isascii() and key.isprintable()):
        return "must be printable ASCII (it travels in the Authorization header); use letters, digits and punctuation"
    if key != key.strip():
        return "has spaces around it, which an Authorization header cannot carry; remove them"
    return None
