"""Packing: several samples in one row, each attending only to itself.

Padding a batch to its longest sample computes every pad position through every layer. Packing
places samples one after another in rows of a fixed token budget instead, and confines attention
to each sample with a 4D mask: causal inside a generative segment, bidirectional inside an
embedding segment (or causal, for a model that embeds causally), nothing across segments.
Position ids restart at 0 in every segment, so each sample sees exactly the positions it has
alone. Embedding and generative segments may share a row: that is the single-pass unified step.
A causal segment may hold blocks (``Blocks``) that attend only inside themselves, both ways as an
embedding pass does, and the rest attends causally to all before it. That is doc caches followed
by the chat turn that reads them (``training/doc_cache.py``): one block is a prefix-LM mask;
several are documents each embedded alone, then concatenated (``rag/kv.concatenate_segments``).
Blocks that start after some causal tokens are caches spliced mid-answer (self-retrieval).

Why a 4D mask and not transformers' own packed-sequence support: transformers detects packing from
position ids only for causal attention (``create_causal_mask``); its bidirectional mask ignores
them, and flash-attention varlen needs a GPU. A 4D mask is returned as is by transformers' mask
builders and honoured by the ``sdpa`` and ``eager`` attention implementations, on every
architecture, on the CPU as on a GPU. ``sdpa`` takes it as a bool mask (True: may attend),
``eager`` as an additive float mask (a bool mask would be added as 0/1 and silently mask nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .grouped_attention import NAME as GROUPED_SDPA
from .pooling import pool

BOOL_MASK_IMPLEMENTATIONS = ("sdpa", GROUPED_SDPA)
MASKED_IMPLEMENTATIONS = (*BOOL_MASK_IMPLEMENTATIONS, "eager")


@dataclass(frozen=True)
class Blocks:
    """Blocks of a causal segment, one after another from token ``start``, ``lengths`` tokens each.

    A block's tokens attend to their own block only: both ways when ``bidirectional`` (an
    embedding pass), else causally (a model that embeds causally). The tokens before ``start``
    and after the blocks attend causally to everything before them. So each block's states are
    those it has alone, at the positions after what precedes it, as for caches encoded apart and
    concatenated (``start`` 0), or spliced after a prompt and the start of an answer (``start`` > 0).
    """

    lengths: tuple[int, ...] = ()
    bidirectional: bool = True
    start: int = 0

    @property
    def end(self) -> int:
        """The first token after the blocks."""
        return self.start + sum(self.lengths)


@dataclass(frozen=True)
class Segment:
    """One sample placed in a packed row: ``tokens`` ids from column ``start`` of row ``row``.

    ``blocks``: the isolated blocks a causal segment holds (none by default).
    """

    row: int
    start: int
    tokens: int
    causal: bool
    blocks: Blocks = Blocks()


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of at most ``capacity`` tokens, longest first.

    First-fit decreasing needs at most 11/9 of the optimal number of bins plus one; on the mixed
    lengths of training data it leaves a few percent of a row empty.
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"{len(too_long)} samples are longer than the pack length {capacity} "
                         f"(the first, sample {too_long[0]}, has {lengths[too_long[0]]} tokens)")
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[index] <= free:
                bins[b].append(index)
                room[b] -= lengths[index]
                break
        else:
            bins.append([index])
            room.append(capacity - lengths[index])
    return bins


def balanced_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """``first_fit_decreasing`` into as few rows as ``capacity`` allows, but with the narrowest
    capacity that still needs no more rows, since a pass is as wide as its fullest row.

    A batch of 388 tokens in rows of 192 needs 3 rows; packed full-first, the third is nearly empty
    and a third of the pass is padding. Searching the capacity between the longest sample and
    192 finds rows of about 130 tokens each instead.
    """
    bins = first_fit_decreasing(lengths, capacity)
    low, high = max(max(lengths), -(-sum(lengths) // len(bins))), capacity
    while low < high:  # first fit is not monotone in the capacity; a near-minimal width is enough
        middle = (low + high) // 2
        trial = first_fit_decreasing(lengths, middle)
        if len(trial) <= len(bins):
            bins, high = trial, middle
        else:
            low = middle + 1
    return bins


@dataclass
class PackedBatch:
    """Rows of packed samples. ``segments[i]`` says where sample ``i`` (in input order) lies."""

    input_ids: torch.Tensor  # (rows, width), pad_id after the last segment of a row
    position_ids: torch.Tensor  # (rows, width), restarting at 0 in every segment
    flags: torch.Tensor  # (rows, width), the samples' per-token flags (pool mask or loss mask), 0 on padding
    segment_ids: torch.Tensor  # (rows, width), index of the sample each token belongs to, -1 on padding
    segments: list[Segment]

    @property
    def real_tokens(self) -> int:
        return sum(s.tokens for s in self.segments)

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.flags.to(device),
                           self.segment_ids.to(device), self.segments)

    def block_ids(self) -> torch.Tensor:
        """(rows, width): 1 + the index of the opening block (``Blocks``) each token is in, 0 elsewhere."""
        ids = torch.zeros(self.segment_ids.shape, dtype=torch.long)  # filled on the CPU: one copy, not a kernel per block
        for segment in self.segments:
            start = segment.start + segment.blocks.start
            for number, length in enumerate(segment.blocks.lengths, 1):
                ids[segment.row, start: start + length] = number
                start += length
        return ids.to(self.segment_ids.device)

    def attention_mask(self, implementation: str, dtype: torch.dtype) -> torch.Tensor:
        """The (rows, 1, width, width) mask confining attention to each segment.

        Padding positions attend to themselves only, so that no query row is fully masked (a
        fully masked row gives NaN in softmax, and NaN * 0 is still NaN in the backward pass).
        """
        if implementation not in MASKED_IMPLEMENTATIONS:
            raise ValueError(f"packing needs attention implementation sdpa or eager (a 4D mask), "
                             f"the model uses {implementation!r}; load it with attn_implementation='sdpa'")
        seg = self.segment_ids
        same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        width = seg.shape[1]
        columns = torch.arange(width, device=seg.device)
        earlier = (columns[None, :] <= columns[:, None])[None]  # (query, key): key not after query
        causal_segment = torch.tensor([s.causal for s in self.segments] + [False], device=seg.device)[seg]
        two_way = torch.tensor([s.blocks.bidirectional for s in self.segments] + [False], device=seg.device)[seg]
        block = self.block_ids()
        same_block = (block[:, :, None] == block[:, None, :]) & (block > 0)[:, :, None]
        in_causal = torch.where((block > 0)[:, :, None], same_block & (two_way[:, :, None] | earlier), earlier)
        allowed = same & (in_causal | ~causal_segment[:, :, None])
        allowed |= torch.eye(width, dtype=torch.bool, device=seg.device)[None] & (seg < 0)[:, :, None]
        allowed = allowed[:, None]
        if implementation in BOOL_MASK_IMPLEMENTATIONS:
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)


def pack(items: Sequence[tuple[list[int], list[bool]]], pad_id: int, capacity: int,
         causal: Sequence[bool] | bool = True, prefixes: Sequence[Blocks] | None = None) -> PackedBatch:
    """Pack (ids, flags) items into rows of at most ``capacity`` tokens.

    ``causal`` (one bool, or one per item) says how each sample attends inside itself;
    ``prefixes`` (one per item, or None for none) the ``Blocks`` each causal sample holds.
    Rows are as few as ``capacity`` allows, balanced (``balanced_bins``), and padded to the
    fullest row.
    """
    if isinstance(causal, bool):
        causal = [causal] * len(items)
    prefixes = [Blocks()] * len(items) if prefixes is None else list(prefixes)
    if len(causal) != len(items) or len(prefixes) != len(items):
        raise ValueError(f"{len(items)} items but {len(causal)} causal flags and {len(prefixes)} prefixes")
    lengths = [len(ids) for ids, _ in items]
    if not items or min(lengths) == 0:
        raise ValueError("pack needs at least one item, and no empty one")
    overlong = [i for i, blocks in enumerate(prefixes) if blocks.end > lengths[i]]
    if overlong:
        raise ValueError(f"item {overlong[0]} has {lengths[overlong[0]]} tokens, fewer than its blocks "
                         f"{prefixes[overlong[0]].lengths} from token {prefixes[overlong[0]].start}")
    bins = balanced_bins(lengths, capacity)
    width = max(sum(lengths[i] for i in b) for b in bins)
    input_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(bins), width), dtype=torch.long)
    flags = torch.zeros((len(bins), width), dtype=torch.long)
    segment_ids = torch.full((len(bins), width), -1, dtype=torch.long)
    segments: list[Segment | None] = [None] * len(items)
    for row, members in enumerate(bins):
        start = 0
        for index in sorted(members):  # input order inside a row: deterministic and easy to read
            ids, mask = items[index]
            end = start + len(ids)
            input_ids[row, start:end] = torch.tensor(ids)
            position_ids[row, start:end] = torch.arange(len(ids))
            flags[row, start:end] = torch.tensor(mask, dtype=torch.long)
            segment_ids[row, start:end] = index
            segments[index] = Segment(row, start, len(ids), bool(causal[index]), prefixes[index])
            start = end
    return PackedBatch(input_ids, position_ids, flags, segment_ids, segments)


def segment_index(batch: PackedBatch, which: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, valid) of shape (len(which), longest): flat positions of each listed segment's tokens.

    ``hidden.flatten(0, 1)[index]`` lays those segments out as right-padded rows, which is what the
    pooling functions and the loss of an unpacked batch read.
    """
    longest = max(batch.segments[i].tokens for i in which)
    width = batch.input_ids.shape[1]
    offsets = torch.arange(longest)
    starts = torch.tensor([batch.segments[i].row * width + batch.segments[i].start for i in which])
    lengths = torch.tensor([batch.segments[i].tokens for i in which])
    valid = offsets[None, :] < lengths[:, None]
    index = torch.where(valid, starts[:, None] + offsets[None, :], starts[:, None])
    return index.to(batch.input_ids.device), valid.to(batch.input_ids.device)


def unpack(batch: PackedBatch, tensor: torch.Tensor, which: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, valid): the listed segments of a (rows, width, ...) ``tensor`` as right-padded rows."""
    index, valid = segment_index(batch, which)
    return tensor.flatten(0, 1)[index], valid


def pool_segments(hidden: torch.Tensor, batch: PackedBatch, which: Sequence[int], method: str) -> torch.Tensor:
    """Pooled vectors of the listed segments (in that order), exactly as each would pool alone."""
    states, _ = unpack(batch, hidden, which)
    flags, valid = unpack(batch, batch.flags, which)
    return pool(states, flags * valid, method)


def check_window(config, capacity: int) -> None:
    """Refuse a pack length a sliding window could bind inside: the 4D mask replaces the model's own.

    A window of w tokens never masks anything inside a segment shorter than w, so packing is exact
    whenever no row (hence no segment) is longer than the window.
    """
    config = config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return
    if capacity > window:
        raise ValueError(f"pack length {capacity} is longer than the model's sliding window of {window} tokens, "
                         f"which a packed row's mask does not apply; set pack_length <= {window}")


def packed_forward(module, config, batch: PackedBatch):
    """``module`` (a decoder body or a causal LM) run over ``batch`` with attention confined to segments."""
    check_window(config, batch.input_ids.shape[1])
    dtype = next(module.parameters()).dtype
    mask = batch.attention_mask(config._attn_implementation, dtype)
    return module(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask, use_cache=False)
