"""One-token attention over shared key/value heads without copying the cache, for compiled steps.

Llama-style decoders share each key/value head among several query heads (grouped-query
attention: SmolLM2-135M has 9 query heads over 3 key/value heads). transformers' ``sdpa``
attention avoids copying keys/values for a one-token query when it runs eagerly, but not inside
``torch.compile``: there it repeats every key/value head once per query head it serves, a copy of
the whole cache in every layer at every step, which grows with the static cache (1,024 positions:
~7 ms of attention per SmolLM2 step against ~4 ms without the copy, 2 threads).

A one-token query needs no copy: the query heads of one group become that group's rows,
(batch, kv_heads, group, dim), attended against the key/value head's own keys and values, with
the one-row mask broadcast over them. The result is the same attention (each query row still
sees every key of its head, and a mask of shape (batch, 1, 1, keys) applies to all of them).
Every other call (prefill, embedding passes, masks per head) goes to transformers' ``sdpa``.
"""

from __future__ import annotations

import torch

NAME = "gritkit_grouped_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    one_row_mask = attention_mask is None or attention_mask.shape[1] == 1
    if query.shape[2] != 1 or groups == 1 or not one_row_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    rows = query.reshape(batch, heads // groups, groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(rows, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling)
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_grouped_attention(model: torch.nn.Module) -> bool:
    """Switch a model that uses ``sdpa`` to ``grouped_sdpa`` (registered under ``NAME`` with sdpa's
    masks); returns whether it was switched (other implementations are left alone)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if model.config._attn_implementation not in ("sdpa", NAME):
        return False
    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
