"""Debian package descriptions (bookworm main): short description <-> long description, Section.

One package is kept per source package (the one named like the source, else the shortest
name), so that near-identical descriptions of sibling binaries (``foo``, ``foo-data``,
``foo-doc``) cannot sit on both sides of the train/evaluation split. A fixed, hash-chosen
subset is shipped to keep the repository small. Each package's description is under that
package's own licence; Description-md5 is recorded for provenance.
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import SourceUnavailable, apt_cat, apt_lists, stable_fraction

NAME = "debian"
VERSION = "Debian 12 bookworm main, amd64 Packages + Translation-en"
LICENSE = "each package's own licence (Debian main: DFSG-free); Description-md5 recorded per record"
KEEP_FRACTION = 0.33  # of usable source packages: about 11k records, ~2 MB compressed
MIN_LONG_WORDS = 12
_SKIP_NAME = re.compile(r"-(dbg|dbgsym)$")


def parse_stanzas(text: str) -> list[dict]:
    """RFC-822-style stanzas of an apt lists file; continuation lines keep their leading space."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines():
        if not line:
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def long_description(lines: list[str]) -> str:
    """Debian's long-description markup to plain text: ' .' is a paragraph break, wrapped lines are joined."""
    paragraphs, current = [], []
    for line in lines:
        body = line[1:] if line.startswith(" ") else line
        if body.strip() == ".":
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(body.strip())
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(p for p in paragraphs if p)


def records_from_lists(packages_text: str, translation_text: str) -> list[dict]:
    """Records ``{package, source, section, version, md5, short, long}`` chosen as described above."""
    descriptions = {}
    for stanza in parse_stanzas(translation_text):
        if "Description-en" in stanza:
            first, *rest = stanza["Description-en"].split("\n")
            descriptions[stanza.get("Description-md5", "")] = (first.strip(), long_description(rest))
    by_source: dict[str, list[dict]] = {}
    for stanza in parse_stanzas(packages_text):
        name, md5 = stanza.get("Package"), stanza.get("Description-md5")
        if not name or md5 not in descriptions or _SKIP_NAME.search(name):
            continue
        short, long = descriptions[md5]
        if "transitional" in short.lower() or "dummy" in short.lower() or len(long.split()) < MIN_LONG_WORDS:
            continue
        source = stanza.get("Source", name).split(" ")[0]
        section = stanza.get("Section", "unknown").split("/")[-1]
        by_source.setdefault(source, []).append(dict(package=name, source=source, section=section,
                                                     version=stanza.get("Version", ""), md5=md5, short=short, long=long))
    records, seen_long = [], set()
    for source in sorted(by_source):
        candidates = by_source[source]
        best = min(candidates, key=lambda r: (r["package"] != source, len(r["package"]), r["package"]))
        if best["long"] in seen_long or stable_fraction(f"debian:{source}") >= KEEP_FRACTION:
            continue
        seen_long.add(best["long"])
        records.append(best)
    return records


def extract(workdir: Path) -> list[dict]:
    """Read the bookworm main lists (fetched into a private lists dir) and return the records."""
    lists = apt_lists(workdir)
    packages = sorted(lists.glob("*_debian_dists_bookworm_main_binary-amd64_Packages*"))
    translations = sorted(lists.glob("*_debian_dists_bookworm_main_i18n_Translation-en*"))
    if not packages or not translations:
        raise SourceUnavailable(f"no bookworm main Packages/Translation-en lists in {lists}")
    return records_from_lists(apt_cat(packages[0]), apt_cat(translations[0]))
