"""``gritkit serve`` as a user runs it: a subprocess on loopback, guarded by an API key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from gritkit.cli import main  # noqa: E402

KEY = "s3cret-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def index_dir(tiny_llama, tiny_llama_dir, corpus, tmp_path_factory):
    from gritkit.rag import RagIndex

    root = tmp_path_factory.mktemp("serve-cli-rag")
    RagIndex.build(tiny_llama, corpus[:6], model_path=tiny_llama_dir, cache_docs=True, cache_dir=root / "cache",
                   cache_dtype="float32").save(root / "index")
    return root / "index"


@pytest.fixture(scope="module")
def url(tiny_llama_dir, index_dir):
    port = _free_port()
    command = [sys.executable, "-m", "gritkit.cli", "serve", "--model", str(tiny_llama_dir), "--port", str(port),
               "--api-key", KEY, "--model-name", "tiny", "--max-input-tokens", "64", "--index", str(index_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"gritkit serve exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gritkit serve did not come up"
        time.sleep(0.2)
    yield base
    process.terminate()
    process.wait(timeout=30)
    # uvicorn shuts down cleanly on SIGTERM (then exits by re-raising it, status -15 or 0).
    output = process.stdout.read()
    assert "Finished server process" in output
    assert "linear layers prepacked for oneDNN" in output  # the default on a CPU: the answers above are its


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer", f"Bearer {KEY}x"])
def test_requests_without_the_key_get_401(url, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("GET", "/v1/models"), ("GET", "/health"), ("POST", "/v1/embeddings"), ("GET", "/nowhere")]:
        response = httpx.request(method, f"{url}{path}", headers=headers, json={"model": "tiny", "input": "x"})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_key_opens_the_api(url, tiny_llama):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    response = client.embeddings.create(model="tiny", input=["served by the CLI", "two"])
    np.testing.assert_allclose([d.embedding for d in response.data], tiny_llama.encode(["served by the CLI", "two"]),
                               rtol=0, atol=1e-5)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                          temperature=0)
    assert chat.choices[0].message.content == tiny_llama.generate("hi", max_new_tokens=8)
    # --max-input-tokens reached the server
    with pytest.raises(openai.BadRequestError, match="64 tokens"):
        client.embeddings.create(model="tiny", input="many words " * 50)


def test_index_adds_rag(url, tiny_llama, index_dir):
    from gritkit.rag import RagIndex, RagPipeline

    body = {"question": "What is a socket?", "mode": "doc_cache", "max_tokens": 8}
    assert httpx.post(f"{url}/v1/rag", json=body).status_code == 401
    response = httpx.post(f"{url}/v1/rag", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    expected = RagPipeline(tiny_llama, RagIndex.load(index_dir)).ask(body["question"], "doc_cache", max_new_tokens=8)
    assert response.json()["answer"] == expected.answer


def test_bad_arguments_fail_with_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--max-queue", "0"]) == 2
    assert "--max-queue must be positive" in capsys.readouterr().err
