"""The running batch's key/value cache: left-padded rows in buffers with room to grow in place.

transformers' ``DynamicLayer`` appends each decode step's keys and values with ``torch.cat``, which
copies the whole cache of every layer on every step: for 16 rows of a 135M model that copy was a
third of a served decode step. ``RoomyLayer`` keeps each layer's keys and values in buffers with
spare columns and writes a step's column in place; ``keys``/``values`` are views of the used part,
so attention reads exactly what ``DynamicLayer`` would hold. Buffers are reallocated (with room
again) only when they are full, or when rows join or leave the batch (``merge`` and
``keep``), which happens once per request, not once per token.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM_MIN = 64  # spare columns a buffer gets at least when it is (re)allocated
ROOM_SHARE = 4  # ... and at least 1/ROOM_SHARE of its used length, so growth is amortised


class RoomyLayer(DynamicLayer):
    """A full-attention cache layer whose ``keys``/``values`` are views of roomier buffers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.is_initialized = key_states.device, True

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used = self.get_seq_length()
        length = used + key_states.shape[-2]
        if self._key_buffer is None or length > self._key_buffer.shape[-2]:
            self._reallocate(key_states, value_states, length)
        self._key_buffer[:, :, used:length] = key_states
        self._value_buffer[:, :, used:length] = value_states
        self.keys, self.values = self._key_buffer[:, :, :length], self._value_buffer[:, :, :length]
        return self.keys, self.values

    def assign(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold ``keys`` and ``values`` ([rows, heads, length, dim]) as the whole cache, with room."""
        self.lazy_initialization(keys, values)
        self.keys = self.values = None
        self._key_buffer = self._value_buffer = None
        self._reallocate(keys, values, keys.shape[-2])
        self._key_buffer[:, :, :keys.shape[-2]] = keys
        self._value_buffer[:, :, :values.shape[-2]] = values
        self.keys, self.values = self._key_buffer[:, :, :keys.shape[-2]], self._value_buffer[:, :, :values.shape[-2]]

    def _reallocate(self, key_like: torch.Tensor, value_like: torch.Tensor, length: int) -> None:
        """New buffers for ``length`` used columns plus room, holding the columns used so far."""
        capacity = length + max(ROOM_MIN, length // ROOM_SHARE)
        rows, heads, _, dim = key_like.shape
        keys = key_like.new_zeros(rows, heads, capacity, dim)
        values = value_like.new_zeros(rows, value_like.shape[1], capacity, value_like.shape[-1])
        used = 0 if self.keys is None else self.keys.shape[-2]
        if used:
            keys[:, :, :used] = self.keys
            values[:, :, :used] = self.values
        self._key_buffer, self._value_buffer = keys, values


def roomy_cache(config) -> DynamicCache:
    """An empty cache of ``RoomyLayer`` for a model ``config`` whose layers are all full attention."""
    cache = DynamicCache(config=config)
    cache.layers = [RoomyLayer() for _ in cache.layers]
    return cache


def left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` ([batch, ..., length] for a mask, [batch, heads, length, dim] for keys and
    values) with zeros on the left of its length axis up to ``width``."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def merge(batch: DynamicCache, new: DynamicCache, batch_width: int) -> None:
    """Put ``new``'s rows under ``batch``'s (both left-padded; the shorter side gains padding)."""
    width = max(batch_width, new.get_seq_length())
    for layer, added in zip(batch.layers, new.layers):
        keys = torch.cat([left_pad(layer.keys, width), left_pad(added.keys, width)], dim=0)
        values = torch.cat([left_pad(layer.values, width), left_pad(added.values, width)], dim=0)
        layer.assign(keys, values)


def keep(batch: DynamicCache, rows: torch.Tensor, first: int) -> None:
    """Keep ``rows`` of ``batch`` and its columns from ``first`` on."""
    for layer in batch.layers:
        index = rows.to(layer.keys.device)
        layer.assign(layer.keys[index, :, first:], layer.values[index, :, first:])
