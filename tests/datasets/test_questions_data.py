"""`gritkit data questions`: plain questions from the training split only, half bare, hard glossary negatives."""

from __future__ import annotations

from gritkit.cli import main
from gritkit.datasets.build import split
from gritkit.datasets.common import read_jsonl
from gritkit.datasets.questions import GLOSSARY_QUESTION, QUESTION_INSTRUCTION, question_pairs
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
