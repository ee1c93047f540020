"""Search backends of a RagIndex: exact top-k across chunks, FAISS IVF and HNSW equal to exact
when told to search exhaustively, saved and loaded with the index, chosen by size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gritkit.cli import main
from gritkit.rag import RagIndex, RagPipeline, search as search_module
from gritkit.rag.search import ExactSearch, FaissSearch, build_search, resolve_backend


def unit_vectors(count: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, docs: np.ndarray, k: int):
    return torch.topk(torch.from_numpy(queries) @ torch.from_numpy(docs).T, k, dim=1)


def test_exact_search_keeps_the_top_k_across_chunks(monkeypatch):
    docs, queries = unit_vectors(1000), unit_vectors(7, seed=1)
    expected = brute_force(queries, docs, 10)
    monkeypatch.setattr(search_module, "_EXACT_CHUNK", 64)  # 16 chunks, the last one partial
    scores, ids = ExactSearch(docs.astype(np.float16)).search(queries, 10)
    assert ids.tolist() == brute_force(queries, docs.astype(np.float16).astype(np.float32), 10).indices.tolist()
    torch.testing.assert_close(scores, expected.values, atol=2e-3, rtol=0)


@pytest.mark.parametrize("backend, knob", [("ivf", {"nprobe": 10_000}), ("hnsw", {"ef_search": 2000})])
def test_faiss_backends_equal_exact_when_exhaustive(backend, knob):
    docs, queries = unit_vectors(2000), unit_vectors(20, seed=1)
    expected = brute_force(queries, docs, 5)
    scores, ids = build_search(backend, docs, **knob).search(queries, 5)
    assert ids.tolist() == expected.indices.tolist()
    torch.testing.assert_close(scores, expected.values, atol=1e-5, rtol=0)


def test_ivf_with_few_probes_is_approximate_and_the_knob_is_kept():
    docs, queries = unit_vectors(4000), unit_vectors(50, seed=1)
    search = build_search("ivf", docs, nprobe=1)
    assert search.settings == {"backend": "ivf", "nlist": 102, "nprobe": 1}
    found = search.search(queries, 10)[1].numpy()
    exact = brute_force(queries, docs, 10).indices.numpy()
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert 0 < recall < 1  # one cell of 102 misses neighbours, but finds some


def test_auto_is_exact_below_the_size_and_ivf_from_it(monkeypatch):
    assert resolve_backend("auto", search_module.AUTO_ANN_SIZE - 1) == "exact"
    assert resolve_backend("auto", search_module.AUTO_ANN_SIZE) == "ivf"
    with pytest.raises(ValueError, match="search backend must be one of"):
        resolve_backend("annoy", 10)
    monkeypatch.setattr(search_module, "AUTO_ANN_SIZE", 100)
    assert isinstance(build_search("auto", unit_vectors(100)), FaissSearch)


@pytest.mark.parametrize("backend", ["exact", "ivf", "hnsw"])
def test_index_saves_and_loads_its_backend(backend, tiny_llama, corpus, tmp_path):
    documents = corpus[:300]
    index = RagIndex.build(tiny_llama, documents, search=backend, nprobe=3, ef_search=16)
    queries = tiny_llama.encode(["open a file", "sort a list", "parse a date"])
    before = index.search(queries, top_k=4)
    path = index.save(tmp_path / "idx")
    recorded = json.loads((path / "index.json").read_text())["search"]
    assert recorded["backend"] == backend
    assert (path / "search.faiss").is_file() == (backend != "exact")
    loaded = RagIndex.load(path)
    assert loaded.settings["search"] == index.settings["search"]
    after = loaded.search(queries, top_k=4)
    assert after[1].tolist() == before[1].tolist()
    torch.testing.assert_close(after[0], before[0])
    if backend != "exact":  # the tuning knob is saved, not reset to the default
        assert recorded.get("nprobe", recorded.get("ef_search")) in (3, 16)


def test_an_index_without_a_search_record_is_exact_and_a_missing_file_is_named(tiny_llama, corpus, tmp_path):
    path = RagIndex.build(tiny_llama, corpus[:50], search="ivf").save(tmp_path / "idx")
    (path / "search.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="searches with ivf but has no search.faiss"):
        RagIndex.load(path)
    settings = json.loads((path / "index.json").read_text())
    del settings["search"]  # as written before search backends existed
    (path / "index.json").write_text(json.dumps(settings))
    assert isinstance(RagIndex.load(path).searcher, ExactSearch)


def test_cli_index_with_hnsw_answers_as_the_python_api(tiny_llama, tiny_llama_dir, corpus, tmp_path, capsys):
    documents = corpus[:80]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(documents) + "\n")
    out = tmp_path / "idx"
    assert main(["rag", "index", "--model", str(tiny_llama_dir), "--corpus", str(source), "--out", str(out),
                 "--search", "hnsw", "--ef-search", "40"]) == 0
    assert "(search: hnsw)" in capsys.readouterr().err
    assert RagIndex.load(out).settings["search"] == {"backend": "hnsw", "m": 32, "ef_search": 40}
    assert main(["rag", "ask", "--index", str(out), "read a file", "--mode", "rag-doc-first", "--top-k", "2",
                 "--max-new-tokens", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = RagPipeline(tiny_llama, RagIndex.load(out)).ask("read a file", mode="rag_doc_first", top_k=2,
                                                               max_new_tokens=3)
    assert [d["id"] for d in printed["documents"]] == [d.id for d in expected.documents]


def test_ivf_probes_five_percent_of_its_cells_by_default():
    search = build_search("ivf", unit_vectors(16_000))
    assert search.settings["nlist"] == 410 and search.settings["nprobe"] == 20 == search.index.nprobe
    search.tune(nprobe=7)
    assert search.index.nprobe == 7 and search.settings["nprobe"] == 7
    with pytest.raises(ValueError, match="nprobe must be a positive int"):
        search.tune(nprobe=0)
