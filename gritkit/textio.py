"""Reading texts from files given on the command line, with errors that name file and line.

Files are read as bytes and decoded a line at a time, so that bytes that are not UTF-8 are
reported at their line and byte offset (a text-mode read names neither, nor the file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

STDIN_NAME = "standard input"


def iter_lines(handle: BinaryIO, name: str, error=ValueError) -> Iterator[tuple[int, str]]:
    """(line number, line without its line ending) of each line of the binary ``handle``, decoded
    as UTF-8; ``error`` names ``name:line`` and the byte offset of the first byte that is not."""
    offset = 0
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{name}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset "
                        f"{offset + exc.start}); save the file as UTF-8") from None
        offset += len(raw)
        yield number, line.rstrip("\r\n")


def iter_file_lines(path: Path, error=ValueError) -> Iterator[tuple[int, str]]:
    """``iter_lines`` of the file ``path``."""
    with Path(path).open("rb") as handle:
        yield from iter_lines(handle, str(path), error)


def iter_json_lines(path: Path, error=ValueError):
    """(line number, decoded value) of each non-empty line of a JSONL file; ``error`` names
    ``file:line`` for a line that is not JSON (or not UTF-8)."""
    for number, line in iter_file_lines(path, error):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_texts(path: str | Path) -> list[str]:
    """Texts of ``path``: JSONL (``.jsonl``; each line a string or an object with ``"text"``) or
    plain text, one text per line (empty lines skipped).

    A file without a single text is an error: every caller (embedding, indexing, training a
    tokenizer) would otherwise write an empty result, replacing a previous one, and succeed.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"input {path} is a directory, not a file")
    if not path.exists():  # a device or a pipe (/dev/stdin, <(command)) is read like a file
        raise FileNotFoundError(f"input file not found: {path}")
    texts = _jsonl_texts(path) if path.suffix == ".jsonl" else [
        line for _, line in iter_file_lines(path) if line.strip()]
    if not texts:
        raise ValueError(f"no texts in {path}")
    return texts


def read_stdin_texts() -> list[str]:
    """Texts of standard input, one per line (empty lines skipped); an error when there are none."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # replaced by a text stream (a test, an embedding application)
        lines = (line.rstrip("\r\n") for line in sys.stdin)
    else:
        lines = (line for _, line in iter_lines(stream, STDIN_NAME))
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"no texts on {STDIN_NAME}")
    return texts


def _jsonl_texts(path: Path) -> list[str]:
    """The texts of a JSONL file: each line a string or an object with a string ``"text"``."""
    texts = []
    for number, item in iter_json_lines(path):
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(f"{path}:{number}: expected a string or an object with a string 'text'")
        texts.append(item)
    return texts
