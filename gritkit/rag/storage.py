"""On-disk store of per-document key/value caches, memory-mapped.

A store is a directory of three ``.npy`` files:

- ``kv.npy``: (total tokens, layers, 2, kv_heads, head_dim), float16, float32 or int8; keys at
  [:, :, 0], values at [:, :, 1]. Documents lie one after another, each at positions 0..n-1.
- ``tokens.npy``: (total tokens,) int64, the token ids the cache was made from.
- ``offsets.npy``: (documents + 1,) int64; document i is rows offsets[i]:offsets[i+1].
- ``scales.npy`` (int8 stores only): (total tokens, layers, 2, kv_heads) float16, each key or value
  vector's absolute maximum over head_dim divided by 127; the vector is ``kv * scale``. One scale
  per vector keeps a token's cache readable on its own, and costs 2 bytes per head_dim bytes
  (3% at head_dim 64): an int8 store is 52% of a float16 one.

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

STORE_DTYPES = ("float16", "float32", "int8")


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
        self.scales = None
        if dtype == "int8":
            self.scales = np.lib.format.open_memmap(self.directory / "scales.npy", mode="w+", dtype=np.float16,
                                                    shape=(total, layers, 2, kv_heads))
        self.tokens = np.zeros(total, dtype=np.int64)
        self.written = np.zeros(len(lengths), dtype=bool)

    def put(self, index: int, segment: KVSegment) -> None:
        """Store document ``index``'s cache (keys/values of shape (layers, kv_heads, n, head_dim))."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if len(segment) != end - start:
            raise ValueError(f"document {index}: cache has {len(segment)} tokens, expected {end - start}")
        both = torch.stack([segment.keys, segment.values], dim=1)  # (layers, 2, heads, n, dim)
        block = both.permute(3, 0, 1, 2, 4).float().cpu()
        if self.scales is not None:
            block, scales = quantize_int8(block)
            self.scales[start:end] = scales.numpy()
        self.kv[start:end] = block.numpy()
        self.tokens[start:end] = segment.token_ids
        self.written[index] = True

    def close(self) -> None:
        if not self.written.all():
            raise ValueError(f"{int((~self.written).sum())} documents have no cache; nothing was finished")
        self.kv.flush()
        del self.kv
        if self.scales is not None:
            self.scales.flush()
            self.scales = None
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
        self.kv = load_array(directory / "kv.npy", mmap=True)
        self.tokens = load_array(directory / "tokens.npy", mmap=True)
        self.offsets = load_array(directory / "offsets.npy")
        if int(self.offsets[-1]) != self.kv.shape[0] or self.tokens.shape[0] != self.kv.shape[0]:
            raise ValueError(f"doc cache store {directory} is inconsistent: offsets, tokens and kv disagree")
        self.scales = None
        if self.kv.dtype == np.int8:
            if not (directory / "scales.npy").is_file():
                raise FileNotFoundError(f"int8 doc cache store {directory} has no scales.npy")
            self.scales = load_array(directory / "scales.npy", mmap=True)
            if self.scales.shape != self.kv.shape[:-1]:
                raise ValueError(f"doc cache store {directory} is inconsistent: scales and kv disagree")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dtype(self) -> str:
        return str(self.kv.dtype)

    @property
    def bytes_per_token(self) -> int:
        """Bytes of storage per cached token (all layers, keys and values, int8 scales included)."""
        scales = 0 if self.scales is None else int(np.prod(self.scales.shape[1:])) * self.scales.dtype.itemsize
        return int(np.prod(self.kv.shape[1:])) * self.kv.dtype.itemsize + scales

    def __getitem__(self, index: int) -> KVSegment:
        return self.segment(index)

    def segment(self, index: int, dtype: torch.dtype | None = None) -> KVSegment:
        """Document ``index``'s cache, converted to ``dtype`` (default: the stored dtype; float16
        for an int8 store, whose vectors are scaled back while read).

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
            if self.scales is not None:
                scales = torch.from_numpy(self.scales[start:end])
        if self.scales is not None:
            dtype = dtype or torch.float16
            block = (mapped.to(dtype) * scales.to(dtype)[..., None])
        else:
            block = mapped.clone() if dtype is None or dtype == mapped.dtype else mapped.to(dtype)
        block = block.permute(1, 2, 3, 0, 4)  # (layers, 2, heads, n, dim)
        return KVSegment(self.tokens[start:end].tolist(), block[:, 0], block[:, 1])


# Copy this many bytes of keys/values at a time when concatenating stores: bounded memory.
_COPY_BYTES = 64 * 2**20


def concatenate_stores(directories: Sequence[str | Path], directory: str | Path) -> DocCacheStore:
    """One store at ``directory`` holding the documents of the stores in ``directories``, in order.

    Used to merge the stores that several processes wrote for their shards of one corpus
    (gritkit/parallel/sharded.py). Keys/values (and an int8 store's scales) are copied a block of tokens
    at a time from the memory maps, so no store is ever read whole into memory.
    """
    stores = [DocCacheStore(d) for d in directories]
    shape, dtype = stores[0].kv.shape[1:], stores[0].kv.dtype
    for store in stores:
        if store.kv.shape[1:] != shape or store.kv.dtype != dtype:
            raise ValueError(f"doc cache store {store.directory} holds {store.kv.dtype} caches of shape "
                             f"{store.kv.shape[1:]}, {stores[0].directory} {dtype} of shape {shape}")
    total = sum(store.kv.shape[0] for store in stores)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = ["kv"] + (["scales"] if stores[0].scales is not None else [])  # one row per cached token
    merged = {name: np.lib.format.open_memmap(directory / f"{name}.npy", mode="w+",
                                              dtype=getattr(stores[0], name).dtype,
                                              shape=(total, *getattr(stores[0], name).shape[1:]))
              for name in names}
    tokens = np.empty(total, dtype=np.int64)
    offsets, row = [np.zeros(1, dtype=np.int64)], 0
    for store in stores:
        count, step = store.kv.shape[0], max(1, _COPY_BYTES // store.bytes_per_token)
        for first in range(0, count, step):
            last = min(first + step, count)
            for name in names:
                merged[name][row + first: row + last] = getattr(store, name)[first: last]
        tokens[row: row + count] = store.tokens
        offsets.append(store.offsets[1:] + row)
        row += count
    for array in merged.values():
        array.flush()
    del merged
    np.save(directory / "tokens.npy", tokens)
    np.save(directory / "offsets.npy", np.concatenate(offsets))
    return DocCacheStore(directory)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """The .npy array at ``path`` (memory-mapped read-only with ``mmap``); a ValueError naming the
    file when it is truncated or corrupt, where numpy's own ("mmap length is greater than file
    size", "No data left in file") names none."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path} is truncated or corrupt ({error}); rebuild the index "
                         "(gritkit rag index)") from None


def quantize_int8(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 levels, float16 scales) of float vectors along the last dimension: symmetric, one
    scale per vector (absolute maximum / 127), so the largest entry is exact up to the scale's
    float16 rounding and every other one is within half a level."""
    scales = (block.abs().amax(dim=-1) / 127).to(torch.float16).clamp(min=torch.finfo(torch.float16).tiny)
    levels = torch.round(block / scales.float()[..., None]).clamp(-127, 127).to(torch.int8)
    return levels, scales
