"""FOLDOC, the Free On-line Dictionary of Computing (Debian ``dict-foldoc``): term, definition, categories.

An evaluation-only source: no training data is ever built from it (it is not in
``sources.SOURCES``, which ``gritkit data build`` reads), so a glossary retrieval check on it
(benchmarks/glossary.py) measures a model out of its training distribution.

The package holds a dictd pair: ``foldoc.index`` (``headword TAB offset TAB length``, numbers in
dictd's base64) and ``foldoc.dict.dz`` (dictzip, which Python's gzip reads). One entry is its
headword lines (the first is the term, the others aliases), a blank line, then indented
paragraphs: the first opens with ``<category, category>`` tags, cross-references look
``{like this}`` and a date paragraph ``(1997-11-23)`` ends the entry. The Debian-added definitions
appended after the ``Dictionary.debian`` entry (under another licence) are left out, and so are
dictd's ``00-database-*`` header entries and FOLDOC's own introduction.

A compact, deterministic subset is shipped: ``KEEP`` entries, chosen by a stable hash of the term
among the entries whose term is unique (the headword of no other entry), 1-4 words long, and
whose definition is ``MIN_CHARS``-``MAX_CHARS`` characters. FOLDOC is under the GNU Free
Documentation License 1.1 or later (no invariant sections).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from .common import SourceUnavailable, apt_fetch, stable_fraction

NAME = "foldoc"
PACKAGE = "dict-foldoc=20230119-1"
VERSION = "FOLDOC of 19 January 2023 (Debian dict-foldoc 20230119-1)"
LICENSE = "GNU Free Documentation License 1.1 or later, no invariant sections (Copyright 1985 Denis Howe, FOLDOC)"
REQUIRED = ("id", "term", "definition", "categories")
KEEP = 600
MIN_CHARS, MAX_CHARS = 80, 600
MAX_WORDS = 4
DEBIAN_ADDITIONS = "dictionary.debian"  # the headword after which Debian's own definitions follow

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_DATE = re.compile(r"\s*\(\d{4}-\d{1,2}-\d{1,2}\)\s*$")
_SENSE = re.compile(r"^(\d{1,2})\.\s+")
# Tags open a paragraph; a few entries close one with a typo ("<networking<", "<tool, cryptography}").
_CATEGORIES = re.compile(r"^<([^<>{}]{1,80})[>}<]\s*")
_PRONUNCIATION = re.compile(r"^(?:,?\s*\*?not\*?\s*)?/[^/\s][^/]{0,40}/\s*")
_BRACES = re.compile(r"\{([^{}]*)\}")
_LINK = re.compile(r"\s*\((?:[a-z]+:[^()\s]*|[^()\s]*\.html?[^()\s]*)\)", re.IGNORECASE)
# Paragraphs that end a definition: "See also ...", "[reference]", a bare link, "{Unix manual page}: ls(1)".
_STOP = re.compile(r"^(?:see\b|\[|\{?\(?[a-z]+://|\{?(?:unix manual page|home page|home)\b)", re.IGNORECASE)


def b64_number(text: str) -> int:
    """A dictd index number (offset or length): base64 digits, most significant first."""
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def read_index(text: str) -> list[tuple[str, int, int]]:
    """``(headword, offset, length)`` per line of a dictd ``.index`` file."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"dictd index line {number}: expected 3 tab-separated fields, got {len(parts)}")
        rows.append((parts[0], b64_number(parts[1]), b64_number(parts[2])))
    return rows


def _unbrace(text: str) -> str:
    """Cross-references ``{like this}`` to plain words; links ``{Name (http://...)}`` to their name."""
    previous = None
    while previous != text:  # nested braces, innermost first
        previous = text
        text = _BRACES.sub(lambda m: _LINK.sub("", m.group(1)), text)
    return text


def _flat(paragraph: str) -> str:
    return " ".join(paragraph.split())


def parse_entry(text: str) -> dict:
    """One dictd entry to ``{headwords, categories, definition}``.

    ``definition``: the first paragraph, with the next ones appended while it is shorter than
    ``MIN_CHARS`` (up to the first date, "See also", reference or link paragraph, or the next
    numbered sense), flattened to one line; cross-reference braces, sense number, category tags,
    pronunciation and dates removed. ``categories``: every ``<tag>`` opening a paragraph, in order.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    headwords = []
    while lines and lines[0].strip():
        headwords.append(lines.pop(0).strip())
    paragraphs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(_flat(" ".join(current)))
            current = []
    if current:
        paragraphs.append(_flat(" ".join(current)))
    categories, parts, done = [], [], False
    for index, paragraph in enumerate(paragraphs):
        sense, body = None, paragraph
        while True:  # any order of sense number, tags and pronunciation: "<jargon> /ak'mee/ 1. A ..."
            if match := _SENSE.match(body):
                sense = sense or match
            elif match := _CATEGORIES.match(body):
                categories.extend(t.strip() for t in match.group(1).split(",") if t.strip())
            elif not (match := _PRONUNCIATION.match(body)):
                break
            body = body[match.end():]
        if done or (index > 0 and (len(" ".join(parts)) >= MIN_CHARS or sense or _STOP.match(body)
                                   or _DATE.fullmatch(body))):
            done = True  # the definition ended: later paragraphs give categories only
            continue
        body = _flat(_unbrace(_DATE.sub("", body)))
        if body:
            parts.append(body)
    definition = _flat(" ".join(p for p in parts if p))
    return dict(headwords=headwords, categories=list(dict.fromkeys(categories)), definition=definition)


def entries(index_text: str, dict_data: bytes | str) -> list[dict]:
    """Every FOLDOC entry of a dictd pair (Debian additions, dictd headers and the introduction
    left out): ``{offset, term, headwords, definition, categories, keys}``, ``keys`` the index
    headwords (lower case) pointing at it; in dictionary order."""
    data = dict_data.encode("utf-8") if isinstance(dict_data, str) else dict_data  # offsets count bytes
    rows = read_index(index_text)
    by_entry: dict[tuple[int, int], list[str]] = {}
    for headword, offset, length in rows:
        by_entry.setdefault((offset, length), []).append(headword)
    debian_start = min((o for h, o, _ in rows if h.lower() == DEBIAN_ADDITIONS), default=None)
    found = []
    for (offset, length), keys in sorted(by_entry.items()):
        if debian_start is not None and offset >= debian_start:
            continue
        if any(k.startswith("00-database") or k.startswith("00database") for k in keys):
            continue
        entry = parse_entry(data[offset:offset + length].decode("utf-8", errors="replace"))
        if not entry["headwords"] or "introduction" in entry["categories"]:
            continue
        found.append(dict(entry, offset=offset, term=entry["headwords"][0], keys=sorted({k.lower() for k in keys})))
    return found


def select(found: list[dict], keep: int = KEEP) -> list[dict]:
    """The shipped records ``{id, term, definition, categories}``: ``keep`` eligible entries with
    the smallest stable hash of their term, sorted by id. Eligible: a term no other entry has as
    a headword, of 1-``MAX_WORDS`` words, with no double quote (the benchmark's query quotes it),
    and a definition of ``MIN_CHARS``-``MAX_CHARS`` characters with no brace left in it."""
    owners: dict[str, set[int]] = {}
    for entry in found:
        for key in {*entry["keys"], *(h.lower() for h in entry["headwords"])}:
            owners.setdefault(key, set()).add(entry["offset"])
    eligible, seen = [], set()
    for entry in found:
        term = entry["term"]
        key = term.lower()
        if (len(owners.get(key, ())) != 1 or key in seen or not 1 <= len(term.split()) <= MAX_WORDS
                or not MIN_CHARS <= len(entry["definition"]) <= MAX_CHARS or '"' in term
                or any(c in entry["definition"] for c in "{}")):  # a brace left by a typo in the source
            continue
        seen.add(key)
        eligible.append(dict(id=key, term=term, definition=entry["definition"], categories=entry["categories"]))
    chosen = sorted(eligible, key=lambda r: (stable_fraction(f"foldoc:{r['id']}"), r["id"]))[:keep]
    return sorted(chosen, key=lambda r: r["id"])


def records_from_files(index_path: Path, dict_path: Path, keep: int = KEEP) -> list[dict]:
    """The shipped records from a dictd ``.index`` and its ``.dict.dz`` (or plain ``.dict``)."""
    raw = Path(dict_path).read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return select(entries(Path(index_path).read_text(encoding="utf-8"), text), keep)


def extract(workdir: Path) -> list[dict]:
    root = apt_fetch([PACKAGE], Path(workdir)) / "usr" / "share" / "dictd"
    if not (root / "foldoc.index").is_file():
        raise SourceUnavailable(f"{PACKAGE} holds no usr/share/dictd/foldoc.index")
    return records_from_files(root / "foldoc.index", root / "foldoc.dict.dz")

