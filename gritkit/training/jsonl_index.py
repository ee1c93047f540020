"""A JSONL file as a sequence of records parsed on access, through an index of line offsets.

Opening a file makes one pass over it that parses and checks every line (errors name
``file:line``) and keeps only the byte offset of each non-empty line: 8 bytes per record in
memory, whatever the size of the file. A record is read again, by seeking to its offset, when
it is asked for. The index can be saved to a directory and loaded from there instead of making
the pass again; it is used only while the file has the size and modification time it had when
it was indexed, and was checked for the same ``requirement`` (what the caller's parser checks).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np

# Bump when the saved layout changes, so that older index files are rebuilt rather than misread.
INDEX_FORMAT = 1


def _stamp(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_size, stat.st_mtime_ns


class IndexedJsonl(Sequence):
    """Records of a JSONL file: ``parse(decoded line, "file:line")`` of each non-empty line.

    ``parse`` raises ``error`` for a line it rejects; ``requirement`` names what it checks, so that
    an index saved after one set of checks is not trusted for another.
    """

    def __init__(self, path: str | Path, parse: Callable[[object, str], object], requirement: str,
                 error: type[Exception] = ValueError, index_dir: str | Path | None = None):
        self.path, self.parse, self.requirement, self.error = Path(path), parse, requirement, error
        if not self.path.is_file():
            raise FileNotFoundError(f"data file not found: {self.path}")
        self.stamp = _stamp(self.path.stat())
        offsets = self._load(Path(index_dir)) if index_dir is not None else None
        self.offsets = offsets if offsets is not None else self._index()
        if not len(self.offsets):
            raise error(f"{self.path}: no examples")

    def _index(self) -> np.ndarray:
        offsets = array("q")  # 8 bytes a line during the pass too (a list of ints takes ~36)
        with self.path.open("rb") as handle:
            # the stamp of what is read, so that a change during the pass shows up on access
            self.stamp = _stamp(os.fstat(handle.fileno()))
            position = 0
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    self.parse(self._decode(line, f"{self.path}:{number}"), f"{self.path}:{number}")
                    offsets.append(position)
                position += len(line)
        return np.frombuffer(offsets, dtype=np.int64)

    def _decode(self, line: bytes, where: str):
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise self.error(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        except UnicodeDecodeError:
            raise self.error(f"{where}: not UTF-8 text") from None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int):
        offset = int(self.offsets[index])
        with open(self.path, "rb") as handle:  # a handle per read: nothing to close, ~6 us of ~25
            self._check_unchanged(handle)
            handle.seek(offset)
            return self.parse(json.loads(handle.readline()), str(self.path))

    def __iter__(self):
        with self.path.open("rb") as handle:
            self._check_unchanged(handle)
            for offset in self.offsets.tolist():
                handle.seek(offset)
                yield self.parse(json.loads(handle.readline()), str(self.path))

    def _check_unchanged(self, handle) -> None:
        # Offsets into an edited file would point into the middle of other lines.
        if _stamp(os.fstat(handle.fileno())) != self.stamp:
            raise self.error(f"{self.path}: changed since it was indexed and checked; start the run again "
                             "(resume=true re-checks it)")

    # ------------------------------------------------------------------------ saved index
    def _index_file(self, directory: Path) -> Path:
        resolved = str(self.path.resolve())
        return directory / f"{self.path.name}-{hashlib.sha1(resolved.encode()).hexdigest()[:12]}.npz"

    def _key(self) -> dict:
        return {"format": INDEX_FORMAT, "path": str(self.path.resolve()), "size": self.stamp[0],
                "mtime_ns": self.stamp[1], "requirement": self.requirement}

    def _load(self, directory: Path) -> np.ndarray | None:
        """The saved offsets of this file, or None when there are none or they are stale."""
        saved = self._index_file(directory)
        if not saved.is_file():
            return None
        with np.load(saved) as stored:
            if json.loads(str(stored["key"])) != self._key():
                return None
            return stored["offsets"]

    def save_index(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` (atomically: several runs may share one); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = self._index_file(directory)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with partial.open("wb") as handle:
            np.savez(handle, offsets=self.offsets, key=np.array(json.dumps(self._key())))
        os.replace(partial, target)
        return target
