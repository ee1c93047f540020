"""Grouped one-token attention gives sdpa's attention without repeating key/value heads."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from gritkit import GritLM
from gritkit.model.grouped_attention import NAME, grouped_sdpa, use_grouped_attention


class _Heads(torch.nn.Module):
    num_key_value_groups = 3


@pytest.mark.parametrize("query_tokens", [1, 5])
def test_grouped_attention_equals_sdpa_with_repeated_heads(query_tokens):
    generator = torch.Generator().manual_seed(0)
    batch, kv_heads, keys, dim = 2, 2, 40, 16
    query = torch.randn(batch, kv_heads * 3, query_tokens, dim, generator=generator)
    key, value = (torch.randn(batch, kv_heads, keys, dim, generator=generator) for _ in range(2))
    mask = torch.ones(batch, 1, query_tokens, keys, dtype=torch.bool)
    mask[0, ..., :7] = False  # a left-padded row
    mask[1, ..., 30:] = False  # unused static-cache positions
    expected, _ = sdpa_attention_forward(_Heads(), query, key, value, mask, scaling=0.25)
    got, _ = grouped_sdpa(_Heads(), query, key, value, mask, scaling=0.25)
    assert got.shape == expected.shape == (batch, query_tokens, kv_heads * 3, dim)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_switching_keeps_embeddings_and_answers(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    assert use_grouped_attention(model) and model.config._attn_implementation == NAME
    switched = GritLM(model, tiny_llama.tokenizer, tiny_llama.config)
    texts = ["a short text", "a longer text about caches, heads and groups of keys"]
    torch.testing.assert_close(switched.encode(texts, batch_size=2), tiny_llama.encode(texts, batch_size=2))
    assert switched.generate("hello there", max_new_tokens=8) == tiny_llama.generate("hello there", max_new_tokens=8)
    items = tiny_llama.tokenize_for_embedding(texts, ["", ""])
    torch.testing.assert_close(switched.embed_packed(switched.pack(items, 64)),
                               tiny_llama.embed_packed(tiny_llama.pack(items, 64)))
    eager = copy.deepcopy(tiny_llama.model)
    eager.set_attn_implementation("eager")
    assert not use_grouped_attention(eager) and eager.config._attn_implementation == "eager"


def test_compiled_models_use_grouped_attention(tiny_llama):
    compiled = GritLM(copy.deepcopy(tiny_llama.model), tiny_llama.tokenizer, tiny_llama.config, compile=True)
    assert compiled.model.config._attn_implementation == NAME
