"""Key/value caches from GRIT's embedding pass, and how to place them at their true positions.

One forward of the decoder with ``is_causal=False`` gives both the embedding (mean of the last
hidden states over the text tokens) and the keys/values of every layer. Those keys/values are
a prefix cache that causal generation can continue from (the paper's query and doc caching).

Keys are cached *after* the rotary embedding, so a segment encoded alone at positions 0..n-1
carries position 0 in its keys. Placing it after another segment of length ``offset`` needs
keys at positions offset..offset+n-1. Rotary embeddings are rotations, R(p + offset) =
R(offset) R(p), so rotating the cached keys once more by ``offset`` gives exactly the keys the
model would have computed at the offset positions (attention inside the segment depends only on
relative positions, so its hidden states, and hence the values, are the same). The reference
implementation skipped this and restarted the second cache at position 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..model.gritlm import GritLM, decoder_of

# Decoders whose attention applies Llama's rotate-half rotary embedding to the full head
# dimension, with one key/value shape for every layer: re-rotation below is exact for them.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral")
# Rotary types whose frequencies do not depend on the sequence length (dynamic NTK does).
_FIXED_ROPE_TYPES = ("default", "linear", "llama3")


class UnsupportedModelError(ValueError):
    """The model's position encoding is not one whose cached keys gritkit can re-rotate."""


@dataclass
class KVSegment:
    """The cache of one embedded text: its token ids and every layer's keys and values.

    ``keys`` and ``values`` have shape (layers, kv_heads, tokens, head_dim) and hold positions
    0..tokens-1 (re-rotate with ``rotate_keys`` to move them).
    """

    token_ids: list[int]
    keys: torch.Tensor
    values: torch.Tensor

    def __len__(self) -> int:
        return len(self.token_ids)


def check_supported(model) -> None:
    """Raise UnsupportedModelError unless KV caching with re-rotation is exact for ``model``."""
    config = model.config.get_text_config()
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"RAG with cached keys/values supports rotary decoders of type {', '.join(SUPPORTED_MODEL_TYPES)}; "
            f"this model is {config.model_type!r}. Use mode no_rag, rag_query_first or rag_doc_first with it.")
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in _FIXED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"rope_type {rope!r} of this {config.model_type} model changes its frequencies with the sequence "
            f"length, so cached keys cannot be moved to new positions; supported: {', '.join(_FIXED_ROPE_TYPES)}")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_keys(model, keys: torch.Tensor, offset: int) -> torch.Tensor:
    """Keys of shape (..., tokens, head_dim) moved ``offset`` positions later.

    The cos/sin come from the model's own rotary module (so its base, scaling and head size
    apply); its output scale (``attention_scaling``) was already applied once, so it is divided
    out. Computed in float32 and returned in the keys' dtype.
    """
    if offset == 0:
        return keys
    rotary = decoder_of(model).rotary_emb
    position = torch.tensor([[offset]], device=keys.device)
    cos, sin = rotary(keys.float(), position)  # (1, 1, head_dim)
    scale = float(getattr(rotary, "attention_scaling", 1.0))
    cos, sin = cos[0, 0].float() / scale, sin[0, 0].float() / scale
    moved = keys.float() * cos + _rotate_half(keys.float()) * sin
    return moved.to(keys.dtype)


def embed_with_cache(grit: GritLM, texts: Sequence[str], instruction: str = "", max_length: int = 512,
                     causal: bool = False, batch_size: int = 8, with_cache: bool = True
                     ) -> tuple[torch.Tensor, list[KVSegment | None]]:
    """Embed ``texts`` in GRIT's embedding format and keep each one's key/value cache.

    Returns (unit-length float32 vectors of shape (n, dim), one KVSegment per text, or Nones
    without ``with_cache``). See ``iter_embed_with_cache`` for the format and ``causal``.
    """
    vectors: list[torch.Tensor | None] = [None] * len(texts)
    segments: list[KVSegment | None] = [None] * len(texts)
    for indices, batch_vectors, batch_segments in iter_embed_with_cache(
            grit, texts, instruction, max_length, causal, batch_size, with_cache):
        for row, index in enumerate(indices):
            vectors[index], segments[index] = batch_vectors[row], batch_segments[row]
    return (torch.stack(vectors) if vectors else torch.empty(0)), segments


def iter_embed_with_cache(grit: GritLM, texts: Sequence[str], instruction: str = "", max_length: int = 512,
                          causal: bool = False, batch_size: int = 8, with_cache: bool = True):
    """Yield (indices into ``texts``, vectors, KVSegments or Nones) one length-sorted batch at a time.

    The input of text i is ``<s>`` + ``<|embed|>\\n{text}`` (``<|user|>\\n{instruction}\\n<|embed|>\\n{text}``
    with an instruction), exactly what ``GritLM.encode`` embeds, truncated to ``max_length``
    tokens; vectors are unit length, float32. ``causal`` runs the pass with causal attention
    instead (not GRIT; it checks the cache plumbing against plain generation). Batches are
    right-padded, so each text keeps positions 0..n-1 and its cache is the first n entries of its row.
    """
    items = grit.tokenize_for_embedding(list(texts), [instruction] * len(texts), max_length)
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    decoder = decoder_of(grit.model)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start: start + batch_size]
            batch = grit.collate([items[i] for i in indices]).to(grit.device)
            out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          is_causal=causal or grit.attention == "causal", use_cache=with_cache)
            pooled = grit.pool_hidden(out.last_hidden_state, batch.pool_mask)
            vectors = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
            segments = [None] * len(indices)
            if with_cache:
                keys = torch.stack([layer.keys for layer in out.cache.layers], dim=1)  # (batch, layers, heads, tokens, dim)
                values = torch.stack([layer.values for layer in out.cache.layers], dim=1)
                for row, index in enumerate(indices):
                    n = len(items[index][0])
                    row_keys, row_values = keys[row, :, :, :n], values[row, :, :, :n]
                    if len(indices) > 1 or n < keys.shape[3]:
                        # A view would keep the whole batch's tensors (other rows, padding) alive.
                        row_keys, row_values = row_keys.clone(), row_values.clone()
                    segments[row] = KVSegment(list(items[index][0]), row_keys, row_values)
            yield indices, vectors, segments


def concatenate_segments(model, segments: Sequence[KVSegment]):
    """One transformers DynamicCache holding ``segments`` one after another at true positions.

    Segment j's keys are re-rotated by the total length of the segments before it. Returns
    (cache, token ids of all segments in order). The cache may share memory with the segments
    (a single segment already in the model's dtype and device is used as is); DynamicCache never
    writes into the tensors it is given, it concatenates into new ones.
    """
    if not segments:
        raise ValueError("concatenate_segments needs at least one segment")
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    total = sum(len(segment) for segment in segments)
    if window and total >= window:
        # A sliding-window layer would silently drop the start of the cache.
        raise UnsupportedModelError(f"cached segments of {total} tokens do not fit this model's sliding window "
                                    f"of {window} tokens; use fewer or shorter documents")
    parameter = next(model.parameters())
    keys, values, token_ids, offset = [], [], [], 0
    for segment in segments:
        # Converted before rotating, so a float16 store is rounded once, not again after the rotation.
        segment_keys = segment.keys.to(device=parameter.device, dtype=parameter.dtype)
        keys.append(rotate_keys(model, segment_keys, offset))
        values.append(segment.values.to(device=parameter.device, dtype=parameter.dtype))
        token_ids.extend(segment.token_ids)
        offset += len(segment)
    all_keys = keys[0] if len(keys) == 1 else torch.cat(keys, dim=2)
    all_values = values[0] if len(values) == 1 else torch.cat(values, dim=2)
    return _dynamic_cache(model, all_keys, all_values), token_ids


def _dynamic_cache(model, keys: torch.Tensor, values: torch.Tensor):
    """A DynamicCache holding keys/values of shape (layers, heads, tokens, dim), without copying them.

    ``DynamicCache.update`` would concatenate them onto an empty tensor: a copy of the whole cache
    per layer. A plain DynamicLayer is initialised through ``update`` with zero tokens and then
    handed the tensors; any other layer type gets them through ``update``.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    for index in range(keys.shape[0]):
        layer_keys, layer_values = keys[index].unsqueeze(0), values[index].unsqueeze(0)
        layer = cache.layers[index] if index < len(cache.layers) else None
        if type(layer) is DynamicLayer:
            cache.update(layer_keys[:, :, :0], layer_values[:, :, :0], index)
            layer.keys, layer.values = layer_keys, layer_values
        else:
            cache.update(layer_keys, layer_values, index)
    return cache
