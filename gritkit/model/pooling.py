"""Pooling of token states into one vector per sequence, in float32.

All functions take ``hidden`` of shape (batch, tokens, dim) and ``mask`` of shape (batch, tokens)
that is 1 on the tokens to pool (the text, never the instruction or format) and 0 elsewhere.
Every row of ``mask`` must have at least one 1.
"""

from __future__ import annotations

import torch

POOLING_METHODS = ("mean", "weighted_mean", "last_token", "cls")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1)


def weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (SGPT): the i-th pooled token gets weight i, so later tokens,
    which have seen more of the text under causal attention, count more."""
    mask = mask.to(torch.float32)
    weights = (torch.cumsum(mask, dim=1) * mask).unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last pooled token of each row (works with left or right padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the first pooled token of each row (the first text token)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    first = torch.where(mask.bool(), positions, mask.shape[1]).min(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first].float()


_POOLERS = {
    "mean": mean_pool,
    "weighted_mean": weighted_mean_pool,
    "last_token": last_token_pool,
    "cls": cls_pool,
}


def check_pooling(method: str) -> str:
    if method not in _POOLERS:
        raise ValueError(f"unknown pooling {method!r}; choose one of {', '.join(POOLING_METHODS)}")
    return method


def pool(hidden: torch.Tensor, mask: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Pool ``hidden`` over the tokens where ``mask`` is 1 with ``method``; float32 result."""
    return _POOLERS[check_pooling(method)](hidden, mask)
