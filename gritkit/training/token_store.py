"""Tokenised training examples, 5 bytes a token, in a temporary file mapped into memory.

As Python lists, one (token ids, loss mask) pair costs about 44 bytes a token (an int object and
two list slots), so a chat dataset at the paper's scale would not fit in memory once tokenised.
Here every token is one packed record (int32 id, bool mask) appended to an unnamed temporary file
(in ``$TMPDIR``, removed by the system when the process ends, however it ends), read back through
a memory map: its pages belong to the page cache, which the system can drop and re-read.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Sequence

import numpy as np

# int32 holds any vocabulary (the largest are ~256k tokens)
TOKEN = np.dtype([("id", "<i4"), ("trained", "?")])


class TokenStore(Sequence):
    """``(ids, mask)`` items, as lists, in the order they were appended."""

    def __init__(self):
        self._file = tempfile.TemporaryFile()
        self._ends = array("q")  # end (in tokens) of each item
        self._tokens = None  # the memory map, made on the first read after an append

    def append(self, ids: list[int], mask: list[bool]) -> None:
        record = np.empty(len(ids), dtype=TOKEN)
        record["id"], record["trained"] = ids, mask
        self._file.write(record.tobytes())
        self._ends.append((self._ends[-1] if self._ends else 0) + len(ids))
        self._tokens = None

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> tuple[list[int], list[bool]]:
        index = range(len(self))[index]  # IndexError past the end, negative indices from it, as a list
        start, end = self._ends[index - 1] if index else 0, self._ends[index]
        if self._tokens is None:
            self._file.flush()
            self._tokens = np.memmap(self._file, dtype=TOKEN, mode="r", shape=(self._ends[-1],))
        tokens = self._tokens[start:end]
        return tokens["id"].tolist(), tokens["trained"].tolist()
