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
"""

from __future__ import annotations

import random
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
    lines = []
    for pairs in kinds.values():
        for number, (query, positive, negative) in enumerate(pairs):
            instruction = QUESTION_INSTRUCTION if number % 2 else ""
            lines.append({"query": [instruction, query], "pos": [positive], "neg": [negative]})
    rng.shuffle(lines)
    return lines, {kind: len(pairs) for kind, pairs in kinds.items()}


def build_questions(out_dir: str | Path, data_dir: Path = DATA_DIR) -> dict:
    """Write ``contrastive.jsonl`` to ``out_dir``; returns the count per kind."""
    lines, counts = question_pairs(Path(data_dir))
    write_jsonl(Path(out_dir) / "contrastive.jsonl", lines)
    return counts
