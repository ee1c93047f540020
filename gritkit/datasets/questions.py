"""Queries as users type them: plain questions, with the model's default instruction or none.

    gritkit data questions --data runs/data --out runs/data/questions

``gritkit data build``'s contrastive files put every query after its task's instruction
("Given a definition, retrieve the word ..."). A user of a RAG index types a bare question, and
``encode_query`` without an instruction uses the model's saved default
(``GritConfig.default_query_instruction``). This file trains those two forms: each pair's query is
embedded after ``QUESTION_INSTRUCTION`` (the default gritkit-smol saves) or after no instruction at
all, alternately. Pairs, from the training split of the shipped sources (the same ``split`` as
``gritkit data build``, so no held-out item is used):

- glossary lookups: ``what does "TERM" mean?`` -> ``TERM: definition`` (WordNet lemma and gloss);
  the hard negative is another sense of the same word where it has one (the case a glossary search
  must get right), else another entry;
- FAQ questions -> their answers; Debian package summaries asked as questions -> the full
  descriptions; negatives: another item's document.

``contrastive.jsonl`` holds them, one dataset (each embedding batch comes from one dataset).

``terms.jsonl``, a second dataset, asks the same glossary question of computing terms, the kind of
entry a technical glossary holds: Debian package names -> ``package: long description`` and
standard-library names -> ``module.function: docstring``. A technical entry's definition often
names other entries ("like .cshrc but ..."), so the hard negative is an entry whose definition
names the term where there is one, else a sibling (another package of the same source, another
function of the same module), else any other entry. (The shipped Debian records hold one package
per source, so a Debian negative is an entry naming the package, 5%, or any other.) Its random
draws are its own, so ``contrastive.jsonl`` is the same file as before it existed.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

from ..model.config import FALLBACK_QUERY_INSTRUCTION
from .build import split
from .common import DATA_DIR, write_jsonl
from .sources import load_source

QUESTION_INSTRUCTION = FALLBACK_QUERY_INSTRUCTION
GLOSSARY_QUESTION = 'what does "{term}" mean?'
DEBIAN_QUESTION = "Which package is {summary}?"
SEED = 20261207
# Pairs per kind (sampled from the training split).
SIZES = {"glossary": 6_000, "faq": 10_000, "debian": 3_000}
TERM_SIZES = {"debian": 6_000, "stdlib": 2_500}


def glossary_entry(term: str, definition: str) -> str:
    return f"{term}: {definition}"


def _glossary_pairs(synsets: list[dict], rng: random.Random) -> list[tuple[str, str, str]]:
    senses = defaultdict(list)  # lemma -> the synsets it names
    for synset in synsets:
        for lemma in synset["lemmas"]:
            senses[lemma].append(synset)
    pairs = []
    for synset in rng.sample(synsets, min(SIZES["glossary"], len(synsets))):
        term = rng.choice(synset["lemmas"])
        others = [s for s in senses[term] if s["id"] != synset["id"]]
        negative = rng.choice(others) if others else rng.choice(synsets)
        while negative["id"] == synset["id"]:
            negative = rng.choice(synsets)
        pairs.append((GLOSSARY_QUESTION.format(term=term), glossary_entry(term, synset["gloss"]),
                      glossary_entry(term if others else negative["lemmas"][0], negative["gloss"])))
    return pairs


def _document_pairs(items: list[tuple[str, str]], size: int, rng: random.Random) -> list[tuple[str, str, str]]:
    chosen = rng.sample(items, min(size, len(items)))
    pairs = []
    for question, document in chosen:
        negative = rng.choice(items)[1]
        while negative == document and len(items) > 1:
            negative = rng.choice(items)[1]
        pairs.append((question, document, negative))
    return pairs


def _term_pairs(entries: list[tuple[str, str, str]], size: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """Glossary lookups over ``(term, definition, sibling group)`` entries; see the module docstring
    for the negatives."""
    if len({term for term, _, _ in entries}) < 2:
        raise ValueError(f"glossary lookups need entries of at least two terms, got {len(entries)} entries")
    naming = defaultdict(list)  # lowercased word -> indices of the entries whose definition holds it
    groups = defaultdict(list)
    for index, (term, definition, group) in enumerate(entries):
        groups[group].append(index)
        for word in set(re.findall(r"[\w.+/-]+", definition.lower())):
            naming[word.strip(".")].append(index)
    pairs = []
    for index in rng.sample(range(len(entries)), min(size, len(entries))):
        term, definition, group = entries[index]
        candidates = ([i for i in naming.get(term.lower(), ()) if entries[i][0] != term]
                      or [i for i in groups[group] if entries[i][0] != term])
        negative = rng.choice(candidates) if candidates else index
        while entries[negative][0] == term:
            negative = rng.randrange(len(entries))
        pairs.append((GLOSSARY_QUESTION.format(term=term), glossary_entry(term, definition),
                      glossary_entry(*entries[negative][:2])))
    return pairs


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n", 1)[0].split())


def term_pairs(data_dir: Path = DATA_DIR, seed: int = SEED) -> tuple[list[dict], dict]:
    """The lines of ``terms.jsonl`` and their count per source."""
    rng = random.Random(f"{seed}:terms")
    debian = split("debian", load_source("debian", data_dir))[0]
    stdlib = split("stdlib", load_source("stdlib", data_dir))[0]
    kinds = {
        "debian": _term_pairs([(r["package"], r["long"], r["source"]) for r in debian], TERM_SIZES["debian"], rng),
        "stdlib": _term_pairs([(r["id"], _first_paragraph(r["docstring"]), r["id"].rsplit(".", 1)[0])
                               for r in stdlib if r["docstring"].strip()], TERM_SIZES["stdlib"], rng),
    }
    return _lines(kinds, rng), {kind: len(pairs) for kind, pairs in kinds.items()}


def _lines(kinds: dict[str, list[tuple[str, str, str]]], rng: random.Random) -> list[dict]:
    """Contrastive lines of every kind's pairs, alternately bare and after the default instruction, shuffled."""
    lines = []
    for pairs in kinds.values():
        for number, (query, positive, negative) in enumerate(pairs):
            instruction = QUESTION_INSTRUCTION if number % 2 else ""
            lines.append({"query": [instruction, query], "pos": [positive], "neg": [negative]})
    rng.shuffle(lines)
    return lines


def question_pairs(data_dir: Path = DATA_DIR, seed: int = SEED) -> tuple[list[dict], dict]:
    """The contrastive lines and their count per kind."""
    rng = random.Random(seed)
    train = {name: split(name, load_source(name, data_dir))[0] for name in ("wordnet", "faq", "debian")}
    kinds = {
        "glossary": _glossary_pairs(train["wordnet"], rng),
        "faq": _document_pairs([(r["question"], r["answer"]) for r in train["faq"]], SIZES["faq"], rng),
        "debian": _document_pairs([(DEBIAN_QUESTION.format(summary=r["short"]), r["long"]) for r in train["debian"]],
                                  SIZES["debian"], rng),
    }
    return _lines(kinds, rng), {kind: len(pairs) for kind, pairs in kinds.items()}


def build_questions(out_dir: str | Path, data_dir: Path = DATA_DIR) -> dict:
    """Write ``contrastive.jsonl`` and ``terms.jsonl`` to ``out_dir``; returns the count per file and kind."""
    counts = {}
    for name, pairs in (("contrastive.jsonl", question_pairs), ("terms.jsonl", term_pairs)):
        lines, counts[name] = pairs(Path(data_dir))
        write_jsonl(Path(out_dir) / name, lines)
    return counts
