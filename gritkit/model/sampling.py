"""Choosing the next token from one row of logits, shared by the server's batched decoder and the
self-retrieval loop, so a seeded request samples the same way everywhere."""

from __future__ import annotations

import torch


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """The next token from one row of logits: argmax at temperature 0, else a sample from the
    smallest set of tokens whose probability reaches ``top_p`` (OpenAI's meaning; no top-k)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above
        sorted_probs[before >= top_p] = 0.0  # the first token always stays (its "before" is 0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
