"""The OpenAI-compatible server over real HTTP on loopback, with the official ``openai`` client.

Every answer is compared with the library itself: embeddings with ``GritLM.encode``, greedy chat
and completions with ``GritLM.generate`` (the random tiny model makes varied text, so equality
means something), token counts with the tokenizer.
"""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest
import torch

openai = pytest.importorskip("openai")

from gritkit.model.gritlm import GritLM  # noqa: E402
from gritkit.serve import ServeConfig, create_app  # noqa: E402
from gritkit.serve.runner import ServerThread  # noqa: E402

CONFIG = ServeConfig(model_name="tiny", max_input_tokens=96, max_embedding_inputs=16, max_batch_size=8,
                     max_tokens_limit=40, max_body_bytes=32_000,
                     query_instruction="Find the passage that answers the question")
TEXTS = ["Return the number of items in a container.", "A short one.",
         "Open the file and return a stream; raise OSError upon failure.", "x"]
PROMPTS = ["What does os.path.join do?", "Explain the json module", "hi"]


@pytest.fixture(scope="module")
def url(tiny_llama_dir):
    # The server loads its own copy from disk; the tests compare it with the ``tiny_llama`` fixture.
    with ServerThread(create_app(GritLM.from_pretrained(tiny_llama_dir), CONFIG)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def _tokens_for_embedding(model, texts, instruction=""):
    return sum(len(ids) for ids, _ in model.tokenize_for_embedding(texts, [instruction] * len(texts), 10_000))


def _greedy_ids(model, messages, max_new_tokens):
    """New token ids of a plain transformers greedy generate, for usage and finish_reason."""
    prompt = torch.tensor([model.chat_input_ids(messages)])
    out = model.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=max_new_tokens, pad_token_id=model.tokenizer.pad_token_id,
                               eos_token_id=model.tokenizer.eos_token_id)
    return out[0, prompt.shape[1]:].tolist()


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    before = httpx.get(f"{url}/health").json()
    client.embeddings.create(model="tiny", input=TEXTS[:3])
    after = httpx.get(f"{url}/health").json()
    assert after["status"] == "ok" and after["queued"] == 0
    assert (after["embedded_texts"] - before["embedded_texts"], after["embedding_passes"] - before["embedding_passes"]) == (3, 1)


def test_embeddings_equal_encode(client, tiny_llama):
    response = client.embeddings.create(model="tiny", input=TEXTS)
    got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_llama.encode(TEXTS), rtol=0, atol=1e-6)
    assert response.usage.prompt_tokens == response.usage.total_tokens == _tokens_for_embedding(tiny_llama, TEXTS)
    single = client.embeddings.create(model="tiny", input=TEXTS[0])
    np.testing.assert_allclose(single.data[0].embedding, tiny_llama.encode(TEXTS[0]), rtol=0, atol=1e-6)


def test_dimensions_truncate_and_renormalise_as_encode_does(client, tiny_llama):
    response = client.embeddings.create(model="tiny", input=TEXTS[:3], dimensions=16)
    got = np.array([d.embedding for d in response.data])
    np.testing.assert_allclose(got, tiny_llama.encode(TEXTS[:3], truncate_dim=16), rtol=0, atol=1e-6)
    full = tiny_llama.encode(TEXTS[:3], normalize_embeddings=False)[:, :16]
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), rtol=0, atol=1e-6)


def test_binary_precision_returns_the_packed_sign_bits(url, tiny_llama):
    # Raw HTTP: the openai client asks for base64 by default and decodes it as float32.
    from gritkit.model.quantize import quantize

    for precision in ("binary", "ubinary"):
        expected = quantize(tiny_llama.encode(TEXTS[:3]), precision)
        body = {"model": "tiny", "input": TEXTS[:3], "precision": precision}
        listed = httpx.post(f"{url}/v1/embeddings", json=body).json()
        assert [d["embedding"] for d in listed["data"]] == expected.tolist()
        packed = httpx.post(f"{url}/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
        got = [np.frombuffer(base64.b64decode(d["embedding"]), dtype=expected.dtype) for d in packed["data"]]
        np.testing.assert_array_equal(np.stack(got), expected)


def test_embeddings_base64_is_little_endian_float32(client, tiny_llama):
    response = client.embeddings.create(model="tiny", input=TEXTS[:2], encoding_format="base64")
    got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
    np.testing.assert_allclose(got, tiny_llama.encode(TEXTS[:2]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("extra, instruction", [
    ({"instruction": "Represent the docstring"}, "Represent the docstring"),
    ({"input_type": "query"}, CONFIG.query_instruction),
    ({"input_type": "document"}, ""),
])
def test_embedding_instructions(client, tiny_llama, extra, instruction):
    response = client.embeddings.create(model="tiny", input=TEXTS[:3], extra_body=extra)
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_llama.encode(TEXTS[:3], instruction=instruction), rtol=0, atol=1e-6)
    assert response.usage.prompt_tokens == _tokens_for_embedding(tiny_llama, TEXTS[:3], instruction)
    if instruction:  # the instruction changes the vectors, so the mapping is really tested
        assert not np.allclose(got, tiny_llama.encode(TEXTS[:3]), atol=1e-3)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_chat_equals_greedy_generate(client, tiny_llama, prompt):
    messages = [{"role": "user", "content": prompt}]
    response = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
    assert response.choices[0].message.content == tiny_llama.generate(prompt, max_new_tokens=24)
    assert response.choices[0].message.role == "assistant"
    ids = _greedy_ids(tiny_llama, messages, 24)
    eos = ids[-1] == tiny_llama.tokenizer.eos_token_id
    assert response.choices[0].finish_reason == ("stop" if eos else "length")
    assert response.usage.prompt_tokens == len(tiny_llama.chat_input_ids(messages))
    assert response.usage.completion_tokens == len(ids)
    assert response.usage.total_tokens == response.usage.prompt_tokens + len(ids)


def test_chat_system_and_history(client, tiny_llama):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a module"},
                {"role": "assistant", "content": "json"}, {"role": "user", "content": [{"type": "text", "text": "Another?"}]}]
    response = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)
    grit = [{"role": "user", "content": "Be brief.\n\nName a module"}, {"role": "assistant", "content": "json"},
            {"role": "user", "content": "Another?"}]
    assert response.choices[0].message.content == tiny_llama.generate(grit, max_new_tokens=16)


def test_completions_treat_prompt_as_user_message(client, tiny_llama):
    response = client.completions.create(model="tiny", prompt=PROMPTS, max_tokens=20, temperature=0)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.text for c in response.choices] == [tiny_llama.generate(p, max_new_tokens=20) for p in PROMPTS]
    expected = sum(len(_greedy_ids(tiny_llama, p, 20)) for p in PROMPTS)
    assert response.usage.completion_tokens == expected


def test_stop_strings_cut_the_text(client, tiny_llama):
    full = tiny_llama.generate(PROMPTS[0], max_new_tokens=30)
    # a 3-character stop string from the middle of the answer, first seen there, no U+FFFD in it
    at = next(i for i in range(8, len(full) - 3) if "\ufffd" not in full[i: i + 3] and full.find(full[i: i + 3]) == i)
    for stream in (False, True):
        text, finish = _chat(client, PROMPTS[0], max_tokens=30, stop=[full[at: at + 3], "never-seen"], stream=stream)
        assert (text, finish) == (full[:at], "stop")


def _chat(client, prompt, stream, **kwargs):
    """(text, finish_reason) of one chat request, joining the deltas when streaming."""
    response = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                              temperature=0, stream=stream, **kwargs)
    if not stream:
        return response.choices[0].message.content, response.choices[0].finish_reason
    parts, finish = [], None
    for chunk in response:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish


@pytest.mark.parametrize("prompt", PROMPTS)
def test_streaming_reassembles_to_the_same_text(client, tiny_llama, prompt):
    expected = tiny_llama.generate(prompt, max_new_tokens=32)
    assert _chat(client, prompt, stream=True, max_tokens=32) == _chat(client, prompt, stream=False, max_tokens=32)
    assert _chat(client, prompt, stream=True, max_tokens=32)[0] == expected
    chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=32, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == len(_greedy_ids(tiny_llama, [{"role": "user", "content": prompt}], 32))
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # really streamed in pieces


def test_stream_ends_with_done(url):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3


def test_seeded_sampling_is_reproducible(client, tiny_llama):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=20,
                  temperature=0.9, top_p=0.8)
    first = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    again = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    other = client.chat.completions.create(seed=99, **kwargs).choices[0].message.content
    assert first == again != other
    assert first != tiny_llama.generate(PROMPTS[1], max_new_tokens=20)  # sampling really happened


LONG = "word " * 200
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
EMB = {"model": "tiny", "input": "hello"}


@pytest.mark.parametrize("path, body, status, code", [
    ("/v1/embeddings", {**EMB, "input": 3}, 400, "invalid_value"),
    ("/v1/embeddings", {**EMB, "input": [1, "two"]}, 400, "invalid_value"),
    ("/v1/embeddings", {**EMB, "input": [1, 100_000]}, 400, "invalid_token_id"),
    ("/v1/embeddings", {**EMB, "encoding_format": "int8"}, 400, "invalid_value"),
    ("/v1/embeddings", {"input": "hello"}, 400, "invalid_value"),
    ("/v1/embeddings", {**EMB, "input": ""}, 400, "empty_input"),
    ("/v1/embeddings", {**EMB, "input": ["ok", ""]}, 400, "empty_input"),
    ("/v1/embeddings", {**EMB, "input": []}, 400, "invalid_value"),
    ("/v1/embeddings", {**EMB, "model": "gpt-4"}, 404, "model_not_found"),
    ("/v1/embeddings", {**EMB, "input": LONG}, 400, "context_length_exceeded"),
    ("/v1/embeddings", {**EMB, "instruction": LONG}, 400, "context_length_exceeded"),
    ("/v1/embeddings", {**EMB, "input": ["a"] * 17}, 400, "batch_too_large"),
    ("/v1/embeddings", {**EMB, "dimensions": 100_000}, 400, None),
    ("/v1/embeddings", {**EMB, "precision": "int8"}, 400, "invalid_value"),
    ("/v1/embeddings", {**EMB, "instruction": "x", "input_type": "query"}, 400, None),
    ("/v1/chat/completions", {**CHAT, "messages": "hi"}, 400, "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "assistant", "content": "x"}]}, 400, None),
    ("/v1/chat/completions", {**CHAT, "max_tokens": "many"}, 400, "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 41}, 400, "max_tokens_too_large"),
    ("/v1/chat/completions", {**CHAT, "temperature": 3}, 400, "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "n": 2}, 400, None),
    ("/v1/chat/completions", {**CHAT, "model": "gpt-4"}, 404, "model_not_found"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": LONG}]}, 400, "context_length_exceeded"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": LONG}], "stream": True},
     400, "context_length_exceeded"),
    ("/v1/completions", {"model": "tiny", "prompt": ""}, 400, "invalid_value"),
    ("/v1/completions", {"model": "tiny", "prompt": [1, 2, 3]}, 400, "invalid_value"),
    ("/v1/completions", {"model": "tiny", "prompt": ["a", "b"], "stream": True}, 400, None),
    ("/v1/models/gpt-4", None, 404, "model_not_found"),
    ("/v1/nothing-here", {}, 404, None),
    ("/v1/rag", {"question": "no index was given"}, 404, None),
])
def test_bad_requests_get_openai_errors(url, client, path, body, status, code):
    response = httpx.get(f"{url}{path}") if body is None else httpx.post(f"{url}{path}", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["code"] == code
    assert client.embeddings.create(model="tiny", input="still alive").data  # the server carries on


def test_bad_json_and_oversized_bodies(url):
    bad = httpx.post(f"{url}/v1/embeddings", content=b'{"model": "tiny", "input": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": ["abc " * 500] * 20})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit must hold while the body is read
        for _ in range(100):
            yield b"x" * 1000

    streamed = httpx.post(f"{url}/v1/embeddings", content=chunks())
    assert streamed.status_code == 413


def test_openai_client_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="more than this server's limit of 96 tokens"):
        client.embeddings.create(model="tiny", input=LONG)


def test_a_departed_client_stops_its_generation(url):
    """A streaming client that leaves after its first chunks ends its generation early: the
    server's decode steps stop well before max_tokens."""
    before = httpx.get(f"{url}/health").json()["decode_steps"]
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 40,
            "stream": True, "stop": None}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first text delta: leave
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health").json()["running_generations"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(f"{url}/health").json()["decode_steps"] - before < 39


def test_rerank_orders_documents_by_the_models_cosine(url, tiny_llama):
    # The body a Cohere / Jina / vLLM rerank client sends: documents as strings or {"text": ...}.
    body = {"model": "tiny", "query": "How do I open a file?", "top_n": 3, "return_documents": True,
            "documents": [TEXTS[0], {"text": TEXTS[2]}, TEXTS[1], {"text": "read bytes from a stream"}]}
    answer = httpx.post(f"{url}/v1/rerank", json=body).json()
    texts = [TEXTS[0], TEXTS[2], TEXTS[1], "read bytes from a stream"]
    query = tiny_llama.encode(body["query"], instruction=CONFIG.query_instruction)
    scores = tiny_llama.encode(texts) @ query
    expected = np.argsort(-scores)[:3].tolist()
    assert [r["index"] for r in answer["results"]] == expected
    np.testing.assert_allclose([r["relevance_score"] for r in answer["results"]], scores[expected], atol=1e-5)
    assert [r["document"]["text"] for r in answer["results"]] == [texts[i] for i in expected]
    assert answer["usage"]["total_tokens"] == (_tokens_for_embedding(tiny_llama, [body["query"]], CONFIG.query_instruction)
                                               + _tokens_for_embedding(tiny_llama, texts))
    plain = httpx.post(f"{url}/v1/rerank", json={**body, "top_n": None, "return_documents": False}).json()
    assert len(plain["results"]) == 4 and "document" not in plain["results"][0]
    for bad, code in (({"documents": []}, 400), ({"documents": [""]}, 400), ({"query": ""}, 400),
                      ({"documents": ["a"] * 9}, 400), ({"model": "other"}, 404)):
        response = httpx.post(f"{url}/v1/rerank", json={**body, **bad})
        assert response.status_code == code and "error" in response.json()


def test_instructions_default_to_the_models_saved_ones(tiny_llama, tmp_path):
    from gritkit.model.config import FALLBACK_QUERY_INSTRUCTION

    saved = tiny_llama.with_config(query_instruction="Find the code", document_instruction="Represent the code")
    app = create_app(saved, ServeConfig(model_name="tiny"))
    assert (app.state.config.query_instruction, app.state.config.document_instruction) == (
        "Find the code", "Represent the code")
    with ServerThread(app) as base:
        for input_type, instruction in (("query", "Find the code"), ("document", "Represent the code")):
            got = httpx.post(f"{base}/v1/embeddings", json={"model": "tiny", "input": TEXTS[:2],
                                                          "input_type": input_type}).json()
            np.testing.assert_allclose([d["embedding"] for d in got["data"]],
                                       tiny_llama.encode(TEXTS[:2], instruction=instruction), atol=1e-6)
    plain = create_app(tiny_llama, ServeConfig(model_name="tiny")).state.config  # the model saved none
    assert (plain.query_instruction, plain.document_instruction) == (FALLBACK_QUERY_INSTRUCTION, "")
    told = create_app(saved, ServeConfig(model_name="tiny", query_instruction="", document_instruction="")).state.config
    assert (told.query_instruction, told.document_instruction) == ("", "")
