"""Reported faults of ``gritkit serve``, each replayed against a real server on loopback.

1. Limits that could be walked around: /v1/rag and chat with ``retrieval`` never checked the
   prompt length, and chat and completions checked it only once the request held a queue slot.
2. OpenAI compatibility as clients use it: token-id input for embeddings (the default of
   LangChain's ``OpenAIEmbeddings``), 2,048 texts per embedding request, and parameters the
   server cannot honour (``tools``, ``logprobs``...) refused instead of silently ignored.
3. Errors that were wrong or unclear: a lone surrogate answered 500 with an internal TypeError,
   an empty, blank or non-ASCII API key was accepted at start-up, crashes showed their exception.
4. ``requires-python`` claimed 3.10, where ``asyncio.wait_for`` raises ``asyncio.TimeoutError``,
   which the server did not catch.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from gritkit.cli import main  # noqa: E402
from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.rag import RagIndex, RagPipeline  # noqa: E402
from gritkit.serve import ServeConfig, create_app  # noqa: E402
from gritkit.serve.runner import ServerThread  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64  # max_input_tokens of the server under test
BATCH = 8  # its max_batch_size: texts per forward pass
CONFIG = ServeConfig(model_name="tiny", max_input_tokens=LIMIT, max_batch_size=BATCH, max_tokens_limit=16)
LONG = "Why does the socket close when the peer resets the connection " * 12  # far over LIMIT tokens
TEXTS = ["Return the number of items in a container.", "A short one.", "héllo wörld: ünïcode too"]


@pytest.fixture(scope="module")
def served(tiny_llama_dir, corpus, tmp_path_factory):
    """(url, app) of a server with a RAG index whose documents carry doc caches."""
    root = tmp_path_factory.mktemp("faults-serve")
    model = GritLM.from_pretrained(tiny_llama_dir)
    index = RagIndex.build(model, corpus[:12], model_path=tiny_llama_dir, cache_docs=True, cache_dir=root / "cache",
                           cache_dtype="float32")
    app = create_app(model, CONFIG, rag=RagPipeline(model, index))
    with ServerThread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def url(served):
    return served[0]


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@contextmanager
def queued_jobs(worker):
    """Every job handed to ``worker`` while the block runs (the submit methods are wrapped)."""
    jobs = []
    names = ("submit_embedding", "submit_generation", "submit_call")
    originals = {name: getattr(worker, name) for name in names}

    def recording(name):
        def submit(job):
            jobs.append((name, job))
            return originals[name](job)
        return submit

    for name in names:
        setattr(worker, name, recording(name))
    try:
        yield jobs
    finally:
        for name in names:
            delattr(worker, name)


def limit_error(response) -> tuple[int, dict]:
    """(the token count the message names, the error) of a context_length_exceeded answer."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded", error
    assert f"limit of {LIMIT} tokens" in error["message"], error["message"]
    count = int(re.search(r"(\d+) tokens", error["message"]).group(1))
    assert count > LIMIT
    return count, error


# ---------------------------------------------------------------------------------------------
# 1. one prompt-length rule, checked before any work is queued


@pytest.mark.parametrize("mode", [None, "rag_doc_first", "query_cache", "no_rag"])
def test_a_long_rag_question_is_refused_before_any_work_is_queued(served, tiny_llama, mode):
    url, app = served
    body = {"question": LONG, "max_tokens": 4, **({"mode": mode} if mode else {})}
    with queued_jobs(app.state.worker) as jobs:
        response = httpx.post(f"{url}/v1/rag", json=body, timeout=60)
    count, error = limit_error(response)
    assert jobs == [] and error["param"] == "question"
    assert count >= len(tiny_llama.tokenizer(LONG, add_special_tokens=False)["input_ids"])


def test_a_short_rag_question_is_still_answered(served):
    url, app = served
    with queued_jobs(app.state.worker) as jobs:
        response = httpx.post(f"{url}/v1/rag", json={"question": "What is a socket?", "max_tokens": 4}, timeout=60)
    assert response.status_code == 200, response.text
    assert len(jobs) == 1


def test_a_long_chat_with_retrieval_is_refused_before_any_work_is_queued(served, tiny_llama):
    url, app = served
    messages = [{"role": "user", "content": LONG}]
    body = {"model": "tiny", "messages": messages, "max_tokens": 4, "retrieval": {"retrieve": "always"}}
    with queued_jobs(app.state.worker) as jobs:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    count, error = limit_error(response)
    assert jobs == [] and error["param"] == "messages"
    # Counted as the model sees them: the chat template, and the message embedded as the query.
    query = tiny_llama.tokenize_for_embedding([LONG], [tiny_llama.config.default_query_instruction], 10_000)[0][0]
    assert count == max(len(tiny_llama.chat_input_ids(messages)), len(query))


@pytest.mark.parametrize("stream", [False, True])
def test_a_long_chat_is_refused_before_it_is_queued_and_names_its_count(served, tiny_llama, stream):
    url, app = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}]
    body = {"model": "tiny", "messages": messages, "max_tokens": 4, "stream": stream}
    with queued_jobs(app.state.worker) as jobs:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    count, _ = limit_error(response)
    assert jobs == []
    assert count == len(tiny_llama.chat_input_ids([{"role": "user", "content": f"Be brief.\n\n{LONG}"}]))


def test_completions_check_every_prompt_before_the_first_is_queued(served, tiny_llama):
    url, app = served
    with queued_jobs(app.state.worker) as jobs:
        response = httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"model": "tiny", "prompt": ["hi", LONG], "max_tokens": 4})
    count, error = limit_error(response)
    assert jobs == [] and error["param"] == "prompt[1]"
    assert count == len(tiny_llama.chat_input_ids(LONG))


def test_a_long_embedding_input_names_its_count(client, tiny_llama):
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="tiny", input=["fine", LONG])
    count = int(re.search(r"(\d+) tokens", raised.value.body["message"]).group(1))
    assert raised.value.body["code"] == "context_length_exceeded" and raised.value.body["param"] == "input[1]"
    assert count == len(tiny_llama.tokenize_for_embedding([LONG], [""], 10_000)[0][0])


# ---------------------------------------------------------------------------------------------
# 2. OpenAI compatibility as clients use it


def _vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_token_id_input_embeds_the_text_the_ids_spell(client, tiny_llama):
    ids = [_ids(tiny_llama.tokenizer, text) for text in TEXTS]
    several = client.embeddings.create(model="tiny", input=ids)
    np.testing.assert_allclose(_vectors(several), tiny_llama.encode(TEXTS), rtol=0, atol=1e-6)
    one = client.embeddings.create(model="tiny", input=ids[0], encoding_format="float")
    np.testing.assert_allclose(_vectors(one)[0], tiny_llama.encode(TEXTS[0]), rtol=0, atol=1e-6)
    assert one.usage.prompt_tokens == len(tiny_llama.tokenize_for_embedding(TEXTS[:1], [""], 10_000)[0][0])


@pytest.mark.parametrize("bad", ["vocabulary", "negative", "empty", "mixed", "nested-empty", "float"])
def test_bad_token_ids_get_a_400_that_names_them(url, tiny_llama, bad):
    vocabulary = len(tiny_llama.tokenizer)
    given = {"vocabulary": [[5, 6], [7, vocabulary]], "negative": [3, -1], "empty": [[]],
             "mixed": [1, "a"], "nested-empty": [[1], []], "float": [1, 2.5]}[bad]
    response = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": given})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith("input")
    if bad == "vocabulary":
        assert str(vocabulary) in error["message"] and error["param"] == "input[1]"
        assert f"token id {vocabulary}" in error["message"]
    if bad == "negative":
        assert "-1" in error["message"]


def test_2048_texts_are_embedded_in_passes_of_the_batch_size(served, client, tiny_llama):
    url, app = served
    texts = [f"text number {i}" for i in range(2048)]
    worker = app.state.worker
    passes = worker.embedding_passes
    response = client.embeddings.create(model="tiny", input=texts, encoding_format="float")
    assert len(response.data) == 2048
    sample = [0, 1, 7, 8, 1000, 2047]
    np.testing.assert_allclose(_vectors(response)[sample], tiny_llama.encode([texts[i] for i in sample]),
                               rtol=0, atol=1e-5)
    assert worker.embedding_passes - passes == 2048 // BATCH and max(worker.batches) <= BATCH
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.embeddings.create(model="tiny", input=texts + ["one more"])


REFUSED_CHAT = [("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
                ("tool_choice", "auto"), ("functions", [{"name": "f", "parameters": {}}]),
                ("response_format", {"type": "json_object"}), ("logprobs", True), ("top_logprobs", 2)]
ALLOWED_OFF = [("tools", None), ("tool_choice", None), ("tool_choice", "none"), ("functions", None),
               ("response_format", None), ("response_format", {"type": "text"}), ("logprobs", False),
               ("logprobs", None), ("top_logprobs", None)]


@pytest.mark.parametrize("name, value", REFUSED_CHAT)
def test_chat_parameters_the_server_cannot_honour_are_refused(client, name, value):
    with pytest.raises(openai.BadRequestError, match=name) as raised:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                       **{name: value})
    assert raised.value.body["param"] == name and raised.value.body["code"] == "unsupported_parameter"


@pytest.mark.parametrize("name, value", [("logprobs", 2), ("echo", True), ("suffix", "tail"), ("best_of", 2)])
def test_completion_parameters_the_server_cannot_honour_are_refused(client, name, value):
    with pytest.raises(openai.BadRequestError, match=name):
        client.completions.create(model="tiny", prompt="hi", max_tokens=2, **{name: value})


def test_several_refused_parameters_are_named_together(url):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": True,
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    error = httpx.post(f"{url}/v1/chat/completions", json=body).json()["error"]
    assert "tools" in error["message"] and "logprobs" in error["message"]


def test_parameters_sent_with_their_off_value_are_fine(url):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for name, value in ALLOWED_OFF:
        response = httpx.post(f"{url}/v1/chat/completions", json={**body, name: value}, timeout=60)
        assert response.status_code == 200, (name, value, response.text)
    response = httpx.post(f"{url}/v1/completions", timeout=60, json={
        "model": "tiny", "prompt": "hi", "max_tokens": 2, "logprobs": None, "echo": False, "best_of": 1})
    assert response.status_code == 200, response.text


class _ModelIdsEncoding:
    """Stands in for tiktoken's cl100k_base, which tiktoken downloads on first use (impossible
    offline): it turns text into this model's own token ids, so LangChain sends the very request
    shape of its default settings (lists of token ids, per text) and the vectors can be compared."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode_ordinary(self, text: str) -> list[int]:
        return _ids(self.tokenizer, text)

    def encode(self, text: str, **_) -> list[int]:
        return _ids(self.tokenizer, text)


def test_langchain_default_settings_send_token_ids_that_are_embedded(url, tiny_llama, monkeypatch):
    langchain_openai = pytest.importorskip("langchain_openai")
    import tiktoken

    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: _ModelIdsEncoding(tiny_llama.tokenizer))
    bodies = []
    http = httpx.Client(event_hooks={"request": [lambda request: bodies.append(json.loads(request.read()))]})
    embeddings = langchain_openai.OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key="unused",
                                                   http_client=http, max_retries=0)
    assert embeddings.check_embedding_ctx_length  # the default this test is about
    got = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    np.testing.assert_allclose(got, tiny_llama.encode(TEXTS), rtol=0, atol=1e-5)
    assert bodies and all(isinstance(i, int) for body in bodies for ids in body["input"] for i in ids)
    query = np.array(embeddings.embed_query(TEXTS[1]), dtype=np.float32)
    np.testing.assert_allclose(query, tiny_llama.encode(TEXTS[1]), rtol=0, atol=1e-5)


def test_langchain_with_raw_text_gets_the_same_vectors(url, tiny_llama):
    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key="unused",
                                                   check_embedding_ctx_length=False, max_retries=0)
    np.testing.assert_allclose(np.array(embeddings.embed_documents(TEXTS), dtype=np.float32),
                               tiny_llama.encode(TEXTS), rtol=0, atol=1e-5)


def test_llama_index_openai_like_embedding(url, tiny_llama):
    openai_like = pytest.importorskip("llama_index.embeddings.openai_like")
    # model_name is a required argument of OpenAILikeEmbedding: there is no default name to accept.
    embedding = openai_like.OpenAILikeEmbedding(model_name="tiny", api_base=f"{url}/v1", api_key="unused",
                                                max_retries=0, embed_batch_size=2)
    texts = [*TEXTS, "two\nlines"]
    got = np.array(embedding.get_text_embedding_batch(texts), dtype=np.float32)
    # LlamaIndex replaces new lines with spaces before it sends a text.
    np.testing.assert_allclose(got, tiny_llama.encode([t.replace("\n", " ") for t in texts]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(embedding.get_query_embedding(TEXTS[0]), tiny_llama.encode(TEXTS[0]), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3. errors that were wrong or unclear

SURROGATE = '"hi \\ud800 there"'  # JSON for a string holding a lone surrogate


@pytest.mark.parametrize("path, body, param", [
    ("/v1/embeddings", '{"model": "tiny", "input": %s}', "input"),
    ("/v1/embeddings", '{"model": "tiny", "input": ["ok", %s]}', "input[1]"),
    ("/v1/embeddings", '{"model": "tiny", "input": "ok", "instruction": %s}', "instruction"),
    ("/v1/chat/completions", '{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": %s}]}',
     "messages[0].content"),
    ("/v1/chat/completions", '{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": '
                             '[{"type": "text", "text": %s}]}]}', "messages[0].content[0].text"),
    ("/v1/completions", '{"model": "tiny", "max_tokens": 2, "prompt": %s}', "prompt"),
    ("/v1/rag", '{"question": %s}', "question"),
    ("/v1/rerank", '{"model": "tiny", "query": %s, "documents": ["a"]}', "query"),
])
def test_a_lone_surrogate_is_a_400_naming_the_field(url, path, body, param):
    response = httpx.post(f"{url}{path}", content=(body % SURROGATE).encode(),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and "surrogate" in error["message"]
    assert "TypeError" not in error["message"]


@pytest.mark.parametrize("key, problem", [("", "empty"), ("   ", "empty"), ("clé", "ASCII"), ("tab\tkey", "ASCII"),
                                          (" padded ", "spaces")])
def test_an_unusable_api_key_is_refused_at_start_up(key, problem, tmp_path, capsys):
    with pytest.raises(ValueError, match=problem):
        ServeConfig(api_key=key)
    # The command refuses it before it loads any model (tmp_path holds none).
    assert main(["serve", "--model", str(tmp_path), "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and problem in err


class _BrokenModel:
    """A GritLM whose embedding and decoding passes fail with an internal error."""

    def __init__(self, grit):
        self._grit = grit

    def __getattr__(self, name):
        return getattr(self._grit, name)

    def encode(self, *args, **kwargs):
        raise RuntimeError("secret internal detail /srv/weights")

    def chat_input_ids(self, *args, **kwargs):
        raise RuntimeError("secret internal detail /srv/weights")


def test_internal_errors_never_show_their_exception_text(tiny_llama_dir):
    app = create_app(_BrokenModel(GritLM.from_pretrained(tiny_llama_dir)), ServeConfig(model_name="tiny"))
    with ServerThread(app) as url:
        embedded = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": "x"}, timeout=60)
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    for response in (embedded, chat):
        assert response.status_code == 500
        assert "secret" not in response.text and "RuntimeError" not in response.text
        assert response.json()["error"]["code"] == "internal_error"


# ---------------------------------------------------------------------------------------------
# 4. the Python versions claimed


def test_requires_python_is_what_ci_can_run():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"[Pp]ython 3\.10|3\.10\+", doc.read_text()), doc


def test_serve_catches_asyncio_timeout_error():
    """On 3.10 ``asyncio.wait_for`` raises ``asyncio.TimeoutError``, not the builtin; only the
    former is right on every version (an alias of TimeoutError from 3.11)."""
    for path in sorted((ROOT / "gritkit" / "serve").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                assert not any(isinstance(c, ast.Name) and c.id == "TimeoutError" for c in caught), path
