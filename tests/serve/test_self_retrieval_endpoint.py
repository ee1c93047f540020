"""Chat completions with GRIT's ``retrieval`` extra equal ``RagPipeline.chat`` on the same index."""

from __future__ import annotations

import httpx
import pytest

from gritkit.model.gritlm import GritLM
from gritkit.rag import RagIndex, RagPipeline
from gritkit.serve import ServeConfig, create_app
from gritkit.serve.runner import ServerThread

QUESTION = "How do I parse a JSON document?"


@pytest.fixture(scope="module")
def served(tiny_llama_dir, corpus, tmp_path_factory):
    """A server whose index stores doc caches, one whose index does not, and one without an index."""
    root = tmp_path_factory.mktemp("serve-self-retrieval")
    model = GritLM.from_pretrained(tiny_llama_dir)
    cached = RagIndex.build(model, corpus[:12], cache_docs=True, cache_dir=root / "cache", cache_dtype="float32")
    plain = RagIndex.build(model, corpus[:12])
    config = ServeConfig(model_name="tiny", max_tokens_limit=32)
    pipelines = {"cached": RagPipeline(model, cached), "plain": RagPipeline(model, plain)}
    with ServerThread(create_app(model, config, rag=pipelines["cached"])) as cached_url, \
            ServerThread(create_app(model, config, rag=pipelines["plain"])) as plain_url, \
            ServerThread(create_app(model, config)) as bare_url:
        yield {"cached": cached_url, "plain": plain_url, "bare": bare_url}, pipelines


def _chat(url, retrieval, **extra):
    body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24,
            "temperature": 0, "retrieval": retrieval, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize("server, retrieval, sampling", [
    ("cached", {"retrieve": "always"}, {}), ("plain", {"retrieve": "always", "top_k": 2}, {}),
    ("cached", {}, {}), ("cached", {"retrieve": "always"}, {"temperature": 0.8, "seed": 7})])
def test_answers_equal_the_pipeline(served, server, retrieval, sampling):
    urls, pipelines = served
    response = _chat(urls[server], retrieval, **sampling)
    assert response.status_code == 200, response.text
    got = response.json()
    expected = pipelines[server].chat(QUESTION, max_new_tokens=24, **retrieval,
                                      temperature=sampling.get("temperature", 0.0), seed=sampling.get("seed"))
    assert got["choices"][0]["message"]["content"] == expected.answer
    assert got["choices"][0]["finish_reason"] == expected.finish_reason
    documents = got["retrieval"]["documents"]
    assert [(d["id"], d["source"], d["at_token"]) for d in documents] == [
        (r.document.id, r.source, r.at_token) for r in expected.retrievals]
    assert got["retrieval"]["notes"] == expected.notes
    if retrieval.get("retrieve") == "always":
        assert {d["source"] for d in documents} == {"doc_cache" if server == "cached" else "text"}
    usage = got["usage"]
    assert usage["completion_tokens"] == len(expected.answer_token_ids)
    assert usage["prompt_tokens"] == expected.prompt_tokens + expected.inserted_tokens
    assert usage["prompt_tokens_details"]["cached_tokens"] == expected.cached_tokens
    assert (expected.cached_tokens > 0) == (server == "cached" and retrieval.get("retrieve") == "always")


@pytest.mark.parametrize("server, retrieval, extra, message", [
    ("bare", {}, {}, "needs an index"), ("cached", {}, {"stream": True}, "not streamed"),
    ("cached", {}, {"stop": "x"}, "stop strings"), ("plain", {"doc_cache": True}, {}, "no doc caches"),
    ("cached", {"max_retrievals": 9}, {}, ""), ("cached", {"retrieve": "sometimes"}, {}, ""),
    ("cached", {"top_k": 1, "extra": 1}, {}, "")])
def test_bad_retrieval_requests_get_400(served, server, retrieval, extra, message):
    response = _chat(served[0][server], retrieval, **extra)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
