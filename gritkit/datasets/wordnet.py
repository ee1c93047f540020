"""WordNet 3.0 synsets (Debian ``wordnet-base``): lemmas, gloss, example sentences, supersense.

A synset is one source item: its lemmas, definition and examples go together to either the
training or the evaluation side. A fixed, hash-chosen subset is shipped (WordNet licence:
permissive, Princeton University; the licence text is reproduced in DATA_LICENSES.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import apt_fetch, stable_fraction

NAME = "wordnet"
PACKAGE = "wordnet-base=1:3.0-37"
VERSION = "WordNet 3.0 (Debian wordnet-base 1:3.0-37)"
LICENSE = "WordNet 3.0 licence (Princeton University; permissive, BSD-like)"
KEEP_FRACTION = 0.30  # of synsets: about 35k records
FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
# The 45 lexicographer files ("supersenses"), indexed by the lex_filenum field of data.* lines.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_QUOTED = re.compile(r'"([^"]+)"')


def parse_line(line: str) -> dict | None:
    """One ``data.*`` line to ``{id, pos, lexname, lemmas, gloss, examples}`` (None for licence lines)."""
    if line.startswith("  ") or "|" not in line:
        return None
    fields, gloss_part = line.split("|", 1)
    parts = fields.split()
    offset, lex_filenum, pos, word_count = parts[0], int(parts[1]), parts[2], int(parts[3], 16)
    words = [parts[4 + 2 * i] for i in range(word_count)]
    # Adjective lemmas may carry a syntactic marker such as "(a)" or "(p)".
    lemmas = list(dict.fromkeys(re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in words))
    examples = [e.strip() for e in _QUOTED.findall(gloss_part)]
    definition = _QUOTED.sub("", gloss_part).strip(" ;")
    definition = re.sub(r"\s*;\s*(;\s*)*", "; ", definition).strip("; ").strip()
    return dict(id=f"{pos}{offset}", pos=pos, lexname=LEXNAMES[lex_filenum], lemmas=lemmas,
                gloss=definition, examples=examples)


def records_from_files(root: Path) -> list[dict]:
    """Synsets of the four data files, hash-subsampled, sorted by id."""
    records = []
    for name in FILES:
        with open(root / name, encoding="latin-1") as handle:
            for line in handle:
                record = parse_line(line.rstrip("\n"))
                if record and record["gloss"] and stable_fraction(f"wordnet:{record['id']}") < KEEP_FRACTION:
                    records.append(record)
    return sorted(records, key=lambda r: r["id"])


def extract(workdir: Path) -> list[dict]:
    root = apt_fetch([PACKAGE], workdir)
    return records_from_files(root / "usr" / "share" / "wordnet")
