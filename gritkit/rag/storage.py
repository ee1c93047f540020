"""On-disk store of per-document key/value caches, memory-mapped.

A store is a directory of three ``.npy`` files:

- ``kv.npy``: (total tokens, layers, 2, kv_heads, head_dim), float16 or float32; keys at [:, :, 0],
  values at [:, :, 1]. Documents lie one after another, each at positions 0..n-1.
- ``tokens.npy``: (total tokens,) int64, the token ids the cache was made from.
- ``offsets.npy``: (documents + 1,) int64; document i is rows offsets[i]:offsets[i+1].

Token-major order makes one document's cache one contiguous slice of one file, so reading it is
a single sequential read from the memory map, with nothing loaded for the other documents.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .kv import KVSegment

STORE_DTYPES = ("float16", "float32")


class DocCacheWriter:
    """Writes a store whose document lengths are known in advance, in any document order."""

    def __init__(self, directory: str | Path, lengths: Sequence[int], layers: int, kv_heads: int, head_dim: int,
                 dtype: str = "float16"):
        if dtype not in STORE_DTYPES:
            raise ValueError(f"doc cache dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
        total = int(self.offsets[-1])
        self.kv = np.lib.format.open_memmap(self.directory / "kv.npy", mode="w+", dtype=np.dtype(dtype),
                                            shape=(total, layers, 2, kv_heads, head_dim))
        self.tokens = np.zeros(total, dtype=np.int64)
        self.written = np.zeros(len(lengths), dtype=bool)

    def put(self, index: int, segment: KVSegment) -> None:
        """Store document ``index``'s cache (keys/values of shape (layers, kv_heads, n, head_dim))."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if len(segment) != end - start:
            raise ValueError(f"document {index}: cache has {len(segment)} tokens, expected {end - start}")
        both = torch.stack([segment.keys, segment.values], dim=1)  # (layers, 2, heads, n, dim)
        self.kv[start:end] = both.permute(3, 0, 1, 2, 4).float().cpu().numpy()
        self.tokens[start:end] = segment.token_ids
        self.written[index] = True

    def close(self) -> None:
        if not self.written.all():
            raise ValueError(f"{int((~self.written).sum())} documents have no cache; nothing was finished")
        self.kv.flush()
        del self.kv
        np.save(self.directory / "tokens.npy", self.tokens)
        np.save(self.directory / "offsets.npy", self.offsets)


class DocCacheStore:
    """Read access to a store written by DocCacheWriter; ``store[i]`` is document i's KVSegment."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        for name in ("kv.npy", "tokens.npy", "offsets.npy"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"doc cache store {directory} has no {name}")
        self.directory = directory
        self.kv = np.load(directory / "kv.npy", mmap_mode="r")
        self.tokens = np.load(directory / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(directory / "offsets.npy")
        if int(self.offsets[-1]) != self.kv.shape[0] or self.tokens.shape[0] != self.kv.shape[0]:
            raise ValueError(f"doc cache store {directory} is inconsistent: offsets, tokens and kv disagree")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dtype(self) -> str:
        return str(self.kv.dtype)

    @property
    def bytes_per_token(self) -> int:
        """Bytes of storage per cached token (all layers, keys and values)."""
        return int(np.prod(self.kv.shape[1:])) * self.kv.dtype.itemsize

    def __getitem__(self, index: int) -> KVSegment:
        return self.segment(index)

    def segment(self, index: int, dtype: torch.dtype | None = None) -> KVSegment:
        """Document ``index``'s cache, converted to ``dtype`` (default: the stored dtype).

        The block is read from the map and converted in one pass, token-major as stored; keys and
        values are strided views of it. Their layout is left alone because the cache that uses
        them copies them at its first update anyway (DynamicCache concatenates every step).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"document {index} is not in the doc cache store ({len(self)} documents)")
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        with warnings.catch_warnings():
            # A view of the read-only map: only read below, by the conversion or the copy.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            mapped = torch.from_numpy(self.kv[start:end])  # (n, layers, 2, heads, dim)
        block = mapped.clone() if dtype is None or dtype == mapped.dtype else mapped.to(dtype)
        block = block.permute(1, 2, 3, 0, 4)  # (layers, 2, heads, n, dim)
        return KVSegment(self.tokens[start:end].tolist(), block[:, 0], block[:, 1])
