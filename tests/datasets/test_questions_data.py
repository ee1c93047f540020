"""`gritkit data questions`: plain questions from the training split only, half bare, hard glossary negatives."""

from __future__ import annotations

import random

from gritkit.cli import main
from gritkit.datasets.build import split
from gritkit.datasets.common import read_jsonl
from gritkit.datasets.questions import (GLOSSARY_QUESTION, QUESTION_INSTRUCTION, _term_pairs, glossary_entry, question_pairs,
                                        term_pairs)
from gritkit.datasets.sources import load_source
from gritkit.model.config import FALLBACK_QUERY_INSTRUCTION


def test_pairs_come_from_the_training_split_half_of_them_bare(small_sources):
    lines, counts = question_pairs(small_sources)
    assert len(lines) == sum(counts.values()) and min(counts.values()) > 0
    assert QUESTION_INSTRUCTION == FALLBACK_QUERY_INSTRUCTION  # what encode_query uses by default
    instructions = [line["query"][0] for line in lines]
    assert set(instructions) == {"", QUESTION_INSTRUCTION}
    assert abs(instructions.count("") - instructions.count(QUESTION_INSTRUCTION)) <= len(counts)
    held = {}
    for name in ("wordnet", "faq", "debian"):
        _, held[name] = split(name, load_source(name, small_sources))
    held_texts = ({r["gloss"] for r in held["wordnet"]} | {r["question"] for r in held["faq"]}
                  | {r["answer"] for r in held["faq"]} | {r["long"] for r in held["debian"]})
    for line in lines:
        assert line["pos"][0] != line["neg"][0]
        assert not any(text in held_texts for text in (line["query"][1], line["pos"][0], line["pos"][0].split(": ", 1)[-1]))


def test_a_glossary_question_finds_its_entry_and_another_sense_is_the_negative(small_sources):
    lines, _ = question_pairs(small_sources)
    glossary = [line for line in lines if line["query"][1].startswith('what does "')]
    assert glossary
    same_word = 0
    for line in glossary:
        term = line["query"][1][len('what does "'):-len('" mean?')]
        assert line["query"][1] == GLOSSARY_QUESTION.format(term=term)
        assert line["pos"][0].startswith(f"{term}: ")
        same_word += line["neg"][0].startswith(f"{term}: ")
    assert same_word > 0  # polysemous words get another sense of themselves as the hard negative


def test_the_command_writes_the_file(tmp_path, capsys):
    assert main(["data", "questions", "--out", str(tmp_path / "q")]) == 0
    assert "pairs" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "q" / "contrastive.jsonl")) > 1000
    assert len(read_jsonl(tmp_path / "q" / "terms.jsonl")) > 1000


def test_computing_terms_come_from_the_training_split_and_find_their_own_entry(small_sources):
    lines, counts = term_pairs(small_sources)
    assert set(counts) == {"debian", "stdlib"} and len(lines) == sum(counts.values()) and min(counts.values()) > 0
    assert {line["query"][0] for line in lines} == {"", QUESTION_INSTRUCTION}
    held = {name: split(name, load_source(name, small_sources))[1] for name in ("debian", "stdlib")}
    held_terms = {r["package"] for r in held["debian"]} | {r["id"] for r in held["stdlib"]}
    group = {r["package"]: r["source"] for r in load_source("debian", small_sources)}
    group.update({r["id"]: r["id"].rsplit(".", 1)[0] for r in load_source("stdlib", small_sources)})
    hard = 0
    for line in lines:
        term = line["query"][1][len('what does "'):-len('" mean?')]
        assert line["query"][1] == GLOSSARY_QUESTION.format(term=term) and term not in held_terms
        assert line["pos"][0].startswith(f"{term}: ")
        negative_term, negative_definition = line["neg"][0].split(": ", 1)
        assert negative_term != term
        hard += term.lower() in negative_definition.lower() or group[negative_term] == group[term]
    assert hard > 0


def test_a_term_negative_names_the_term_else_is_a_sibling_else_any_other_entry():
    entries = [("foo", "a tool", "g1"), ("foo-dev", "files for foo.", "g1"), ("bar", "bar does x", "g2"),
               ("baz", "like bar, but faster", "g3"), ("qux", "a quiet thing", "g4")]
    negatives = {}
    for seed in range(5):
        for query, positive, negative in _term_pairs(entries, len(entries), random.Random(seed)):
            term = query[len('what does "'):-len('" mean?')]
            assert positive == glossary_entry(*next(e[:2] for e in entries if e[0] == term))
            negatives.setdefault(term, set()).add(negative.split(": ", 1)[0])
    assert negatives["foo"] == {"foo-dev"}  # its definition names foo
    assert negatives["bar"] == {"baz"}  # its definition names bar
    assert negatives["foo-dev"] == {"foo"}  # nothing names it: its sibling
    assert "baz" not in negatives["baz"] and len(negatives["baz"]) >= 2  # neither: any other entry

