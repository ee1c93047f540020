"""A bounded soak: mixed clients for a fixed time against one server, every answer checked.

Twelve client threads for SECONDS each send, at random (seeded per thread): embeddings, greedy
chats, streamed chats that hang up part-way, seeded sampled chats, reranks, RAG questions,
malformed bodies and non-streamed chats abandoned by a short timeout. Every full answer must
equal the library's answer for that request (vectors within 1e-5, texts exactly), every bad
body a 4xx, and nothing a 5xx. The server's resident memory after the soak must be within
SOAK_RSS_SLACK of what it was after a warm-up round of the same traffic.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from gritkit.model.gritlm import GritLM
from gritkit.rag import RagIndex, RagPipeline
from gritkit.serve import ServeConfig, create_app
from gritkit.serve.runner import ServerThread

SECONDS = 12.0
CLIENTS = 12
SOAK_RSS_SLACK = 1.25
PROMPTS = ["What is a socket?", "Describe pathlib", "hello", "Why JSON?", "Explain the os module briefly"]
QUESTIONS = ["How do I parse a JSON document?", "What does os.path.join do?"]
BAD_BODIES = [("/v1/embeddings", {"model": "tiny", "input": 3}), ("/v1/chat/completions", {"model": "tiny"}),
              ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                        "temperature": 5}),
              ("/v1/rag", {"question": ""}), ("/v1/rerank", {"model": "tiny", "query": "x", "documents": []}),
              ("/v1/embeddings", "not json at all")]


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def soak(tiny_llama_dir, tiny_llama, corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    RagIndex.build(tiny_llama, corpus[:12], model_path=tiny_llama_dir, cache_docs=True, cache_dir=root / "cache",
                   cache_dtype="float32").save(root / "index")
    model = GritLM.from_pretrained(tiny_llama_dir)
    app = create_app(model, ServeConfig(model_name="tiny", max_tokens_limit=16, max_queue=256, max_running=8),
                     rag=RagPipeline.load(root / "index", model=model))
    reference = RagPipeline(tiny_llama, RagIndex.load(root / "index"))
    expected = {
        "embed": {t: tiny_llama.encode(t) for t in corpus[:20]},
        "chat": {p: tiny_llama.generate(p, max_new_tokens=12) for p in PROMPTS},
        "rag": {q: reference.ask(q, mode="doc_cache", max_new_tokens=12).answer for q in QUESTIONS},
    }
    with ServerThread(app) as url:
        yield url, expected, corpus[:20], app.state.worker


def _one_request(client: httpx.Client, rng: random.Random, texts, expected, sampled: dict, lock) -> str:
    kind = rng.choice(["embed", "embed", "chat", "stream_leave", "sampled", "rerank", "rag", "bad", "abandon"])
    if kind == "embed":
        batch = rng.sample(texts, rng.randint(1, 4))
        r = client.post("/v1/embeddings", json={"model": "tiny", "input": batch})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(got, np.stack([expected["embed"][t] for t in batch]), atol=1e-5)
    elif kind == "chat":
        prompt = rng.choice(PROMPTS)
        r = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 12, "temperature": 0,
                                                      "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == expected["chat"][prompt]
    elif kind == "stream_leave":
        body = {"model": "tiny", "max_tokens": 16, "stream": True, "temperature": 0,
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for count, _ in enumerate(r.iter_lines()):
                if count >= rng.randint(1, 6):
                    break
    elif kind == "sampled":
        seed, prompt = rng.randint(0, 3), rng.choice(PROMPTS)
        r = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 12, "temperature": 0.8,
                                                      "seed": seed, "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        with lock:  # the same seed and prompt must give the same text, whatever else was running
            assert sampled.setdefault((seed, prompt), text) == text
    elif kind == "rerank":
        docs = rng.sample(texts, 5)
        r = client.post("/v1/rerank", json={"model": "tiny", "query": rng.choice(PROMPTS), "documents": docs})
        assert r.status_code == 200, r.text
        assert sorted(x["index"] for x in r.json()["results"]) == list(range(5))
    elif kind == "rag":
        question = rng.choice(QUESTIONS)
        r = client.post("/v1/rag", json={"question": question, "mode": "doc_cache", "max_tokens": 12})
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == expected["rag"][question]
    elif kind == "bad":
        path, body = rng.choice(BAD_BODIES)
        content = body if isinstance(body, str) else json.dumps(body)
        r = client.post(path, content=content, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    else:  # a non-streamed chat whose client gives up before the answer
        try:
            client.post("/v1/chat/completions", timeout=0.005, json={
                "model": "tiny", "max_tokens": 16, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]})
        except httpx.TimeoutException:
            pass
    return kind


def _traffic(url, texts, expected, seconds: float, seed: int) -> dict[str, int]:
    sampled, lock, counts = {}, threading.Lock(), {}
    start = threading.Barrier(CLIENTS)

    def client_loop(index: int) -> list[str]:
        rng = random.Random(seed * 1000 + index)
        done = []
        with httpx.Client(base_url=url, timeout=60) as client:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                done.append(_one_request(client, rng, texts, expected, sampled, lock))
        return done

    with ThreadPoolExecutor(CLIENTS) as pool:
        for kinds in [f.result() for f in [pool.submit(client_loop, i) for i in range(CLIENTS)]]:
            for kind in kinds:
                counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_mixed_clients_get_right_answers_no_5xx_and_flat_memory(soak):
    url, expected, texts, worker = soak
    _traffic(url, texts, expected, 3.0, seed=1)  # warm-up: allocator pools, lazy imports
    before = _rss_kb()
    counts = _traffic(url, texts, expected, SECONDS, seed=2)
    after = _rss_kb()
    assert all(counts.get(kind, 0) >= 3 for kind in ("embed", "chat", "stream_leave", "sampled", "rerank", "rag",
                                                       "bad", "abandon")), counts
    deadline = time.monotonic() + 10
    while (worker.decoder.running or worker.queued) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.decoder.running == 0 and worker.queued == 0  # nothing left behind by leavers
    assert after <= before * SOAK_RSS_SLACK, (before, after)
