"""`gritkit data rag-reading`: the same examples as doc caches and as text, in the strings inference uses."""

from __future__ import annotations

from gritkit.cli import main
from gritkit.datasets.common import read_json, read_jsonl
from gritkit.datasets.rag_reading import build_rag_reading
from gritkit.datasets.self_retrieval import lead
from gritkit.training.doc_cache import doc_cache_example
from gritkit.training.data import generative_example
from gritkit.rag.modes import DOC_FIRST_TASK


def test_both_files_hold_the_same_examples_in_the_inference_strings(small_build, tmp_path):
    written = build_rag_reading(small_build[0], tmp_path)
    cached, uncached = read_jsonl(tmp_path / "doc_cache.jsonl"), read_jsonl(tmp_path / "doc_first.jsonl")
    assert len(cached) == len(uncached) == sum(written.values()) > 0 and written["faq"] > 0
    for index, (c, u) in enumerate(zip(cached, uncached)):
        example = doc_cache_example(c, f"doc_cache.jsonl:{index + 1}")  # valid trainer lines
        generative_example(u, f"doc_first.jsonl:{index + 1}")
        request = example.user.removesuffix(f"\n\n{DOC_FIRST_TASK}")
        assert request != example.user
        assert u["messages"][0]["content"] == f"{example.document}\n\n{request}\n\n{DOC_FIRST_TASK}"
        assert example.answer == u["messages"][1]["content"] == lead(example.document)


def test_no_held_out_document_is_trained_on(small_build, tmp_path):
    data_dir = small_build[0]
    build_rag_reading(data_dir, tmp_path)
    held_out = set(read_json(data_dir / "eval" / "faq-qa.json")["corpus"].values())
    held_out |= set(read_json(data_dir / "eval" / "debian-search.json")["corpus"].values())
    documents = {line["document"] for line in read_jsonl(tmp_path / "doc_cache.jsonl")}
    assert documents and not documents & held_out


def test_the_command_writes_both_files(small_build, tmp_path, capsys):
    assert main(["data", "rag-reading", "--data", str(small_build[0]), "--out", str(tmp_path)]) == 0
    assert len(read_jsonl(tmp_path / "doc_cache.jsonl")) == len(read_jsonl(tmp_path / "doc_first.jsonl")) > 0
    assert "doc_cache.jsonl" in capsys.readouterr().out
