"""`gritkit data rag-reading`: the same examples as doc caches and as text, in the strings inference uses."""

from __future__ import annotations

from gritkit.cli import main
from gritkit.datasets.common import read_json, read_jsonl
from gritkit.datasets.rag_reading import LONG_DOCUMENTS, LONG_VARIANTS, LONG_WORDS, MULTI_DOCUMENTS, build_rag_reading
from gritkit.datasets.self_retrieval import lead
from gritkit.training.doc_cache import doc_cache_example
from gritkit.training.data import generative_example
from gritkit.rag.modes import DOC_FIRST_TASK, DOC_SEPARATOR


def test_both_files_hold_the_same_examples_in_the_inference_strings(small_build, tmp_path):
    written = build_rag_reading(small_build[0], tmp_path)
    cached, uncached = read_jsonl(tmp_path / "doc_cache.jsonl"), read_jsonl(tmp_path / "doc_first.jsonl")
    assert len(cached) == len(uncached) == sum(written.values()) > 0 and written["faq"] > 0
    for index, (c, u) in enumerate(zip(cached, uncached)):
        example = doc_cache_example(c, f"doc_cache.jsonl:{index + 1}")  # valid trainer lines
        generative_example(u, f"doc_first.jsonl:{index + 1}")
        request = example.user.removesuffix(f"\n\n{DOC_FIRST_TASK}")
        assert request != example.user
        assert u["messages"][0]["content"] == f"{example.documents[0]}\n\n{request}\n\n{DOC_FIRST_TASK}"
        assert example.answer == u["messages"][1]["content"] == lead(example.documents[0])


def test_multi_document_lines_hide_the_right_document_among_bm25_distractors(small_build, tmp_path):
    build_rag_reading(small_build[0], tmp_path)
    single = {line["messages"][0]["content"]: line for line in read_jsonl(tmp_path / "doc_cache.jsonl")}
    cached, uncached = read_jsonl(tmp_path / "doc_cache_multi.jsonl"), read_jsonl(tmp_path / "doc_first_multi.jsonl")
    assert len(cached) == len(uncached) > 0.9 * len(single)
    ranks = []
    for index, (c, u) in enumerate(zip(cached, uncached)):
        example = doc_cache_example(c, f"doc_cache_multi.jsonl:{index + 1}")  # valid trainer lines
        generative_example(u, f"doc_first_multi.jsonl:{index + 1}")
        assert len(example.documents) in MULTI_DOCUMENTS and len(set(example.documents)) == len(example.documents)
        assert c["messages"][0]["content"] in single  # a request of the one-document file
        ranks.append(next(i for i, d in enumerate(example.documents) if lead(d) == example.answer))  # the right one
        request = example.user.removesuffix(f"\n\n{DOC_FIRST_TASK}")
        assert u["messages"][0]["content"] == f"{DOC_SEPARATOR.join(example.documents)}\n\n{request}\n\n{DOC_FIRST_TASK}"
    assert set(ranks) == set(range(max(MULTI_DOCUMENTS)))  # the right document at every rank


def test_long_lines_read_three_long_documents_with_other_distractors_per_variant(small_build, tmp_path):
    build_rag_reading(small_build[0], tmp_path)
    cached, uncached = read_jsonl(tmp_path / "doc_cache_long.jsonl"), read_jsonl(tmp_path / "doc_first_long.jsonl")
    assert len(cached) == len(uncached) > 0
    variants, ranks = {}, []
    for index, (c, u) in enumerate(zip(cached, uncached)):
        example = doc_cache_example(c, f"doc_cache_long.jsonl:{index + 1}")
        generative_example(u, f"doc_first_long.jsonl:{index + 1}")
        documents = example.documents
        assert len(documents) == len(set(documents)) == LONG_DOCUMENTS
        assert all(len(d.split()) >= LONG_WORDS for d in documents)
        right = [i for i, d in enumerate(documents) if lead(d) == example.answer]
        assert len(right) == 1
        ranks.append(right[0])
        others = frozenset(d for i, d in enumerate(documents) if i != right[0])
        variants.setdefault((example.user, documents[right[0]]), []).append(others)
        request = example.user.removesuffix(f"\n\n{DOC_FIRST_TASK}")
        assert u["messages"][0]["content"] == f"{DOC_SEPARATOR.join(documents)}\n\n{request}\n\n{DOC_FIRST_TASK}"
    assert set(ranks) == set(range(LONG_DOCUMENTS))
    assert max(len(v) for v in variants.values()) == LONG_VARIANTS
    assert all(len(set(v)) == len(v) for v in variants.values())  # each variant its own distractors


def test_no_held_out_document_is_trained_on(small_build, tmp_path):
    data_dir = small_build[0]
    build_rag_reading(data_dir, tmp_path)
    held_out = set(read_json(data_dir / "eval" / "faq-qa.json")["corpus"].values())
    held_out |= set(read_json(data_dir / "eval" / "debian-search.json")["corpus"].values())
    documents = {line["document"] for line in read_jsonl(tmp_path / "doc_cache.jsonl")}
    for name in ("doc_cache_multi.jsonl", "doc_cache_long.jsonl"):
        documents |= {d for line in read_jsonl(tmp_path / name) for d in line["documents"]}
    assert documents and not documents & held_out


def test_the_command_writes_both_files(small_build, tmp_path, capsys):
    assert main(["data", "rag-reading", "--data", str(small_build[0]), "--out", str(tmp_path)]) == 0
    assert len(read_jsonl(tmp_path / "doc_cache.jsonl")) == len(read_jsonl(tmp_path / "doc_first.jsonl")) > 0
    assert "doc_cache.jsonl" in capsys.readouterr().out
