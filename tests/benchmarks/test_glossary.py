"""benchmarks/glossary.py: its smoke run (gritkit-tiny on 40 shipped FOLDOC entries) prints one row
per embedder over exactly the entries asked for; the metrics are checked on rankings whose answer
is known, and the queries and corpus have the documented forms."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

GLOSSARY = Path(__file__).resolve().parents[2] / "benchmarks" / "glossary.py"
ENTRIES = [
    dict(id="cache", term="cache", definition="A small fast memory holding recently accessed data.", categories=[]),
    dict(id="kludge", term="kludge", definition="A clever programming trick for a nasty case.", categories=["jargon"]),
    dict(id="daemon", term="daemon", definition="A program that runs in the background, not under a user's control.",
         categories=["operating system"]),
]


@pytest.fixture(scope="module")
def glossary():
    return runpy.run_path(str(GLOSSARY), run_name="benchmark_glossary")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_queries_and_corpus_have_the_documented_forms(glossary):
    task = glossary["task_from"](ENTRIES)
    assert task["queries"]["kludge"] == 'what does "kludge" mean?'
    assert task["corpus"]["kludge"] == "kludge: A clever programming trick for a nasty case."
    assert task["qrels"] == {e["id"]: {e["id"]: 1} for e in ENTRIES}
    two = glossary["task_from"](ENTRIES, limit=2)
    assert len(two["corpus"]) == 2 and two == glossary["task_from"](list(reversed(ENTRIES)), limit=2)


def test_metrics_on_rankings_whose_answer_is_known(glossary):
    task = glossary["task_from"](ENTRIES)
    bm25 = glossary["bm25_row"](task)
    assert (bm25["top1"], bm25["mrr"], bm25["ndcg@10"]) == (1.0, 1.0, pytest.approx(1.0))
    ids = list(task["queries"])  # sorted: cache, daemon, kludge
    # Each query's own document ranked second, behind the next one's: top-1 0, MRR 1/2, nDCG 1/log2(3).
    scores = np.eye(3) * 0.5 + np.roll(np.eye(3), 1, axis=1)
    scores = glossary["metrics"](glossary["full_run"](scores, ids, ids), task["qrels"])
    assert scores["top1"] == 0 and scores["mrr"] == 0.5
    assert scores["ndcg@10"] == pytest.approx(1 / math.log2(3))
    # A query whose document is not retrieved at all (BM25 with no shared term) scores 0.
    partial = glossary["metrics"]({"cache": {"cache": 2.0}, "daemon": {"cache": 1.0}}, {"cache": {"cache": 1}, "daemon": {"daemon": 1}})
    assert partial["top1"] == partial["mrr"] == 0.5


def test_smoke_run_scores_every_embedder_on_the_entries_asked_for(glossary, capsys, one_thread):
    glossary["main"](["--smoke", "--json"])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"model", "entries", "queries", "query_form", "out_of_the_box_instruction", "instruction",
                           "source", "rows", "command"}
    assert result["model"] == "gritkit-tiny" and result["entries"] == result["queries"] == 40
    assert result["query_form"] == 'what does "{term}" mean?'
    assert result["instruction"] == "Given a question, retrieve a passage that answers it"
    from gritkit.model.config import FALLBACK_QUERY_INSTRUCTION

    assert result["out_of_the_box_instruction"] == FALLBACK_QUERY_INSTRUCTION  # gritkit-tiny saved none
    rows = result["rows"]
    assert list(rows) == ["gritkit-tiny (out of the box)", "gritkit-tiny (instructed)", "BM25", "all-MiniLM-L6-v2"]
    for name, row in rows.items():
        if "skipped" in row:
            assert name == "all-MiniLM-L6-v2" and "not installed" in row["skipped"]
            continue
        assert 0 <= row["top1"] <= row["mrr"] <= 1 and 0 <= row["ndcg@10"] <= 1, (name, row)
        assert row["top1"] <= row["ndcg@10"] + 1e-9 and row["seconds"] > 0, (name, row)
    # Every query names its term, which opens its own entry: BM25 finds nearly all of them.
    assert rows["BM25"]["top1"] >= 0.9
    assert "command: python benchmarks/glossary.py --smoke --json" in out
