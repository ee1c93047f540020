"""FOLDOC (gritkit/datasets/foldoc.py): a hand-written dictd pair parsed (braces removed, dates
dropped, categories read, Debian additions left out), the subset rules, the shipped copy's sha256
checked and a corrupted copy refused, and FOLDOC kept out of every data build."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from gritkit.datasets import foldoc
from gritkit.datasets.common import DATA_DIR, sha256_file
from gritkit.datasets.sources import EVAL_ONLY, SOURCES, load_source, ship

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

ENTRIES = [
    "00-database-short\n     The Free On-line Dictionary of Computing (19 January 2023)\n\n",
    "cache\ncache memory\n\n"
    "   <memory management, hardware> /kash/ A small fast memory holding\n"
    "   recently accessed data, designed to speed up subsequent {access}\n"
    "   to the same data.\n\n"
    "   See also {direct mapped cache}, {write-back}.\n\n"
    "   (1997-06-25)\n\n",
    "kludge\n\n"
    "   1. <jargon> A clever programming trick intended to solve a\n"
    "   particular nasty case in an expedient way.\n\n"
    "   2. <hardware> A crock that works, as seen in the {Jargon File\n"
    "   (http://catb.org/jargon/)}.\n\n"
    "   (1996-08-26)\n\n",
    "tiny\n\n   <jargon> Small.\n\n   (2001-01-01)\n\n",
    "short definition\n\n"
    "   A definition of two paragraphs, the first one too short, so\n\n"
    "   the next one is appended {here}. (2003-03-03)\n\n"
    "   [Reference?]\n\n"
    "   (2003-03-03)\n\n",
    "CMMI\n\n   <computing> A name of two entries, so that neither is kept in the subset, its\n"
    "   definition being long enough otherwise: eighty characters at least.\n\n",
    "cmmi\n\n   Capability Maturity Model Integration, again.\n\n",
    "Dictionary.debian\n\n  The following definitions are Copyright Joey Hess.\n\n",
    "orphan\n\n        <Debian> A Debian package without a maintainer, an addition\n"
    "        that Debian's package appends under another licence.\n\n",
]


def _b64(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 64)
        digits = _B64[digit] + digits
        if not number:
            return digits


def _dictd(tmp_path):
    """A ``foldoc.index`` / ``foldoc.dict.dz`` pair holding ``ENTRIES`` (a plain gzip file, as
    dictzip's is to Python)."""
    data, index, offset = b"", [], 0
    for entry in ENTRIES:
        raw = entry.encode("utf-8")
        headwords = entry.split("\n\n")[0].split("\n")
        index.extend(f"{h.lower()}\t{_b64(offset)}\t{_b64(len(raw))}" for h in headwords)
        data, offset = data + raw, offset + len(raw)
    (tmp_path / "foldoc.index").write_text("\n".join(sorted(index)) + "\n", encoding="utf-8")
    (tmp_path / "foldoc.dict.dz").write_bytes(gzip.compress(data))
    return tmp_path / "foldoc.index", tmp_path / "foldoc.dict.dz"


def test_dictd_numbers_are_base64_digits():
    assert [foldoc.b64_number(s) for s in ("A", "B", "BA", "/", "Cq3B")] == [0, 1, 64, 63, 2 * 64**3 + 42 * 64**2 + 55 * 64 + 1]


def test_entries_are_parsed_braces_removed_dates_dropped_categories_read(tmp_path):
    index, dictionary = _dictd(tmp_path)
    found = foldoc.entries(index.read_text(), gzip.decompress(dictionary.read_bytes()))
    by_term = {e["term"]: e for e in found}
    # The dictd header, the Debian additions (from Dictionary.debian on) are left out.
    assert set(by_term) == {"cache", "kludge", "tiny", "short definition", "CMMI", "cmmi"}
    cache = by_term["cache"]
    assert cache["headwords"] == ["cache", "cache memory"]
    assert cache["categories"] == ["memory management", "hardware"]
    assert cache["definition"] == ("A small fast memory holding recently accessed data, designed to speed up "
                                   "subsequent access to the same data.")
    kludge = by_term["kludge"]
    assert kludge["categories"] == ["jargon", "hardware"]  # the second sense's tags too
    assert kludge["definition"] == ("A clever programming trick intended to solve a particular nasty case in an "
                                    "expedient way.")  # the first sense only, its number dropped
    assert by_term["short definition"]["definition"] == (
        "A definition of two paragraphs, the first one too short, so the next one is appended here.")
    for entry in found:
        assert not any(c in entry["definition"] for c in "{}<>"), entry
        assert "(19" not in entry["definition"] and "(20" not in entry["definition"], entry


def test_a_link_keeps_its_name_and_loses_its_address():
    entry = foldoc.parse_entry("x\n\n   <web> See the {Jargon File\n   (http://catb.org/jargon/)} and {(http://a.b/)}.\n\n")
    assert entry["definition"] == "See the Jargon File and ."
    assert entry["categories"] == ["web"]


def test_the_subset_keeps_unique_short_terms_with_mid_length_definitions(tmp_path):
    records = foldoc.records_from_files(*_dictd(tmp_path))
    # tiny: a definition under 80 characters; CMMI and cmmi: two entries share the name.
    assert [r["id"] for r in records] == ["cache", "kludge", "short definition"]
    assert set(records[0]) == {"id", "term", "definition", "categories"}
    one = foldoc.records_from_files(*_dictd(tmp_path), keep=1)
    assert len(one) == 1 and one[0] in records


def test_shipped_copy_matches_its_checksum_and_the_subset_rules():
    manifest = json.loads((DATA_DIR / "SOURCES.json").read_text())["sources"]["foldoc"]
    assert sha256_file(DATA_DIR / manifest["file"]) == manifest["sha256"]
    records = load_source("foldoc")  # raises if the sha256 differs from SOURCES.json
    assert len(records) == manifest["records"] == foldoc.KEEP
    assert manifest["version"] == foldoc.VERSION and manifest["license"] == foldoc.LICENSE
    assert len({r["id"] for r in records}) == len(records)
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    for r in records:
        assert r["id"] == r["term"].lower() and 1 <= len(r["term"].split()) <= foldoc.MAX_WORDS
        assert foldoc.MIN_CHARS <= len(r["definition"]) <= foldoc.MAX_CHARS
        assert "\n" not in r["definition"] and not any(c in r["definition"] for c in "{}")
        assert not foldoc._DATE.search(r["definition"])


def test_a_corrupted_copy_is_refused(tmp_path):
    shutil.copy(DATA_DIR / "SOURCES.json", tmp_path / "SOURCES.json")
    shutil.copy(DATA_DIR / "foldoc.jsonl.gz", tmp_path / "foldoc.jsonl.gz")
    assert len(load_source("foldoc", tmp_path)) == foldoc.KEEP
    data = bytearray((tmp_path / "foldoc.jsonl.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "foldoc.jsonl.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted data file.*sha256"):
        load_source("foldoc", tmp_path)
    (tmp_path / "foldoc.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError):
        load_source("foldoc", tmp_path)


def test_foldoc_is_shipped_alone_and_never_read_by_a_data_build(tmp_path):
    """EVAL_ONLY, not SOURCES: ``gritkit data build`` reads SOURCES only, even from a source
    directory whose manifest lists FOLDOC; shipping FOLDOC alone keeps the manifest's other entries."""
    from gritkit.datasets.build import _source_records

    assert "foldoc" in EVAL_ONLY and "foldoc" not in SOURCES
    records = load_source("foldoc")[:5]
    ship({name: load_source(name)[:3] for name in SOURCES}, tmp_path)
    ship({"foldoc": records}, tmp_path)
    manifest = json.loads((tmp_path / "SOURCES.json").read_text())["sources"]
    assert set(manifest) == {*SOURCES, "foldoc"}
    assert load_source("foldoc", tmp_path) == records and len(load_source("debian", tmp_path)) == 3
    used, notes = _source_records(False, None, tmp_path, lambda *_: None)
    assert set(used) == set(notes) == set(SOURCES)
