"""Reading texts from files given on the command line, with errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path


def read_texts(path: str | Path) -> list[str]:
    """Texts of ``path``: JSONL (``.jsonl``; each line a string or an object with ``"text"``) or
    plain text, one text per line (empty lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    texts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if path.suffix == ".jsonl":
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
                if isinstance(item, dict):
                    item = item.get("text")
                if not isinstance(item, str):
                    raise ValueError(f"{path}:{number}: expected a string or an object with a string 'text'")
                texts.append(item)
            elif line.strip():
                texts.append(line.rstrip("\n"))
    return texts
