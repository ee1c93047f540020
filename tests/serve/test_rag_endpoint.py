"""POST /v1/rag: the server's answers equal ``RagPipeline.ask`` on the same index and weights."""

from __future__ import annotations

import httpx
import pytest

from gritkit.model.gritlm import GritLM
from gritkit.rag import RagIndex, RagPipeline
from gritkit.serve import ServeConfig, create_app
from gritkit.serve.runner import ServerThread

QUESTION = "How do I parse a JSON document?"


@pytest.fixture(scope="module")
def index_dir(tiny_llama, tiny_llama_dir, corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-rag")
    index = RagIndex.build(tiny_llama, corpus[:12], model_path=tiny_llama_dir, cache_docs=True,
                           cache_dir=root / "cache", cache_dtype="float32")
    index.save(root / "index")
    return root / "index"


@pytest.fixture(scope="module")
def url(tiny_llama_dir, index_dir):
    model = GritLM.from_pretrained(tiny_llama_dir)
    app = create_app(model, ServeConfig(model_name="tiny", max_tokens_limit=16),
                     rag=RagPipeline.load(index_dir, model=model))
    with ServerThread(app) as base:
        yield base


@pytest.mark.parametrize("mode, top_k", [("doc_cache", 1), ("rag_doc_first", 2), ("query_cache", 1), ("no_rag", 1),
                                         (None, 2)])
def test_rag_answers_equal_the_pipeline(url, tiny_llama, index_dir, mode, top_k):
    body = {"question": QUESTION, "top_k": top_k, "max_tokens": 12, **({"mode": mode} if mode else {})}
    response = httpx.post(f"{url}/v1/rag", json=body, timeout=60)
    assert response.status_code == 200, response.text
    got = response.json()
    expected = RagPipeline(tiny_llama, RagIndex.load(index_dir)).ask(QUESTION, mode=mode or "doc_cache", top_k=top_k,
                                                                       max_new_tokens=12)
    assert got["mode"] == expected.mode and got["answer"] == expected.answer
    assert [(d["id"], d["text"]) for d in got["documents"]] == [(d.id, d.text) for d in expected.documents]
    assert [d["score"] for d in got["documents"]] == pytest.approx([d.score for d in expected.documents], abs=1e-5)
    assert got["usage"]["prompt_tokens"] == expected.prompt_tokens
    assert got["usage"]["cached_tokens"] == expected.cached_tokens
    assert got["usage"]["completion_tokens"] == len(expected.answer_token_ids)


@pytest.mark.parametrize("body", [{"question": QUESTION, "mode": "telepathy"}, {"question": ""},
                                  {"question": QUESTION, "max_tokens": 17}, {"question": QUESTION, "top_k": 0},
                                  {"mode": "doc_cache"}])
def test_bad_rag_requests_get_400(url, body):
    response = httpx.post(f"{url}/v1/rag", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_a_pool_serves_doc_caching_from_an_index_without_stored_caches(tiny_llama, tiny_llama_dir, corpus, index_dir,
                                                                        tmp_path):
    """--doc-cache-memory: the default mode becomes doc_cache, answers equal the stored index's,
    and a repeated question's document comes from the pool."""
    from gritkit.rag.cache_pool import DocCachePool

    bare = RagIndex.build(tiny_llama, corpus[:12], model_path=tiny_llama_dir).save(tmp_path / "bare")
    model = GritLM.from_pretrained(tiny_llama_dir)
    pool = DocCachePool(64 << 20)
    app = create_app(model, ServeConfig(model_name="tiny", max_tokens_limit=16),
                     rag=RagPipeline.load(bare, model=model, doc_cache_pool=pool))
    expected = RagPipeline(tiny_llama, RagIndex.load(index_dir)).ask(QUESTION, mode="doc_cache", max_new_tokens=12)
    with ServerThread(app) as base:
        for _ in range(2):
            got = httpx.post(f"{base}/v1/rag", json={"question": QUESTION, "max_tokens": 12}, timeout=60).json()
            assert got["mode"] == "doc_cache" and got["answer"] == expected.answer
            assert got["usage"]["cached_tokens"] == expected.cached_tokens
    assert pool.stats()["misses"] == 1 and pool.stats()["hits"] == 1


def test_cli_refuses_a_pool_without_an_index(tmp_path, capsys):
    from gritkit.cli import main

    assert main(["serve", "--model", "gritkit-tiny", "--doc-cache-memory", "64"]) == 2
    assert "--doc-cache-memory needs --index" in capsys.readouterr().err
