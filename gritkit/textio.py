"""Reading texts from files given on the command line, with errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path


def iter_json_lines(path: Path, error=ValueError):
    """(line number, decoded value) of each non-empty line of a JSONL file; ``error`` names
    ``file:line`` for a line that is not JSON."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_texts(path: str | Path) -> list[str]:
    """Texts of ``path``: JSONL (``.jsonl``; each line a string or an object with ``"text"``) or
    plain text, one text per line (empty lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix != ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [line.rstrip("\n") for line in handle if line.strip()]
    texts = []
    for number, item in iter_json_lines(path):
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(f"{path}:{number}: expected a string or an object with a string 'text'")
        texts.append(item)
    return texts
